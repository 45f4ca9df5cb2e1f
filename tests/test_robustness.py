"""Faults and bad inputs: every case ends with a clear error and no output a rerun would trust.

Each case drives the command a user runs (``facenet_evc.cli.main([...])``: exit status 2 and
one ``facenet-evc: error: <file>:<line or key>: <what was expected>`` line on stderr) or,
where no command is the natural entry, the package function, and then checks that the
output path does not exist and that no temporary file was left beside it.

Covered elsewhere and not repeated here: training killed with SIGKILL resumes bit-exactly
(``tests/test_training.py::test_resume_after_sigkill_is_exact``).

Inputs are tiny: caption CSVs of a few rows, 32x32 six-frame videos, the randomly
initialised ``demo-tiny-rn`` CLIP, and the synthetic training artifacts of
``tests/test_training.py`` (N=4 frames, d_v=16) with a two-step checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import facenet_evc.io as io
from facenet_evc.cli import main
from facenet_evc.io import atomic_h5, read_strings, write_strings
from facenet_evc.models.config import FaceNetConfig
from facenet_evc.models.decoders import Vocab
from facenet_evc.training.checkpoint import CheckpointError, checkpoint_state_dict, load_checkpoint, read_meta
from facenet_evc.training.factory import create_facenet
from facenet_evc.training.trainer import train
from helpers import MODEL_CFG, TEST, TRAINVAL, build_artifacts, train_kwargs

TINY_CLIP = ["--model", "demo-tiny-rn", "--pretrained", "none"]  # random init: nothing to download
HEADER = "VideoID,EmCaptions\n"


# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- helpers


def cli_error(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run the CLI, expect exit status 2 and return its single ``facenet-evc: error:`` line."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, f"exit status {rc}, stderr:\n{err}"
    lines = [ln for ln in err.splitlines() if ln.startswith("facenet-evc: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err  # a message, not a stack dump
    return lines[0]


def assert_nothing_written(out: Path) -> None:
    """``out`` absent, and nothing (no temporary file either) in its folder.

    An output *folder* (``train --out``) may exist if it holds no file: the trainer creates
    it before checking the data, and an empty folder is nothing a rerun could trust.
    """
    if out.is_dir() and not out.suffix:
        assert not [p for p in out.rglob("*") if p.is_file()], f"files written under {out}"
        return
    assert not out.exists(), f"{out} was written"
    if out.parent.exists():
        left = sorted(p.name for p in out.parent.rglob("*") if p.is_file())
        assert left == [], f"left behind in {out.parent}: {left}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_video(path: Path, n: int = 6, size: int = 32, seed: int = 0) -> None:
    """A tiny H.264 clip of random-noise frames."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_features(path: Path, video_ids: list[str], frames: np.ndarray) -> Path:
    """A file in the clip_features layout with the given ``frames`` array (any shape)."""
    with atomic_h5(path) as f:
        write_strings(f, "video_ids", video_ids)
        f.create_dataset("frames", data=frames.astype(np.float32))
        f.create_dataset("mean", data=frames.reshape(len(video_ids), -1, frames.shape[-1]).mean(1))
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with three decodable clips vid1..vid3."""
    root = tmp_path_factory.mktemp("videos")
    for i in (1, 2, 3):
        write_video(root / f"vid{i}.mp4", seed=i)
    return root


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """test_training's synthetic artifacts plus a two-step checkpoint trained on them."""
    root = tmp_path_factory.mktemp("artifacts")
    a = build_artifacts(root / "art")
    train(**train_kwargs(a, root / "run", max_steps=2, val_every=2, ckpt_every=2))
    return {**a, "checkpoint": str(root / "run" / "last")}


def predict_args(art: dict[str, str], out: Path, **over: str) -> list[str]:
    a = {**art, **over}
    return ["predict", "--checkpoint", a["checkpoint"], "--features", a["features"], "--topk", a["topk"],
            "--triplets", a["triplets"], "--captions", a["test"], "--out", str(out), "--num-beams", "1",
            "--device", "cpu"]


def train_args(art: dict[str, str], out: Path, **over: str) -> list[str]:
    a = {**art, **over}
    return ["train", "--features", a["features"], "--topk", a["topk"], "--triplets", a["triplets"],
            "--lexicon-h5", a["lexicon_h5"], "--captions", a["trainval"], "--lexicon", a["lexicon_dir"],
            "--model-config", a.get("model_config", json.dumps(MODEL_CFG)),
            "--train-config", a.get("train_config", '{"max_steps": 1, "threads": 1, "device": "cpu", "progress": false}'),
            "--out", str(out)]


# --------------------------------------------------------------------------- 1-3: caption files


@pytest.mark.parametrize("row, problem", [
    ('vid2,"a cat sits on the mat\n', r"unterminated '\"'"),
    ("vid2,a cat,sits,here\n", r"the row has 4 fields, expected 2 \(VideoID,EmCaptions\)"),
], ids=["unterminated-quote", "extra-fields"])
def test_malformed_caption_row_names_file_and_line(capsys, tmp_path, row, problem):
    csv = write(tmp_path / "caps.csv", HEADER + "vid1,a dog runs happily\n" + row + "vid3,a bird sings\n")
    out = tmp_path / "out" / "refs.json"
    msg = cli_error(capsys, "prepare-references", "--captions", csv, "--out", out)
    assert f"{csv}:3: cannot parse as comma-separated values" in msg
    assert re.search(problem, msg), msg
    assert_nothing_written(out)


@pytest.mark.parametrize("text, declared, found", [
    ("VideoID\tEmCaptions\nvid1\ta dog runs\n", "comma", "TAB"),
    ("VideoID,EmCaptions\nvid1,a dog runs\n", "tab", "comma"),
], ids=["tab-file-declared-comma", "comma-file-declared-tab"])
def test_wrong_separator_names_file_and_both_separators(capsys, tmp_path, text, declared, found):
    csv = write(tmp_path / "caps.csv", text)
    out = tmp_path / "out" / "refs.json"
    msg = cli_error(capsys, "prepare-references", "--captions", csv, "--captions-seps", declared, "--out", out)
    expected = {"comma": "comma", "tab": "TAB"}[declared]
    assert f"{csv}:1: wrong separator: the file is {found}-separated but {expected}-separated was expected" in msg
    assert_nothing_written(out)


@pytest.mark.parametrize("caption", ["   ", '"  "'], ids=["blank", "quoted-blank"])
def test_empty_caption_names_file_line_and_video(capsys, tmp_path, caption):
    csv = write(tmp_path / "caps.csv", HEADER + "vid1,a dog runs happily\nvid1,a dog runs\n" + f"vid2,{caption}\n")
    out = tmp_path / "out" / "refs.json"
    msg = cli_error(capsys, "prepare-references", "--captions", csv, "--out", out)
    assert f"{csv}:4: empty caption for video 'vid2'" in msg
    assert_nothing_written(out)


# --------------------------------------------------------------------------- 4-5: videos


def test_missing_video_names_folder_and_id(capsys, tmp_path, videos):
    csv = write(tmp_path / "caps.csv", HEADER + "vid1,a dog runs\nvid9,a ghost floats\nvid2,a cat sits\n")
    out = tmp_path / "out" / "clip_frames.h5"
    msg = cli_error(capsys, "extract-features", "--videos", videos, "--captions", csv, *TINY_CLIP, "--out", out,
                    "--n-frames", "4", "--num-workers", "0")
    assert f"{videos}: no video file" in msg and "for 1 id(s): vid9" in msg
    assert_nothing_written(out)


def test_corrupt_video_names_the_file_and_leaves_no_partial_features(capsys, tmp_path, videos):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in (1, 2):
        shutil.copy(videos / f"vid{i}.mp4", folder / f"vid{i}.mp4")
    # sorted last, so two rows are already in the (temporary) HDF5 file when it fails
    (folder / "vid3.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    out = tmp_path / "out" / "clip_frames.h5"
    msg = cli_error(capsys, "extract-features", "--videos", folder, *TINY_CLIP, "--out", out, "--n-frames", "4",
                    "--batch-size", "1", "--num-workers", "0")
    assert f"{folder / 'vid3.mp4'}: " in msg and "video" in msg
    assert_nothing_written(out)


# --------------------------------------------------------------------------- 6-7: configs


DATASET = {"name": "toy", "data": {"captions": {"trainval": [{"path": "a.csv"}], "test": [{"path": "b.csv"}]},
                                   "lexicon": "lex"}}


@pytest.mark.parametrize("section, key, allowed", [
    ("train", "learning_rate", "batch_size"),
    ("model", "n_query", "n_queries"),
    ("retrieval", "topk", "nprobe"),
], ids=["train.learning_rate", "model.n_query", "retrieval.topk"])
def test_unknown_config_key_names_file_key_and_allowed_keys(capsys, tmp_path, section, key, allowed):
    cfg = write(tmp_path / "ds.yaml", yaml.safe_dump({**DATASET, section: {key: 1}}))
    msg = cli_error(capsys, "validate-config", "--config", cfg)
    assert f"{cfg}: {section}.{key}: unknown key (allowed here: " in msg and allowed in msg


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "lr", "fast", "'fast' is not of type 'number'"),
    ("train", "max_steps", 1.5, "1.5 is not of type 'integer'"),
    ("model", "use_dbar", "yes", "'yes' is not of type 'boolean'"),
], ids=["train.lr", "train.max_steps", "model.use_dbar"])
def test_wrong_config_type_names_file_key_and_type(capsys, tmp_path, section, key, value, expected):
    cfg = write(tmp_path / "ds.yaml", yaml.safe_dump({**DATASET, section: {key: value}}))
    msg = cli_error(capsys, "validate-config", "--config", cfg)
    assert f"{cfg}: {section}.{key}: {expected}" in msg


@pytest.mark.parametrize("text, expected", [
    ("lr: fast\n", "TrainConfig.lr must be a number, got 'fast'"),
    ("lr_rate: 0.001\n", "TrainConfig: unknown keys ['lr_rate']"),
], ids=["wrong-type", "unknown-key"])
@pytest.mark.slow  # trains a model
def test_train_config_file_errors_name_the_file(capsys, tmp_path, art, text, expected):
    tcfg = write(tmp_path / "train.yaml", text)
    out = tmp_path / "out" / "train"
    msg = cli_error(capsys, *train_args(art, out, train_config=str(tcfg)))
    assert f"--train-config {tcfg}: {expected}" in msg
    assert_nothing_written(out)


# --------------------------------------------------------------------------- 8: lexicon


@pytest.mark.parametrize("layout, expected", [
    ("missing", "lexicon folder not found (expected a folder of <category>.txt files)"),
    ("empty", "no <category>.txt file in the lexicon folder"),
    ("no-txt", "no <category>.txt file in the lexicon folder"),
    ("empty-category", "joy.txt:1: category file holds no word"),
], ids=["missing", "empty", "no-txt", "empty-category"])
def test_lexicon_folder_errors(capsys, tmp_path, layout, expected):
    lex = tmp_path / "lexicon"
    if layout != "missing":
        lex.mkdir()
    if layout == "no-txt":
        write(lex / "README.md", "joy: happy\n")
    if layout == "empty-category":
        write(lex / "anger.txt", "angry\r\nangrily")
        write(lex / "joy.txt", "\r\n  \r\n")
    out = tmp_path / "out" / "lexicon.h5"
    msg = cli_error(capsys, "embed-lexicon", "--lexicon", lex, "--out", out)
    assert str(lex) in msg and expected in msg
    assert_nothing_written(out)


# --------------------------------------------------------------------------- 9: feature files


def _frames_of(path: str) -> tuple[list[str], np.ndarray]:
    with h5py.File(path, "r") as f:
        return read_strings(f["video_ids"]), f["frames"][()]


@pytest.mark.slow  # trains a model
def test_feature_width_differs_from_model(capsys, tmp_path, art):
    ids, frames = _frames_of(art["features"])  # (n, 4, 16)
    wide = write_features(tmp_path / "features_d32.h5", ids, np.concatenate([frames, frames], axis=-1))  # (n, 4, 32)
    out = tmp_path / "out" / "pred.json"
    msg = cli_error(capsys, *predict_args(art, out, features=str(wide)))
    assert f"model config d_v=16 but the features file {wide} has frame feature width 32" in msg
    assert_nothing_written(out)
    # training with an explicit d_v in its model config fails the same way, before writing anything
    run = tmp_path / "out" / "train"
    msg = cli_error(capsys, *train_args(art, run, features=str(wide)))
    assert f"model config d_v=16 but the features file {wide} has frame feature width 32" in msg
    assert_nothing_written(run)


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("command", ["predict", "train"])
def test_two_dimensional_frames_are_named(capsys, tmp_path, art, command):
    ids, frames = _frames_of(art["features"])
    flat = write_features(tmp_path / "features_2d.h5", ids, frames.mean(1))  # (n, 16): the mean, not the frames
    out = tmp_path / "out" / ("pred.json" if command == "predict" else "train")
    args = predict_args if command == "predict" else train_args
    msg = cli_error(capsys, *args(art, out, features=str(flat)))
    assert f"{flat}: " in msg and f"{(len(ids), 16)}" in msg and "expected (" in msg and "N, d" in msg
    assert_nothing_written(out)


@pytest.mark.slow  # trains a model
def test_features_missing_a_split_video(capsys, tmp_path, art):
    ids, frames = _frames_of(art["features"])
    keep = [i for i, v in enumerate(ids) if v != TEST[2]]
    partial = write_features(tmp_path / "features_partial.h5", [ids[i] for i in keep], frames[keep])
    out = tmp_path / "out" / "pred.json"
    msg = cli_error(capsys, *predict_args(art, out, features=str(partial)))
    assert f"video {TEST[2]!r} has no row in the features file {partial}" in msg
    assert_nothing_written(out)
    # the training split too (a trainval video)
    keep = [i for i, v in enumerate(ids) if v != TRAINVAL[7]]
    partial = write_features(tmp_path / "features_partial_tv.h5", [ids[i] for i in keep], frames[keep])
    run = tmp_path / "out" / "train"
    msg = cli_error(capsys, *train_args(art, run, features=str(partial)))
    assert f"video {TRAINVAL[7]!r} has no row in the features file {partial}" in msg
    assert_nothing_written(run)


# --------------------------------------------------------------------------- 10: checkpoints


def _model_like(ckpt: Path, **over) -> torch.nn.Module:
    """FACE-net built like the checkpoint's, with ``over`` changed in its config."""
    meta = read_meta(ckpt)
    tensors = load_file(str(ckpt / "model.safetensors"))
    cfg = FaceNetConfig.from_dict({**meta["model_config"], **over})
    return create_facenet(cfg, vocab=Vocab.from_dict(meta["vocab"]), lexicon_words=meta["lexicon_words"],
                          lexicon_vectors=tensors["lexicon"], word_category=tensors["word_category"])


@pytest.mark.parametrize("over, keys", [
    ({"d": 32}, ["d"]),
    ({"decoder": "transformer", "decoder_settings": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}},
     ["decoder", "decoder_settings"]),
], ids=["other-d", "other-decoder"])
@pytest.mark.slow  # trains a model
def test_checkpoint_into_model_of_another_config(art, over, keys):
    ckpt = Path(art["checkpoint"])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt, _model_like(ckpt, **over))
    msg = str(e.value)
    assert msg.startswith(f"{ckpt}: the checkpoint's model config differs from the current one")
    for key in keys:
        assert f"{key}: checkpoint " in msg or f"'{key}" in msg, msg
    assert "size mismatch" not in msg


@pytest.mark.slow  # trains a model
def test_checkpoint_tensors_of_another_config_are_named(capsys, tmp_path, art):
    # meta.json of one model next to the weights of another (a hand-copied file)
    ckpt = tmp_path / "mixed"
    ckpt.mkdir()
    for f in Path(art["checkpoint"]).iterdir():
        (ckpt / f.name).write_bytes(f.read_bytes())
    save_file(checkpoint_state_dict(_model_like(Path(art["checkpoint"]), d=32)), str(ckpt / "model.safetensors"))
    out = tmp_path / "out" / "pred.json"
    msg = cli_error(capsys, *predict_args(art, out, checkpoint=str(ckpt)))
    assert f"{ckpt / 'model.safetensors'}: " in msg and "tensor(s) have other shapes than in the model" in msg
    assert "checkpoint (32," in msg and "another configuration" in msg and "size mismatch" not in msg
    assert_nothing_written(out)


# --------------------------------------------------------------------------- 11: killed or failing writers


_HANG_SCRIPT = """
import pathlib, sys, time
import facenet_evc.stages.clip_model as cm
marker = pathlib.Path(sys.argv[1])
real, calls = cm.encode_images, [0]
def encode_then_hang(*a, **k):
    calls[0] += 1
    if calls[0] == 2:  # the first batch is already in the temporary HDF5 file
        marker.write_text("writing")
        time.sleep(600)
    return real(*a, **k)
cm.encode_images = encode_then_hang
import facenet_evc.io as io
from facenet_evc.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_extract_features_killed_mid_write_leaves_nothing_trusted(capsys, tmp_path, videos):
    out = tmp_path / "out" / "clip_frames.h5"
    argv = ["extract-features", "--videos", str(videos), *TINY_CLIP, "--out", str(out), "--n-frames", "4",
            "--batch-size", "1", "--num-workers", "0"]
    marker = tmp_path / "writing"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _HANG_SCRIPT, str(marker), *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"extract-features exited early:\n{proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("extract-features did not reach its second batch in 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # the only thing on disk is the temporary file, never under the output's name
    temps = [p.name for p in out.parent.iterdir()]
    assert len(temps) == 1 and temps[0].startswith(".clip_frames.h5.") and temps[0].endswith(".tmp"), temps

    assert main(argv) == 0  # a rerun ignores the leftover and writes a complete file
    capsys.readouterr()
    with h5py.File(out, "r") as f:
        assert read_strings(f["video_ids"]) == ["vid1", "vid2", "vid3"]
        frames = f["frames"][()]
    assert frames.shape[:2] == (3, 4) and np.isfinite(frames).all() and np.abs(frames).sum(-1).min() > 0


def test_build_repository_failing_before_the_rename_leaves_nothing(capsys, tmp_path, monkeypatch):
    """The worst moment for an exception: every row is in the temporary file, the rename is next."""
    csv = write(tmp_path / "caps.csv", HEADER + "vid1,a dog runs happily\nvid1,a dog runs\nvid2,a sad cat sits\n")
    out = tmp_path / "out" / "repository.h5"
    argv = ["build-repository", "--captions", csv, *TINY_CLIP, "--out", out]
    real, written = io.atomic_path, []

    @contextlib.contextmanager
    def crash_before_rename(path, suffix=None):
        with real(path, suffix) as tmp:
            yield tmp
            with h5py.File(tmp, "r") as f:  # complete, closed, under its temporary name
                written.append((tmp.name, f["embeddings"].shape[0]))
            raise RuntimeError("simulated crash between writing and renaming")

    monkeypatch.setattr(io, "atomic_path", crash_before_rename)
    # a crash is not a user error: exit status 1, the stack, and the reason on the last line
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "simulated crash" in err.strip().splitlines()[-1]
    assert len(written) == 1 and written[0][0].startswith(".repository.h5.") and written[0][1] == 3
    assert_nothing_written(out)

    monkeypatch.setattr(io, "atomic_path", real)
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()
    with h5py.File(out, "r") as f:
        assert read_strings(f["video_id"]) == ["vid1", "vid1", "vid2"] and f["embeddings"].shape[0] == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["repository.h5"]
