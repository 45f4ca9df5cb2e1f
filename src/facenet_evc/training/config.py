"""Optimisation settings of a FACE-net training run (everything that is not the model).

Paper Sec. 4.1 gives Adam with lr 7e-4, batch size 32, caption length 15 and beam 5; it gives
no learning-rate schedule, no epoch count and no gradient clipping, so the defaults here are
a constant rate (``lr_schedule="constant"``), no clipping, and a step budget (``max_steps``)
to be chosen per dataset. ``linear`` / ``cosine`` (decay to 0 at ``max_steps``, after
``warmup_steps`` of linear warm-up) are offered as options, not as the paper's setting.

Validation decodes greedily by default (``val_beams=1``): it only ranks checkpoints, and a
5-beam search costs ~5x; the final predictions use ``num_beams`` (5, the paper).
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

LR_SCHEDULES = ("constant", "linear", "cosine")
SELECTIONS = ("best", "last")  # train.select
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    # optimiser (paper Sec. 4.1: Adam, 7e-4, batch 32)
    lr: float = 7e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    grad_clip: float | None = None  # max global grad norm; None = no clipping (the paper names none)
    lr_schedule: str = "constant"  # the paper gives none; see module docstring
    warmup_steps: int = 0

    # run length and bookkeeping
    max_steps: int = 20000
    val_every: int = 1000
    ckpt_every: int = 1000
    val_fraction: float = 0.1  # of the trainval videos, held out for model selection
    # after validation picked the best step: retrain on every trainval video for that many steps
    # (into <out>/refit/; the workflow then predicts with refit/last instead of best/)
    refit: bool = False
    # which checkpoint predicts: "best" (the validation CFS picks the step) or "last" (the run's
    # final step; validation is still run and logged). README "Training protocol".
    select: str = "best"
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None = torch's default
    device: str = "auto"  # auto = cuda when available, else cpu
    progress: bool = True  # tqdm bar

    # vocabulary of the word decoders (EPAN: words seen >= min_count times + every lexicon word)
    min_count: int = 1

    # decoding (paper: beam 5, length 15); validation may use greedy search for speed
    num_beams: int = 5
    max_len: int = 15
    val_beams: int = 1
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        # YAML 1.1 reads "7e-4" (no dot) as a string: accept numeric strings for the float knobs
        for name in ("lr", "weight_decay", "grad_clip", "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise ValueError(f"TrainConfig.{name} must be a number, got {value!r}") from None
        positive = ("batch_size", "max_steps", "val_every", "ckpt_every", "min_count", "num_beams", "max_len",
                    "val_beams", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or null, got {self.grad_clip!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule={self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must lie in [0, 1), got {self.val_fraction!r}")
        if self.select not in SELECTIONS:
            raise ValueError(f"TrainConfig.select={self.select!r}: expected one of {SELECTIONS}")
        if not isinstance(self.refit, bool):
            raise ValueError(f"TrainConfig.refit must be true or false, got {self.refit!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"TrainConfig.threads must be an integer >= 1 or null, got {self.threads!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"TrainConfig.device={self.device!r}: expected one of {DEVICES} or 'cuda:<i>'")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        json.dumps(out)
        return copy.deepcopy(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrainConfig":
        """Missing keys take their defaults; unknown keys are an error naming them."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**copy.deepcopy(data))
