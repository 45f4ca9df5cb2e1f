"""Factual Calibration via Uncertainty Estimation, FCUE (paper Sec. 3.3, eq. 10-18).

Two refinements weight the K retrieved triplets ``T (B, K, 3, d_T)`` before they meet the
video, then each triplet is fused with the frames.

Self-refinement (eq. 10-13), as printed: ``p = softmax`` over the embedding dimension of
each part S, P, O; ``H`` its entropy; ``alpha_c = H_c / sum_c H_c``; ``T' = alpha ⊙ T``.

Cross-refinement (eq. 14-16). Eq. 14 and 15 are garbled (numerator equals denominator). The
text says ``p(T_i|V)`` reflects "its share of the total similarity mass" and that CR uses
"the semantic entropy operation", so the reading implemented is

* ``p_i = s_i / sum_j s_j`` with ``s = clamp(sim, min=sim_eps)``: a ratio, not a
  softmax, because the text names a share of the mass. A softmax of cosine similarities at
  temperature 1 would flatten top-K scores (typically 0.2-0.4 apart by a few hundredths)
  to almost exactly 1/K, and would need a temperature the paper never mentions. The clamp
  keeps a (rare) negative cosine from giving a negative probability;
* ``theta_i = -p_i log p_i / sum_j (-p_j log p_j)``: each triplet's share of the
  retrieval entropy, mirroring eq. 12 one level up (K = 1 has zero entropy; theta is then 1);
* ``T̄ = theta ⊙ T'`` (eq. 16).

Scale. ``alpha`` sums to 1 over 3 parts and ``theta`` to 1 over K groups, so taken
literally SR shrinks ``T`` by ~3 and CR by ~K, and switching either on in an ablation would
also change the input scale. With ``cfg.refine_rescale`` (default) the applied factors are
``3 * alpha`` and ``K * theta``: uniform weights then leave ``T`` unchanged, exactly as a
switched-off refinement (weights of 1) does. The returned ``alpha``/``theta`` are always the
normalised eq. 12/15 values (rows summing to 1), or ones when the refinement is off.

Fusion (eq. 17-18). "[T̄_i; W_T]" is read as the projected triplet tokens ``T̄_i W_T``
(3 tokens of width d; ``W_T`` is defined right below the equation as the projection into
V's space), so ``H_i = Attn_f(Q = V, K = V = T̄_i W_T)`` gives one ``N x d`` map per group.
``F_i = LayerNorm(FFN([V; H_i]) + V)`` concatenates on the feature axis (2d) and the FFN maps
back to d.

With ``cfg.use_fcue`` off (FC ablation) there is no refinement and no attention: the
triplet's projected parts are mean-pooled and added to every frame, ``F_i = V + mean_c(T_i
W_T)``, and ``H_i`` (the router's input, eq. 26) is that projected mean broadcast over frames.

``stream`` is the query/residual sequence: ``V`` in the paper's fact-first order, the
emotion-augmented video in the emotion-first variant (see facenet.py).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from facenet_evc.models.config import FaceNetConfig


def self_refinement_weights(triplets: Tensor, temperature: float = 1.0) -> Tensor:
    """Eq. 10-12: alpha = normalised entropies of softmax(T_i^c) over the embedding dim.

    triplets: (B, K, 3, d_T). Returns alpha (B, K, 3), each row summing to 1.
    """
    logp = F.log_softmax(triplets.float() / temperature, dim=-1)  # (B, K, 3, d_T)
    entropy = -(logp.exp() * logp).sum(-1)  # (B, K, 3), eq. 11; > 0 unless a part is one-hot
    return entropy / entropy.sum(-1, keepdim=True).clamp_min(torch.finfo(entropy.dtype).tiny)


def cross_refinement_weights(sims: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 14-15 (reading in the module docstring): theta_i = triplet i's share of the retrieval entropy.

    sims: (B, K) cosine similarities. Returns theta (B, K), each row summing to 1.
    """
    s = sims.float().clamp_min(eps)  # (B, K)
    p = s / s.sum(-1, keepdim=True)  # (B, K), eq. 14: share of the similarity mass
    h = -p * p.log()  # (B, K), per-triplet entropy terms
    total = h.sum(-1, keepdim=True)  # (B, 1)
    uniform = torch.full_like(h, 1.0 / h.shape[-1])
    # K = 1 (or all mass on one triplet) has zero entropy: nothing to re-weight
    return torch.where(total > 0, h / total.clamp_min(torch.finfo(h.dtype).tiny), uniform)


class FCUEOutput(NamedTuple):
    f: Tensor  # (B, K, N, d) factual semantics F_i, eq. 18
    h: Tensor  # (B, K, N, d) hidden features H_i, eq. 17 (router input, eq. 26)
    alpha: Tensor | None  # (B, K, 3) eq. 12, ones if SR off; None if FC off
    theta: Tensor | None  # (B, K) eq. 15, ones if CR off; None if FC off


class FCUE(nn.Module):
    def __init__(self, cfg: FaceNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.w_t = nn.Linear(cfg.d_t, cfg.d, bias=False)  # W_T of eq. 17
        if cfg.use_fcue:
            self.attn_f = nn.MultiheadAttention(cfg.d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
            self.ffn = nn.Sequential(
                nn.Linear(2 * cfg.d, cfg.ffn_mult * cfg.d),
                nn.GELU(),
                nn.Linear(cfg.ffn_mult * cfg.d, cfg.d),
                nn.Dropout(cfg.dropout),
            )
            self.ln = nn.LayerNorm(cfg.d)

    def forward(self, stream: Tensor, triplets: Tensor, sims: Tensor) -> FCUEOutput:
        """stream: (B, N, d) projected frames V; triplets: (B, K, 3, d_T); sims: (B, K)."""
        cfg = self.cfg
        B, N, d = stream.shape
        K = triplets.shape[1]
        if not cfg.use_fcue:
            t_mean = self.w_t(triplets).mean(2)  # (B, K, d)
            h = t_mean.unsqueeze(2).expand(B, K, N, d)  # (B, K, N, d)
            return FCUEOutput(stream.unsqueeze(1) + h, h, None, None)

        ones3 = triplets.new_ones(B, K, 3)
        alpha = self_refinement_weights(triplets, cfg.entropy_temperature) if cfg.self_refine else ones3
        theta = cross_refinement_weights(sims, cfg.sim_eps) if cfg.cross_refine else triplets.new_ones(B, K)
        a_scale = 3.0 if (cfg.self_refine and cfg.refine_rescale) else 1.0
        t_scale = float(K) if (cfg.cross_refine and cfg.refine_rescale) else 1.0
        t_bar = triplets * (a_scale * alpha).unsqueeze(-1)  # (B, K, 3, d_T), eq. 13
        t_bar = t_bar * (t_scale * theta)[:, :, None, None]  # (B, K, 3, d_T), eq. 16

        tokens = self.w_t(t_bar).reshape(B * K, 3, d)  # (B*K, 3, d): T̄_i W_T
        v = stream.unsqueeze(1).expand(B, K, N, d).reshape(B * K, N, d)  # (B*K, N, d)
        h, _ = self.attn_f(v, tokens, tokens, need_weights=False)  # (B*K, N, d), eq. 17
        f = self.ln(self.ffn(torch.cat([v, h], dim=-1)) + v)  # (B*K, N, d), eq. 18
        return FCUEOutput(f.view(B, K, N, d), h.view(B, K, N, d), alpha, theta)
