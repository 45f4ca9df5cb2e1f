"""TensorBoard event files of a training run, written live to ``<out>/tensorboard/``.

``tensorboard --logdir results/<ds>`` then shows every run of the dataset (the main run as
``train/tensorboard``, an ablation variant as ``ablations/<v>/train/tensorboard``). Tags:

* ``loss/total``, ``loss/e`` (eq. 30), ``loss/cls`` (eq. 31) and ``train/lr``, every step;
* ``perf/samples_per_s`` and ``perf/step_seconds``: the optimizer step alone (batch
  collation, forward, backward, update), not validation or checkpointing;
* ``val/<metric>`` at validation steps (CIDEr, Acc_sw, Acc_c, BFS, CFS; an undefined Acc_c
  and what depends on it are left out rather than drawn as NaN);
* ``module/*``, every step, from the ``explain`` entry of the training forward pass
  (:meth:`FaceNet.encode <facenet_evc.models.facenet.FaceNet.encode>`), batch means:
  ``alpha_std`` (spread of the S/P/O self-refinement weights of a triplet, eq. 12),
  ``alpha_subject`` / ``alpha_predicate`` / ``alpha_object`` (their means), ``theta_std``
  (spread of the cross-refinement weights over the K triplets, eq. 15), ``router_entropy``
  (entropy of the router weights g over the K groups, eq. 26, in nats; ``log K`` is a
  uniform router), ``B_f_mean`` / ``B_e_mean`` (the gates of eq. 24-25). A module that an
  ablation turns off has no tag.

A resumed run passes ``purge_step`` = the checkpoint's step + 1: TensorBoard then drops the
events a killed run wrote after its last checkpoint, as ``log.csv`` is cut back. That works only
if TensorBoard reads the resumed run's file after the killed run's. It reads a folder's event
files in name order, and a name starts with the second the file was created
(``events.out.tfevents.<%010d seconds>.<host>.<pid>...``), so two files of the same second are
ordered by pid. A resume within a second of the kill could then be read first, and the purge
would drop the resumed events instead (seen once in CI). A resumed writer therefore waits, at
most a second, until the clock is past the newest file's second.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

SUBDIR = "tensorboard"
LOSS_TAGS = {"loss": "loss/total", "loss_e": "loss/e", "loss_cls": "loss/cls"}


def module_signals(explain: Mapping[str, Tensor | None]) -> dict[str, float]:
    """Batch means of the per-module weights and gates (module docstring); absent modules give no entry."""
    out: dict[str, float] = {}
    alpha = explain.get("alpha")  # (B, K, 3)
    if alpha is not None:
        a = alpha.detach().float()
        out["alpha_std"] = float(a.std(-1, unbiased=False).mean())
        for i, name in enumerate(("subject", "predicate", "object")):
            out[f"alpha_{name}"] = float(a[..., i].mean())
    theta = explain.get("theta")  # (B, K)
    if theta is not None:
        out["theta_std"] = float(theta.detach().float().std(-1, unbiased=False).mean())
    g = explain.get("g")  # (B, K)
    if g is not None:
        p = g.detach().float()
        out["router_entropy"] = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
    for key, tag in (("b_f", "B_f_mean"), ("b_e", "B_e_mean")):
        gate = explain.get(key)  # (B, d)
        if gate is not None:
            out[tag] = float(gate.detach().float().mean())
    return out


class TensorBoardLog:
    """A SummaryWriter on ``<out_dir>/tensorboard`` (rank 0 only; see :func:`.trainer.train`)."""

    def __init__(self, out_dir: str | Path, purge_step: int | None = None, flush_secs: int = 120) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(out_dir) / SUBDIR
        if purge_step is not None:
            wait_past_newest_event_file(self.dir)
        self.writer = SummaryWriter(str(self.dir), purge_step=purge_step, flush_secs=flush_secs)

    def step(self, step: int, row: Mapping[str, Any], explain: Mapping[str, Tensor | None] | None,
             n_samples: int, seconds: float) -> None:
        """One training step: losses, lr, throughput, module signals, and validation metrics when present."""
        w = self.writer
        for key, tag in LOSS_TAGS.items():
            value = row.get(key)
            if value is not None:
                w.add_scalar(tag, float(value), step)
        w.add_scalar("train/lr", float(row["lr"]), step)
        if seconds > 0:
            w.add_scalar("perf/samples_per_s", n_samples / seconds, step)
            w.add_scalar("perf/step_seconds", seconds, step)
        for name, value in module_signals(explain or {}).items():
            w.add_scalar(f"module/{name}", value, step)
        for key in ("CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS"):
            value = row.get(key)
            if value is not None and math.isfinite(float(value)):
                w.add_scalar(f"val/{key}", float(value), step)
        w.flush()  # live: a step's events are on disk before the next step starts

    def close(self) -> None:
        self.writer.close()


def _created_second(path: Path) -> int | None:
    parts = path.name.split(".")  # events, out, tfevents, <seconds>, <host>...
    return int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None


def wait_past_newest_event_file(log_dir: str | Path, poll_seconds: float = 0.02) -> None:
    """Sleep until ``int(time.time())`` is past the creation second of every event file in
    ``log_dir``, so that a file created now sorts after them all (module docstring). Never more
    than about a second: a file stamped later than that (another machine's clock) is not waited for."""
    seconds = [s for p in Path(log_dir).glob("events.out.tfevents.*") if (s := _created_second(p)) is not None]
    newest = max(seconds, default=None)
    deadline = time.time() + 1.5
    while newest is not None and int(time.time()) <= newest and time.time() < deadline:
        time.sleep(poll_seconds)


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the event files in ``log_dir`` (TensorBoard's own reader,
    purges applied): what ``tensorboard --logdir`` shows."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

