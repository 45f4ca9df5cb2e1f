"""Training loop, checkpoints, exact resume (also after SIGKILL), prediction and the retrieval baseline.

Everything runs on tiny synthetic artifacts written in the stages' own layouts: 12 trainval +
4 test videos in three classes (N=4 frames, d=16), each class with its own templated captions
and emotion, K=2 retrieved captions from other videos of the same class.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.stages.triplets import Triplet, read_triplets_h5, write_triplets_h5
from facenet_evc.training.checkpoint import (
    CheckpointError,
    TrainState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from facenet_evc.training.config import TrainConfig
from facenet_evc.training.data import ArtifactError, load_artifacts, make_samples, split_train_val
from facenet_evc.inference.baseline import retrieval_baseline
from facenet_evc.inference.predict import predict
from facenet_evc.training.tensorboard_log import read_scalars
from facenet_evc.training.trainer import score_predictions, train
from helpers import (
    D_T,
    D_V,
    K,
    MODEL_CFG,
    N_FRAMES,
    S1,
    S2,
    TEST,
    TRAINVAL,
    build_artifacts,
    read_log,
    train_kwargs,
    write_features,
)

# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, str]:
    return build_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def reference(art, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run of S2 steps."""
    out = tmp_path_factory.mktemp("reference")
    t0 = time.perf_counter()
    summary = train(**train_kwargs(art, out))
    summary["seconds"] = time.perf_counter() - t0
    return out, summary


def _assert_same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"tensor {k} differs"


# --------------------------------------------------------------------------- the training run


@pytest.mark.slow  # trains a model
def test_training_outputs(reference, art):
    out, summary = reference
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, S2 + 1))
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert all(r["loss_cls"] for r in rows)
    val_steps = [int(r["step"]) for r in rows if r["CFS"]]
    assert val_steps == [10, 20, 30, 40]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for name in ("best", "last"):
        ckpt = out / name
        state = torch.load(ckpt / "state.pt", weights_only=True)
        assert {"optimizer", "scheduler", "rng", "train_state"} <= state.keys()
        assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
        tensors = load_file(str(ckpt / "model.safetensors"))
        assert "lexicon" in tensors and any(k.startswith("decoder.") for k in tensors)
        meta = json.loads((ckpt / "meta.json").read_text())
        assert meta["model_config"]["n_queries"] == 4 and meta["train_config"]["lr"] == 1e-2
        assert "happily" in meta["vocab"]["words"]
    assert json.loads((out / "last" / "meta.json").read_text())["step"] == S2
    assert summary["step"] == S2 and summary["best_step"] in (10, 20, 30, 40)
    assert set(summary["metrics"]) == {"CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS"}

    # TensorBoard: every step's losses, lr, throughput and module signals; metrics at validation steps
    tb = read_scalars(out / "tensorboard")
    every_step = list(range(1, S2 + 1))
    for tag in ("loss/total", "loss/e", "loss/cls", "train/lr", "perf/samples_per_s", "perf/step_seconds",
                "module/alpha_std", "module/alpha_subject", "module/theta_std", "module/router_entropy",
                "module/B_f_mean", "module/B_e_mean"):
        assert [s for s, _ in tb[tag]] == every_step, tag
    assert [v for _, v in tb["loss/total"]] == pytest.approx(losses, rel=1e-6)  # float32 in the event file
    assert all(0.0 <= v <= math.log(K) + 1e-6 for _, v in tb["module/router_entropy"])
    assert all(-1.0 < v < 1.0 for _, v in tb["module/B_f_mean"])
    for metric in ("CIDEr", "Acc_sw"):
        assert [s for s, _ in tb[f"val/{metric}"]] == val_steps, metric

    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 3 and len(split["train"]) == 9
    assert not set(split["val"]) & set(split["train"]) and not set(split["val"]) & set(TEST)
    print(f"reference run: {S2} steps in {summary['seconds']:.1f} s, final {summary['metrics']}")


@pytest.mark.slow  # trains a model
def test_resume_in_two_calls_is_exact(reference, art, tmp_path):
    ref_out, ref_summary = reference
    out = tmp_path / "two_calls"
    first = train(**train_kwargs(art, out, max_steps=S1))
    assert first["step"] == S1
    assert json.loads((out / "last" / "meta.json").read_text())["step"] == S1
    second = train(**train_kwargs(art, out))  # resumes from last/ (step 13, mid-epoch)
    assert second["step"] == S2
    _assert_same_weights(ref_out / "last", out / "last")
    assert second["metrics"] == ref_summary["metrics"]
    ref_rows, rows = read_log(ref_out / "log.csv"), read_log(out / "log.csv")
    cols = ("step", "epoch", "lr", "loss", "loss_e", "loss_cls")
    assert [[r[c] for c in cols] for r in rows] == [[r[c] for c in cols] for r in ref_rows]


@pytest.mark.slow  # trains a model
def test_resume_after_sigkill_is_exact(reference, art, tmp_path):
    ref_out, ref_summary = reference
    out = tmp_path / "killed"
    marker = tmp_path / "past_checkpoint"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kwargs": train_kwargs(art, out), "marker": str(marker), "hang_at": 14}))
    # the child trains normally, and after step 14 (first checkpoint at 10) signals and hangs
    # so that the kill lands after a checkpoint with uncheckpointed steps in the log
    script = (
        "import json, sys, time, pathlib, torch\n"
        "torch.set_num_threads(1)\n"
        "from facenet_evc.training.trainer import train\n"
        "spec = json.load(open(sys.argv[1]))\n"
        "def cb(step, row):\n"
        "    if step == spec['hang_at']:\n"
        "        pathlib.Path(spec['marker']).write_text('x')\n"
        "        time.sleep(600)\n"
        "train(**spec['kwargs'], callback=cb)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training subprocess exited early:\n{proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("training subprocess did not reach the hang step in 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((out / "last" / "meta.json").read_text())["step"] == 10
    assert max(int(r["step"]) for r in read_log(out / "log.csv")) == 14  # rows beyond the checkpoint

    resumed = train(**train_kwargs(art, out))
    _assert_same_weights(ref_out / "last", out / "last")
    _assert_same_weights(ref_out / "best", out / "best")
    assert resumed["metrics"] == ref_summary["metrics"]
    assert (out / "log.csv").read_bytes() == (ref_out / "log.csv").read_bytes()
    # the killed run's events past the checkpoint (steps 11-14) are purged: one event per step
    tb, ref_tb = read_scalars(out / "tensorboard"), read_scalars(ref_out / "tensorboard")
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert tb["loss/total"] == ref_tb["loss/total"]


@pytest.mark.slow  # trains a model
def test_model_config_mismatch_is_named(reference, art, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "mismatch"
    out.mkdir()
    shutil.copytree(ref_out / "last", out / "last")
    kw = train_kwargs(art, out)
    kw["model_cfg"] = {**MODEL_CFG, "n_queries": 8,
                       "decoder_settings": {**MODEL_CFG["decoder_settings"], "hidden_size": 64}}
    with pytest.raises(CheckpointError, match=r"n_queries.*decoder_settings\.hidden_size|decoder_settings\.hidden_size.*n_queries"):
        train(**kw)
    with pytest.raises(CheckpointError, match="n_queries"):
        load_checkpoint(out / "last", expected_model_config={**MODEL_CFG, "n_queries": 8})


@pytest.mark.slow  # trains a model
def test_changed_settings_or_inputs_do_not_resume_stale_weights(reference, art, tmp_path):
    """run.json fingerprints a run: another setting or input file is an error, or (as the
    workflow asks) a fresh start; same settings resume."""
    ref_out, ref_summary = reference
    out = tmp_path / "run"
    shutil.copytree(ref_out, out)
    kw = train_kwargs(art, out)
    kw["model_cfg"] = {**MODEL_CFG, "delta": MODEL_CFG.get("delta", 0.1) + 1.0}
    with pytest.raises(ValueError, match=r"other settings or inputs \(changed: model_config\.delta\)"):
        train(**kw)
    assert (out / "last").is_dir()  # nothing discarded without the flag
    # another features file (same shapes, other values): only the input changed
    feats = tmp_path / "features.h5"
    shutil.copy(art["features"], feats)
    with h5py.File(feats, "r+") as f:
        f["frames"][0] = f["frames"][0] + 1.0
    kw2 = {**train_kwargs(art, out), "features_h5": str(feats), "restart_if_changed": True}
    summary = train(**kw2)
    assert summary["step"] == ref_summary["step"]
    log_rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in log_rows] == list(range(1, ref_summary["step"] + 1))  # a fresh log
    assert json.loads((out / "run.json").read_text())["inputs"]["features"] != \
        json.loads((ref_out / "run.json").read_text())["inputs"]["features"]


def test_checkpoint_survives_kill_between_renames(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "last"
    save_checkpoint(path, model, None, None, TrainState(step=1), {"a": 1})
    # a kill after "last -> .last.old" and before ".last.tmp-* -> last"
    os.replace(path, tmp_path / ".last.old")
    (tmp_path / ".last.tmp-x").mkdir()
    assert resolve_checkpoint(path) == path
    state, meta = load_checkpoint(path)
    assert state.step == 1 and meta["model_config"] == {"a": 1}
    save_checkpoint(path, model, None, None, TrainState(step=2), {"a": 1})
    assert load_checkpoint(path)[0].step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


# --------------------------------------------------------------------------- inference


@pytest.mark.slow  # trains a model
def test_predict_one_caption_per_test_video(reference, art, tmp_path):
    ref_out, _ = reference
    out_json = tmp_path / "pred.json"
    preds = predict(ref_out / "best", art["features"], art["topk"], art["triplets"], TEST, out_json,
                    num_beams=5, max_len=15, batch_size=3, device="cpu", progress=False)
    assert json.loads(out_json.read_text()) == preds
    assert sorted(preds) == TEST
    assert all(isinstance(c, str) and len(c.split()) <= 15 for c in preds.values())


def test_retrieval_baseline_takes_top1(art, tmp_path):
    out_json = tmp_path / "baseline.json"
    preds = retrieval_baseline(art["topk"], TEST, out_json)
    assert json.loads(out_json.read_text()) == preds
    with h5py.File(art["topk"], "r") as f:
        ids = [s.decode() for s in f["video_ids"][()]]
        caps = [s.decode() for s in f["repository/caption"][()]]
        first = f["indices"][()][:, 0]
    for vid in TEST:
        raw = caps[first[ids.index(vid)]]
        assert preds[vid] == raw.lower().replace(".", "").replace("!", "")
    with pytest.raises(ValueError, match=r"'ghost'.*topk\.h5"):
        retrieval_baseline(art["topk"], ["ghost"], tmp_path / "x.json")


# --------------------------------------------------------------------------- data contract


def test_missing_video_is_named(art, tmp_path):
    rng = np.random.default_rng(1)
    feats = tmp_path / "features_missing.h5"
    write_features(feats, [v for v in TRAINVAL + TEST if v != "tv05"], rng)
    a = load_artifacts(feats, art["topk"], art["triplets"], art["lexicon_h5"])
    with pytest.raises(ArtifactError, match=r"'tv05'.*features_missing\.h5"):
        a.video_inputs(["tv01", "tv05"])
    kw = train_kwargs({**art, "features": str(feats)}, tmp_path / "run")
    with pytest.raises(ArtifactError, match=r"'tv05'.*features_missing\.h5"):
        train(**kw)


def test_triplet_repository_mismatch_names_both_files(art, tmp_path):
    caps, _, emb, _ = read_triplets_h5(art["triplets"])
    caps = list(caps)
    caps[3] = "something else"
    bad = tmp_path / "triplets_bad.h5"
    write_triplets_h5(bad, caps, [Triplet("", "", "")] * len(caps), emb)
    with pytest.raises(ArtifactError, match=r"triplets_bad\.h5.*topk\.h5"):
        load_artifacts(art["features"], art["topk"], bad, art["lexicon_h5"])


def test_batches_follow_the_contract(art):
    a = load_artifacts(art["features"], art["topk"], art["triplets"], art["lexicon_h5"])
    b = a.video_inputs(["tv04", "te01"])
    assert b["frames"].shape == (2, N_FRAMES, D_V) and b["triplets"].shape == (2, K, 3, D_T)
    assert b["sims"].shape == (2, K)
    with h5py.File(art["triplets"], "r") as f, h5py.File(art["topk"], "r") as t:
        row = [s.decode() for s in t["video_ids"][()]].index("tv04")
        assert torch.equal(b["triplets"][0], torch.from_numpy(f["embeddings"][()][t["indices"][()][row]]))
    cats = a.lexicon_categories  # sorted files: anger, joy, sadness
    e = a.emotion_targets(["a woman is upset", "a happy happy man", "a dog"])
    assert e.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]] and cats == ["anger", "joy", "sadness"]
    samples = make_samples({"v": ["A Man, smiling!", "..."]}, ["v"])
    assert samples == [("v", "a man smiling")]  # normalised; the empty one dropped


def test_split_is_seeded_and_order_free():
    ids = [f"v{i}" for i in range(20)]
    tr, va = split_train_val(ids, 0.1, seed=3)
    assert len(va) == 2 and sorted(tr + va) == sorted(ids)
    assert split_train_val(ids[::-1], 0.1, seed=3) == (tr, va)
    assert split_train_val(ids, 0.1, seed=4) != (tr, va)
    assert split_train_val(ids, 0.0, seed=3) == (sorted(ids), [])


def test_validation_scores_survive_undefined_acc_c(art):
    # every caption with a right emotion also has a wrong one: the official Acc_c overflows
    lexicon = read_lexicon(art["lexicon_dir"])
    m = score_predictions({"v": "a happy angry man"}, {"v": ["a happy man"]}, lexicon)
    assert np.isnan(m["Acc_c"]) and np.isnan(m["CFS"]) and m["Acc_sw"] == 0.5 and m["CIDEr"] >= 0


def test_train_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"\['bogus', 'lr_rate'\]"):
        TrainConfig.from_dict({"lr_rate": 1e-3, "bogus": 1})
    assert TrainConfig.from_dict({"lr": "7e-4"}).lr == 7e-4  # YAML 1.1 reads 7e-4 as a string
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig.from_dict({"val_fraction": 1.0})


# --------------------------------------------------------------------------- CLI hooks


@pytest.mark.slow  # trains a model
def test_cli_hooks(reference, art, tmp_path):
    import argparse

    from facenet_evc.inference import baseline
    from facenet_evc.inference import predict as predict_cmd
    from facenet_evc.training.trainer import add_train_arguments, run_train_cli

    ref_out, _ = reference
    (tmp_path / "train.yaml").write_text("lr: 1e-2\nmax_steps: 3\nval_every: 3\nckpt_every: 3\nval_fraction: 0.25\n"
                                         "threads: 1\ndevice: cpu\nprogress: false\nbatch_size: 8\n")
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    args = p.parse_args(["--features", art["features"], "--topk", art["topk"], "--triplets", art["triplets"],
                         "--lexicon-h5", art["lexicon_h5"], "--captions", art["trainval"], "--captions-seps", "comma",
                         "--lexicon", art["lexicon_dir"], "--model-config", json.dumps(MODEL_CFG),
                         "--train-config", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "cli_run")])
    assert run_train_cli(args) == 0
    assert json.loads((tmp_path / "cli_run" / "last" / "meta.json").read_text())["step"] == 3

    p = argparse.ArgumentParser()
    predict_cmd.add_arguments(p)
    args = p.parse_args(["--checkpoint", str(ref_out / "last"), "--features", art["features"], "--topk", art["topk"],
                         "--triplets", art["triplets"], "--captions", art["test"], "--out", str(tmp_path / "p.json"),
                         "--num-beams", "2", "--device", "cpu"])
    assert predict_cmd.run_cli(args) == 0
    assert sorted(json.loads((tmp_path / "p.json").read_text())) == TEST

    p = argparse.ArgumentParser()
    baseline.add_arguments(p)
    args = p.parse_args(["--topk", art["topk"], "--captions", art["test"], "--out", str(tmp_path / "b.json")])
    assert baseline.run_cli(args) == 0
    assert sorted(json.loads((tmp_path / "b.json").read_text())) == TEST


def test_select_last_predicts_with_the_final_step(art, tmp_path):
    """select: last keeps validating (logged, best/ written) but names last/ as the checkpoint that
    predicts; the weights do not depend on it, so a finished run switched to it is not retrained."""
    from facenet_evc import layout

    run = tmp_path / "run"
    first = train(**train_kwargs(art, run, max_steps=8, val_every=4, ckpt_every=4))
    assert first["final_checkpoint"] == str(run / "best")
    switched = train(**train_kwargs(art, run, max_steps=8, val_every=4, ckpt_every=4, select="last"))
    assert switched["final_checkpoint"] == str(run / "last") and switched["best_step"] == first["best_step"]
    assert len(read_log(run / "log.csv")) == 8  # resumed at the end: no step trained twice
    assert (run / "best").is_dir()
    assert layout.final_checkpoint({"select": "last"}) == layout.LAST_CHECKPOINT
    assert layout.final_checkpoint({"select": "last", "refit": True}) == layout.REFIT_CHECKPOINT
    assert layout.final_checkpoint({}) == layout.CHECKPOINT
    with pytest.raises(ValueError, match="select"):
        train(**train_kwargs(art, tmp_path / "bad", select="latest"))


def test_refit_retrains_on_every_training_video_for_the_best_step(art, tmp_path):
    """refit: validation picks the step, then a run on all trainval videos (none held out) for
    that many steps; it is the run one would get by hand with val_fraction 0, weight for weight."""
    over = dict(max_steps=12, val_every=4, ckpt_every=4, refit=True)
    summary = train(**train_kwargs(art, tmp_path / "run", **over))
    best = summary["best_step"]
    assert best in (4, 8, 12)
    refit = tmp_path / "run" / "refit"
    assert summary["final_checkpoint"] == str(refit / "last")
    assert summary["refit"]["steps"] == best and summary["refit"]["n_train_videos"] == len(TRAINVAL)
    assert json.loads((refit / "split.json").read_text())["val"] == []
    assert len(read_log(refit / "log.csv")) == best
    assert not (refit / "best").exists()  # nothing held out, nothing to select on
    by_hand = train(**train_kwargs(art, tmp_path / "by_hand", max_steps=best, ckpt_every=4, val_fraction=0.0))
    assert by_hand["n_train_videos"] == len(TRAINVAL)
    _assert_same_weights(refit / "last", tmp_path / "by_hand" / "last")
    # a second call finds both runs complete: nothing retrained, same answer
    again = train(**train_kwargs(art, tmp_path / "run", **over))
    assert again["refit"] == summary["refit"] and again["best_step"] == best
    preds = predict(refit / "last", art["features"], art["topk"], art["triplets"], TEST, tmp_path / "p.json",
                    num_beams=2, max_len=15, batch_size=4, device="cpu", progress=False)
    assert sorted(preds) == TEST


def test_resumed_event_file_is_read_after_the_one_it_purges(tmp_path):
    """A resume within the second of the kill: the killed run's event file carries the current
    second and a pid that sorts after this process's, so TensorBoard (name order) would read the
    resumed file first unless the resumed writer waits for the next second."""
    import socket
    import time as _time

    from facenet_evc.training.tensorboard_log import TensorBoardLog

    killed = TensorBoardLog(tmp_path, purge_step=1)  # as the trainer starts every run: a START event at step 1
    for step in range(1, 15):
        killed.writer.add_scalar("loss/total", float(step), step)
    killed.close()
    (written,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    now = int(_time.time())
    crafted = f"events.out.tfevents.{now:010d}.{socket.gethostname()}.99999999.0"
    written.rename(written.with_name(crafted))

    resumed = TensorBoardLog(tmp_path, purge_step=11)
    for step in range(11, 21):
        resumed.writer.add_scalar("loss/total", 100.0 + step, step)
    resumed.close()
    names = sorted(p.name for p in (tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert names[0] == crafted
    values = read_scalars(tmp_path / "tensorboard")["loss/total"]
    assert [s for s, _ in values] == list(range(1, 21))
    assert [v for s, v in values if s >= 11] == [100.0 + s for s in range(11, 21)]


def test_event_file_from_the_future_is_not_waited_for(tmp_path):
    """A file stamped an hour ahead (another machine's clock) costs at most the bounded wait."""
    import time as _time

    from facenet_evc.training.tensorboard_log import wait_past_newest_event_file

    (tmp_path / f"events.out.tfevents.{int(_time.time()) + 3600:010d}.host.1.0").write_bytes(b"")
    t0 = _time.monotonic()
    wait_past_newest_event_file(tmp_path)
    assert _time.monotonic() - t0 < 3.0
