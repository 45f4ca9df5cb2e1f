"""FACE-net objectives (paper eq. 30-32) and the token weights eq. 30 needs.

L_e (eq. 30): negative log-likelihood of the reference caption with every token of a lexicon
(D_w) word weighted ``1 + delta``. The sum over t is turned into a mean over the batch's
non-pad tokens, divided by their **count**, not by the sum of weights: dividing by the
weights would make a caption whose every token is emotional score exactly as plain CE,
i.e. renormalising cancels part of the penalty eq. 30 asks for, while dividing by the count
keeps L_e an up-weighting of emotion tokens and equal to the usual token-mean CE at delta = 0.

Which tokens are emotional:

* word vocabulary (LSTM / Transformer decoders): a token is a word, so a (V,) bool table
  ``is_emotion[token_id]`` (:func:`vocab_emotion_table`) decides;
* sub-word tokenizer (T5 / OPT): every piece of a lexicon word counts.
  :func:`hf_emotion_token_mask` tokenises the caption text with ``return_offsets_mapping``
  (a "fast" HF tokenizer) and marks each token whose character span overlaps a lexicon word
  found in the text. Offsets are used rather than tokenising word by word because BPE/
  SentencePiece pieces depend on the preceding space, so word-by-word ids would not match
  the sentence's ids.

L_cls (eq. 31), ``-Σ_{e∈E} log P(e | D̄_w)``: a softmax over the C categories of the
classifier's logits; the sum runs over the reference caption's categories E and is divided
by |E| so captions with several categories do not weigh more; captions with no emotion
category have no term and are left out of the batch mean.

L (eq. 32) = lambda_e L_e + lambda_cls L_cls.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_WORD = re.compile(r"[\w'-]+")


def emotion_weighted_ce(
    logits: Tensor, targets: Tensor, token_weights: Tensor | None = None, pad_id: int | None = -100
) -> Tensor:
    """Eq. 30: mean over non-pad tokens of ``w_t * -log P(y_t | y_<t)``.

    logits: (B, L, V), position t scores targets[:, t]; targets: (B, L) long; token_weights:
    (B, L) float (1 + delta on emotion tokens) or None for plain CE. Positions where
    ``targets == pad_id`` are ignored.
    """
    B, L, V = logits.shape
    ignore = pad_id if pad_id is not None else -100
    nll = F.cross_entropy(
        logits.reshape(B * L, V).float(), targets.reshape(B * L), ignore_index=ignore, reduction="none"
    ).view(B, L)  # (B, L), 0 at ignored positions
    keep = (targets != ignore).float()  # (B, L)
    if token_weights is not None:
        nll = nll * token_weights.float()
    return (nll * keep).sum() / keep.sum().clamp_min(1.0)


def emotion_cls_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Eq. 31: per-sample mean of -log softmax(logits)[c] over the sample's categories c.

    logits: (B, C); targets: (B, C) multi-hot. Samples without a category are skipped; a
    batch with none returns a zero that still depends on ``logits`` (backward stays valid).
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, C)
    t = targets.float()  # (B, C)
    n = t.sum(-1)  # (B,)
    per_sample = -(logp * t).sum(-1) / n.clamp_min(1.0)  # (B,)
    has = n > 0
    if not bool(has.any()):
        return logits.sum() * 0.0
    return per_sample[has].mean()


def total_loss(loss_e: Tensor, loss_cls: Tensor | None, lambda_e: float, lambda_cls: float) -> Tensor:
    """Eq. 32; ``loss_cls`` is None when the model has no emotion branch (EA or RE off)."""
    return lambda_e * loss_e if loss_cls is None else lambda_e * loss_e + lambda_cls * loss_cls


def emotion_token_weights(token_ids: Tensor, is_emotion: Tensor, delta: float) -> Tensor:
    """Token weights for eq. 30: ``1 + delta`` on emotion tokens, 1 elsewhere.

    token_ids: (B, L) long. ``is_emotion`` is either a (V,) bool table over a word
    vocabulary (looked up by id, see :func:`vocab_emotion_table`) or a bool mask of the same
    shape as ``token_ids`` (positions, e.g. from :func:`hf_emotion_token_mask`).
    """
    if is_emotion.shape == token_ids.shape and token_ids.dim() > 1:
        mask = is_emotion.bool()  # (B, L)
    elif is_emotion.dim() == 1:
        mask = is_emotion.bool()[token_ids.clamp_min(0)] & (token_ids >= 0)  # (B, L); -100 never emotional
    else:
        raise ValueError(
            f"is_emotion must be a (V,) table or match token_ids {tuple(token_ids.shape)}, "
            f"got {tuple(is_emotion.shape)}"
        )
    return 1.0 + delta * mask.float()


def vocab_emotion_table(itos: Sequence[str], lexicon_words: Iterable[str]) -> Tensor:
    """(V,) bool: whether each word of a word-level vocabulary is a lexicon word (case-insensitive)."""
    words = {w.lower() for w in lexicon_words}
    return torch.tensor([w.lower() in words for w in itos], dtype=torch.bool)


def emotion_word_spans(text: str, lexicon_words: Iterable[str]) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the words of ``text`` that are lexicon words.

    Words are runs of letters, digits, ``'`` and ``-`` (so "happily." matches "happily"),
    compared lowercased, as the captions and the lexicon are lowercase.
    """
    words = {w.lower() for w in lexicon_words}
    return [m.span() for m in _WORD.finditer(text) if m.group().lower() in words]


def overlapping_tokens(offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """For each token's ``(start, end)`` character offsets, whether it overlaps any span.

    Empty offsets (special tokens, padding: ``(0, 0)``) never overlap.
    """
    out = []
    for a, b in offsets:
        out.append(b > a and any(a < e and s < b for s, e in spans))
    return out


def hf_emotion_token_mask(
    tokenizer: Any, texts: Sequence[str], lexicon_words: Iterable[str], **tokenizer_kwargs: Any
) -> tuple[Any, Tensor | list[list[bool]]]:
    """Tokenise ``texts`` and mark every sub-token overlapping a lexicon word.

    ``tokenizer`` is a fast Hugging Face tokenizer (it must accept
    ``return_offsets_mapping=True``); ``tokenizer_kwargs`` (padding, truncation, max_length,
    return_tensors, ...) pass through. Returns the encoding without ``offset_mapping`` and
    the mask: a bool tensor shaped like ``input_ids`` when those are a tensor, else lists.
    """
    words = list(lexicon_words)
    try:
        enc = tokenizer(list(texts), return_offsets_mapping=True, **tokenizer_kwargs)
    except NotImplementedError as err:  # slow (Python) tokenizers have no offsets
        raise ValueError("hf_emotion_token_mask needs a fast tokenizer (offset mapping)") from err
    offsets = enc.pop("offset_mapping")
    if isinstance(offsets, Tensor):
        offsets = offsets.tolist()
    mask = [overlapping_tokens(off, emotion_word_spans(t, words)) for off, t in zip(offsets, texts)]
    if isinstance(enc["input_ids"], Tensor):
        return enc, torch.tensor(mask, dtype=torch.bool)
    return enc, mask
