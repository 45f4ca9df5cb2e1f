"""Where and how the model runs: device choice, autocast, seeding and deterministic kernels.

Every command that runs FACE-net (train, predict, caption, efficiency, explain) takes these
decisions here, so that they are the same everywhere:

* :func:`resolve_device`: ``auto`` is CUDA when present, else the CPU; asking for CUDA
  without it is an error, not a silent fallback;
* :func:`autocast_for`: bf16 autocast for the LLM decoders on CUDA only; the word decoders
  stay float32 (a resumed run must reproduce the uninterrupted one bit for bit);
* :func:`seed_everything`: python, numpy and torch (every CUDA device too) from one seed;
* :func:`deterministic`: deterministic kernels for the duration of a block (warn-only on CUDA,
  where some kernels have no deterministic variant), the previous settings restored after.
"""
from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from facenet_evc.errors import SetupError
from facenet_evc.models.config import LLM_DECODERS, FaceNetConfig


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def autocast_for(cfg: FaceNetConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the LLM decoders on CUDA only; the word decoders stay float32 (exact resume)."""
    if device.type == "cuda" and cfg.decoder in LLM_DECODERS:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels for the duration of the block; the process' previous settings restored after."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
