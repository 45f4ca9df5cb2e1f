"""Caption metrics exactly as the official EmVidCap evaluation computes them.

EPAN ``utils.calc_scores`` runs pycocoevalcap's ``Bleu(4)``, ``Meteor()``, ``Rouge()`` and
``Cider()`` on ``{index: [caption]}`` / ``{index: [references]}`` dictionaries built from the
already-normalised strings, with **no PTBTokenizer**. EPAN vendors a copy of pycocoevalcap;
its scorers are line-for-line the PyPI ``pycocoevalcap==1.2`` ones (differences are only
``from __future__`` imports, key-set assertions and the METEOR subprocess' text mode), so we
call the PyPI package. METEOR needs Java on the PATH.
"""
from __future__ import annotations

import contextlib
import shutil
from typing import Iterator

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from facenet_evc.errors import SetupError

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")

# The METEOR scorer of the active `shared_meteor()` block, if any (started on first use).
_shared: list[Meteor | None] = []


def caption_scores(refs: dict[int, list[str]], hypos: dict[int, list[str]], meteor: bool = True) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr of ``hypos`` against ``refs`` (same keys).

    ``meteor=False`` skips the Java scorer (for quick validation during training); the
    official numbers always include it.
    """
    if refs.keys() != hypos.keys():
        raise ValueError("references and hypotheses must have the same keys")
    scores: dict[str, float] = {}
    b, _ = Bleu(4).compute_score(refs, hypos, verbose=0)
    scores.update({f"Bleu_{i + 1}": float(v) for i, v in enumerate(b)})
    if meteor:
        scores["METEOR"] = float(_meteor(refs, hypos))
    scores["ROUGE_L"] = float(Rouge().compute_score(refs, hypos)[0])
    scores["CIDEr"] = float(Cider().compute_score(refs, hypos)[0])
    return scores


@contextlib.contextmanager
def shared_meteor() -> Iterator[None]:
    """Score every METEOR inside the block with one Java process instead of one per call.

    A METEOR process spends seconds starting (the JVM, the paraphrase table) before it
    scores anything; `bias-groups` scores 4 groups per prediction file. Scores do not change:
    each ``EVAL`` request of pycocoevalcap's protocol aggregates only the segments sent with
    it (``SCORE`` lines), so one process answers successive calls independently (tested).
    """
    _shared.append(None)
    try:
        yield
    finally:
        scorer = _shared.pop()
        if scorer is not None:
            _close(scorer)


def _meteor(refs: dict[int, list[str]], hypos: dict[int, list[str]]) -> float:
    if shutil.which("java") is None:
        raise SetupError("METEOR needs Java: no 'java' on the PATH (install a JRE, e.g. apt-get install default-jre-headless)")
    for i, (h,) in hypos.items():
        if "\n" in h or any("\n" in r for r in refs[i]):
            raise ValueError(f"caption {i} contains a newline, which the METEOR subprocess protocol cannot carry")
    if _shared:
        if _shared[-1] is None:
            _shared[-1] = Meteor()
        return _shared[-1].compute_score(refs, hypos)[0]
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(refs, hypos)
    finally:
        _close(scorer)
    return score


def _close(scorer: Meteor) -> None:
    """Free the JVM now rather than at garbage collection."""
    scorer.meteor_p.stdin.close()
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()
