"""Shared pieces of the caption decoders: the base class and the emotion-weighted loss (eq. 30).

Eq. 30 multiplies the token NLL by ``1 + δ`` when the target token is an emotion word of the
lexicon D_w. The paper sums over the sequence; we normalise by the number of real (non-pad)
target tokens so that the loss scale does not depend on caption length or batch padding:

    L_e = Σ_{b,t} w_{b,t} · (−log P(y_{b,t} | y_{b,<t}, M̄)) / Σ_{b,t} [y_{b,t} ≠ pad]

with ``w = 1 + δ`` on lexicon tokens, ``1`` on other real tokens (EOS included) and ``0`` on
padding. With δ = 0 this is exactly the mean token cross-entropy.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn


def weighted_token_nll(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None,
    pad_id: int,
) -> torch.Tensor:
    """Eq. 30 normalised by the count of real tokens (see module docstring).

    Args:
        logits: ``(B, L, V)`` scores for each target position.
        targets: ``(B, L)`` token ids, ``pad_id`` on padding.
        weights: ``(B, L)`` per-token weights or ``None`` (= 1 on real tokens).

    Returns:
        scalar loss (float32, also under bf16 autocast).
    """
    real = targets != pad_id  # (B, L)
    # float32 log-softmax: bf16 logits lose the small differences the NLL depends on
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    nll = nll.view_as(targets)  # (B, L)
    w = real.float() if weights is None else weights.float() * real
    return (w * nll).sum() / real.sum().clamp(min=1)


class CaptionDecoder(nn.Module, ABC):
    """Common interface of the LSTM, Transformer, FLAN-T5 and OPT decoders.

    Attributes:
        d_model: width of the memory ``M̄`` the decoder reads (the Q-Former projects to it).
        pad_id: id used to pad ``targets``; positions holding it carry no loss.

    Targets convention: ``targets`` hold the tokens to *predict* — the caption tokens and a
    final EOS, without any start token, right-padded with ``pad_id``. Each decoder prepends
    its own start symbol (``<SOS>``, T5's decoder start, OPT's BOS) for teacher forcing, so
    ``logits[:, t]`` scores ``targets[:, t]`` and ``L' = L``.
    """

    d_model: int
    pad_id: int

    @abstractmethod
    def forward(
        self,
        memory: torch.Tensor,
        targets: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher forcing. memory ``(B, Nq, d_model)``, targets ``(B, L)`` ->
        ``{"logits": (B, L, V), "loss": scalar}`` (loss per :func:`weighted_token_nll`)."""

    @abstractmethod
    def generate(self, memory: torch.Tensor, num_beams: int = 5, max_len: int = 15) -> list[list[int]]:
        """Beam search; token ids per sample without any special token."""

    @abstractmethod
    def decode_tokens(self, ids: list[int]) -> str:
        """Caption string of generated ids."""

    @abstractmethod
    def encode_targets(
        self,
        captions: list[str],
        lexicon_words: Collection[str],
        delta: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(targets LongTensor (B, L), weights FloatTensor (B, L))``: weights ``1 + delta``
        on every token of a lexicon word, ``1`` on other real tokens, ``0`` on padding."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (all of them, except for the LoRA-tuned LLMs)."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trainable tensors, keyed as in ``state_dict()``: what a checkpoint needs.

        For the LLM decoders this is the LoRA adapter (MBs) instead of the frozen LLM (GBs);
        restore with ``load_state_dict(sd, strict=False)`` after rebuilding the decoder.
        """
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def _eval_mode(self) -> _EvalMode:
        return _EvalMode(self)


class _EvalMode:
    """Context manager: eval mode + no grad for generation, restoring the training flag."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.was_training = module.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.module.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.no_grad.__exit__(*exc)
        self.module.train(self.was_training)


def pad_batch(seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Right-pad id lists into a ``(B, L)`` LongTensor."""
    length = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(length, 1)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
