"""Every knob of FACE-net in one dataclass, saved with each checkpoint.

Widths. The paper unifies all widths, ``d = d_V = d_T = d_E = 300`` (Sec. 4.1), so its
equations never project between them except through ``W_T`` (eq. 17). Here the inputs keep
the widths the feature stages produce (CLIP ViT-B/32 gives 512 for frames and text, the
packaged GloVe 50, the paper's GloVe 300) and are mapped to ``d`` at three places:

* frames ``V``: a linear ``d_v -> d`` before anything else (an identity when
  ``d_v == d``), added beyond the paper because every later equation adds or concatenates
  ``V`` with width-``d`` features (eq. 18, 20, 29); with ``frame_positions`` a learned
  embedding of each frame's index is added to it (see facenet.py: without it FACE-net
  sees a bag of frames); with ``motion_token`` the Q-Former also reads one token of the
  frames' change, its own ``d_v -> d`` projection;
* triplets: the paper's own ``W_T`` (eq. 17), ``d_t -> d``;
* the lexicon ``E_0``: the key/value projections of ``Attn_c`` (eq. 19) read width
  ``d_e`` and its output projection writes ``d``, so ``Ẽ_i`` is ``N x d`` rather than the
  printed ``N x d_E`` (the two agree when ``d_e == d``, the paper's setting).

Ablations. ``use_retrieval`` (RE), ``use_fcue`` (FC), ``self_refine``/``cross_refine``
(SR/CR, Table 4), ``use_pvea`` (EA), ``use_dbar`` (BA) follow Fig. 3 and Table 4;
``order`` is Table 5 (see :mod:`facenet_evc.models.facenet` for what it changes).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

# The one list of decoder kinds (the schema's model.decoder enum is checked against it by a test).
WORD_DECODERS = ("lstm", "transformer")  # own word vocabulary, float32 everywhere
LLM_DECODERS = ("t5", "opt")  # a Hugging Face LLM + LoRA, bf16 autocast on CUDA
DECODER_KINDS = WORD_DECODERS + LLM_DECODERS
ORDERS = ("fact_first", "emotion_first")
REFINE_READINGS = ("clip", "literal")


@dataclass
class FaceNetConfig:
    # widths and sizes (paper Sec. 4.1: d = 300, N = 16, K = 4, N_q = 32)
    d: int = 300
    d_v: int = 512
    d_t: int = 512
    d_e: int = 300
    n_frames: int = 16
    k: int = 4
    n_heads: int = 4
    ffn_mult: int = 4  # hidden width of eq. 18's FFN is ffn_mult * d
    dropout: float = 0.1
    n_queries: int = 32
    frame_positions: bool = True  # beyond the paper: learned frame-index embedding on V (facenet.py)
    motion_token: bool = False  # beyond the paper: a late-minus-early frame token for the Q-Former (facenet.py)

    # decoder: kind plus whatever create_decoder needs (checkpoint name, LoRA r/alpha, ...)
    decoder: str = "lstm"
    decoder_settings: dict[str, Any] = field(default_factory=dict)

    # ablation switches
    use_retrieval: bool = True
    use_fcue: bool = True
    self_refine: bool = True
    cross_refine: bool = True
    use_pvea: bool = True
    use_dbar: bool = True
    order: str = "fact_first"

    # FCUE details the paper leaves open (see fcue.py)
    refine_reading: str = "clip"  # "clip" (CLIP-scaled, responds to the input) or "literal" (as printed)
    refine_logit_scale: float = 100.0  # clip reading: initial s_SR / s_CR, CLIP's logit scale
    refine_learn_scale: bool = True  # clip reading: s_SR / s_CR are learned from that start
    refine_rescale: bool = True  # apply 3*alpha and K*theta so uniform weights are the identity
    entropy_temperature: float = 1.0  # literal reading: softmax(T / tau) in eq. 10; 1.0 is the paper
    sim_eps: float = 1e-6  # similarities are clamped to >= sim_eps before eq. 14

    # losses (eq. 30-32); the paper's EVC-MSVD values
    delta: float = 0.1
    lambda_e: float = 1.0
    lambda_cls: float = 0.1

    def __post_init__(self) -> None:
        for name in ("d", "d_v", "d_t", "d_e", "n_frames", "k", "n_heads", "ffn_mult", "n_queries"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"FaceNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d % self.n_heads:
            raise ValueError(f"FaceNetConfig.d={self.d} is not divisible by n_heads={self.n_heads}")
        if self.decoder not in DECODER_KINDS:
            raise ValueError(f"FaceNetConfig.decoder={self.decoder!r}: expected one of {DECODER_KINDS}")
        if self.order not in ORDERS:
            raise ValueError(f"FaceNetConfig.order={self.order!r}: expected one of {ORDERS}")
        if self.refine_reading not in REFINE_READINGS:
            raise ValueError(f"FaceNetConfig.refine_reading={self.refine_reading!r}: expected one of {REFINE_READINGS}")
        if not 1.0 <= self.refine_logit_scale <= 100.0:
            raise ValueError(f"FaceNetConfig.refine_logit_scale={self.refine_logit_scale} must lie in [1, 100]")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FaceNetConfig.dropout={self.dropout} must lie in [0, 1)")
        if self.entropy_temperature <= 0 or self.sim_eps <= 0:
            raise ValueError("FaceNetConfig.entropy_temperature and sim_eps must be > 0")
        if not isinstance(self.decoder_settings, dict):
            raise ValueError("FaceNetConfig.decoder_settings must be a dict")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (raises if ``decoder_settings`` holds something JSON cannot)."""
        out = asdict(self)
        json.dumps(out)  # fail here, not when the checkpoint is written
        return copy.deepcopy(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FaceNetConfig":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"FaceNetConfig.from_dict: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**copy.deepcopy(dict(data)))
