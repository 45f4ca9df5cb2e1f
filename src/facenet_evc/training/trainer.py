"""Train FACE-net (paper Sec. 3.6 / 4.1) with validation, logging and exact resume.

One call of :func:`train` builds the word vocabulary (word decoders: normalised training
captions + every lexicon word, EPAN style), the decoder and FaceNet, then runs Adam for
``max_steps`` optimizer steps over (video, caption) samples:

* ``out_dir/log.csv`` — one row per step (step, epoch, lr, loss, loss_e, loss_cls) with the
  validation metrics (CIDEr, Acc_sw, Acc_c, BFS, CFS; official code, METEOR skipped) filled
  in at validation steps; floats are written with ``repr`` so two identical runs give
  byte-identical logs;
* ``out_dir/curves.png`` — losses and validation CFS against the step;
* ``out_dir/tensorboard/`` — TensorBoard event files written live (losses, lr, throughput,
  validation metrics, per-module signals; :mod:`.tensorboard_log`);
* ``out_dir/last/`` every ``ckpt_every`` steps and at the end; ``out_dir/best/`` at the first
  validation and whenever the validation CFS improves (:mod:`.checkpoint` for the layout);
* ``out_dir/split.json`` — the training and held-out video ids.

Resume: when ``out_dir/last/`` exists the run continues from it (model config must match,
the vocabulary must come out the same) and the log is cut back to the checkpoint's step.

Determinism, what an exact resume needs (checked by ``tests/test_training.py``):

* every RNG seeded at the start (python, numpy, torch) *before* the model is built, so a
  resumed process builds the same initial tensors (then overwritten) and restores the RNG
  states afterwards from the checkpoint: dropout continues on the same stream;
* the sample order is not an RNG side effect but a function of (seed, epoch): each epoch's
  permutation comes from its own ``torch.Generator`` seeded with ``seed * 1000003 + epoch``;
  the checkpoint stores the epoch and the number of samples consumed;
* validation runs under ``torch.random.fork_rng`` and in eval mode, so validating (or not,
  as when a run stops at an intermediate ``max_steps``) never shifts the training stream;
* ``torch.use_deterministic_algorithms(True)`` (warn-only on CUDA, where some kernels have no
  deterministic variant; ``CUBLAS_WORKSPACE_CONFIG`` is set for cuBLAS), cuDNN benchmark off;
* weights as safetensors and optimizer / scheduler state with ``torch.save``: both round-trip
  float32 bits exactly; the same thread count must be used (CPU reductions split work by
  thread count).

Multi-GPU (or multi-process CPU) training: started by ``torchrun --nproc_per_node N``, the
same call trains with DistributedDataParallel; ``batch_size`` stays the global batch, the
data order and the checkpoint are the same, only rank 0 writes and validates
(:mod:`.distributed`).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facenet_evc.config import load_mapping
from facenet_evc.data.emvidcap import CaptionSource, captions_by_video, normalize_caption, read_split
from facenet_evc.data.lexicon import Lexicon, read_lexicon
from facenet_evc.data.sources import add_captions_args, caption_sources
from facenet_evc.io import atomic_path, file_sha256, read_json, write_json, write_text
from facenet_evc.layout import checkpoint_name
from facenet_evc.models.config import LLM_DECODERS, FaceNetConfig
from facenet_evc.models.decoders import Vocab
from facenet_evc.progress import progress_bar
from facenet_evc.training.checkpoint import (
    CheckpointError,
    TrainState,
    check_model_config,
    load_checkpoint,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)
from facenet_evc.training.config import TrainConfig
from facenet_evc.training.data import (
    Artifacts,
    Collator,
    add_artifact_args,
    artifact_dims,
    EVCDataset,
    load_artifacts,
    make_samples,
    split_train_val,
    to_device,
)
from facenet_evc.training.distributed import DistContext, init_distributed, loss_counts, per_rank_batch, rank_loss
from facenet_evc.training.decoding import generate_captions
from facenet_evc.training.factory import create_facenet
from facenet_evc.training.runtime import autocast_for, deterministic, seed_everything
from facenet_evc.training.tensorboard_log import SUBDIR as TB_SUBDIR, TensorBoardLog

log = logging.getLogger(__name__)

VAL_METRICS = ("CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS")
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "loss_e", "loss_cls") + VAL_METRICS
SELECT_METRIC = "CFS"  # model selection on the validation videos


# --------------------------------------------------------------------------- determinism helpers


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The sample order of ``epoch``: a function of (seed, epoch) only, so it is re-drawn on resume."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % 2**63)
    return torch.randperm(n, generator=g).tolist()


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the base lr after ``step`` scheduler steps (LambdaLR)."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        if cfg.lr_schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor



# --------------------------------------------------------------------------- validation


def score_predictions(predictions: dict[str, str], references: dict[str, list[str]], lexicon: Lexicon) -> dict[str, float]:
    """Official metrics without METEOR. Acc_c (and so BFS / CFS) is NaN where the official formula
    overflows (every caption with a right emotion also has a wrong one), which early in training
    happens; the caption metrics and Acc_sw are still reported."""
    from facenet_evc.evaluation import evaluate
    from facenet_evc.evaluation.captions import caption_scores
    from facenet_evc.evaluation.emotion import EmotionMetricError, acc_sw, count_emotions

    try:
        return evaluate(predictions, references, lexicon, meteor=False)
    except EmotionMetricError as err:
        log.warning("validation: %s; Acc_c, BFS and CFS recorded as NaN", err)
    vids = sorted(predictions)
    scores: dict[str, float] = caption_scores({i: list(references[v]) for i, v in enumerate(vids)},
                                              {i: [predictions[v]] for i, v in enumerate(vids)}, meteor=False)
    scores["Acc_sw"] = acc_sw(count_emotions(predictions, references, lexicon))
    scores.update(Acc_c=math.nan, BFS=math.nan, CFS=math.nan, n_videos=len(vids))
    return scores


# --------------------------------------------------------------------------- log and curves


class CsvLog:
    """``log.csv`` appended one flushed row per step; on resume cut back to the checkpoint's step."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with open(path, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    # a kill can leave a torn last line: keep only complete rows up to the checkpoint
                    try:
                        ok = row.get("CFS") is not None and int(row["step"]) <= resume_step
                    except (TypeError, ValueError):
                        ok = False
                    if ok:
                        rows.append({k: row[k] for k in LOG_COLUMNS})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(path, buf.getvalue())
        self._file = open(path, "a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=LOG_COLUMNS, lineterminator="\n")

    def append(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: _fmt(row.get(k)) for k in LOG_COLUMNS})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips the float exactly
    return str(value)


def plot_curves(log_csv: Path, out_png: Path) -> None:
    """Losses (left) and validation CFS / CIDEr (right) against the step, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(log_csv)
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    for col in ("loss", "loss_e", "loss_cls"):
        if col in df and df[col].notna().any():
            ax_l.plot(df["step"], df[col], label=col, linewidth=0.8)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss")
    ax_l.set_yscale("log")
    ax_l.legend()
    val = df[df["CIDEr"].notna()] if "CIDEr" in df else df.iloc[:0]
    for col in ("CFS", "CIDEr"):
        if len(val) and val[col].notna().any():
            ax_v.plot(val["step"], val[col], marker="o", label=f"val {col}")
    ax_v.set_xlabel("step")
    ax_v.set_ylabel("validation score")
    if len(val):
        ax_v.legend()
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- training


def _caption_sources(captions: Sequence[CaptionSource | str | os.PathLike]) -> list[CaptionSource]:
    return [c if isinstance(c, CaptionSource) else CaptionSource(Path(c)) for c in captions]


def train(
    model_cfg: Mapping[str, Any],
    train_cfg: Mapping[str, Any],
    features_h5: str | os.PathLike,
    topk_h5: str | os.PathLike,
    triplets_h5: str | os.PathLike,
    lexicon_h5: str | os.PathLike,
    captions: Sequence[CaptionSource | str | os.PathLike],
    lexicon_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    restart_if_changed: bool = False,
) -> dict[str, Any]:
    """Train (or resume training) FACE-net; returns a summary (steps, best and last validation metrics).

    Args:
        model_cfg: :class:`~facenet_evc.models.config.FaceNetConfig` dict.
        train_cfg: :class:`~facenet_evc.training.config.TrainConfig` dict.
        features_h5, topk_h5, triplets_h5, lexicon_h5: the artifacts (:mod:`.data`).
        captions: the trainval caption files (the retrieval repository, in this order).
        lexicon_dir: the official lexicon folder (validation metrics).
        out_dir: log, curves, ``last/``, ``best/``; resumed from ``last/`` when present.
        callback: called after every step with (step, log row), e.g. for external logging; under
            torchrun on every rank, with the global batch's losses.
        restart_if_changed: ``out_dir`` holds a run of other inputs or settings (its
            ``run.json`` fingerprint differs): start afresh, discarding it, instead of raising.
            The workflow sets it, so a changed config or artifact re-trains rather than
            resuming stale weights, while a killed run of the same inputs still resumes.
    """
    # sizes the artifacts fix (N, d_v, K, d_T, d_E) are taken from them unless given
    dims = artifact_dims(features_h5, topk_h5, triplets_h5, lexicon_h5)
    cfg = FaceNetConfig.from_dict({**dims, **dict(model_cfg)})
    tcfg = TrainConfig.from_dict(train_cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dctx, device = init_distributed(tcfg.device)  # one process unless torchrun started this one
    threads_before = torch.get_num_threads()
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    try:
        per_rank_batch(tcfg.batch_size, dctx.world_size)  # the global batch must split evenly over the ranks
        fingerprint = run_fingerprint(cfg, tcfg, {
            "features": features_h5, "topk": topk_h5, "triplets": triplets_h5, "lexicon_h5": lexicon_h5,
            **{f"captions[{i}]": getattr(c, "path", c) for i, c in enumerate(captions)}})
        if dctx.is_main:
            check_run_dir(out, fingerprint, restart_if_changed)
        dctx.barrier()
        args = (Path(features_h5), Path(topk_h5), Path(triplets_h5), Path(lexicon_h5), _caption_sources(captions),
                Path(lexicon_dir))
        with deterministic(device):
            summary = _train(cfg, tcfg, *args, out, device, callback, dctx, fingerprint)
        if tcfg.refit:
            summary = _refit(cfg, tcfg, args, out, device, callback, dctx, fingerprint, summary)
        return summary
    finally:
        torch.set_num_threads(threads_before)
        dctx.close()


REFIT_DIR = "refit"


def final_checkpoint(out_dir: str | os.PathLike, refit: bool, select: str = "best") -> Path:
    """The checkpoint a run's predictions use (:func:`facenet_evc.layout.checkpoint_name`)."""
    return Path(out_dir) / checkpoint_name({"refit": refit, "select": select})


def _refit(cfg: FaceNetConfig, tcfg: TrainConfig, args: tuple, out: Path, device: torch.device,
           callback: Callable[[int, dict[str, Any]], None] | None, dctx: DistContext,
           fingerprint: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Retrain from scratch on every trainval video (``val_fraction = 0``) for ``best_step`` steps
    (``max_steps`` with ``select: last``), into ``out/refit/``: the first run picked the number of steps, the refit uses the held-out
    videos too. Same seed and settings otherwise; resumable like any run (its own ``run.json``
    records the step count, so a changed best step restarts it)."""
    steps = summary["best_step"] if tcfg.select == "best" else tcfg.max_steps
    if steps is None or steps < 1:
        raise ValueError(f"{out}: refit needs a best step from validation (val_fraction > 0); got {steps}")
    rcfg = TrainConfig.from_dict({**tcfg.to_dict(), "val_fraction": 0.0, "refit": False, "max_steps": steps,
                                  "ckpt_every": min(tcfg.ckpt_every, steps)})
    rout = out / REFIT_DIR
    rout.mkdir(parents=True, exist_ok=True)
    rfp = {**fingerprint, "refit_of": {"best_step": steps, "train_config": fingerprint["train_config"]},
           "train_config": {k: v for k, v in rcfg.to_dict().items() if k not in _UNFINGERPRINTED}}
    rfp = json.loads(json.dumps(rfp))
    if dctx.is_main:
        check_run_dir(rout, rfp, restart_if_changed=True)  # derived from the main run: never stale
    dctx.barrier()
    log.info("refit: retraining on every training video for %d steps (the %s step) into %s", steps,
             "best validation" if tcfg.select == "best" else "last", rout)
    with deterministic(device):
        rsum = _train(cfg, rcfg, *args, rout, device, callback, dctx, rfp)
    summary = {**summary, "refit": {"out_dir": str(rout), "steps": rsum["step"], "n_train_videos": rsum["n_train_videos"],
                                    "n_samples": rsum["n_samples"]},
               "final_checkpoint": str(final_checkpoint(out, True))}
    if dctx.is_main:
        write_json(out / "summary.json", summary)
    dctx.barrier()
    return summary


# Settings a resume may change: how a run is executed or shown, and how long it runs (a longer
# max_steps continues the same run; the weights up to the checkpoint do not depend on it).
_UNFINGERPRINTED = {"threads", "progress", "device", "eval_batch_size", "max_steps", "val_every", "ckpt_every", "refit",
                    "select"}
RUN_FILES = ("last", "best", "log.csv", "curves.png", "split.json", "summary.json", "run.json", TB_SUBDIR, REFIT_DIR)


def run_fingerprint(cfg: FaceNetConfig, tcfg: TrainConfig, inputs: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    """What a run's weights depend on: both configs and the SHA-256 of every input file (by role,
    so the same files under another path still match)."""
    fp = {"model_config": cfg.to_dict(),
          "train_config": {k: v for k, v in tcfg.to_dict().items() if k not in _UNFINGERPRINTED},
          "inputs": {role: file_sha256(p) for role, p in inputs.items()}}
    return json.loads(json.dumps(fp))  # as run.json reads back (tuples become lists)


def check_run_dir(out: Path, fingerprint: dict[str, Any], restart_if_changed: bool) -> None:
    """Keep ``out`` for resuming only if it was started with the same fingerprint (``run.json``,
    written by :func:`_train` once the inputs are checked, when a run starts)."""
    path = out / "run.json"
    if path.is_file():
        old = read_json(path)
        if old != fingerprint:
            changed = [f"{section}.{k}" for section in ("model_config", "train_config")
                       for k in sorted(set(old.get(section, {})) | set(fingerprint[section]))
                       if old.get(section, {}).get(k) != fingerprint[section].get(k)]
            changed += [f"input {role}" for role in sorted(set(old.get("inputs", {})) | set(fingerprint["inputs"]))
                        if old.get("inputs", {}).get(role) != fingerprint["inputs"].get(role)]
            if not restart_if_changed:
                raise ValueError(f"{out}: holds a run of other settings or inputs (changed: {', '.join(changed[:8])}); "
                                 "delete the folder or pass --restart-if-changed")
            log.warning("%s: settings or inputs changed (%s): starting afresh", out, ", ".join(changed[:8]))
            for name in RUN_FILES:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()


@dataclass
class RunData:
    """What a run trains and validates on, checked against each other and the model config."""

    artifacts: Artifacts
    lexicon: Lexicon
    train_ids: list[str]
    val_ids: list[str]
    samples: list[tuple[str, str]]  # (video id, normalised caption) of the training videos
    references: dict[str, list[str]]  # validation video -> its normalised captions


def load_run_data(cfg: FaceNetConfig, tcfg: TrainConfig, features_h5: Path, topk_h5: Path, triplets_h5: Path,
                  lexicon_h5: Path, sources: list[CaptionSource], lexicon_dir: Path) -> RunData:
    """Read the captions and artifacts, check that they belong together, split off the validation videos."""
    trainval = read_split(sources)
    caps = captions_by_video(trainval)
    artifacts = load_artifacts(features_h5, topk_h5, triplets_h5, lexicon_h5)
    artifacts.check_repository(trainval, [str(s.path) for s in sources])
    artifacts.check_model_config(cfg)
    lexicon = read_lexicon(lexicon_dir)
    if set(lexicon.words) != set(artifacts.lexicon_words):
        diff = sorted(set(lexicon.words) ^ set(artifacts.lexicon_words))
        raise ValueError(f"the lexicon folder {lexicon_dir} and {lexicon_h5} hold different words (e.g. {diff[:5]})")
    train_ids, val_ids = split_train_val(caps, tcfg.val_fraction, tcfg.seed)
    artifacts.check_videos(train_ids + val_ids)
    samples = make_samples(caps, train_ids, tcfg.max_len)
    if not samples:
        raise ValueError("no training caption left after normalisation")
    references = {v: [normalize_caption(c, tcfg.max_len) for c in caps[v]] for v in val_ids}
    return RunData(artifacts, lexicon, train_ids, val_ids, samples, references)


def find_resume_checkpoint(out: Path, cfg: FaceNetConfig, tcfg: TrainConfig,
                           dctx: DistContext) -> tuple[Path | None, dict[str, Any] | None]:
    """``out/last`` and its meta when a run resumes from it (model config checked), else (None, None)."""
    if dctx.is_main:
        resolve_checkpoint(out / "last")  # may move a half-replaced checkpoint back: one process does it
    dctx.barrier()
    ckpt = resolve_checkpoint(out / "last")  # every rank resumes from it
    meta = None
    if ckpt is not None:
        meta = read_meta(ckpt)
        check_model_config(meta["model_config"], cfg.to_dict(), str(ckpt))
        changed = [k for k in sorted(tcfg.to_dict()) if (meta.get("train_config") or {}).get(k) != tcfg.to_dict()[k]]
        if changed:
            log.warning("resuming %s with train config changes in %s", ckpt, changed)
    return ckpt, meta


def run_summary(out: Path, state: TrainState, data: RunData, vocab: Vocab | None, model: torch.nn.Module,
                device: torch.device, world_size: int) -> dict[str, Any]:
    """``summary.json``: where the run stopped, its best validation score and its sizes."""
    return {
        "out_dir": str(out),
        "step": state.step,
        "epoch": state.epoch,
        "metrics": state.metrics,
        "best_step": state.best_step,
        "best_metric": state.best_metric if math.isfinite(state.best_metric) else None,
        "n_samples": len(data.samples),
        "n_train_videos": len(data.train_ids),
        "n_val_videos": len(data.val_ids),
        "vocab_size": None if vocab is None else len(vocab),
        "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
        "device": str(device),
        "world_size": world_size,
    }


def _train(
    cfg: FaceNetConfig,
    tcfg: TrainConfig,
    features_h5: Path,
    topk_h5: Path,
    triplets_h5: Path,
    lexicon_h5: Path,
    sources: list[CaptionSource],
    lexicon_dir: Path,
    out: Path,
    device: torch.device,
    callback: Callable[[int, dict[str, Any]], None] | None,
    dctx: DistContext = DistContext(),
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # ---- data
    data = load_run_data(cfg, tcfg, features_h5, topk_h5, triplets_h5, lexicon_h5, sources, lexicon_dir)
    artifacts, lexicon, samples = data.artifacts, data.lexicon, data.samples
    train_ids, val_ids, references = data.train_ids, data.val_ids, data.references

    # ---- resume?
    ckpt, meta = find_resume_checkpoint(out, cfg, tcfg, dctx)

    # ---- model (seeded before construction: a resumed run rebuilds the same initial tensors)
    seed_everything(tcfg.seed)
    vocab = None
    if cfg.decoder not in LLM_DECODERS:
        vocab = Vocab.build([c for _, c in samples], artifacts.lexicon_words, tcfg.min_count)
        if meta is not None and meta.get("vocab") != vocab.to_dict():
            raise CheckpointError(f"{ckpt}: the checkpoint's vocabulary differs from the one built from the "
                                  "current training captions (other captions, lexicon, min_count or split?)")
    model = create_facenet(cfg, vocab=vocab, lexicon_words=artifacts.lexicon_words,
                           lexicon_vectors=artifacts.lexicon_vectors,
                           word_category=artifacts.lexicon_member.astype(np.float32)).to(device)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tcfg))
    state = TrainState()
    if ckpt is not None:
        state, _ = load_checkpoint(ckpt, model, optimizer, scheduler, cfg.to_dict(), restore_rng_state=True)
        log.info("resumed from %s at step %d (epoch %d, sample %d)", ckpt, state.step, state.epoch, state.pos)
    elif dctx.is_main:
        if fingerprint is not None:
            write_json(out / "run.json", fingerprint)
        write_json(out / "split.json", {"seed": tcfg.seed, "val_fraction": tcfg.val_fraction,
                                        "train": train_ids, "val": val_ids})
    dctx.seed_rank(tcfg.seed, ckpt, state.step)  # ranks > 0: their own dropout stream (no-op for one process)
    log.info("%d training samples of %d videos, %d validation videos, %d trainable parameters, device %s",
             len(samples), len(train_ids), len(val_ids), sum(p.numel() for p in model.trainable_parameters()), device)

    dataset = EVCDataset(artifacts, samples)
    collate = Collator(artifacts, model.decoder, cfg.delta)
    ckpt_kw = dict(model_config=cfg.to_dict(), train_config=tcfg.to_dict(),
                   vocab=None if vocab is None else vocab.to_dict(), lexicon_words=artifacts.lexicon_words)

    net = dctx.wrap(model, device)  # DistributedDataParallel under torchrun; validation and saving use `model`

    def save(name: str) -> None:
        rng = dctx.gather_rng()  # collective: every rank's RNG states (None for one process: captured in save)
        if dctx.is_main:
            save_checkpoint(out / name, model, optimizer, scheduler, state, rng=rng, **ckpt_kw)
        dctx.barrier()

    def validate() -> dict[str, float]:
        # fork_rng: validation must not move the training RNG stream (runs with and without an
        # extra validation, e.g. one ending at an intermediate max_steps, stay identical)
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            preds = generate_captions(model, artifacts, val_ids, tcfg.val_beams, tcfg.max_len,
                                      tcfg.eval_batch_size, device)
        return score_predictions(preds, references, lexicon)

    csv_log = CsvLog(out / "log.csv", state.step if ckpt is not None else None) if dctx.is_main else None
    # purge_step: drop the events a killed run wrote after the checkpoint it resumes from
    tb_log = TensorBoardLog(out, purge_step=state.step + 1) if dctx.is_main else None
    perm = epoch_permutation(len(dataset), tcfg.seed, state.epoch)
    bar = progress_bar(total=tcfg.max_steps, initial=min(state.step, tcfg.max_steps), unit="step", desc="train",
                       disable=not tcfg.progress or not dctx.is_main)
    model.train()
    try:
        while state.step < tcfg.max_steps:
            if state.pos >= len(perm):
                state.epoch += 1
                state.pos = 0
                perm = epoch_permutation(len(dataset), tcfg.seed, state.epoch)
            t_step = time.perf_counter()
            idx = perm[state.pos : state.pos + tcfg.batch_size]  # the global batch
            epoch = state.epoch
            state.pos += len(idx)
            mine = dctx.shard(idx)  # this rank's disjoint part (all of idx for one process)
            # an empty shard (last batch of an epoch smaller than the world) runs a stand-in with weight 0
            batch = to_device(collate([dataset[i] for i in (mine or idx[:1])]), device)

            lr = scheduler.get_last_lr()[0]
            optimizer.zero_grad(set_to_none=True)
            local = total = None
            if dctx.enabled:  # token / emotional-sample counts: the global-batch means (distributed.py)
                local = loss_counts(batch, model.pad_id, device) * float(bool(mine))  # (2,)
                total = dctx.all_sum(local)  # (2,)
            with autocast_for(cfg, device):
                res = net(batch, batch["targets"])
            loss = res["loss"] if local is None else rank_loss(res, local, total, dctx.world_size,
                                                                 cfg.lambda_e, cfg.lambda_cls)
            loss.backward()
            if tcfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), tcfg.grad_clip)
            optimizer.step()
            scheduler.step()
            state.step += 1
            step_seconds = time.perf_counter() - t_step

            row: dict[str, Any] = {"step": state.step, "epoch": epoch, "lr": float(lr),
                                   **dctx.global_losses(res, local, total, cfg.lambda_e, cfg.lambda_cls)}
            if not math.isfinite(row["loss"]):
                raise FloatingPointError(f"loss is {row['loss']} at step {state.step}; lower lr or set grad_clip")
            if val_ids and (state.step % tcfg.val_every == 0 or state.step == tcfg.max_steps):
                if dctx.is_main:
                    metrics = validate()
                    state.metrics = {k: float(metrics[k]) for k in VAL_METRICS}
                state.metrics = dctx.broadcast(state.metrics)  # the other ranks wait here for rank 0
                row.update(state.metrics)
                score = state.metrics[SELECT_METRIC]
                # The first validation always gives a best/ checkpoint, even when its score is
                # undefined (the official Acc_c overflows on degenerate captions): predict needs one,
                # and any later finite score replaces it.
                if state.best_step < 0 or (math.isfinite(score) and score > state.best_metric):
                    state.best_metric = score if math.isfinite(score) else -math.inf
                    state.best_step = state.step
                    save("best")
                if dctx.is_main:
                    bar.write(f"step {state.step}: " + " ".join(f"{k} {state.metrics[k]:.4f}" for k in VAL_METRICS))
            if csv_log is not None:
                csv_log.append(row)
            if tb_log is not None:
                tb_log.step(state.step, row, res.get("explain"), len(idx), step_seconds)
            if state.step % tcfg.ckpt_every == 0 or state.step == tcfg.max_steps:
                save("last")
            if dctx.is_main and ("CIDEr" in row or state.step == tcfg.max_steps):
                plot_curves(out / "log.csv", out / "curves.png")
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", epoch=epoch)
            if callback is not None:
                callback(state.step, row)
    finally:
        bar.close()
        if csv_log is not None:
            csv_log.close()
        if tb_log is not None:
            tb_log.close()
    if dctx.is_main and not (out / "curves.png").exists():
        plot_curves(out / "log.csv", out / "curves.png")
    summary = {**run_summary(out, state, data, vocab, model, device, dctx.world_size),
               "final_checkpoint": str(final_checkpoint(out, False, tcfg.select))}
    if dctx.is_main:
        write_json(out / "summary.json", summary)
    dctx.barrier()  # rank 0's files are complete when any rank returns
    return summary


# --------------------------------------------------------------------------- CLI


def _checked_mapping(value: str | None, what: str, cls: type) -> dict[str, Any]:
    """``load_mapping`` whose unknown keys and bad values are reported with the file (or flag) they came from,
    before any artifact is read."""
    data = load_mapping(value, what)
    try:
        cls.from_dict(data)  # FaceNetConfig: the artifact widths are not merged yet; keys and types are checked
    except (TypeError, ValueError) as e:
        where = f"{what} {value}" if value and not value.lstrip().startswith("{") else what
        raise ValueError(f"{where}: {e}") from None
    return data


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc train``."""
    add_artifact_args(parser)
    parser.add_argument("--lexicon-h5", required=True, help="lexicon embeddings HDF5 (embed-lexicon)")
    add_captions_args(parser)  # --captions: the trainval caption files (the repository, in order)
    parser.add_argument("--lexicon", required=True, help="folder of <category>.txt emotion word files")
    parser.add_argument("--model-config", default=None, help="FaceNetConfig: JSON/YAML file or inline JSON/YAML")
    parser.add_argument("--train-config", default=None, help="TrainConfig: JSON/YAML file or inline JSON/YAML")
    parser.add_argument("--out", required=True, help="output folder (resumed from <out>/last when present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads where the train config's threads is null (the workflow passes its job's cores)")
    parser.add_argument("--restart-if-changed", action="store_true",
                        help="if --out holds a run of other settings or inputs, discard it and start afresh "
                             "(default: stop with an error)")


def run_train_cli(args: argparse.Namespace) -> int:
    train_cfg = _checked_mapping(args.train_config, "--train-config", TrainConfig)
    if args.threads is not None and not train_cfg.get("threads"):
        train_cfg = {**train_cfg, "threads": args.threads}
    summary = train(_checked_mapping(args.model_config, "--model-config", FaceNetConfig), train_cfg,
                    args.features, args.topk, args.triplets, args.lexicon_h5,
                    caption_sources(args.captions, args.captions_seps), args.lexicon, args.out,
                    restart_if_changed=args.restart_if_changed)
    if int(os.environ.get("RANK") or 0) == 0:  # one summary under torchrun
        print(json.dumps(summary, indent=2))
    return 0
