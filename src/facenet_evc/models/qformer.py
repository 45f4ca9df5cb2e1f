"""Lightweight Q-Former (paper Sec. 3.5, eq. 28-29), after BLIP-2.

``q̄ = SelfAttn(q) + q`` (eq. 28), then ``M̄ = φ_M(CrossAttn(q̄, [M; V]) + q̄)`` (eq. 29):
N_q learnable queries read the memory ``[M; V]`` (concatenated along the sequence) and a
linear map ``φ_M`` gives the decoder's input width (the paper's ``N_q x d`` with an LLM's
embedding width behind the LoRA adapter; here ``d_out = decoder.d_model``).

Exactly the printed layers: one self-attention, one cross-attention, two residuals, no
LayerNorm or FFN. The memory carries no position or segment embedding, so cross-attention
is invariant to the order of memory rows; swapping the F and E halves of M alone does not
change M̄ (tests/test_models.py checks it; facenet.py explains what ``order`` does instead).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from facenet_evc.models.config import FaceNetConfig


class QFormer(nn.Module):
    def __init__(self, cfg: FaceNetConfig, d_out: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(cfg.n_queries, cfg.d) * 0.02)  # q, BLIP-2's init scale
        self.self_attn = nn.MultiheadAttention(cfg.d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(cfg.d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.phi_m = nn.Linear(cfg.d, d_out)

    def forward(self, memory: Tensor) -> Tensor:
        """memory: (B, S, d), the rows of [M; V]. Returns M̄ (B, N_q, d_out)."""
        q = self.queries.unsqueeze(0)  # (1, N_q, d): identical for every sample
        q_bar = self.self_attn(q, q, q, need_weights=False)[0] + q  # (1, N_q, d), eq. 28
        q_bar = q_bar.expand(memory.shape[0], -1, -1)  # (B, N_q, d)
        x = self.cross_attn(q_bar, memory, memory, need_weights=False)[0] + q_bar  # (B, N_q, d)
        return self.phi_m(x)  # (B, N_q, d_out), eq. 29
