"""The one place every stage loads CLIP from (paper Sec. 3.2, eq. 1, 3, 4).

Models are created exactly as a user with released weights creates them,
``open_clip.create_model_and_transforms(name, pretrained=...)`` with ``pretrained`` an
open_clip tag (``ViT-B-32`` + ``openai``) or a local checkpoint file. The demo's tiny
architecture is not a special case: its config ``clip_configs/demo-tiny-rn.json`` ships with
the package and is registered with ``open_clip.add_model_config``, so
``create_model_and_transforms("demo-tiny-rn", pretrained="results/demo/clip/demo_clip.pt")``
goes through the same code path (and the same ``weights_only=True`` checkpoint loading).
Its text context is 24 tokens, not CLIP's 77: the demo's captions have at most 22 with the
start and end tokens, and a shorter context makes the demo CLIP's pre-training step 5% faster
(open_clip's tokenizer truncates anything longer, as it does at 77).

Besides the model, this module holds the demo's optional *temporal head*: a video-side
pooling ``mean + P(late - early)`` trained together with the demo CLIP (see
:mod:`facenet_evc.stages.clip_pretrain`). The paper's v̂ (eq. 3) is the plain mean; the head
is kept in a separate file beside the checkpoint so the checkpoint itself stays a pure
open_clip state dict.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEMO_MODEL = "demo-tiny-rn"
TEMPORAL_HEAD_FORMAT = "facenet_evc.temporal_head"
TEMPORAL_HEAD_VERSION = 1
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
_registered = False


def clip_config_dir() -> Path:
    """Folder of the open_clip model configs shipped with the package (``<name>.json``)."""
    return Path(str(resources.files("facenet_evc").joinpath("clip_configs")))


def register_package_configs() -> None:
    """Make the package's model configs (e.g. ``demo-tiny-rn``) known to open_clip.

    Idempotent: ``open_clip.add_model_config`` appends to a search list and rescans, so a
    second call would only repeat work.
    """
    global _registered
    if _registered:
        return
    import open_clip

    open_clip.add_model_config(clip_config_dir())
    _registered = True


def _looks_like_path(pretrained: str) -> bool:
    return os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)


def create_clip(name: str, pretrained: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """``open_clip.create_model_and_transforms(name, pretrained)``'s model, in eval mode.

    ``pretrained=None`` (or the strings ``"none"`` / ``""``, as a command line or a config
    passes it) gives a randomly initialised model (the demo's starting point).
    A ``pretrained`` that looks like a file path but does not exist raises
    :class:`FileNotFoundError` naming it (open_clip would report an unknown tag instead).
    """
    import open_clip

    register_package_configs()
    if name not in open_clip.list_models() and not name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(f"unknown CLIP model {name!r}; known: {', '.join(open_clip.list_models()[:8])}, ...")
    if pretrained is not None and str(pretrained).strip().lower() in ("", "none", "null"):
        pretrained = None
    if pretrained is not None:
        pretrained = str(pretrained)
        if _looks_like_path(pretrained) and not os.path.isfile(pretrained):
            raise FileNotFoundError(f"{pretrained}: CLIP checkpoint not found")
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    model.eval()
    return model


def load_clip(name: str, pretrained: str | None, device: str | torch.device = "cpu") -> tuple[nn.Module, int, Any]:
    """Load a CLIP model for feature extraction or retrieval (eq. 3-4).

    Args:
        name: open_clip architecture name (``ViT-B-32``, ``RN50``, ``demo-tiny-rn``, ...).
        pretrained: open_clip tag (``openai``) or a local checkpoint path; None: random init.
        device: torch device.

    Returns:
        ``(model, preprocess_size, tokenizer)``: the model in eval mode, the square input
        size its image tower expects, and ``open_clip.get_tokenizer(name)``.
    """
    import open_clip

    model = create_clip(name, pretrained, device)
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess_size(model), tokenizer


def preprocess_size(model: nn.Module) -> int:
    """Square input size of the model's image tower (from open_clip's preprocess config)."""
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", None))
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square CLIP input size {tuple(size)} is not supported")
        size = size[0]
    if size is None:
        raise ValueError("cannot determine the CLIP model's input size")
    return int(size)


def image_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CLIP's per-channel normalisation, from the model's preprocess config or open_clip defaults."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean", OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", OPENAI_DATASET_STD))
    return mean, std


def frames_to_tensor(
    frames: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 ``(N, S, S, 3)`` frames → normalised float ``(N, 3, S, S)`` CLIP input.

    The frames are already resized and centre-cropped (:func:`facenet_evc.data.video.resize_center_crop`),
    so only CLIP's ``ToTensor`` + ``Normalize`` remain; no PIL round trip.
    """
    x = torch.as_tensor(frames, device=device)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, S, S, 3) uint8 frames, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, S, S)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@torch.no_grad()
def encode_images(model: nn.Module, frames: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """CLIP image embeddings of uint8 frames ``(N, S, S, 3)`` → float32 ``(N, d)``.

    These are ``model.encode_image`` outputs, *not* L2-normalised: eq. 3 mean-pools the raw
    per-frame features, and eq. 5 normalises the pooled v̂ when comparing with text.
    ``S`` must equal :func:`preprocess_size`. ``batch_size`` bounds memory (None: one batch).
    """
    size = preprocess_size(model)
    if frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
        raise ValueError(f"expected frames of shape (N, {size}, {size}, 3), got {frames.shape}")
    mean, std = image_mean_std(model)
    device = next(model.parameters()).device
    step = batch_size or max(1, len(frames))
    out = []
    for i in range(0, len(frames), step):
        x = frames_to_tensor(frames[i : i + step], mean, std, device)  # (b, 3, S, S)
        # NHWC input lets oneDNN pick its faster convolution kernels (same values, other layout).
        x = x.contiguous(memory_format=torch.channels_last)
        out.append(model.encode_image(x).float().cpu())  # (b, d)
    if not out:
        return np.zeros((0, embed_dim(model)), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)  # (N, d)


@torch.no_grad()
def encode_text(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """CLIP text embeddings w_i (eq. 4), L2-normalised float32 ``(n, d)``."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[i : i + batch_size])).to(device)  # (b, L)
        out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())  # (b, d)
    if not out:
        return np.zeros((0, embed_dim(model)), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def embed_dim(model: nn.Module) -> int:
    """Dimension d of the joint CLIP embedding space."""
    if getattr(model, "text_projection", None) is not None:
        proj = model.text_projection
        return int(proj.shape[1] if isinstance(proj, torch.Tensor) else proj.out_features)
    return int(model.visual.output_dim)


# --------------------------------------------------------------------------- temporal head


class TemporalHead(nn.Module):
    """Order-aware video pooling: ``mean_i f_i + P(mean(late half) - mean(early half))``.

    The mean alone (eq. 3) is invariant to frame order, so it cannot tell "moves left" from
    "moves right" or "grows" from "shrinks"; the late-minus-early difference carries that
    direction. ``P`` is a small MLP whose last layer starts at zero, so an untrained head is
    exactly eq. 3's mean pooling.
    """

    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        if hidden > 0:
            self.proj: nn.Module = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            last = self.proj[-1]
        else:
            self.proj = nn.Linear(dim, dim)
            last = self.proj
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, frame_feats: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)`` per-frame CLIP features in temporal order → ``(B, d)`` video embedding."""
        n = frame_feats.shape[1]
        mean = frame_feats.mean(dim=1)  # (B, d)
        half = n // 2
        if half == 0:
            return mean
        # For odd N the middle frame belongs to neither half, keeping the two symmetric.
        delta = frame_feats[:, n - half :].mean(dim=1) - frame_feats[:, :half].mean(dim=1)  # (B, d)
        return mean + self.proj(delta)


def temporal_head_path(checkpoint: str | os.PathLike) -> Path:
    """Where the temporal head of a demo checkpoint lives: ``<ckpt stem>.temporal.pt`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".temporal.pt")


def temporal_head_state(head: TemporalHead) -> dict[str, Any]:
    """Serialisable form of a head: plain containers of tensors/ints/strings (``weights_only``-safe)."""
    return {
        "format": TEMPORAL_HEAD_FORMAT,
        "version": TEMPORAL_HEAD_VERSION,
        "dim": int(head.dim),
        "hidden": int(head.hidden),
        "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
    }


def load_temporal_head(path: str | os.PathLike, device: str | torch.device = "cpu") -> TemporalHead:
    """Load a head saved by :func:`temporal_head_state` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: temporal head file not found")
    blob = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != TEMPORAL_HEAD_FORMAT:
        raise ValueError(f"{path}: not a facenet_evc temporal head file")
    if blob.get("version") != TEMPORAL_HEAD_VERSION:
        raise ValueError(f"{path}: temporal head version {blob.get('version')} is not supported")
    head = TemporalHead(int(blob["dim"]), int(blob["hidden"]))
    head.load_state_dict(blob["state_dict"])
    return head.to(device).eval()
