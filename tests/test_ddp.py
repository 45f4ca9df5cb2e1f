"""Multi-process training under torchrun: 2 CPU processes (Gloo) against one process.

On the tiny artifacts of ``test_training`` (27 training captions), with a global batch of 26
(13 per rank) an epoch is one full batch and one batch of a single caption, so rank 1's
shard is empty every other step: the loss scaling, the stand-in sample and the epoch
boundary are all exercised in 6 steps. Without dropout the 2-process run must follow the
single-process run (same global batch) step by step; with dropout a 2-process run stopped
after a checkpoint and resumed with the documented CLI command must equal an uninterrupted
2-process run bit for bit (each rank's RNG stream is checkpointed).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from facenet_evc.training.distributed import per_rank_batch, shard_batch
from facenet_evc.training.trainer import train
from helpers import MODEL_CFG, TRAIN_CFG, build_artifacts, read_log, train_kwargs

NO_DROPOUT = {**MODEL_CFG, "dropout": 0.0, "decoder_settings": {**MODEL_CFG["decoder_settings"], "dropout": 0.0}}
RUN = dict(batch_size=26, max_steps=6, val_every=3, ckpt_every=3)
STOP = 3  # the stopped run ends (and checkpoints) here, mid-epoch
RTOL = 1e-5  # losses and gradients of 2 processes vs 1: float32 sums in another order
WEIGHT_RTOL = 1e-3  # final weights, relative L2 (see test_two_processes_match_one)
LOSSES = ("loss", "loss_e", "loss_cls")

WORKER = """
import json, sys, torch, torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook
torch.set_num_threads(1)
from facenet_evc.training.trainer import train
dist.init_process_group("gloo")  # opened by the caller: train() uses it and leaves it open
for job in json.load(open(sys.argv[1])):
    grads = []  # the all-reduced gradient of every step, as test_ddp.flat_grad takes it
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: grads.append(
        torch.cat([p.grad.detach().flatten().clone() for g in opt.param_groups for p in g["params"]])))
    train(**job["kwargs"])
    hook.remove()
    if job["grads"] and dist.get_rank() == 0:
        torch.save(grads, job["grads"])
dist.destroy_process_group()
"""


def flat_grad(optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Every gradient the optimizer is about to apply, in its parameter order, as one vector."""
    return torch.cat([p.grad.detach().flatten().clone() for g in optimizer.param_groups for p in g["params"]])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], log_path: Path) -> float:
    """Run ``torchrun --nproc_per_node 2 <args>`` on the CPU; its wall time in seconds."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=240)
    if proc.returncode != 0:
        pytest.fail(f"torchrun exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
    return time.perf_counter() - t0


def _rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    """The single-process reference, three 2-process runs in one torchrun launch, and the CLI resume."""
    root = tmp_path_factory.mktemp("ddp")
    art = build_artifacts(root / "artifacts")
    out = {name: root / name for name in ("single", "ddp", "dropout", "stopped")}
    out["root"] = root

    kw = train_kwargs(art, out["single"], **RUN)
    kw["model_cfg"] = NO_DROPOUT
    torch.set_num_threads(1)
    grads: list[torch.Tensor] = []
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: grads.append(flat_grad(opt)))
    t0 = time.perf_counter()
    try:
        train(**kw)
    finally:
        hook.remove()
    print(f"1-process run: {time.perf_counter() - t0:.1f} s")
    torch.save(grads, root / "single_grads.pt")

    jobs = [{"kwargs": {**train_kwargs(art, out["ddp"], **RUN), "model_cfg": NO_DROPOUT},
             "grads": str(root / "ddp_grads.pt")},
            {"kwargs": train_kwargs(art, out["dropout"], **RUN), "grads": None},
            {"kwargs": train_kwargs(art, out["stopped"], **{**RUN, "max_steps": STOP}), "grads": None}]
    spec = root / "jobs.json"
    spec.write_text(json.dumps(jobs))
    worker = root / "worker.py"
    worker.write_text(WORKER)
    seconds = _torchrun([str(worker), str(spec)], root / "launch1.log")
    print(f"2-process launch with 3 runs: {seconds:.1f} s")

    # the stopped run, resumed with the README command (module form of the CLI)
    meta_before = json.loads((out["stopped"] / "last" / "meta.json").read_text())
    state = torch.load(out["stopped"] / "last" / "state.pt", weights_only=True)
    out["stopped_rng"] = state["rng"]
    out["stopped_meta"] = meta_before
    cli = ["-m", "facenet_evc", "train", "--features", art["features"], "--topk", art["topk"],
           "--triplets", art["triplets"], "--lexicon-h5", art["lexicon_h5"], "--captions", art["trainval"],
           "--lexicon", art["lexicon_dir"], "--model-config", json.dumps(MODEL_CFG),
           "--train-config", json.dumps({**TRAIN_CFG, **RUN}), "--out", str(out["stopped"])]
    seconds = _torchrun(cli, root / "launch2.log")
    out["cli_log"] = root / "launch2.log"
    print(f"2-process CLI resume: {seconds:.1f} s")
    return out


@pytest.mark.slow  # trains a model
def test_two_processes_match_one(runs):
    single, ddp = read_log(runs["single"] / "log.csv"), read_log(runs["ddp"] / "log.csv")
    assert [int(r["step"]) for r in ddp] == list(range(1, RUN["max_steps"] + 1))  # rank 0 alone wrote the log
    assert [r["epoch"] for r in ddp] == [r["epoch"] for r in single] == ["0", "0", "1", "1", "2", "2"]
    losses = [float(r["loss"]) for r in single]
    assert losses[-1] < losses[0]  # it trains at all
    worst_loss = max(_rel_diff(float(d[c]), float(s[c])) for d, s in zip(ddp, single) for c in LOSSES)

    # the gradient Adam applies at each step: DDP's all-reduced one against the full batch's
    g_single, g_ddp = torch.load(runs["root"] / "single_grads.pt"), torch.load(runs["root"] / "ddp_grads.pt")
    assert len(g_single) == len(g_ddp) == RUN["max_steps"]
    worst_grad = max(float((a - b).norm() / b.norm()) for a, b in zip(g_ddp, g_single))

    # Adam turns float noise in gradients that are zero in exact arithmetic (the key bias of an
    # attention: softmax ignores a constant) into steps of up to lr, so single weights drift
    # further apart than the gradients; the whole weight vector stays close
    a, b = load_file(str(runs["ddp"] / "last" / "model.safetensors")), load_file(str(runs["single"] / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    weights = sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5 / sum(float(b[k].pow(2).sum()) for k in b) ** 0.5
    worst_elem = max(float((a[k] - b[k]).abs().max()) for k in a if a[k].numel())
    print(f"2 processes vs 1 over {RUN['max_steps']} steps: max relative loss difference {worst_loss:.2e}, "
          f"max relative L2 gradient difference {worst_grad:.2e}, final weights relative L2 difference "
          f"{weights:.2e} (max element difference {worst_elem:.2e}, lr {TRAIN_CFG['lr']})")
    assert worst_loss <= RTOL, worst_loss
    assert worst_grad <= RTOL, worst_grad
    assert weights <= WEIGHT_RTOL, weights

    summary = json.loads((runs["ddp"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == RUN["max_steps"]
    assert json.loads((runs["ddp"] / "last" / "meta.json").read_text())["step"] == RUN["max_steps"]
    assert (runs["ddp"] / "split.json").read_text() == (runs["single"] / "split.json").read_text()


@pytest.mark.slow  # trains a model
def test_two_process_resume_is_exact(runs):
    # the stopped run checkpointed every rank's RNG stream; ranks have their own dropout streams
    assert runs["stopped_meta"]["step"] == STOP
    ranks = runs["stopped_rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
    assert torch.equal(runs["stopped_rng"]["torch"], ranks[0]["torch"])  # where one process looks

    resumed, full = runs["stopped"], runs["dropout"]
    ta, tb = load_file(str(resumed / "last" / "model.safetensors")), load_file(str(full / "last" / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"tensor {k} differs after the resume"
    cols = ("step", "epoch", "lr") + LOSSES
    assert [[r[c] for c in cols] for r in read_log(resumed / "log.csv")] == \
           [[r[c] for c in cols] for r in read_log(full / "log.csv")]
    printed = runs["cli_log"].read_text()
    assert printed.count('"world_size": 2') == 1  # the CLI summary, printed by rank 0 only


def test_global_batch_sharding():
    idx = list(range(100, 126))
    for world in (1, 2, 3, 4):
        for n in (0, 1, 5, 26):
            parts = [shard_batch(idx[:n], r, world) for r in range(world)]
            assert sorted(i for p in parts for i in p) == idx[:n]  # disjoint, nothing lost
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert per_rank_batch(26, 2) == 13
    with pytest.raises(ValueError, match=r"batch_size=7 is the global batch.*divisible.*\(2\)"):
        per_rank_batch(7, 2)
