"""FACE-net: FCUE -> PVEA -> DBAR -> Q-Former -> decoder (paper Fig. 2, Sec. 3.3-3.5).

Batch (all float32): ``frames`` (B, N, d_v) CLIP frame features V; ``triplets``
(B, K, 3, d_T) CLIP embeddings of the S, P, O of the K retrieved captions (eq. 8-9);
``sims`` (B, K) their retrieval cosines (eq. 5); for training also ``emotion_targets``
(B, C) multi-hot and either ``target_weights`` (B, L) (``1 + delta`` on emotion tokens, from
the decoder's ``encode_targets(captions, lexicon_words, cfg.delta)`` or
:func:`~facenet_evc.models.losses.emotion_token_weights`) or ``emotion_mask`` (B, L) 0/1,
turned into ``1 + cfg.delta * mask`` here. Without either, L_e is plain CE.

Decoder contract (:mod:`facenet_evc.models.decoders`, built by ``create_decoder`` and
passed in): ``d_model`` (the Q-Former's output width), ``pad_id`` (target positions equal
to it are ignored; -100 when absent), ``forward(memory (B, N_q, d_model), targets (B, L),
target_weights (B, L) | None)`` returning the logits (B, L, V) or a dict holding them under
``"logits"``, with ``logits[:, t]`` scoring ``targets[:, t]`` (start token and shift inside
the decoder), and ``generate(memory, num_beams, max_len) -> list[list[int]]``. L_e is
recomputed here from the logits (:func:`~facenet_evc.models.losses.emotion_weighted_ce`,
the same normalisation as the decoders' own ``weighted_token_nll``), so a decoder's
``"loss"`` entry is not needed.

Ablation switches (paper Fig. 3, Tables 4-5):

* RE off: no retrieval; the Q-Former reads ``[V]`` only and FC/EA/BA are not built.
* FC off: ``F_i = V + mean_c(T_i W_T)``, no refinement, no attention (fcue.py).
* SR / CR off: alpha / theta are ones (fcue.py).
* EA off: no E half in M and no emotion classifier, so L_cls is absent (eq. 31 classifies
  the augmented emotions, which do not exist then).
* BA off: plain means over groups, no gates, no router (dbar.py).

``order`` (Table 5, "E-first and F-first stand for emotion augmentation-first and factual
calibration-first"). The Q-Former's cross-attention has no positions, so merely swapping
the halves of M leaves M̄, and hence the captions, unchanged (qformer.py); the reading
implemented is that the modules run in the other order, each conditioning the other:

* ``fact_first`` (the paper's model): ``F_i = FCUE(V, T_i)``; ``E_i = PVEA(F_i, V)``;
  ``M = [F-half; E-half]``.
* ``emotion_first``: emotions are mined from the video alone, ``E = PVEA(F := V, V)``
  (one ``N x d`` map, shared by all groups), then the facts are calibrated on the
  emotion-augmented video, ``F_i = FCUE(V + E, T_i)`` (its query and residual stream is
  ``V + E``; E alone would drop the frames' content from F). ``M = [E-half; F-half]``.

Frame order (``frame_positions``, beyond the paper). CLIP encodes every frame on its own and
nothing from eq. 10 to eq. 29 carries a position: attention over frames is invariant to
their order, so the printed model reads the video as a bag of frames and cannot tell
"moves left" from "moves right", "grows" from "shrinks" or "falls" from "rises" (measured on
the previous demo, without positions: 13% of test captions named the right action, against
31% for the top-1 retrieved caption, whose CLIP video embedding sees the order; with them the
current demo's captions name it for 18-29% of the test videos, retrieval 29-32%, so the
positions alone do not close that gap). Video Q-Formers (Video-LLaMA,
Video-BLIP2) add a learned frame position embedding to the frame features for this reason,
and so does this implementation, once, right after ``v_proj``: ``V <- V W_V + P`` with
``P`` (N, d) learned and started at zero, so every module sees the same ordered frames. The
CR similarity of the clip reading still uses the raw CLIP mean v̂ (eq. 3), which positions
would only distort. ``frame_positions: false`` gives the printed model.

Frame motion (``motion_token``, beyond the paper; off in the model's defaults and the real
datasets' configs, which follow the paper; on in the demo). Positions make the order
visible, but the encoder still has to learn to subtract early frames from late ones through
attention, which averages. On the demo it did not: a linear probe on the frame features
(mean, late-minus-early, std) read the action of 61-94% of the test videos, the same probe
on a trained FACE-net's memory 24-30% (``bench/demo_probe.py --model``), while colour and
mood passed through intact. The learned positions stay near zero (norm ~1 per frame against
~50 for ``V W_V``). With ``motion_token`` the Q-Former's input gets one more token,
``W_m (mean of the last third of the frames - mean of the first third)`` on the raw CLIP
frames, so eq. 29 reads ``[M; V; m]``. Measured before it became the demo's default, with a
CLIP pretrained for 900 steps (seed 7, probe 94%), over training seeds 0-2: the captions
named the right action for 63-68% of the test videos and CIDEr was 61.4-65.7 (seed 0
without the token: 22.5%, 46.0), so FACE-net - retrieval on CIDEr went from -8.3
[-13.0, -3.4] to +7.1 to +11.4, every interval above zero. The demo's ablation table over
3 seeds (README, variant ``no_motion_token``) measures it on the current demo.

The emotion classifier (eq. 31) is one linear layer on ``Σ_i g_i E_i`` mean-pooled over
frames ("a simple classification header for the weighted sum E of augmented emotion
E_i"); its logits are over the C lexicon categories.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
from torch import Tensor

from facenet_evc.models.config import FaceNetConfig
from facenet_evc.models.dbar import DBAR
from facenet_evc.models.fcue import FCUE
from facenet_evc.models.losses import emotion_cls_loss, emotion_weighted_ce, total_loss
from facenet_evc.models.pvea import PVEA
from facenet_evc.models.qformer import QFormer


class FaceNet(nn.Module):
    def __init__(
        self, cfg: FaceNetConfig, lexicon_vectors: Tensor, word_category: Tensor, decoder: nn.Module
    ) -> None:
        super().__init__()
        lexicon_vectors = torch.as_tensor(lexicon_vectors, dtype=torch.float32)
        word_category = torch.as_tensor(word_category, dtype=torch.float32)
        if lexicon_vectors.dim() != 2 or lexicon_vectors.shape[1] != cfg.d_e:
            raise ValueError(f"lexicon_vectors must be (N_w, d_e={cfg.d_e}), got {tuple(lexicon_vectors.shape)}")
        if word_category.dim() != 2 or word_category.shape[0] != lexicon_vectors.shape[0]:
            raise ValueError(
                f"word_category must be (N_w={lexicon_vectors.shape[0]}, C), got {tuple(word_category.shape)}"
            )
        if not isinstance(getattr(decoder, "d_model", None), int):
            raise ValueError("decoder must expose an int d_model (the Q-Former's output width)")
        self.cfg = cfg
        self.register_buffer("lexicon", lexicon_vectors.clone())  # (N_w, d_e) E_0, eq. 2, frozen
        self.register_buffer("word_category", word_category.clone())  # (N_w, C)
        n_categories = word_category.shape[1]

        # beyond the paper (d_V = d there): frames to the common width, see config.py
        self.v_proj = nn.Linear(cfg.d_v, cfg.d) if cfg.d_v != cfg.d else nn.Identity()
        # beyond the paper: the frames' order, see "Frame order" above
        self.frame_pos = nn.Parameter(torch.zeros(cfg.n_frames, cfg.d)) if cfg.frame_positions else None  # (N, d)
        self.motion_proj = nn.Linear(cfg.d_v, cfg.d) if cfg.motion_token else None  # W_m
        emotions = cfg.use_retrieval and cfg.use_pvea
        self.fcue = FCUE(cfg) if cfg.use_retrieval else None
        self.pvea = PVEA(cfg) if emotions else None
        self.dbar = DBAR(cfg) if cfg.use_retrieval else None
        self.cls_head = nn.Linear(cfg.d, n_categories) if emotions else None
        self.qformer = QFormer(cfg, decoder.d_model)
        self.decoder = decoder

    @property
    def pad_id(self) -> int:
        pad = getattr(self.decoder, "pad_id", None)
        return -100 if pad is None else int(pad)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser gets: every FACE-net parameter plus the decoder's trainable ones
        (its ``trainable_parameters()`` when it has one, e.g. LoRA only for a frozen LLM)."""
        own = [p for n, p in self.named_parameters() if not n.startswith("decoder.") and p.requires_grad]
        dec = getattr(self.decoder, "trainable_parameters", None)
        return own + (list(dec()) if callable(dec) else [p for p in self.decoder.parameters() if p.requires_grad])

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def encode(self, batch: Mapping[str, Tensor]) -> dict[str, Any]:
        """Everything up to the decoder: memory M̄ (B, N_q, d_model), emotion logits, M, explain."""
        cfg = self.cfg
        frames = batch["frames"]
        B, N, _ = frames.shape
        if N != cfg.n_frames:
            raise ValueError(f"frames has N={N} frames, config says n_frames={cfg.n_frames}")
        v = self.v_proj(frames)  # (B, N, d)
        if self.frame_pos is not None:
            v = v + self.frame_pos  # (B, N, d)
        motion = [] if self.motion_proj is None else [self.motion_token(frames)]  # [(B, 1, d)] or []
        if not cfg.use_retrieval:
            return {"memory": self.qformer(torch.cat([v, *motion], dim=1)), "emotion_logits": None, "m": None,
                    "explain": {}}

        triplets, sims = batch["triplets"], batch["sims"]  # (B, K, 3, d_T), (B, K)
        K = triplets.shape[1]
        if K != cfg.k or sims.shape != (B, K):
            raise ValueError(f"triplets {tuple(triplets.shape)} / sims {tuple(sims.shape)} do not match k={cfg.k}")

        video = frames.mean(1)  # (B, d_v): v̂ of eq. 3, the retrieval query (clip reading of CR)
        e = lex_attn = None
        if self.pvea is not None and cfg.order == "emotion_first":
            pv = self.pvea(v.unsqueeze(1), v, self.lexicon)  # E from the video alone: (B, 1, N, d)
            fc = self.fcue(v + pv.e[:, 0], triplets, sims, video)
            e = pv.e.expand(B, K, N, cfg.d)  # (B, K, N, d), the same E for every group
            lex_attn = pv.lexicon_attn.expand(B, K, N, -1)  # (B, K, N, N_w)
        else:
            fc = self.fcue(v, triplets, sims, video)  # F_i, H_i: (B, K, N, d)
            if self.pvea is not None:
                pv = self.pvea(fc.f, v, self.lexicon)
                e, lex_attn = pv.e, pv.lexicon_attn  # (B, K, N, d), (B, K, N, N_w)
        db = self.dbar(fc.f, e, fc.h)  # M: (B, 2N, d), or (B, N, d) without E
        memory = self.qformer(torch.cat([db.m, v, *motion], dim=1))  # (B, N_q, d_model), eq. 29 on [M; V] (+ m)
        emotion_logits = self.cls_head(db.e_sum.mean(1)) if self.cls_head is not None else None  # (B, C)

        def keep(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.detach()

        explain = {
            "alpha": keep(fc.alpha),  # (B, K, 3)
            "theta": keep(fc.theta),  # (B, K)
            "g": keep(db.g),  # (B, K)
            "b_f": keep(db.b_f),  # (B, d)
            "b_e": keep(db.b_e),  # (B, d)
            "lexicon_attn": keep(lex_attn),  # (B, K, N, N_w)
            # attention mass per category; a word in two categories counts for both
            "category_attn": None if lex_attn is None else lex_attn.detach() @ self.word_category,  # (B, K, N, C)
        }
        return {"memory": memory, "emotion_logits": emotion_logits, "m": db.m, "explain": explain}

    def motion_token(self, frames: Tensor) -> Tensor:
        """(B, N, d_v) raw CLIP frames -> (B, 1, d): ``W_m`` of the last third's mean minus the first third's."""
        third = max(1, frames.shape[1] // 3)
        change = frames[:, -third:].mean(1) - frames[:, :third].mean(1)  # (B, d_v)
        return self.motion_proj(change).unsqueeze(1)  # (B, 1, d)

    def token_weights(self, batch: Mapping[str, Tensor], targets: Tensor) -> Tensor | None:
        """Eq. 30 weights (B, L) from ``target_weights`` or ``emotion_mask``; None if neither is given."""
        if "target_weights" in batch:
            return batch["target_weights"].to(targets.device, torch.float32)
        if "emotion_mask" in batch:
            return 1.0 + self.cfg.delta * batch["emotion_mask"].to(targets.device, torch.float32)
        return None

    def forward(self, batch: Mapping[str, Tensor], targets: Tensor | None = None) -> dict[str, Any]:
        """Encode and, with ``targets`` (B, L), teacher-force the decoder and compute eq. 30-32.

        Returns memory, emotion_logits, m, explain, and logits / loss / loss_e / loss_cls
        (None without targets; loss_cls None when there is no emotion branch or no
        ``emotion_targets`` in the batch).
        """
        out = self.encode(batch)
        out.update(logits=None, loss=None, loss_e=None, loss_cls=None)
        if targets is None:
            return out
        weights = self.token_weights(batch, targets)
        dec_out = self.decoder(out["memory"], targets, weights)
        logits = dec_out["logits"] if isinstance(dec_out, Mapping) else dec_out  # (B, L, V)
        loss_e = emotion_weighted_ce(logits, targets, weights, self.pad_id)
        loss_cls = None
        if out["emotion_logits"] is not None and "emotion_targets" in batch:
            loss_cls = emotion_cls_loss(out["emotion_logits"], batch["emotion_targets"])
        out.update(
            logits=logits,
            loss_e=loss_e,
            loss_cls=loss_cls,
            loss=total_loss(loss_e, loss_cls, self.cfg.lambda_e, self.cfg.lambda_cls),
        )
        return out

    @torch.no_grad()
    def generate(self, batch: Mapping[str, Tensor], num_beams: int = 5, max_len: int = 15) -> list[list[int]]:
        """Caption token ids per sample (paper: beam 5, length 15)."""
        return self.decoder.generate(self.encode(batch)["memory"], num_beams=num_beams, max_len=max_len)
