"""Training checkpoints that resume bit-exactly and survive a kill at any moment.

A checkpoint is a directory of three files:

* ``model.safetensors`` — FACE-net's own parameters and buffers plus the decoder's
  *trainable* tensors (``trainable_state_dict()``: all of an LSTM / Transformer, only the
  LoRA adapter of a frozen LLM, whose base weights are reloaded from ``pretrained``);
* ``state.pt`` — optimizer and scheduler state, the RNG states (torch CPU and every CUDA
  device, numpy, python) and the data position (step, epoch, samples consumed of the epoch's
  permutation), best metric so far. Only tensors and plain Python values, so it loads with
  ``torch.load(..., weights_only=True)`` (numpy / python RNG states are turned into int64
  tensors and lists for that);
* ``meta.json`` — FaceNetConfig, TrainConfig and Vocab dicts, the lexicon words, step and
  metrics: what inference needs to rebuild the model, readable without torch.

Atomicity: the directory is written under ``.<name>.tmp-*`` beside its destination and
renamed into place. A directory cannot be atomically replaced by another on POSIX, so the
previous one is first renamed to ``.<name>.old`` and removed after the new one is in place;
:func:`resolve_checkpoint` puts ``.<name>.old`` back when a kill fell between the two renames.
Hence at every instant one complete checkpoint exists.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from facenet_evc.io import atomic_dir, atomic_path, old_dir

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is incomplete or does not fit the model being trained."""


@dataclass
class TrainState:
    """Where training stands; everything besides weights, optimizer and RNG needed to resume."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the next batch
    pos: int = 0  # samples of this epoch's permutation already consumed
    best_metric: float = -math.inf  # best validation CFS so far
    best_step: int = -1
    metrics: dict[str, float] = field(default_factory=dict)  # last validation metrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainState":
        return cls(step=int(d["step"]), epoch=int(d["epoch"]), pos=int(d["pos"]),
                   best_metric=float(d["best_metric"]), best_step=int(d["best_step"]),
                   metrics={k: float(v) for k, v in dict(d.get("metrics", {})).items()})


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """All RNG states as tensors and plain values (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`. CUDA states are restored when the device count matches."""
    torch.set_rng_state(rng["torch"].cpu())
    cuda = list(rng.get("cuda", []))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))


# --------------------------------------------------------------------------- model tensors


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """FACE-net's tensors plus the decoder's trainable ones (``decoder.``-prefixed), on CPU."""
    out = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder.")}
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        fn = getattr(decoder, "trainable_state_dict", None)
        dec = fn() if callable(fn) else decoder.state_dict()
        out.update({f"decoder.{k}": v for k, v in dec.items()})
    # safetensors refuses shared or strided storage: give every tensor its own contiguous copy
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def load_model_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load :func:`checkpoint_state_dict` tensors; only frozen decoder tensors may be absent."""
    # torch reports a shape mismatch as a RuntimeError listing every tensor; name the file and
    # the cause (a model built from another config) instead.
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in tensors.items() if k in own and own[k].shape != v.shape]
    if wrong:
        detail = ", ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:4])
        raise CheckpointError(f"{source}: {len(wrong)} tensor(s) have other shapes than in the model ({detail}"
                              f"{', ...' if len(wrong) > 4 else ''}): the checkpoint comes from a model of another "
                              f"configuration; build the model from the checkpoint's meta.json model_config")
    missing, unexpected = model.load_state_dict(dict(tensors), strict=False)
    if unexpected:
        raise CheckpointError(f"{source}: tensors the model does not have: {sorted(unexpected)[:10]}")
    decoder = getattr(model, "decoder", None)
    trainable = {f"decoder.{n}" for n, p in decoder.named_parameters() if p.requires_grad} if decoder else set()
    bad = [k for k in missing if not k.startswith("decoder.") or k in trainable]
    if bad:
        raise CheckpointError(f"{source}: tensors missing from the checkpoint: {sorted(bad)[:10]}")


# --------------------------------------------------------------------------- config comparison


def config_diff(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (nested) config dicts."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(name)
            else:
                out.extend(config_diff(saved[key], current[key], name))
        return out
    # JSON turns tuples into lists; compare through JSON so a round trip is not a difference
    return [] if json.dumps(saved, sort_keys=True) == json.dumps(current, sort_keys=True) else [prefix or "<root>"]


def check_model_config(saved: Mapping[str, Any], current: Mapping[str, Any], source: str) -> None:
    diff = config_diff(saved, current)
    if diff:
        details = ", ".join(f"{k}: checkpoint {_get(saved, k)!r} vs current {_get(current, k)!r}" for k in diff[:8])
        raise CheckpointError(f"{source}: the checkpoint's model config differs from the current one in {diff} "
                              f"({details}); use another output folder or the checkpoint's config")


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping) or part not in d:
            return "<absent>"
        d = d[part]
    return d


# --------------------------------------------------------------------------- save / load


def resolve_checkpoint(path: str | os.PathLike) -> Path | None:
    """``path`` if it holds a complete checkpoint (after undoing a half-done replacement), else None."""
    path = Path(path)
    old = old_dir(path)
    if not path.exists() and (old / META_FILE).is_file():
        os.replace(old, path)  # killed between "path -> old" and "tmp -> path": the old one is valid
    if all((path / f).is_file() for f in (MODEL_FILE, STATE_FILE, META_FILE)):
        return path
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    state: TrainState,
    model_config: Mapping[str, Any],
    train_config: Mapping[str, Any] | None = None,
    vocab: Mapping[str, Any] | None = None,
    lexicon_words: list[str] | None = None,
    rng: Mapping[str, Any] | None = None,
) -> Path:
    """Write the checkpoint directory ``path`` atomically (see module docstring).

    ``rng`` defaults to the current RNG states (:func:`capture_rng`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    resolve_checkpoint(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_dir(path) as tmp:
        with atomic_path(tmp / MODEL_FILE) as p:
            save_file(checkpoint_state_dict(model), str(p), metadata={"format": "facenet-evc", "step": str(state.step)})
        payload = {
            "format_version": FORMAT_VERSION,
            "train_state": state.to_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": dict(rng) if rng is not None else capture_rng(),
        }
        with atomic_path(tmp / STATE_FILE) as p:
            torch.save(payload, p)
        meta = {
            "format_version": FORMAT_VERSION,
            "step": state.step,
            "epoch": state.epoch,
            "metrics": state.metrics,
            "best_metric": state.best_metric if math.isfinite(state.best_metric) else None,
            "best_step": state.best_step,
            "model_config": dict(model_config),
            "train_config": None if train_config is None else dict(train_config),
            "vocab": None if vocab is None else dict(vocab),
            "lexicon_words": lexicon_words,
            "torch_version": torch.__version__,
        }
        with atomic_path(tmp / META_FILE) as p:
            p.write_text(json.dumps(meta, indent=1, allow_nan=True) + "\n", encoding="utf-8")
        for f in (MODEL_FILE, STATE_FILE, META_FILE):
            _fsync(tmp / f)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``meta.json`` of a checkpoint directory (raises naming the path when there is none)."""
    found = resolve_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path}: not a complete checkpoint (needs {MODEL_FILE}, {STATE_FILE}, {META_FILE})")
    return json.loads((found / META_FILE).read_text(encoding="utf-8"))


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    expected_model_config: Mapping[str, Any] | None = None,
    restore_rng_state: bool = False,
) -> tuple[TrainState, dict[str, Any]]:
    """Load what is given (weights into ``model``, ``optimizer``, ``scheduler``, RNG) from ``path``.

    ``expected_model_config``: the current FaceNetConfig dict (default: ``model.cfg`` when the
    model has one); a difference is a :class:`CheckpointError` naming the differing keys,
    raised before anything is loaded.
    Returns the :class:`TrainState` and the meta dict.
    """
    from safetensors.torch import load_file

    meta = read_meta(path)
    path = Path(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format_version')} (expected {FORMAT_VERSION})")
    if expected_model_config is None and model is not None and callable(getattr(getattr(model, "cfg", None), "to_dict", None)):
        expected_model_config = model.cfg.to_dict()  # a FaceNet knows its config: compare keys, not tensor shapes
    if expected_model_config is not None:
        check_model_config(meta["model_config"], expected_model_config, str(path))
    payload = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if model is not None:
        load_model_tensors(model, load_file(str(path / MODEL_FILE), device="cpu"), str(path / MODEL_FILE))
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise CheckpointError(f"{path}: the checkpoint holds no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    if restore_rng_state:
        restore_rng(payload["rng"])
    return TrainState.from_dict(payload["train_state"]), meta
