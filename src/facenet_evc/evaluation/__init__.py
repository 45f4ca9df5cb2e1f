"""The official EmVidCap evaluation: caption metrics, emotion metrics and the fusion scores.

``evaluate`` reproduces EPAN ``utils.score_full``: captions are scored untouched (prepare
references with :func:`facenet_evc.data.emvidcap.prepare_references` first, as EPAN's loader
does), keyed ``0..N-1`` in sorted video-id order, and

* ``BFS = 0.8 * (0.1*B1 + 0.2*B2 + 0.3*B3 + 0.4*B4) + 0.1 * (Acc_sw + Acc_c)``
* ``CFS = 0.8 * CIDEr + 0.1 * (Acc_sw + Acc_c)``

All values are fractions (papers print them ×100).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from facenet_evc.data.lexicon import Lexicon, read_lexicon
from facenet_evc.evaluation.captions import CAPTION_METRICS, caption_scores
from facenet_evc.evaluation.emotion import EmotionMetricError, acc_c, acc_sw, count_emotions

METRICS = CAPTION_METRICS + ("Acc_sw", "Acc_c", "BFS", "CFS")


class EvaluationInputError(ValueError):
    """Predictions and references that cannot be scored together."""


def check_inputs(predictions: Any, references: Any, where: tuple[str, str] = ("predictions", "references")) -> None:
    """Validate the two mappings, naming the offending video id and file."""
    pname, rname = where
    if not isinstance(predictions, dict) or not predictions:
        raise EvaluationInputError(f"{pname}: expected a non-empty JSON object {{video_id: caption}}")
    if not isinstance(references, dict):
        raise EvaluationInputError(f"{rname}: expected a JSON object {{video_id: [captions]}}")
    for vid, cap in predictions.items():
        if not isinstance(cap, str):
            raise EvaluationInputError(f"{pname}: video {vid!r}: expected one caption string, got {type(cap).__name__}")
        if vid not in references:
            raise EvaluationInputError(f"{pname}: video {vid!r} has a prediction but no references in {rname}")
    for vid, refs in references.items():
        if vid not in predictions:
            raise EvaluationInputError(f"{rname}: video {vid!r} has references but no prediction in {pname}")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            raise EvaluationInputError(f"{rname}: video {vid!r}: expected a non-empty list of caption strings")


def evaluate(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    lexicon: Lexicon | str | Path,
    meteor: bool = True,
    on_undefined: str = "raise",
) -> dict[str, Any]:
    """Score ``{video_id: caption}`` against ``{video_id: [references]}`` like the official code.

    Where the official Acc_c overflows (``N_h == N_r1 > 0``, e.g. on a small subset),
    ``on_undefined="raise"`` raises :class:`EmotionMetricError`; ``"null"`` returns Acc_c,
    BFS and CFS as None with the reason of each under ``"undefined"``.
    """
    if on_undefined not in ("raise", "null"):
        raise ValueError(f"on_undefined must be 'raise' or 'null', got {on_undefined!r}")
    check_inputs(predictions, references)
    if not isinstance(lexicon, Lexicon):
        lexicon = read_lexicon(lexicon)
    vids = sorted(predictions)
    hypos = {i: [predictions[v]] for i, v in enumerate(vids)}
    refs = {i: list(references[v]) for i, v in enumerate(vids)}
    scores = caption_scores(refs, hypos, meteor=meteor)
    counts = count_emotions(predictions, references, lexicon)  # what emotion_scores computes, kept apart
    scores["Acc_sw"] = acc_sw(counts)
    try:
        scores["Acc_c"] = acc_c(counts)
    except EmotionMetricError as e:
        if on_undefined == "raise":
            raise
        out: dict[str, Any] = {k: scores.get(k) for k in METRICS}
        out.update(n_videos=len(vids), undefined={"Acc_c": str(e), "BFS": "needs Acc_c", "CFS": "needs Acc_c"})
        return out
    add_2 = 0.1 * (scores["Acc_sw"] + scores["Acc_c"])
    add_1 = 0.1 * scores["Bleu_1"] + 0.2 * scores["Bleu_2"] + 0.3 * scores["Bleu_3"] + 0.4 * scores["Bleu_4"]
    scores["BFS"] = 0.8 * add_1 + add_2
    scores["CFS"] = 0.8 * scores["CIDEr"] + add_2
    out: dict[str, float] = {k: scores[k] for k in METRICS if k in scores}
    out["n_videos"] = len(vids)
    return out


def evaluate_files(predictions: str | Path, references: str | Path, lexicon: str | Path, meteor: bool = True,
                   on_undefined: str = "raise") -> dict[str, Any]:
    """:func:`evaluate` on ``P.json`` / ``R.json`` files, with errors naming the files."""
    from facenet_evc.io import read_json

    preds, refs = read_json(predictions), read_json(references)
    check_inputs(preds, refs, where=(str(predictions), str(references)))
    try:
        return evaluate(preds, refs, lexicon, meteor=meteor, on_undefined=on_undefined)
    except EmotionMetricError as e:
        raise EmotionMetricError(f"{predictions}: {e} (evaluate --on-undefined null reports it as null)") from None
