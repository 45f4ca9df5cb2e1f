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
import torch.nn.functional as F
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
        e_tilde, lex_attn = self.attend_lexicon(f.reshape(B * K, N, d), lexicon)  # (B*K, N, d), (B*K, N, N_w)
        e_tilde = e_tilde.view(B, K, N, d)
        logits = self.phi_f(f) @ self.phi_v(v).unsqueeze(1).transpose(-1, -2)  # (B, K, N, N)
        q_v = torch.softmax(logits / math.sqrt(d), dim=-1)  # (B, K, N, N), eq. 20
        e = q_v @ self.phi_e(e_tilde)  # (B, K, N, d), eq. 21
        return PVEAOutput(e, lex_attn.view(B, K, N, -1), q_v)

    def attend_lexicon(self, q_in: Tensor, lexicon: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 19 with ``attn_c``'s weights: (M, N, d) queries over the (N_w, d_e) lexicon.

        The same computation as ``attn_c(q_in, E_0, E_0)`` (tested), except that the lexicon's
        keys and values are projected once instead of once per query row: ``nn.MultiheadAttention``
        needs the lexicon expanded to the batch, B*K copies of the same projection, about 4% of a
        demo training step. Returns the output (M, N, d) and the head-averaged weights (M, N, N_w),
        taken before attention dropout so that their rows sum to 1.
        """
        mha = self.attn_c
        M, N, d = q_in.shape
        h = mha.num_heads
        if mha.in_proj_weight is not None:  # d_e == d (the paper's setting): one packed (3d, d) weight
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        b_q, b_k, b_v = (None, None, None) if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        q = F.linear(q_in, w_q, b_q).view(M, N, h, d // h).transpose(1, 2)  # (M, h, N, d/h)
        k = F.linear(lexicon, w_k, b_k).view(-1, h, d // h).transpose(0, 1)  # (h, N_w, d/h)
        val = F.linear(lexicon, w_v, b_v).view(-1, h, d // h).transpose(0, 1)  # (h, N_w, d/h)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)  # (M, h, N, N_w)
        out = F.dropout(weights, mha.dropout, self.training) @ val  # (M, h, N, d/h)
        out = mha.out_proj(out.transpose(1, 2).reshape(M, N, d))  # (M, N, d)
        return out, weights.mean(1)
