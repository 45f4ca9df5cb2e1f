"""Data-parallel training over the processes ``torchrun`` starts (DistributedDataParallel).

``torchrun --nproc_per_node N -m facenet_evc train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them, places each rank on ``cuda:LOCAL_RANK``
(backend NCCL) or on the CPU (backend Gloo) and opens the process group. Without them (or
with ``WORLD_SIZE=1``) it returns a single-process context whose methods do nothing, so the
trainer runs one code path.

What keeps N processes equal to one process with the same (global) batch:

* **Data**: ``TrainConfig.batch_size`` is the global batch. Every rank draws the same epoch
  permutation (a function of (seed, epoch), as in single-process training), takes the same
  global batch ``perm[pos : pos + batch_size]`` and keeps its own part, every N-th sample from
  its rank (:func:`shard_batch`): shards are disjoint and their sizes differ by at most one,
  also for the short last batch of an epoch. The checkpoint's (epoch, pos) count global
  samples, so a resume continues the same order, whatever the number of processes.
* **Loss**: L_e (eq. 30) is a mean over the batch's non-pad tokens and L_cls (eq. 31) a mean
  over the samples that have an emotion category. DDP averages the ranks' gradients, which
  would average per-rank means, i.e. weigh a token of a rank with few tokens more. Each rank
  therefore back-propagates ``N * (n_rank / n_global) * L_rank`` for both terms
  (:func:`rank_loss`), the counts summed over ranks with one ``all_reduce`` before the
  forward: DDP's mean of these is the gradient of the global-batch loss. The logged losses
  are the global ones (:meth:`DistContext.global_losses`). A rank whose shard is empty (a
  last batch smaller than N) runs a stand-in sample with weight 0: DDP needs every rank in
  the backward.
* **Dropout**: each rank has its own RNG stream (rank 0 keeps the single-process one; rank
  r > 0 is re-seeded from (seed, r) after the model is built, so the initial weights are the
  same everywhere). A checkpoint stores rank 0's states where single-process training does
  (``state.pt["rng"]``) and every rank's under ``rng["ranks"]``; a resume with the same number
  of processes restores each rank's stream, otherwise ranks r > 0 are re-seeded from
  (seed, r, step) with a warning. Equality with a single process therefore only holds
  without dropout.

Only rank 0 writes (checkpoints, log, curves, split, summary) and validates; the others
wait for it in a collective (broadcast of the metrics, barrier after a checkpoint). The
collectives' timeout (validation of a large split runs on rank 0 alone) is
``FACENET_EVC_DIST_TIMEOUT_MIN`` minutes, default 120.
"""
from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from facenet_evc.errors import SetupError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "FACENET_EVC_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 120.0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer (set by torchrun)") from None


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment; ``(0, 1, 0)`` without it."""
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"inconsistent torchrun environment RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return rank, world, local


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Samples per rank of a global batch; the global batch must split evenly."""
    if batch_size % world_size:
        raise ValueError(f"TrainConfig.batch_size={batch_size} is the global batch and must be divisible by the "
                         f"number of processes ({world_size}): use a multiple of {world_size}")
    return batch_size // world_size


def shard_batch(idx: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's samples of the global batch ``idx``: every ``world_size``-th one from ``rank``."""
    return list(idx[rank::world_size])


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of rank ``rank``'s own RNG stream (ranks > 0), a function of (seed, rank, step) only."""
    return (int(seed) * 1_000_003 + int(rank) * 7_919 + int(step) * 104_729) % 2**63


def loss_counts(batch: Mapping[str, Any], pad_id: int, device: torch.device) -> Tensor:
    """(2,) float64: the batch's non-pad target tokens (L_e's divisor) and samples with an emotion
    category (L_cls's divisor), as :mod:`facenet_evc.models.losses` counts them."""
    tokens = (batch["targets"] != pad_id).sum()
    emotional = (batch["emotion_targets"].sum(-1) > 0).sum() if "emotion_targets" in batch else torch.zeros(())
    return torch.stack([tokens.to(device, torch.float64), emotional.to(device, torch.float64)])  # (2,)


def rank_loss(res: Mapping[str, Any], local: Tensor, total: Tensor, world_size: int,
              lambda_e: float, lambda_cls: float) -> Tensor:
    """This rank's share of eq. 32 over the global batch, scaled so that DDP's gradient *mean*
    over ranks is the gradient of the global-batch loss (module docstring).

    ``local`` / ``total``: (2,) counts of this rank / summed over ranks (:func:`loss_counts`).
    """
    from facenet_evc.models.losses import total_loss

    scale = [world_size * float(local[i]) / float(total[i]) if float(total[i]) > 0 else 0.0 for i in range(2)]
    loss_cls = res["loss_cls"]
    return total_loss(res["loss_e"] * scale[0], None if loss_cls is None else loss_cls * scale[1],
                      lambda_e, lambda_cls)


@dataclass(frozen=True)
class DistContext:
    """The process' place in the run; every method is a no-op for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # opened by init_distributed, so closed by close()

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_sum(self, t: Tensor) -> Tensor:
        """Element-wise sum over ranks (a copy; ``t`` must be on the process group's device)."""
        t = t.clone()
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def shard(self, idx: Sequence[int]) -> list[int]:
        return shard_batch(idx, self.rank, self.world_size)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` in DistributedDataParallel (the module itself for one process). Every trainable
        tensor takes part in each forward (checked for all ablations), so no unused-parameter search."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    def global_losses(self, res: Mapping[str, Any], local: Tensor, total: Tensor,
                      lambda_e: float, lambda_cls: float) -> dict[str, float | None]:
        """``loss``, ``loss_e``, ``loss_cls`` of the global batch from the ranks' means and counts."""
        loss_cls = res["loss_cls"]
        if not self.enabled:
            return {"loss": float(res["loss"].detach()), "loss_e": float(res["loss_e"].detach()),
                    "loss_cls": None if loss_cls is None else float(loss_cls.detach())}
        part = torch.stack([res["loss_e"].detach().to(torch.float64) * local[0],
                            (loss_cls.detach().to(torch.float64) if loss_cls is not None else local[1] * 0) * local[1]])
        sums = self.all_sum(part)  # (2,)
        le = float(sums[0]) / max(float(total[0]), 1.0)  # as emotion_weighted_ce's clamp_min(1)
        lc = float(sums[1]) / float(total[1]) if float(total[1]) > 0 else 0.0  # no category: emotion_cls_loss's 0
        return {"loss": lambda_e * le + (0.0 if loss_cls is None else lambda_cls * lc), "loss_e": le,
                "loss_cls": None if loss_cls is None else lc}

    def seed_rank(self, seed: int, checkpoint: Path | None, step: int) -> None:
        """Give ranks > 0 their own RNG stream (module docstring); rank 0 keeps its state."""
        if not self.enabled:
            return
        from facenet_evc.training.checkpoint import STATE_FILE, restore_rng
        from facenet_evc.training.runtime import seed_everything

        ranks = None
        if checkpoint is not None:
            # mmap: only the RNG entry is read, not the optimizer state
            payload = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
            ranks = payload["rng"].get("ranks")
            if not ranks or len(ranks) != self.world_size:
                if self.is_main:
                    log.warning("%s was written by %s process(es), this run has %d: ranks > 0 start new dropout "
                                "streams (the data order is unchanged)", checkpoint,
                                len(ranks) if ranks else 1, self.world_size)
                ranks = None
        if ranks is not None:
            restore_rng(ranks[self.rank])
        elif self.rank > 0:
            seed_everything(rank_seed(seed, self.rank, step if checkpoint is not None else 0))

    def gather_rng(self) -> dict[str, Any] | None:
        """Collective: rank 0's RNG states plus every rank's under ``"ranks"`` (None for one process,
        where :func:`~facenet_evc.training.checkpoint.save_checkpoint` captures them itself)."""
        if not self.enabled:
            return None
        from facenet_evc.training.checkpoint import capture_rng

        states = self.all_gather(capture_rng())
        return {**states[0], "ranks": states}

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def resolve_rank_device(name: str, ctx: DistContext) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for ``auto`` (with CUDA) or ``cuda``, else the CPU."""
    from facenet_evc.training.runtime import resolve_device

    if not ctx.enabled:
        return resolve_device(name)
    if name.startswith("cuda:"):
        raise ValueError(f"TrainConfig.device={name!r} pins one GPU, but torchrun started {ctx.world_size} "
                         "processes: use 'cuda' or 'auto' (each process takes cuda:LOCAL_RANK)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SetupError(f"device {name!r} requested but CUDA is not available")
    if ctx.local_rank >= torch.cuda.device_count():
        raise SetupError(f"LOCAL_RANK={ctx.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                           "visible: start at most that many processes per node")
    return torch.device("cuda", ctx.local_rank)


def init_distributed(device_name: str) -> tuple[DistContext, torch.device]:
    """The context and device of this process; opens the process group under torchrun (NCCL on CUDA,
    Gloo on the CPU) unless the caller already did."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        ctx = DistContext(rank, world, _env_int("LOCAL_RANK", rank), owns_group=False)
        device = resolve_rank_device(device_name, ctx)
        if ctx.enabled and device.type == "cpu" and dist.get_backend() == "nccl":
            raise ValueError("the open process group uses NCCL, which cannot train on the CPU")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return ctx, device
    rank, world, local = env_world()
    if world == 1:
        return DistContext(), resolve_rank_device(device_name, DistContext())
    if not dist.is_available():
        raise SetupError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    ctx = DistContext(rank, world, local, owns_group=True)
    device = resolve_rank_device(device_name, ctx)
    try:
        minutes = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_MIN)
    except ValueError:
        raise ValueError(f"environment variable {TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: expected minutes") from None
    kw: dict[str, Any] = {"timeout": datetime.timedelta(minutes=minutes)}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kw["device_id"] = device  # binds NCCL to this rank's GPU (no context on GPU 0 from every rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kw)
    log.info("rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return ctx, device
