"""Contrastive pre-training of the demo's tiny CLIP (stand-in for released CLIP weights).

The demo has no access to pretrained CLIP, so retrieval (paper Sec. 3.2, eq. 3-6) would
rank captions by a random embedding. This stage trains the packaged ``demo-tiny-rn``
open_clip architecture (a ModifiedResNet image tower and a 3-layer text transformer) from
scratch on the demo's trainval (video, caption) pairs with CLIP's symmetric InfoNCE loss,
and saves an ordinary open_clip state dict, which every later stage loads through
``open_clip.create_model_and_transforms("demo-tiny-rn", pretrained=<ckpt>)``.

Video side: a clip of ``frames_per_clip`` frames (one random frame per equal segment, in
temporal order) is encoded frame by frame; the video embedding is the frame mean v̂
(eq. 3), plus, with the default ``temporal_head=True``, a learned projection of
late-minus-early frame features (:class:`~facenet_evc.stages.clip_model.TemporalHead`):
mean pooling alone cannot tell "moves left" from "moves right" or "grows" from "shrinks".
The head is saved beside the checkpoint (``<stem>.temporal.pt``) and used by
:func:`facenet_evc.stages.clip_features.extract_features` to write ``video_embed``.

Schedule and determinism: linear warm-up, then cosine decay over the run's progress, which
is ``step / planned_steps`` (``planned_steps`` from ``max_steps``, else ``epochs``) or, once
the clock runs ahead of it, ``elapsed / max_seconds``. A run whose budget is the step count
is fully deterministic for a seed (the tests rely on it). A time-limited run
(``time_limited: true`` in the sidecar) still decays the learning rate to zero exactly at
``max_seconds`` however busy the machine is, but its step count and schedule depend on the
machine's speed, so it is not reproducible bit for bit. ``max_steps`` ignores the clock
entirely: a step-budget run gives the same weights on a busy machine, only later (an earlier
"safety stop" at 1.25 × ``max_seconds`` made a loaded workstation's demo CLIP differ).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from facenet_evc.data.emvidcap import captions_by_video, read_captions
from facenet_evc.io import atomic_path, file_sha256, write_json
from facenet_evc.progress import progress_bar
from facenet_evc.stages.clip_features import find_videos, iter_decoded
from facenet_evc.stages.clip_model import (
    DEMO_MODEL,
    TemporalHead,
    create_clip,
    embed_dim,
    encode_text,
    frames_to_tensor,
    image_mean_std,
    preprocess_size,
    temporal_head_path,
    temporal_head_state,
)

log = logging.getLogger(__name__)

RECALL_KS = (1, 4)
# Defaults measured on the 300-video demo (2 cores): 64 videos x 2 frames per step beat
# 32 x 4 and 128 x 2 at equal compute; lr 2e-3 beat 1e-3 and 5e-3.
DEFAULT_BATCH = 64
DEFAULT_FRAMES_PER_CLIP = 2
DEFAULT_LR = 2e-3


# --------------------------------------------------------------------------- evaluation


def retrieval_recall(
    video_emb: np.ndarray, text_emb: np.ndarray, text_video: Sequence[int], ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Text→video and video→text recall@k with cosine similarity (eq. 5).

    Args:
        video_emb: (n_videos, d) video embeddings (normalised here).
        text_emb: (n_texts, d) caption embeddings (normalised here).
        text_video: (n_texts,) row of each caption's own video in ``video_emb``.
        ks: the k values.

    A caption's query succeeds at k if its own video ranks in the top k of all videos; a
    video's query succeeds if any of its own captions ranks in the top k of all captions.
    Ties count against the query (its rank is the number of candidates scoring >= it, minus one).
    Returns ``{"t2v_r1": ..., "v2t_r1": ..., ..., "n_videos", "n_texts"}``.
    """
    v = F.normalize(torch.as_tensor(np.asarray(video_emb, dtype=np.float32)), dim=-1)  # (n_v, d)
    t = F.normalize(torch.as_tensor(np.asarray(text_emb, dtype=np.float32)), dim=-1)  # (n_t, d)
    own = torch.as_tensor(np.asarray(text_video, dtype=np.int64))  # (n_t,)
    if own.shape[0] != t.shape[0]:
        raise ValueError(f"{own.shape[0]} caption→video indices for {t.shape[0]} captions")
    if len(own) and (own.min() < 0 or own.max() >= v.shape[0]):
        raise ValueError("caption→video index out of range")
    sim = t @ v.T  # (n_t, n_v)
    own_sim = sim.gather(1, own[:, None])  # (n_t, 1)
    t2v_rank = (sim >= own_sim).sum(dim=1) - 1  # (n_t,)

    simv = sim.T  # (n_v, n_t)
    is_own = torch.zeros_like(simv, dtype=torch.bool)
    is_own[own, torch.arange(len(own))] = True
    best_own = simv.masked_fill(~is_own, -math.inf).max(dim=1).values  # (n_v,)
    # Rank of the best own caption among the *other* videos' captions only.
    v2t_rank = (simv.masked_fill(is_own, -math.inf) >= best_own[:, None]).sum(dim=1)  # (n_v,)
    has_caption = is_own.any(dim=1)

    out: dict[str, float] = {}
    for k in ks:
        out[f"t2v_r{k}"] = float((t2v_rank < k).float().mean()) if len(own) else float("nan")
        out[f"v2t_r{k}"] = float((v2t_rank[has_caption] < k).float().mean()) if has_caption.any() else float("nan")
    out["n_videos"] = int(v.shape[0])
    out["n_texts"] = int(t.shape[0])
    return out


@torch.no_grad()
def encode_video_frames(model: torch.nn.Module, frames: np.ndarray, batch_videos: int = 16) -> torch.Tensor:
    """Per-frame CLIP features of cached uint8 videos ``(n, N, S, S, 3)`` → ``(n, N, d)``, eval mode."""
    mean, std = image_mean_std(model)
    n, nf = frames.shape[:2]
    out = []
    for i in range(0, n, batch_videos):
        x = frames_to_tensor(frames[i : i + batch_videos].reshape(-1, *frames.shape[2:]), mean, std)  # (b·N, 3, S, S)
        x = x.contiguous(memory_format=torch.channels_last)
        out.append(model.encode_image(x).reshape(-1, nf, embed_dim(model)))  # (b, N, d)
    return torch.cat(out)


def evaluate_split(
    model: torch.nn.Module, tokenizer: Any, head: TemporalHead | None, frames: np.ndarray,
    vids: Sequence[str], caps: dict[str, list[str]],
) -> dict[str, dict[str, float]]:
    """Recall of a split with the plain mean v̂ (eq. 3) and, if any, the temporal head's embedding."""
    texts, text_video = [], []
    for j, vid in enumerate(vids):
        texts += caps[vid]
        text_video += [j] * len(caps[vid])
    feats = encode_video_frames(model, frames)  # (n, N, d)
    text_emb = encode_text(model, tokenizer, texts)  # (n_t, d)
    out = {"mean_pool": retrieval_recall(feats.mean(dim=1).numpy(), text_emb, text_video)}
    if head is not None:
        with torch.no_grad():
            out["video_embed"] = retrieval_recall(head(feats).numpy(), text_emb, text_video)
    return out


# --------------------------------------------------------------------------- training


def _clip_indices(rng: np.random.Generator, n_frames: int, k: int, b: int) -> np.ndarray:
    """(b, k) frame indices in temporal order: one uniformly random frame per equal segment."""
    edges = np.linspace(0.0, n_frames, k + 1)  # (k+1,)
    pos = edges[:-1] + rng.random((b, k)) * (edges[1:] - edges[:-1])  # (b, k)
    return np.minimum(pos.astype(np.int64), n_frames - 1)


def _param_groups(model: torch.nn.Module, head: TemporalHead | None, weight_decay: float) -> list[dict[str, Any]]:
    # open_clip's rule: no weight decay on 1-D tensors (gains, biases), norms and logit_scale.
    decay, no_decay = [], []
    params = list(model.named_parameters()) + ([("head." + n, p) for n, p in head.named_parameters()] if head else [])
    for name, p in params:
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class FreeCores:
    """Cores left free by *other* processes: busy time in ``/proc/stat`` minus this process's own.

    Training with more threads than free cores is not a little slower but many times slower
    (OpenMP threads wait on each other at every barrier while one of them is descheduled:
    2 threads were 3-10x slower than 1 on this project's 2-core machines while another job
    ran), so time-limited runs follow this estimate. Returns None where ``/proc/stat`` is
    unavailable (not Linux).
    """

    def __init__(self) -> None:
        self.ncpu = os.cpu_count() or 1
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return time.monotonic(), (sum(fields) - idle) / self.hz, ru.ru_utime + ru.ru_stime

    def free(self) -> float | None:
        """Free cores averaged since the previous call (or construction)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        others = ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])  # cores busy elsewhere
        return max(0.0, self.ncpu - max(0.0, others))


def _lr_at(step: int, frac: float, base_lr: float, warmup: int) -> float:
    """Linear warm-up over the first ``warmup`` steps times a cosine decay over the run's progress ``frac`` in [0, 1]."""
    return base_lr * min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def _load_split(videos_dir: Path, csv: str | os.PathLike) -> tuple[list[str], dict[str, list[str]], dict[str, Path]]:
    caps = captions_by_video(read_captions(csv))
    vids = list(caps)
    return vids, caps, find_videos(videos_dir, vids)


@dataclass(frozen=True)
class ClipPretrainConfig:
    """How the demo CLIP is trained (:func:`train_demo_clip`).

    Attributes:
        threads: torch intra-op threads (more than the free cores makes training far slower).
        max_seconds: training time budget (decoding and evaluation not included).
        seed: seeds model init, batch order, caption and frame choice.
        model_name: open_clip architecture (a config of ``facenet_evc/clip_configs``).
        epochs: upper bound on passes over the trainval videos.
        max_steps: run exactly this many steps on a step-based schedule (ignores ``epochs``;
            ``max_seconds`` is then ignored): deterministic.
        batch_size: distinct videos per step.
        n_frames: frames decoded per video; ``frames_per_clip`` of them go into each step.
        lr / weight_decay / warmup_steps: AdamW, linear warm-up then cosine decay.
        temporal_head / head_hidden: train the order-aware pooling (hidden 0: one linear layer).
        adapt_threads: in a time-limited run (no ``max_steps``), lower the thread count while
            other processes occupy cores (:class:`FreeCores`), checked every 2 s.
        num_workers: decoding worker processes.
        progress: a progress bar on stderr.
    """

    threads: int = 2
    max_seconds: float = 150.0
    seed: int = 0
    model_name: str = DEMO_MODEL
    epochs: int = 1000
    max_steps: int | None = None
    batch_size: int = DEFAULT_BATCH
    n_frames: int = 16
    frames_per_clip: int = DEFAULT_FRAMES_PER_CLIP
    lr: float = DEFAULT_LR
    weight_decay: float = 0.1
    warmup_steps: int = 20
    temporal_head: bool = True
    head_hidden: int = 0
    adapt_threads: bool = True
    num_workers: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.frames_per_clip < 1 or self.frames_per_clip > self.n_frames:
            raise ValueError(f"frames_per_clip must be in [1, n_frames={self.n_frames}], got {self.frames_per_clip}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")


@dataclass
class _Split:
    """A split's videos, their captions and their decoded frames (n, N, S, S, 3) uint8."""

    vids: list[str]
    caps: dict[str, list[str]]
    frames: np.ndarray


@dataclass
class _RunStats:
    steps: int = 0
    planned: int = 0
    stopped_by: str = "steps"
    time_limited: bool = False
    last_loss: float = float("nan")
    losses: list[tuple[int, float]] = field(default_factory=list)
    threads_used: dict[int, int] = field(default_factory=dict)
    train_s: float = 0.0


def train_demo_clip(
    videos_dir: str | os.PathLike,
    trainval_csv: str | os.PathLike,
    test_csv: str | os.PathLike,
    out_ckpt: str | os.PathLike,
    cfg: ClipPretrainConfig = ClipPretrainConfig(),
    test_videos_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train the demo CLIP contrastively on (video, caption) pairs; save checkpoint + sidecar.

    Every step takes ``cfg.batch_size`` distinct trainval videos, one random caption of each
    and ``cfg.frames_per_clip`` ordered frames of each, and minimises the symmetric InfoNCE
    loss (open_clip's ``ClipLoss``) between the video embeddings (eq. 3 mean, plus the
    temporal head) and the caption embeddings (eq. 4).

    Args:
        videos_dir: folder of ``<video id>.mp4``.
        trainval_csv / test_csv: caption files (``VideoID,EmCaptions``).
        out_ckpt: checkpoint path; ``torch.save(model.state_dict())`` so that
            ``open_clip.create_model_and_transforms(model_name, pretrained=out_ckpt)`` loads it.
            The sidecar goes to ``out_ckpt`` with suffix ``.json``, the head to ``<stem>.temporal.pt``.
        cfg: the training settings (:class:`ClipPretrainConfig`).
        test_videos_dir: folder of the test split's videos when they live elsewhere (the
            demo pretrains on a separate pool and reports recall on the dataset's test split).

    Returns:
        The sidecar's content (training stats and test/trainval recall@1/@4).
    """
    t_start = time.perf_counter()
    out_ckpt = Path(out_ckpt)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        videos_dir = Path(videos_dir)
        tr_vids, tr_caps, tr_paths = _load_split(videos_dir, trainval_csv)
        te_vids, te_caps, te_paths = _load_split(Path(test_videos_dir or videos_dir), test_csv)
        if len(tr_vids) < 2:
            raise ValueError(f"{trainval_csv}: need at least 2 training videos, found {len(tr_vids)}")

        torch.manual_seed(cfg.seed)
        model = create_clip(cfg.model_name, None)  # random init, seeded
        # NHWC convolutions are about 1.7x faster for the ResNet tower on CPU (oneDNN).
        model = model.to(memory_format=torch.channels_last)
        tokenizer = open_clip.get_tokenizer(cfg.model_name)
        size = preprocess_size(model)
        head = TemporalHead(embed_dim(model), cfg.head_hidden) if cfg.temporal_head else None

        # Decode once: every epoch re-reads frames from this uint8 cache.
        t0 = time.perf_counter()
        train = _Split(tr_vids, tr_caps, _decode_all([tr_paths[v] for v in tr_vids], cfg.n_frames, size,
                                                     cfg.num_workers))  # (n, N, S, S, 3)
        test = _Split(te_vids, te_caps, _decode_all([te_paths[v] for v in te_vids], cfg.n_frames, size,
                                                    cfg.num_workers))
        decode_s = time.perf_counter() - t0

        stats, n_captions = _train_steps(model, head, tokenizer, train, cfg)

        model.eval()
        if head is not None:
            head.eval()
        t0 = time.perf_counter()
        recall = {
            "test": evaluate_split(model, tokenizer, head, test.frames, test.vids, test.caps) if test.vids else {},
            "trainval": evaluate_split(model, tokenizer, head, train.frames, train.vids, train.caps),
        }
        eval_s = time.perf_counter() - t0

        head_file = _save_clip(out_ckpt, model, head, tokenizer, cfg.model_name,
                               test.frames if len(test.vids) else train.frames)
        bs = min(cfg.batch_size, len(train.vids))
        summary: dict[str, Any] = {
            "model_name": cfg.model_name,
            "model_config": open_clip.get_model_config(cfg.model_name),
            "checkpoint": out_ckpt.name,
            "checkpoint_sha256": file_sha256(out_ckpt),
            "temporal_head": head_file.name if head is not None else None,
            "temporal_head_sha256": file_sha256(head_file) if head is not None else None,
            "head_hidden": cfg.head_hidden if head is not None else None,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "threads_used": {str(k): v for k, v in sorted(stats.threads_used.items())},
            "steps": stats.steps,
            "planned_steps": stats.planned,
            "stopped_by": stats.stopped_by,
            "time_limited": stats.time_limited,
            "epochs_completed": round(stats.steps * bs / len(train.vids), 2),
            "batch_size": bs,
            "n_frames": cfg.n_frames,
            "frames_per_clip": cfg.frames_per_clip,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "warmup_steps": cfg.warmup_steps,
            "max_seconds": cfg.max_seconds,
            "n_trainval_videos": len(train.vids),
            "n_trainval_captions": n_captions,
            "n_test_videos": len(test.vids),
            "n_test_captions": sum(len(test.caps[v]) for v in test.vids),
            "final_loss": stats.last_loss,
            "logit_scale": float(model.logit_scale.detach().exp()),
            "loss_curve": stats.losses,
            "recall": recall,
            "decode_s": round(decode_s, 2),
            "train_s": round(stats.train_s, 2),
            "eval_s": round(eval_s, 2),
            "total_s": round(time.perf_counter() - t_start, 2),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "python": platform.python_version(),
        }
        write_json(sidecar_path(out_ckpt), summary)
        return summary
    finally:
        torch.set_num_threads(previous_threads)


def _train_steps(model: torch.nn.Module, head: TemporalHead | None, tokenizer: Any, train: _Split,
                 cfg: ClipPretrainConfig) -> tuple[_RunStats, int]:
    """The contrastive training loop; returns its statistics and the number of training captions."""
    size = preprocess_size(model)
    mean, std = image_mean_std(model)
    d = embed_dim(model)
    bs = min(cfg.batch_size, len(train.vids))
    # Tokenise every caption once; a step only gathers rows.
    cap_texts: list[str] = []
    cap_start = np.zeros(len(train.vids) + 1, dtype=np.int64)
    for j, vid in enumerate(train.vids):
        cap_texts += train.caps[vid]
        cap_start[j + 1] = len(cap_texts)
    tokens = tokenizer(cap_texts)  # (n_caps, L)

    params = _param_groups(model, head, cfg.weight_decay)
    # fused: one kernel over all parameters, 5 ms a step instead of 26 on the demo (2 cores), most of
    # it the 49408 x 128 token embedding, which the per-tensor loop sweeps seven times
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    loss_fn = ClipLoss()
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = len(train.vids) // bs
    stats = _RunStats(planned=cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch,
                      stopped_by="steps" if cfg.max_steps is not None else "epochs")
    order = np.zeros(0, dtype=np.int64)
    pos = 0
    model.train()
    if head is not None:
        head.train()
    t_train = time.perf_counter()
    bar = progress_bar(total=stats.planned, unit="step", desc="clip pretrain", disable=not cfg.progress)
    # Only a clock-bound run adapts its thread count: a step-bound run must stay deterministic.
    governor = FreeCores() if (cfg.adapt_threads and cfg.max_steps is None and cfg.threads > 1) else None
    n_threads = int(cfg.threads)
    t_probe = time.perf_counter()
    while stats.steps < stats.planned:
        step = stats.steps
        if governor is not None and time.perf_counter() - t_probe >= 2.0:
            free = governor.free()
            t_probe = time.perf_counter()
            if free is not None:
                want = max(1, min(int(cfg.threads), int(free + 0.25)))
                if want != n_threads:
                    n_threads = want
                    torch.set_num_threads(n_threads)
        stats.threads_used[n_threads] = stats.threads_used.get(n_threads, 0) + 1
        elapsed = time.perf_counter() - t_train
        frac = step / stats.planned
        if cfg.max_steps is None and elapsed / cfg.max_seconds > frac:
            # The clock, not the step count, is the binding budget: schedule by it.
            frac = elapsed / cfg.max_seconds
            stats.time_limited = True
        if frac >= 1.0:
            stats.stopped_by = "time"
            break
        if pos + bs > len(order):
            order = rng.permutation(len(train.vids))
            pos = 0
        vids_idx = order[pos : pos + bs]
        pos += bs
        cap_idx = cap_start[vids_idx] + (rng.random(bs) * (cap_start[vids_idx + 1] - cap_start[vids_idx])).astype(np.int64)
        fidx = _clip_indices(rng, cfg.n_frames, cfg.frames_per_clip, bs)  # (B, k)
        clip = train.frames[vids_idx[:, None], fidx]  # (B, k, S, S, 3)
        x = frames_to_tensor(clip.reshape(-1, size, size, 3), mean, std)  # (B·k, 3, S, S)
        x = x.contiguous(memory_format=torch.channels_last)

        for g in opt.param_groups:
            g["lr"] = _lr_at(step, frac, cfg.lr, cfg.warmup_steps)
        img = model.encode_image(x).reshape(bs, cfg.frames_per_clip, d)  # (B, k, d)
        vid_emb = head(img) if head is not None else img.mean(dim=1)  # (B, d)
        txt = model.encode_text(tokens[torch.from_numpy(cap_idx)])  # (B, d)
        loss = loss_fn(F.normalize(vid_emb, dim=-1), F.normalize(txt, dim=-1), model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # as open_clip's training loop
        stats.last_loss = float(loss.detach())
        if step % 10 == 0:
            stats.losses.append((step, round(stats.last_loss, 4)))
        stats.steps = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{stats.last_loss:.3f}")
    bar.close()
    stats.train_s = time.perf_counter() - t_train
    stats.losses.append((stats.steps, round(stats.last_loss, 4)))
    return stats, len(cap_texts)


def _save_clip(out_ckpt: Path, model: torch.nn.Module, head: TemporalHead | None, tokenizer: Any, model_name: str,
               check_frames: np.ndarray) -> Path:
    """Write the head (or remove a stale one) and the checkpoint, verified through open_clip; the head's path."""
    head_file = temporal_head_path(out_ckpt)
    if head is not None:
        with atomic_path(head_file, suffix=".pt.tmp") as tmp:
            torch.save(temporal_head_state(head), tmp)
    elif head_file.exists():
        head_file.unlink()  # a stale head from an earlier run must not be paired with this checkpoint
    with atomic_path(out_ckpt, suffix=".pt.tmp") as tmp:
        # Plain contiguous tensors: the checkpoint must not depend on the training memory layout.
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)
        _verify_checkpoint(tmp, model_name, model, check_frames, tokenizer)
    return head_file


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """JSON with training stats written beside a checkpoint: ``<ckpt>`` with suffix ``.json``."""
    return Path(checkpoint).with_suffix(".json")


def _decode_all(paths: list[Path], n_frames: int, size: int, num_workers: int) -> np.ndarray:
    out = np.zeros((len(paths), n_frames, size, size, 3), dtype=np.uint8)  # (n, N, S, S, 3)
    for idx, frames in iter_decoded(paths, n_frames, size, batch_size=16, num_workers=num_workers):
        out[idx[0] : idx[-1] + 1] = frames
    return out


def _verify_checkpoint(path: Path, model_name: str, model: torch.nn.Module, frames: np.ndarray, tokenizer: Any) -> None:
    """Reload ``path`` the way users will (open_clip, ``weights_only=True``) and compare outputs."""
    torch.load(path, map_location="cpu", weights_only=True)  # raises if anything but tensors was pickled
    reloaded = create_clip(model_name, str(path))
    x = frames[:2].reshape(-1, *frames.shape[2:])[:8]  # a few frames suffice
    mean, std = image_mean_std(model)
    with torch.no_grad():
        xt = frames_to_tensor(x, mean, std)
        tok = tokenizer(["a small check caption"])
        same = torch.allclose(model.encode_image(xt), reloaded.encode_image(xt), atol=1e-5) and torch.allclose(
            model.encode_text(tok), reloaded.encode_text(tok), atol=1e-5
        )
    if not same:
        raise RuntimeError(f"{path}: checkpoint reloaded through open_clip gives different outputs")


# --------------------------------------------------------------------------- CLI


def add_clip_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc clip-pretrain``."""
    parser.add_argument("--videos", required=True, type=Path, help="folder of <video id>.mp4 (the demo's videos/)")
    parser.add_argument("--trainval", required=True, type=Path, help="trainval caption CSV")
    parser.add_argument("--test", required=True, type=Path, help="test caption CSV (for the recall report)")
    parser.add_argument("--test-videos", type=Path, default=None,
                        help="folder of the test split's videos (default: --videos)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint path, e.g. results/demo/clip/demo_clip.pt")
    parser.add_argument("--model", default=DEMO_MODEL, help="open_clip architecture (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads; at most the free cores (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=150.0, help="training time budget (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1000, help="upper bound on epochs (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None, help="train exactly this many steps (deterministic; default: time/epoch budget)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="videos per step (default: %(default)s)")
    parser.add_argument("--frames-per-clip", type=int, default=DEFAULT_FRAMES_PER_CLIP,
                        help="frames per video per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--no-adapt-threads", action="store_true",
                        help="keep --threads even while other processes occupy cores")
    parser.add_argument("--no-temporal-head", action="store_true", help="train with plain mean pooling (eq. 3) only")


def run_clip_pretrain_cli(args: argparse.Namespace) -> int:
    """``facenet-evc clip-pretrain``. Errors propagate to the CLI's handler (exit 2)."""
    cfg = ClipPretrainConfig(
        threads=args.threads, max_seconds=args.max_seconds, seed=args.seed, model_name=args.model,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        frames_per_clip=args.frames_per_clip, lr=args.lr, temporal_head=not args.no_temporal_head,
        adapt_threads=not args.no_adapt_threads,
    )
    summary = train_demo_clip(args.videos, args.trainval, args.test, args.out, cfg, test_videos_dir=args.test_videos)
    brief = {k: summary[k] for k in ("steps", "stopped_by", "train_s", "final_loss")}
    brief["recall_test"] = summary["recall"]["test"]
    print(json.dumps(brief, indent=2))
    return 0
