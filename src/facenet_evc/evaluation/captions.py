"""Caption metrics exactly as the official EmVidCap evaluation computes them.

EPAN ``utils.calc_scores`` runs pycocoevalcap's ``Bleu(4)``, ``Meteor()``, ``Rouge()`` and
``Cider()`` on ``{index: [caption]}`` / ``{index: [references]}`` dictionaries built from the
already-normalised strings, with **no PTBTokenizer**. EPAN vendors a copy of pycocoevalcap;
its scorers are line-for-line the PyPI ``pycocoevalcap==1.2`` ones (differences are only
``from __future__`` imports, key-set assertions and the METEOR subprocess' text mode), so we
call the PyPI package. METEOR needs Java on the PATH.
"""
from __future__ import annotations

import shutil

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from facenet_evc.errors import SetupError

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


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


def _meteor(refs: dict[int, list[str]], hypos: dict[int, list[str]]) -> float:
    if shutil.which("java") is None:
        raise SetupError("METEOR needs Java: no 'java' on the PATH (install a JRE, e.g. apt-get install default-jre-headless)")
    for i, (h,) in hypos.items():
        if "\n" in h or any("\n" in r for r in refs[i]):
            raise ValueError(f"caption {i} contains a newline, which the METEOR subprocess protocol cannot carry")
    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(refs, hypos)
    finally:
        # Free the JVM now rather than at garbage collection.
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return score
