"""Progressive Visual Emotion Augmentation, PVEA (paper Sec. 3.4, eq. 19-21).

Stage 1 (eq. 19): the factual semantics of each group query the emotion lexicon,
``Ẽ_i = Attn_c(Q = F_i, K = V = E_0)``: candidate emotion cues per frame. The attention's
key/value projections read the lexicon width d_E and its output projection writes d (the
paper has d_E = d). The head-averaged weights over the N_w lexicon words are returned for
figures.

Stage 2 (eq. 20-21): a visual query ``q_v = softmax(φ_F(F_i) φ_V(V)^T)`` (N x N, softmax
over the second frame axis) re-mixes the candidates across frames, ``E_i = q_v φ_E(Ẽ_i)``.
The logits are divided by sqrt(d), which the paper does not print: without it a d = 300
dot product of unnormalised projections saturates the softmax at initialisation.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
from torch import Tensor

from facenet_evc.models.config import FaceNetConfig


class PVEAOutput(NamedTuple):
    e: Tensor  # (B, K, N, d) emotional semantics E_i, eq. 21
    lexicon_attn: Tensor  # (B, K, N, N_w) head-averaged Attn_c weights, rows sum to 1
    q_v: Tensor  # (B, K, N, N) visual query, eq. 20, rows sum to 1


class PVEA(nn.Module):
    def __init__(self, cfg: FaceNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn_c = nn.MultiheadAttention(
            cfg.d, cfg.n_heads, dropout=cfg.dropout, kdim=cfg.d_e, vdim=cfg.d_e, batch_first=True
        )
        self.phi_f = nn.Linear(cfg.d, cfg.d)
        self.phi_v = nn.Linear(cfg.d, cfg.d)
        self.phi_e = nn.Linear(cfg.d, cfg.d)

    def forward(self, f: Tensor, v: Tensor, lexicon: Tensor) -> PVEAOutput:
        """f: (B, K, N, d) factual semantics; v: (B, N, d) frames; lexicon: (N_w, d_e) E_0."""
        B, K, N, d = f.shape
        f_flat = f.reshape(B * K, N, d)  # (B*K, N, d)
        lex = lexicon.unsqueeze(0).expand(B * K, *lexicon.shape)  # (B*K, N_w, d_e)
        e_tilde, lex_attn = self.attn_c(
            f_flat, lex, lex, need_weights=True, average_attn_weights=True
        )  # (B*K, N, d), (B*K, N, N_w): eq. 19
        e_tilde = e_tilde.view(B, K, N, d)
        logits = self.phi_f(f) @ self.phi_v(v).unsqueeze(1).transpose(-1, -2)  # (B, K, N, N)
        q_v = torch.softmax(logits / math.sqrt(d), dim=-1)  # (B, K, N, N), eq. 20
        e = q_v @ self.phi_e(e_tilde)  # (B, K, N, d), eq. 21
        return PVEAOutput(e, lex_attn.view(B, K, N, -1), q_v)
