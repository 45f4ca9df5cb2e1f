"""Emotion accuracy metrics Acc_sw and Acc_c of the official EmVidCap evaluation.

Reimplements EPAN ``EmotionEval/getResult.py`` (``get_result``) and ``getRefEmotion.py``:

* Reference categories of a video: every category of every lexicon word among the
  whitespace tokens (``str.split()``, exact, case-sensitive) of all its references.
* A hypothesis token that is a lexicon word gives **one** category: that of the first
  lexicon entry in sorted-file order (the official loop ``break``-s at the first match).
* Per caption: right labels = distinct hypothesis categories found among the reference
  categories; wrong labels = the other distinct hypothesis categories.
* ``N_r``/``N_w`` = sums of right/wrong labels over captions; ``phi`` = captions with no
  lexicon token; ``Acc_sw = N_r / (N_r + N_w + phi)``.
* ``N_r1`` = captions with at least one right label, ``N_h`` = captions with both right and
  wrong labels, ``N`` = captions;
  ``Acc_c = exp(N_h / (N_h - N_r1 + 1e-4)) * (N_r1 / N)``.

The official code divides by ``1e-4`` when ``N_h == N_r1`` and ``math.exp`` overflows for
any ``N_h > 0``: we raise :class:`EmotionMetricError` there instead of returning garbage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from facenet_evc.data.lexicon import Lexicon
from facenet_evc.errors import UserError

ALPHA = 1e-4  # the official smoothing constant in Acc_c


class EmotionMetricError(UserError, ArithmeticError):
    """Acc_c is undefined for this input (the official formula overflows); ``evaluate
    --on-undefined null`` reports it as null instead."""


@dataclass(frozen=True)
class EmotionCounts:
    """The counts both emotion metrics are computed from (kept for reports and tests)."""

    n_captions: int  # N
    n_right: int  # N_r
    n_wrong: int  # N_w
    n_without_emotion: int  # phi
    n_one_right: int  # N_r1
    n_right_and_wrong: int  # N_h


def reference_categories(references: list[str], lexicon: Lexicon) -> set[str]:
    """Every category of every lexicon token in a video's references."""
    cats: set[str] = set()
    for ref in references:
        for token in ref.split():
            cats.update(lexicon.categories_of(token))
    return cats


def caption_labels(caption: str, ref_cats: set[str], lexicon: Lexicon) -> tuple[set[str], set[str]]:
    """The distinct right and wrong emotion labels of one caption: each lexicon token gives the
    category of its first lexicon entry, right when the references hold that category."""
    right: set[str] = set()
    wrong: set[str] = set()
    for token in caption.split():
        label = lexicon.first_category(token)
        if label is None:
            continue
        (right if label in ref_cats else wrong).add(label)
    return right, wrong


def count_emotions(predictions: dict[str, str], references: dict[str, list[str]], lexicon: Lexicon) -> EmotionCounts:
    """Per-caption right/wrong emotion labels, summed as the official ``get_result`` does."""
    n_right = n_wrong = have = one_right = right_and_wrong = 0
    for vid, caption in predictions.items():
        right, wrong = caption_labels(caption, reference_categories(references[vid], lexicon), lexicon)
        if right or wrong:
            have += 1
            if right:
                one_right += 1
                if wrong:
                    right_and_wrong += 1
        n_right += len(right)
        n_wrong += len(wrong)
    return EmotionCounts(
        n_captions=len(predictions),
        n_right=n_right,
        n_wrong=n_wrong,
        n_without_emotion=len(predictions) - have,
        n_one_right=one_right,
        n_right_and_wrong=right_and_wrong,
    )


def acc_sw(c: EmotionCounts) -> float:
    """Sentence-word emotion accuracy ``N_r / (N_r + N_w + phi)``."""
    return c.n_right / (c.n_right + c.n_wrong + c.n_without_emotion)


def acc_c(c: EmotionCounts) -> float:
    """Caption emotion accuracy ``exp(N_h / (N_h - N_r1 + 1e-4)) * N_r1 / N``."""
    n_h, n_r1 = c.n_right_and_wrong, c.n_one_right
    if n_h == n_r1 and n_h > 0:
        raise EmotionMetricError(
            f"Acc_c is undefined: every one of the {n_r1} captions with a right emotion also has a "
            f"wrong one (N_h == N_r1), and the official formula exp(N_h / (N_h - N_r1 + 1e-4)) overflows"
        )
    return math.exp(n_h / (n_h - n_r1 + ALPHA)) * (n_r1 / c.n_captions)


def emotion_scores(predictions: dict[str, str], references: dict[str, list[str]], lexicon: Lexicon) -> dict[str, float]:
    """``{"Acc_sw": ..., "Acc_c": ...}`` as fractions, like the official code returns."""
    counts = count_emotions(predictions, references, lexicon)
    return {"Acc_sw": acc_sw(counts), "Acc_c": acc_c(counts)}
