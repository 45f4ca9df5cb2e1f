"""Factual Calibration via Uncertainty Estimation, FCUE (paper Sec. 3.3, eq. 10-18).

Two refinements weight the K retrieved triplets ``T (B, K, 3, d_T)`` before they meet the
video, then each triplet is fused with the frames.

Two readings of the refinements, chosen by ``cfg.refine_reading``; both keep the structure of
eq. 10-16 (an entropy over each part's softmax gives alpha, a probability of each triplet given
the video gives theta, ``T̄ = theta ⊙ (alpha ⊙ T)``).

``"literal"`` (the equations as printed, the previous default):

* SR (eq. 10-12): ``p = softmax(T_i^c / tau)`` over the embedding dimension with the paper's
  tau = 1 (``cfg.entropy_temperature``); ``H`` its entropy; ``alpha_c = H_c / sum_c H_c``.
  On a unit-norm CLIP text vector every entry is within a few hundredths of 0, so that
  softmax is uniform and alpha is 1/3 for every part (measured on the demo: 1/3 ± 1e-4).
* CR (eq. 14-15; 14 and 15 are garbled, numerator equal to denominator): ``p_i = s_i / sum_j
  s_j`` with ``s = clamp(sim, min=sim_eps)`` the sentence-level retrieval cosines ("its share
  of the total similarity mass"), and ``theta_i = -p_i log p_i / sum_j (-p_j log p_j)`` (each
  triplet's share of the retrieval entropy). Top-K cosines lie a few hundredths apart, so p
  and theta are 1/K ± 0.002: CR cannot suppress anything.

``"clip"`` (the default): the same equations with CLIP's own probabilities, so that alpha and
theta respond to the input.

* SR: ``p_i^c = softmax(s_SR · T_i^c / |T_i^c|)`` over the embedding dimension, with a scale taken from
  CLIP's logit scale (``cfg.refine_logit_scale``, 100 for every released CLIP) and learned from
  there (``cfg.refine_learn_scale``). CLIP compares unit vectors through ``logit_scale ×
  cosine``; a softmax over one unit vector at that scale is peaked on the dimensions the text
  activates most, and its entropy H_c tells a diffuse part (bare prompt, a generic "shape")
  from a concentrated one. Eq. 11-13 are unchanged. SR deliberately ignores the video (the
  paper: "SR only quantifies the semantic information within each triplet").
* CR: eq. 14 sums ``sim(V, w_j)`` over the words of a triplet, so the similarity is taken per
  part: ``s_i = mean_c cos(v̂, T_i^c)`` with v̂ the mean of the raw CLIP frame features (the
  retrieval query of eq. 3; frames and texts share CLIP's space, so ``d_v`` must equal ``d_t``).
  ``p(T_i | V) = softmax_i(s_CR · s_i)`` is how CLIP defines p(text | video), scale from CLIP's
  logit scale and learned like s_SR. ``theta_i = p(T_i | V)``: the triplet's share of the
  (CLIP-calibrated) similarity mass. Why not the entropy share of the literal reading here:
  ``-p log p`` peaks at p = 1/e, so a triplet the video clearly supports (p -> 1) would be
  *down*-weighted like an irrelevant one (p -> 0), the opposite of what Fig. 7 shows CR doing
  (keeping the relevant triplet, suppressing "rope"/"game"). The semantic entropy enters
  through the softmax scale: a learned s_CR sets how sharply the posterior, and with it
  theta, separates the triplets.

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

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from facenet_evc.models.config import FaceNetConfig


def self_refinement_weights(triplets: Tensor, temperature: float | Tensor = 1.0) -> Tensor:
    """Eq. 10-12: alpha = normalised entropies of softmax(T_i^c / temperature) over the embedding dim.

    triplets: (B, K, 3, d_T); temperature: a float or a 0-d tensor (1 / s_SR of the clip reading,
    differentiable). Returns alpha (B, K, 3), each row summing to 1.
    """
    logp = F.log_softmax(triplets.float() / temperature, dim=-1)  # (B, K, 3, d_T)
    entropy = -(logp.exp() * logp).sum(-1)  # (B, K, 3), eq. 11; > 0 unless a part is one-hot
    return entropy / entropy.sum(-1, keepdim=True).clamp_min(torch.finfo(entropy.dtype).tiny)


def cross_refinement_weights(sims: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 14-15, literal reading: theta_i = triplet i's share of the retrieval entropy.

    sims: (B, K) cosine similarities. Returns theta (B, K), each row summing to 1.
    """
    s = sims.float().clamp_min(eps)  # (B, K)
    p = s / s.sum(-1, keepdim=True)  # (B, K), eq. 14: share of the similarity mass
    h = -p * p.log()  # (B, K), per-triplet entropy terms
    total = h.sum(-1, keepdim=True)  # (B, 1)
    uniform = torch.full_like(h, 1.0 / h.shape[-1])
    # K = 1 (or all mass on one triplet) has zero entropy: nothing to re-weight
    return torch.where(total > 0, h / total.clamp_min(torch.finfo(h.dtype).tiny), uniform)


def part_similarities(video: Tensor, triplets: Tensor) -> Tensor:
    """cos(v̂, T_i^c) per part (eq. 14's sim(V, w_j)): video (B, d) raw mean frame feature, triplets (B, K, 3, d).

    Returns (B, K, 3).
    """
    v = F.normalize(video.float(), dim=-1)  # (B, d)
    t = F.normalize(triplets.float(), dim=-1)  # (B, K, 3, d)
    return torch.einsum("bd,bkcd->bkc", v, t)


def clip_cross_refinement_weights(part_sims: Tensor, scale: float | Tensor) -> Tensor:
    """Eq. 14-15, clip reading: theta_i = p(T_i | V) = softmax_i(scale * mean_c cos(v̂, T_i^c)).

    part_sims: (B, K, 3) from :func:`part_similarities`. Returns theta (B, K), rows summing to 1.
    """
    return torch.softmax(scale * part_sims.mean(-1), dim=-1)  # (B, K)


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
            if cfg.refine_reading == "clip" and (cfg.self_refine or cfg.cross_refine):
                if cfg.cross_refine and cfg.d_v != cfg.d_t:
                    raise ValueError(
                        f"refine_reading 'clip' compares frames with triplet parts in CLIP space: "
                        f"d_v={cfg.d_v} must equal d_t={cfg.d_t} (use refine_reading: literal otherwise)"
                    )
                # log of s_SR / s_CR, initialised at CLIP's logit scale (module docstring)
                log_scale = torch.full((2,), math.log(cfg.refine_logit_scale))
                if cfg.refine_learn_scale:
                    self.log_refine_scale = nn.Parameter(log_scale)
                else:
                    self.register_buffer("log_refine_scale", log_scale)

    def refine_weights(self, triplets: Tensor, sims: Tensor, video: Tensor | None) -> tuple[Tensor, Tensor]:
        """alpha (B, K, 3) (eq. 12) and theta (B, K) (eq. 15) under ``cfg.refine_reading``; ones when off."""
        cfg = self.cfg
        B, K = triplets.shape[:2]
        alpha, theta = triplets.new_ones(B, K, 3), triplets.new_ones(B, K)
        if cfg.refine_reading == "literal" or not (cfg.self_refine or cfg.cross_refine):
            if cfg.self_refine:
                alpha = self_refinement_weights(triplets, cfg.entropy_temperature)
            if cfg.cross_refine:
                theta = cross_refinement_weights(sims, cfg.sim_eps)
            return alpha, theta
        # s_SR, s_CR >= 1; no upper clamp, so a scale that starts at CLIP's 100 can also grow
        scale = self.log_refine_scale.clamp_min(0.0).exp()  # (2,)
        if cfg.self_refine:
            # on the unit sphere, as CLIP compares texts (the triplet stage stores unit vectors already)
            alpha = self_refinement_weights(F.normalize(triplets.float(), dim=-1), 1.0 / scale[0])
        if cfg.cross_refine:
            if video is None:
                raise ValueError("refine_reading 'clip' needs the raw mean frame feature v̂ (video=...)")
            theta = clip_cross_refinement_weights(part_similarities(video, triplets), scale[1])
        return alpha, theta

    def forward(self, stream: Tensor, triplets: Tensor, sims: Tensor, video: Tensor | None = None) -> FCUEOutput:
        """stream: (B, N, d) projected frames V; triplets: (B, K, 3, d_T); sims: (B, K); video: (B, d_v) v̂."""
        cfg = self.cfg
        B, N, d = stream.shape
        K = triplets.shape[1]
        if not cfg.use_fcue:
            t_mean = self.w_t(triplets).mean(2)  # (B, K, d)
            h = t_mean.unsqueeze(2).expand(B, K, N, d)  # (B, K, N, d)
            return FCUEOutput(stream.unsqueeze(1) + h, h, None, None)

        alpha, theta = self.refine_weights(triplets, sims, video)  # (B, K, 3), (B, K)
        a_scale = 3.0 if (cfg.self_refine and cfg.refine_rescale) else 1.0
        t_scale = float(K) if (cfg.cross_refine and cfg.refine_rescale) else 1.0
        t_bar = triplets * (a_scale * alpha).unsqueeze(-1)  # (B, K, 3, d_T), eq. 13
        t_bar = t_bar * (t_scale * theta)[:, :, None, None]  # (B, K, 3, d_T), eq. 16

        tokens = self.w_t(t_bar).reshape(B * K, 3, d)  # (B*K, 3, d): T̄_i W_T
        v = stream.unsqueeze(1).expand(B, K, N, d).reshape(B * K, N, d)  # (B*K, N, d)
        h, _ = self.attn_f(v, tokens, tokens, need_weights=False)  # (B*K, N, d), eq. 17
        f = self.ln(self.ffn(torch.cat([v, h], dim=-1)) + v)  # (B*K, N, d), eq. 18
        return FCUEOutput(f.view(B, K, N, d), h.view(B, K, N, d), alpha, theta)
