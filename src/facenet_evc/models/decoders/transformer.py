"""Small Transformer caption decoder: causal self-attention over the words so far, cross-attention
to the Q-Former memory (Vaswani et al., 2017), learned positions, pre-norm layers."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import weighted_token_nll
from .beam import beam_search
from .vocab import EOS_ID, SOS_ID, Vocab
from .word import WordDecoder


class TransformerCaptionDecoder(WordDecoder):
    """Word-level ``nn.TransformerDecoder`` over the memory.

    Args:
        vocab: output vocabulary.
        d_model: memory width (the Q-Former output width).
        hidden_size: width of the decoder layers; the memory is linearly projected to it
            when it differs from ``d_model`` (identity otherwise).
        num_layers / num_heads / ffn_size / dropout: decoder layer settings.
        max_positions: learned position table size; must exceed ``max_words + 1``.
        max_words: caption length cap of the targets.
    """

    def __init__(
        self,
        vocab: Vocab,
        d_model: int,
        hidden_size: int | None = None,
        num_layers: int = 3,
        num_heads: int = 4,
        ffn_size: int | None = None,
        dropout: float = 0.1,
        max_positions: int = 32,
        max_words: int = 15,
    ) -> None:
        super().__init__(vocab, max_words)
        width = hidden_size or d_model
        if width % num_heads:
            raise ValueError(f"hidden_size {width} is not divisible by num_heads {num_heads}")
        if max_positions < max_words + 1:
            raise ValueError(f"max_positions {max_positions} < max_words + 1 = {max_words + 1}")
        self.d_model = d_model
        self.width = width
        self.max_positions = max_positions
        self.embed = nn.Embedding(len(vocab), width, padding_idx=0)
        self.pos = nn.Embedding(max_positions, width)
        self.mem_proj = nn.Identity() if width == d_model else nn.Linear(d_model, width)
        layer = nn.TransformerDecoderLayer(
            width, num_heads, ffn_size or 4 * width, dropout, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(width))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, len(vocab))

    def _logits(self, inputs: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """inputs (B, T) tokens starting with <SOS>, memory (B, Nq, width) -> (B, T, V)."""
        T = inputs.size(1)
        if T > self.max_positions:
            raise ValueError(f"sequence of {T} tokens exceeds max_positions={self.max_positions}")
        positions = torch.arange(T, device=inputs.device)
        x = self.drop(self.embed(inputs) * math.sqrt(self.width) + self.pos(positions))  # (B, T, W)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=inputs.device, dtype=x.dtype)
        # no key padding mask: padded inputs sit after the real ones, the causal mask hides them
        h = self.decoder(x, memory, tgt_mask=causal, tgt_is_causal=True)
        return self.out(h)

    def forward(
        self,
        memory: torch.Tensor,
        targets: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        logits = self._logits(self._shift_right(targets), self.mem_proj(memory))  # (B, L, V)
        return {"logits": logits, "loss": weighted_token_nll(logits, targets, target_weights, self.pad_id)}

    def generate(
        self, memory: torch.Tensor, num_beams: int = 5, max_len: int = 15, length_penalty: float = 1.0
    ) -> list[list[int]]:
        if max_len > self.max_positions:
            raise ValueError(f"max_len {max_len} exceeds max_positions={self.max_positions}")
        with self._eval_mode():
            # recomputing the whole prefix each step: <= 16 positions, a KV cache is not worth it
            def step(prefix: torch.Tensor, mem: torch.Tensor):
                logits = self._logits(prefix, mem)[:, -1].float()  # (N, V)
                logits = logits.masked_fill(self.banned, float("-inf"))
                return F.log_softmax(logits, dim=-1), mem

            return beam_search(step, self.mem_proj(memory), memory.size(0), num_beams, max_len,
                               SOS_ID, EOS_ID, length_penalty)
