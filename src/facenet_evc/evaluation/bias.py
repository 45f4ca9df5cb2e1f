"""Factual-emotional (F-E) bias statistics of a caption set (FACE-net Sec. 3.1).

Rule 1: the share of emotion words in a caption, ``r = n_emotion_words / n_words``, sets its
class: ``r > t1 = 1/6`` emotional bias, ``r < t2 = 1/10`` factual bias, else neutral.
Rule 2: a video that Rule 1 calls neutral or factual but whose *original MSVD* captions
(written without any instruction to mention emotions) already carry emotion words leans
emotional, and moves to the emotional class.

The paper reports 29.0 / 47.4 / 23.6 % (Rule 1) and 34.7 / 44.2 / 21.1 % (Rule 2) on
EVC-MSVD but leaves open what it counts, on which split, and whether the thresholds are
strict. Our readings, all computed by :func:`bias_statistics`:

* ``threshold``: ``strict`` (``r > t1`` / ``r < t2``, the formulas' "higher/less than") or
  ``inclusive`` (``r >= t1`` / ``r <= t2``, the prose's "at least one emotional word in a
  6-word or shorter sentence").
* ``unit``: ``caption`` (every caption counted), ``video_mean`` (a video's mean caption
  ratio), ``video_pooled`` (a video's emotion words over its words), ``video_majority``
  (the most frequent caption class; a tie goes to neutral).
* ``split``: ``trainval``, ``test`` or ``all``.
* Rule 2 ``msvd``: ``any`` (at least one MSVD caption of the video holds a lexicon word) or
  ``rule1`` (the MSVD captions, pooled, are themselves emotional under Rule 1). Only videos
  with MSVD captions available can move; the coverage is reported.

Words are the whitespace tokens of the caption lowercased with punctuation removed (EPAN's
normalisation without truncation); an emotion word is any token that is a lexicon word.
The default reading is the one closest to the paper on EVC-MSVD: ``video_majority`` /
``inclusive`` / ``all`` (trainval + test videos) gives 28.9 / 48.7 / 22.5 % for Rule 1
(2.5 points from the paper, L1) and, with Rule 2 ``any``, 32.9 / 45.5 / 21.7 % (3.6 points;
MSVD captions exist here only for MSVD's val and test videos, so fewer videos can move than
in the paper). Every caption-level or mean/pooled reading lands 17+ points away. The
command prints every reading with its distance so the choice can be checked on any data.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from facenet_evc.data.emvidcap import normalize_caption
from facenet_evc.data.lexicon import Lexicon

T1 = 1 / 6
T2 = 1 / 10
CLASSES = ("emotional", "neutral", "factual")
UNITS = ("caption", "video_mean", "video_pooled", "video_majority")
THRESHOLDS = ("strict", "inclusive")
MSVD_READINGS = ("any", "rule1")
PAPER_RULE1 = {"emotional": 29.0, "neutral": 47.4, "factual": 23.6}
PAPER_RULE2 = {"emotional": 34.7, "neutral": 44.2, "factual": 21.1}


@dataclass(frozen=True)
class Reading:
    unit: str = "video_majority"
    threshold: str = "inclusive"
    split: str = "all"

    def name(self) -> str:
        return f"{self.unit}/{self.threshold}/{self.split}"


def emotion_word_counts(caption: str, lexicon: Lexicon) -> tuple[int, int]:
    """``(n_emotion_words, n_words)`` of one caption (normalised, untruncated)."""
    words = normalize_caption(caption, max_len=None).split()
    return sum(w in lexicon for w in words), len(words)


def classify_ratio(ratio: float, threshold: str = "inclusive", t1: float = T1, t2: float = T2) -> str:
    """Rule 1 on one emotion-word ratio."""
    if threshold == "strict":
        return "emotional" if ratio > t1 else "factual" if ratio < t2 else "neutral"
    if threshold == "inclusive":
        return "emotional" if ratio >= t1 else "factual" if ratio <= t2 else "neutral"
    raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")


def _ratio(n_emo: int, n_words: int) -> float:
    return n_emo / n_words if n_words else 0.0


def rule1_classes(captions: pd.DataFrame, lexicon: Lexicon, unit: str, threshold: str,
                  t1: float = T1, t2: float = T2) -> pd.Series:
    """Rule 1 class per caption (``unit='caption'``, indexed like ``captions``) or per video."""
    counts = captions["EmCaptions"].map(lambda c: emotion_word_counts(c, lexicon))
    df = pd.DataFrame({
        "vid": captions["VideoID"].values,
        "emo": [c[0] for c in counts],
        "words": [c[1] for c in counts],
    })
    df["ratio"] = [_ratio(e, w) for e, w in zip(df["emo"], df["words"])]
    df["cls"] = df["ratio"].map(lambda r: classify_ratio(r, threshold, t1, t2))
    if unit == "caption":
        return pd.Series(df["cls"].values, index=captions.index, name="class")
    g = df.groupby("vid", sort=True)
    if unit == "video_mean":
        return g["ratio"].mean().map(lambda r: classify_ratio(r, threshold, t1, t2)).rename("class")
    if unit == "video_pooled":
        s = g.apply(lambda x: _ratio(int(x["emo"].sum()), int(x["words"].sum())), include_groups=False)
        return s.map(lambda r: classify_ratio(r, threshold, t1, t2)).rename("class")
    if unit == "video_majority":
        return g["cls"].agg(_majority).rename("class")
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


def _majority(classes: Iterable[str]) -> str:
    counts = Counter(classes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "neutral"
    return counts[0][0]


def read_msvd_captions(csv_paths: Iterable[str | Path], youtube_mapping: str | Path) -> dict[str, list[str]]:
    """Original MSVD English captions per EmVidCap video id (``vidN``).

    MSVD rows are keyed ``<VideoID>_<Start>_<End>``; ``youtube_mapping.txt`` maps that clip
    name to ``vidN`` (one ``clip vidN`` pair per line, space-separated).
    """
    mapping: dict[str, str] = {}
    path = Path(youtube_mapping)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: youtube mapping file not found")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<clip> <vidN>', got {line!r}")
        mapping[parts[0]] = parts[1]
    out: dict[str, list[str]] = {}
    for csv_path in csv_paths:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise FileNotFoundError(f"{csv_path}: MSVD caption file not found")
        df = pd.read_csv(csv_path, dtype={"Description": str})
        missing = {"VideoID", "Start", "End", "Language", "Description"} - set(df.columns)
        if missing:
            raise ValueError(f"{csv_path}:1: MSVD caption file lacks the columns {sorted(missing)}")
        df = df[(df["Language"] == "English") & pd.notnull(df["Description"])]
        for video_id, start, end, desc in df[["VideoID", "Start", "End", "Description"]].values:
            vid = mapping.get(f"{video_id}_{start}_{end}")
            if vid is not None:
                out.setdefault(vid, []).append(desc)
    return out


def msvd_emotional(msvd: dict[str, list[str]], lexicon: Lexicon, reading: str, threshold: str) -> set[str]:
    """Videos whose MSVD captions count as emotional under Rule 2 reading ``reading``."""
    out = set()
    for vid, caps in msvd.items():
        counts = [emotion_word_counts(c, lexicon) for c in caps]
        if reading == "any":
            hit = any(e > 0 for e, _ in counts)
        elif reading == "rule1":
            hit = classify_ratio(_ratio(sum(e for e, _ in counts), sum(w for _, w in counts)), threshold) == "emotional"
        else:
            raise ValueError(f"Rule 2 reading must be one of {MSVD_READINGS}, got {reading!r}")
        if hit:
            out.add(vid)
    return out


def shares(classes: pd.Series) -> dict[str, float]:
    """Percentage of each class (emotional, neutral, factual)."""
    n = len(classes)
    return {c: 100.0 * float((classes == c).sum()) / n if n else 0.0 for c in CLASSES}


def distance(a: dict[str, float], b: dict[str, float]) -> float:
    """L1 distance in percentage points between two class distributions."""
    return sum(abs(a[c] - b[c]) for c in CLASSES)


def apply_rule2(classes: pd.Series, video_ids: pd.Series | None, emotional_vids: set[str]) -> pd.Series:
    """Move neutral/factual entries of emotional-leaning videos to the emotional class."""
    vids = classes.index.to_series() if video_ids is None else video_ids
    moved = classes.copy()
    mask = vids.isin(emotional_vids).values & (classes != "emotional").values
    moved[mask] = "emotional"
    return moved


def bias_statistics(
    splits: dict[str, pd.DataFrame],
    lexicon: Lexicon,
    msvd: dict[str, list[str]] | None = None,
    t1: float = T1,
    t2: float = T2,
    default: Reading = Reading(),
) -> dict:
    """Every reading of Rule 1 (and Rule 2 when ``msvd`` is given) with its distance to the paper.

    ``splits`` maps ``trainval``/``test`` to caption tables (``VideoID``, ``EmCaptions``).
    Returns a JSON-ready dict: ``readings`` (one row per reading), ``best`` (closest rows),
    ``default`` (the reading used for per-video classes), ``videos`` (Rule 1 class per
    video under the default reading; a caption-level default falls back to
    ``video_majority``) and, with ``msvd``, ``videos_rule2`` (after Rule 2 ``any``), for the
    bias-aware analysis of later stages.
    """
    frames = dict(splits)
    frames["all"] = pd.concat(list(splits.values()), ignore_index=True)
    rows = []
    for split, unit, threshold in itertools.product(frames, UNITS, THRESHOLDS):
        df = frames[split]
        cls = rule1_classes(df, lexicon, unit, threshold, t1, t2)
        r1 = shares(cls)
        row = {"split": split, "unit": unit, "threshold": threshold, "n": int(len(cls)),
               "rule1": r1, "rule1_distance": distance(r1, PAPER_RULE1)}
        if msvd is not None:
            vids = df["VideoID"] if unit == "caption" else None
            covered = (df["VideoID"] if unit == "caption" else cls.index.to_series()).isin(set(msvd))
            row["msvd_coverage"] = float(covered.mean())
            for reading in MSVD_READINGS:
                r2 = shares(apply_rule2(cls, vids, msvd_emotional(msvd, lexicon, reading, threshold)))
                row[f"rule2_{reading}"] = r2
                row[f"rule2_{reading}_distance"] = distance(r2, PAPER_RULE2)
        rows.append(row)
    best = {"rule1": min(rows, key=lambda r: r["rule1_distance"])}
    if msvd is not None:
        for reading in MSVD_READINGS:
            best[f"rule2_{reading}"] = min(rows, key=lambda r: r[f"rule2_{reading}_distance"])
    video_unit = default.unit if default.unit != "caption" else "video_majority"
    video_cls = rule1_classes(frames["all"], lexicon, video_unit, default.threshold, t1, t2)
    out = {
        "t1": t1,
        "t2": t2,
        "paper": {"rule1": PAPER_RULE1, "rule2": PAPER_RULE2},
        "default_reading": default.name(),
        "default": next(r for r in rows if (r["unit"], r["threshold"], r["split"]) == (default.unit, default.threshold, default.split)),
        "best": best,
        "readings": rows,
        "videos": {str(v): c for v, c in video_cls.items()},
    }
    if msvd is not None:
        moved = apply_rule2(video_cls, None, msvd_emotional(msvd, lexicon, "any", default.threshold))
        out["videos_rule2"] = {str(v): c for v, c in moved.items()}
    return out


def format_table(stats: dict) -> str:
    """A plain-text table of every reading, closest first."""
    has_r2 = "rule2_any" in stats["readings"][0]
    head = f"{'reading':38s} {'n':>6s}  {'Rule 1 E/N/F %':>20s} {'dist':>6s}"
    if has_r2:
        head += f"  {'Rule 2 (any) E/N/F %':>22s} {'dist':>6s}  {'Rule 2 (rule1) E/N/F %':>22s} {'dist':>6s}"
    lines = [head]
    fmt = lambda d: "/".join(f"{d[c]:.1f}" for c in CLASSES)  # noqa: E731
    for r in sorted(stats["readings"], key=lambda r: r["rule1_distance"]):
        line = f"{r['unit'] + '/' + r['threshold'] + '/' + r['split']:38s} {r['n']:6d}  {fmt(r['rule1']):>20s} {r['rule1_distance']:6.1f}"
        if has_r2:
            line += f"  {fmt(r['rule2_any']):>22s} {r['rule2_any_distance']:6.1f}  {fmt(r['rule2_rule1']):>22s} {r['rule2_rule1_distance']:6.1f}"
        lines.append(line)
    lines.append(f"paper: Rule 1 {fmt(PAPER_RULE1)}, Rule 2 {fmt(PAPER_RULE2)}")
    return "\n".join(lines)
