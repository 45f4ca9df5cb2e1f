"""Paired bootstrap over test videos: the difference of every official metric between two systems.

Why: the demo's test split has 120 videos and EmVidCap's a few hundred, so two systems a few
points apart on Acc_sw or CIDEr can swap places with another seed. ``compare`` reports each
metric's difference (B - A, or "FACE-net - retrieval") with a 95% percentile interval over
``n_resamples`` resamples of the test videos, drawn once and shared by both systems (paired),
and a two-sided p-value ``min(1, 2 * min(P*(diff <= 0), P*(diff >= 0)))`` over the resamples
(the paired bootstrap test of Koehn 2004, two-sided).

Speed: every metric is reduced to per-video sufficient statistics once; a resample is then a
vector of multiplicities ``w (n,)``, and all resamples are one matrix product ``W (R, n) @ S
(n, s)``. 1,000 resamples of a few hundred videos take well under a second after the one
official scoring pass.

How each metric is resampled:

* BLEU-1..4: corpus BLEU from summed n-gram matches/guesses and summed test/closest-reference
  lengths (pycocoevalcap's ``BleuScorer`` cooks each video; the resample re-sums them), so
  the full-sample value equals pycocoevalcap's exactly.
* ROUGE-L: the mean of the per-video scores (what pycocoevalcap averages).
* CIDEr: pycocoevalcap's CIDEr-D document frequencies come from the references of the whole
  test set. They are computed once on the full set and **held fixed**; a resample averages
  the per-video CIDEr scores. Recomputing the document frequencies on every resample would
  count a duplicated video's references twice, which no test set does. The full-sample value
  equals the official one.
* Acc_sw, Acc_c: re-summed from per-caption counts (N_r, N_w, phi, N_r1, N_h), exactly the
  official formulas. A resample where Acc_c is undefined (N_h == N_r1 > 0) is dropped from
  Acc_c, BFS and CFS only; how many were dropped is reported.
* BFS, CFS: recomputed from the resampled components.
* METEOR: its Java scorer is corpus-level and slow; it is computed once per system, with no
  interval (``meteor=False`` skips it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from facenet_evc.data.lexicon import Lexicon
from facenet_evc.evaluation.emotion import ALPHA

RESAMPLED = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS")
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap BleuScorer's constants


@dataclass(frozen=True)
class VideoStats:
    """Per-video sufficient statistics of one system on one test set, in sorted video-id order."""

    video_ids: list[str]
    bleu: np.ndarray  # (n, 10): testlen, reflen, guess_1..4, correct_1..4
    rouge: np.ndarray  # (n,)
    cider: np.ndarray  # (n,)
    emotion: np.ndarray  # (n, 5): n_right, n_wrong, no_emotion (0/1), one_right (0/1), right_and_wrong (0/1)
    meteor: float | None


def video_stats(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], lexicon: Lexicon, meteor: bool = False
) -> VideoStats:
    """Score every video once (official scorers) and keep what a resample needs."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    from facenet_evc.evaluation.captions import caption_scores
    from facenet_evc.evaluation.emotion import caption_labels, reference_categories

    vids = sorted(predictions)
    hypos = {i: [predictions[v]] for i, v in enumerate(vids)}
    refs = {i: list(references[v]) for i, v in enumerate(vids)}

    scorer = BleuScorer(n=4)
    for i in range(len(vids)):
        scorer += (hypos[i][0], refs[i])
    bleu = np.zeros((len(vids), 10))
    for i, comps in enumerate(scorer.ctest):
        testlen = comps["testlen"]
        bleu[i, 0] = testlen
        bleu[i, 1] = scorer._single_reflen(comps["reflen"], "closest", testlen)  # what compute_score uses
        bleu[i, 2:6] = comps["guess"]
        bleu[i, 6:10] = comps["correct"]
    rouge = np.asarray(Rouge().compute_score(refs, hypos)[1], dtype=np.float64)
    cider = np.asarray(Cider().compute_score(refs, hypos)[1], dtype=np.float64)

    emo = np.zeros((len(vids), 5))
    for i, v in enumerate(vids):
        right, wrong = caption_labels(predictions[v], reference_categories(list(references[v]), lexicon), lexicon)
        emo[i] = (len(right), len(wrong), not (right or wrong), bool(right), bool(right and wrong))
    met = caption_scores(refs, hypos, meteor=True)["METEOR"] if meteor else None
    return VideoStats(vids, bleu, rouge, cider, emo, met)


def metrics_from_weights(s: VideoStats, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every resampled metric for each row of multiplicities ``w (R, n)``; ``w = ones((1, n))`` is the official value."""
    w = np.asarray(w, dtype=np.float64)
    b = w @ s.bleu  # (R, 10)
    out: dict[str, np.ndarray] = {}
    score = np.ones(len(w))
    ratio = (b[:, 0] + _TINY) / (b[:, 1] + _SMALL)  # (R,)
    bp = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1)), 1.0)  # brevity penalty
    for k in range(4):
        score = score * (b[:, 6 + k] + _TINY) / (b[:, 2 + k] + _SMALL)
        out[f"Bleu_{k + 1}"] = score ** (1.0 / (k + 1)) * bp
    n = w.sum(1)  # (R,)
    out["ROUGE_L"] = (w @ s.rouge) / n
    out["CIDEr"] = (w @ s.cider) / n
    e = w @ s.emotion  # (R, 5)
    n_r, n_w, phi, n_r1, n_h = e.T
    out["Acc_sw"] = n_r / (n_r + n_w + phi)
    undefined = (n_h == n_r1) & (n_h > 0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        acc_c = np.exp(n_h / (n_h - n_r1 + ALPHA)) * (n_r1 / n)
    out["Acc_c"] = np.where(undefined, np.nan, acc_c)
    add_2 = 0.1 * (out["Acc_sw"] + out["Acc_c"])
    add_1 = 0.1 * out["Bleu_1"] + 0.2 * out["Bleu_2"] + 0.3 * out["Bleu_3"] + 0.4 * out["Bleu_4"]
    out["BFS"] = 0.8 * add_1 + add_2
    out["CFS"] = 0.8 * out["CIDEr"] + add_2
    return out


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Multiplicities (R, n) of ``n_resamples`` bootstrap resamples of n videos (with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def paired_bootstrap(
    a: VideoStats, b: VideoStats, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """B - A for every metric: the full-sample difference, a percentile interval and a p-value."""
    if a.video_ids != b.video_ids:
        only = sorted(set(a.video_ids) ^ set(b.video_ids))[:5]
        raise ValueError(f"the two prediction files cover different videos (e.g. {only})")
    n = len(a.video_ids)
    full_a, full_b = metrics_from_weights(a, np.ones((1, n))), metrics_from_weights(b, np.ones((1, n)))
    w = resample_weights(n, n_resamples, seed)
    ra, rb = metrics_from_weights(a, w), metrics_from_weights(b, w)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out: dict[str, Any] = {}
    for m in RESAMPLED:
        d = rb[m] - ra[m]  # (R,)
        ok = np.isfinite(d)
        row: dict[str, Any] = {"a": _num(full_a[m][0]), "b": _num(full_b[m][0]), "diff": _num(full_b[m][0] - full_a[m][0])}
        if ok.sum() >= 2:
            dd = d[ok]
            p = min(1.0, 2 * min(float(np.mean(dd <= 0)), float(np.mean(dd >= 0))))
            row.update(low=float(np.quantile(dd, lo_q)), high=float(np.quantile(dd, hi_q)), p=p)
        else:
            row.update(low=None, high=None, p=None)
        if (~ok).any():
            row["undefined_resamples"] = int((~ok).sum())
        out[m] = row
    if a.meteor is not None and b.meteor is not None:
        out["METEOR"] = {"a": a.meteor, "b": b.meteor, "diff": b.meteor - a.meteor, "low": None, "high": None,
                         "p": None, "note": "computed once (Java scorer), no interval"}
    return {"n_videos": n, "n_resamples": n_resamples, "seed": seed, "level": level, "metrics": out}


def _num(x: float) -> float | None:
    return None if not math.isfinite(float(x)) else float(x)
