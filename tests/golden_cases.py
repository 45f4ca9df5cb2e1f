"""Deterministic prediction/reference sets built from real captions, for golden tests.

The expected numbers in test_evaluation.py were produced by running the official EPAN
evaluation code (``utils.calc_scores`` + ``EmotionEval.getResult.get_result`` and the BFS /
CFS formulas of ``utils.score_full``) on exactly these inputs.
"""
from __future__ import annotations

from pathlib import Path

from facenet_evc.data.emvidcap import prepare_references, read_captions

INJECT = ["annoying", "happily", "Happy", "worried", "timid", "sadly", "angry"]


def held_out_case(csv: Path, perturb: bool) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each video's k-th reference (k from its id) as prediction; the others as references.

    With ``perturb``, every third prediction is reversed word by word and every fifth gets
    an emotion word appended, cycling through multi-category, capitalised and plain words.
    """
    refs = prepare_references(read_captions(csv))
    preds: dict[str, str] = {}
    others: dict[str, list[str]] = {}
    for n, vid in enumerate(sorted(refs)):
        caps = refs[vid]
        k = sum(map(ord, vid)) % len(caps)
        pred = caps[k]
        if perturb:
            if n % 3 == 0:
                pred = " ".join(reversed(pred.split()))
            if n % 5 == 0:
                pred = f"{pred} {INJECT[(n // 5) % len(INJECT)]}"
        preds[vid] = pred
        others[vid] = [c for i, c in enumerate(caps) if i != k] or caps
    return preds, others
