"""Dynamic Bias Adjustment Routing, DBAR (paper Sec. 3.5, eq. 22-27).

Readings:

* eq. 22-23: ``F̄, Ē`` average the K groups, keeping frames: (B, N, d).
* eq. 24-25: ``B_f = tanh(MeanPool(F̄ U_f + Ē R_f + b_f))``. MeanPool runs over the N
  frames, so each gate is one d-vector per sample (the paper defines ``b_f ∈ R^d`` and calls
  the gates "thresholds" learned "from different video samples"); it scales every row of
  its half of M feature-wise.
* eq. 26: ``G = softmax([H_1; ...; H_K] W_g)``: each ``H_i`` (N x d) is mean-pooled over
  frames, ``W_g`` (d -> 1) scores it and the softmax runs over the K groups, giving one
  weight ``g_i`` per retrieval group ("assigns the weights of each triplet"). ``W_g`` has no
  bias: a shared bias cancels in a softmax over K.
* eq. 27: the sum printed as ``i = 0..K`` is read as ``i = 1..K`` (there are K groups,
  indexed from 1 in eq. 7-9): ``M = [B_f ⊙ Σ_i g_i F_i ; B_e ⊙ Σ_i g_i E_i]`` (2N x d). The
  halves are swapped for ``order="emotion_first"``.

Without the E half (EA off) ``B_f = tanh(MeanPool(F̄ U_f + b_f))``, and M is the F half
alone (N x d). With ``cfg.use_dbar`` off (BA ablation) there are no gates and no router:
``g = 1/K`` and M holds the plain group means.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
from torch import Tensor

from facenet_evc.models.config import FaceNetConfig


class DBAROutput(NamedTuple):
    m: Tensor  # (B, 2N, d) with an E half, (B, N, d) without: eq. 27
    g: Tensor  # (B, K) routing weights, eq. 26 (1/K with BA off); rows sum to 1
    b_f: Tensor | None  # (B, d) factual gate, eq. 24, in (-1, 1)
    b_e: Tensor | None  # (B, d) emotional gate, eq. 25
    e_sum: Tensor | None  # (B, N, d) Σ_i g_i E_i, input of the emotion classifier (eq. 31)


class DBAR(nn.Module):
    def __init__(self, cfg: FaceNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.use_dbar:
            d = cfg.d
            self.u_f = nn.Linear(d, d)  # U_f, its bias is b_f
            self.w_g = nn.Linear(d, 1, bias=False)  # W_g
            if cfg.use_pvea:
                self.r_f = nn.Linear(d, d, bias=False)  # R_f
                self.u_e = nn.Linear(d, d, bias=False)  # U_e
                self.r_e = nn.Linear(d, d)  # R_e, its bias is b_e

    def forward(self, f: Tensor, e: Tensor | None, h: Tensor) -> DBAROutput:
        """f, e, h: (B, K, N, d) factual semantics, emotional semantics (or None), FCUE hidden features."""
        B, K, N, d = f.shape
        if not self.cfg.use_dbar:
            g = f.new_full((B, K), 1.0 / K)
            f_sum, e_sum = f.mean(1), (e.mean(1) if e is not None else None)  # (B, N, d)
            return DBAROutput(self._stack(f_sum, e_sum), g, None, None, e_sum)

        f_bar = f.mean(1)  # (B, N, d), eq. 22
        pre_f = self.u_f(f_bar)  # (B, N, d)
        b_e = None
        if e is not None:
            e_bar = e.mean(1)  # (B, N, d), eq. 23
            pre_f = pre_f + self.r_f(e_bar)
            b_e = torch.tanh((self.u_e(f_bar) + self.r_e(e_bar)).mean(1))  # (B, d), eq. 25
        b_f = torch.tanh(pre_f.mean(1))  # (B, d), eq. 24

        g = torch.softmax(self.w_g(h.mean(2)).squeeze(-1), dim=-1)  # (B, K), eq. 26
        f_sum = (g[:, :, None, None] * f).sum(1)  # (B, N, d)
        e_sum = (g[:, :, None, None] * e).sum(1) if e is not None else None  # (B, N, d)
        f_half = b_f.unsqueeze(1) * f_sum  # (B, N, d)
        e_half = b_e.unsqueeze(1) * e_sum if e is not None else None
        return DBAROutput(self._stack(f_half, e_half), g, b_f, b_e, e_sum)

    def _stack(self, f_half: Tensor, e_half: Tensor | None) -> Tensor:
        if e_half is None:
            return f_half  # (B, N, d)
        halves = (f_half, e_half) if self.cfg.order == "fact_first" else (e_half, f_half)
        return torch.cat(halves, dim=1)  # (B, 2N, d), eq. 27
