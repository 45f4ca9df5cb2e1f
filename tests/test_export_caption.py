"""`facenet-evc export` and `facenet-evc caption`: a model directory that captions new videos
exactly as the workflow's prediction path captions its test videos.

The module builds a tiny workflow in the standard layout once (16 demo videos, a randomly
initialised demo CLIP with a non-trivial temporal head, N=4 frames, K=2, 20 training steps
of a small LSTM FACE-net), exports it through `--config`, and captions with it.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from facenet_evc.cli import main
from facenet_evc.data.emvidcap import CaptionSource, read_captions
from facenet_evc.data.demo import make_demo
from facenet_evc.inference.caption import Captioner, caption_videos
from facenet_evc.inference.export import ModelDirError, read_manifest
from facenet_evc.io import file_sha256
from facenet_evc.stages.clip_features import extract_features, find_videos, read_features
from facenet_evc.stages.clip_model import DEMO_MODEL, TemporalHead, create_clip, temporal_head_path, temporal_head_state
from facenet_evc.stages.emotion_embed import run as embed_lexicon
from facenet_evc.stages.repository import build_repository, run_retrieval, run_triplets
from facenet_evc.training.data import load_artifacts
from facenet_evc.training.decoding import generate_captions
from facenet_evc.training.factory import load_model
from facenet_evc.training.trainer import train

N_FRAMES, K = 4, 2
MODEL_CFG = dict(d=16, n_heads=2, ffn_mult=2, n_queries=4, decoder="lstm",
                 decoder_settings={"hidden_size": 32, "embed_size": 16, "attn_size": 16})
TRAIN_CFG = dict(lr=1e-2, batch_size=8, max_steps=20, val_every=10, ckpt_every=10, val_fraction=0.25, seed=0,
                 threads=1, device="cpu", progress=False, val_beams=1, num_beams=3, max_len=10)


# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workflow(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """results/mini/... in the workflow's layout plus config/{config,mini}.yaml pointing at it."""
    root = tmp_path_factory.mktemp("exportwf")
    res = root / "results" / "mini"
    data = res / "data"
    make_demo(data, n_videos=16, seed=5, n_frames=12)
    trainval = data / "captions" / "EmVideo_trainval_captions.csv"
    test = data / "captions" / "EmVideo_test_captions.csv"

    torch.manual_seed(0)
    clip = res / "clip" / "clip.pt"
    clip.parent.mkdir(parents=True)
    torch.save(create_clip(DEMO_MODEL).state_dict(), clip)
    head = TemporalHead(64, hidden=16)
    torch.nn.init.normal_(head.proj[-1].weight, std=0.5)  # order-aware: video_embed != mean
    torch.save(temporal_head_state(head), temporal_head_path(clip))

    features = res / "features" / "clip_frames.h5"
    ids = list(dict.fromkeys([*read_captions(trainval)["VideoID"], *read_captions(test)["VideoID"]]))
    extract_features(find_videos(data / "videos", ids), DEMO_MODEL, str(clip), features, n_frames=N_FRAMES,
                     batch_size=4, num_workers=0, threads=1, progress=False)
    repository = res / "retrieval" / "repository.h5"
    build_repository([CaptionSource(trainval, ",")], DEMO_MODEL, str(clip), repository)
    topk = res / "retrieval" / f"topk_k{K}.h5"
    run_retrieval(features, repository, topk, k=K)
    triplets = res / "triplets" / "triplets.h5"
    run_triplets(repository, triplets, DEMO_MODEL, str(clip))
    lexicon_h5 = res / "emotion" / "lexicon.h5"
    embed_lexicon(data / "lexicon", lexicon_h5)
    train(MODEL_CFG, TRAIN_CFG, features, topk, triplets, lexicon_h5, [trainval], data / "lexicon", res / "train")

    cfg_dir = root / "config"
    cfg_dir.mkdir()
    (cfg_dir / "config.yaml").write_text(yaml.safe_dump({"results_root": str(root / "results")}))
    (cfg_dir / "mini.yaml").write_text(yaml.safe_dump({
        "name": "mini",
        "data": {"captions": {"trainval": [{"path": "{results_root}/mini/data/captions/EmVideo_trainval_captions.csv"}],
                              "test": [{"path": "{results_root}/mini/data/captions/EmVideo_test_captions.csv"}]},
                 "lexicon": "{results_root}/mini/data/lexicon"},
        "retrieval": {"k": K},
        "train": {"num_beams": 3, "max_len": 10},
    }))
    test_ids = list(dict.fromkeys(read_captions(test)["VideoID"]))
    return {"root": root, "res": res, "config": cfg_dir / "mini.yaml", "clip": clip, "features": features,
            "topk": topk, "triplets": triplets, "videos": data / "videos", "test_ids": test_ids,
            "train_ids": [v for v in ids if v not in test_ids]}


@pytest.fixture(scope="module")
def model_dir(workflow: dict) -> Path:
    out = workflow["root"] / "exported"
    assert main(["export", "--config", str(workflow["config"]), "--out", str(out)]) == 0
    return out


def _video(workflow: dict, vid: str) -> str:
    return str(workflow["videos"] / f"{vid}.mp4")


# --------------------------------------------------------------------------- export


@pytest.mark.slow  # trains a model
def test_export_is_self_contained_and_checked(workflow: dict, model_dir: Path) -> None:
    m = read_manifest(model_dir)
    comp = m["components"]
    for key in ("weights", "meta", "repository", "index", "triplets", "lexicon", "clip", "temporal_head"):
        assert (model_dir / comp[key]).is_file(), key
    assert set(m["files"]) == {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")
                               if p.is_file() and p.name != "manifest.json"}
    for rel, info in m["files"].items():
        assert file_sha256(model_dir / rel) == info["sha256"]
    # the very CLIP the features were extracted with, and the settings a new video needs
    assert file_sha256(model_dir / comp["clip"]) == file_sha256(workflow["clip"])
    assert m["features"]["n_frames"] == N_FRAMES and m["features"]["crop_size"] == 64
    assert m["retrieval"]["k"] == K and m["retrieval"]["video_vector"] == "video_embed"
    assert m["decode"] == {"num_beams": 3, "max_len": 10}  # from the dataset config's train section
    meta = json.loads((model_dir / comp["meta"]).read_text())
    trained = json.loads((workflow["res"] / "train" / "best" / "meta.json").read_text())
    assert meta["vocab"] == trained["vocab"] and meta["model_config"] == trained["model_config"]
    assert not list(model_dir.parent.glob(f".{model_dir.name}.*"))  # no temporary left behind

    # a repeated export replaces the folder; an unrelated non-empty folder is never replaced
    again = workflow["root"] / "again"
    assert main(["export", "--config", str(workflow["config"]), "--out", str(again)]) == 0
    assert main(["export", "--config", str(workflow["config"]), "--out", str(again)]) == 0
    assert read_manifest(again)["files"] == m["files"]
    foreign = workflow["root"] / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["export", "--config", str(workflow["config"]), "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.slow  # trains a model
def test_export_refuses_other_clip_weights(workflow: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    torch.save(create_clip(DEMO_MODEL).state_dict(), other)
    rc = main(["export", "--config", str(workflow["config"]), "--clip", str(other), "--out", str(tmp_path / "m")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "other.pt" in err and "sha256" in err
    assert not (tmp_path / "m").exists()


def test_export_without_config_names_missing_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "--features" in err and "--lexicon-h5" in err


# --------------------------------------------------------------------------- caption


@pytest.mark.slow  # trains a model
def test_caption_equals_the_prediction_path(workflow: dict, model_dir: Path) -> None:
    """A test video (not in the repository, like any new video) gets exactly the caption
    `predict` gives it from the cached features and top-K."""
    vids = workflow["test_ids"]
    captioner = Captioner(model_dir, "cpu")
    got = captioner.caption([_video(workflow, v) for v in vids], batch_size=2, num_workers=0, progress=False)
    assert not got.errors

    model, _ = load_model(workflow["res"] / "train" / "best")
    art = load_artifacts(workflow["features"], workflow["topk"], workflow["triplets"])
    expected = generate_captions(model, art, vids, num_beams=3, max_len=10)
    assert {v: got.captions[_video(workflow, v)] for v in vids} == expected

    # and the inputs behind it: the same frame features, top-K rows and scores
    from facenet_evc.stages.clip_features import iter_decoded_items

    feats = read_features(workflow["features"])
    row = {v: i for i, v in enumerate(feats["video_ids"])}
    batch = next(iter_decoded_items([_video(workflow, v) for v in vids], N_FRAMES, 64, len(vids), 0))
    frames, query = captioner.encode(np.stack([b[1] for b in batch]))
    np.testing.assert_allclose(frames, feats["frames"][[row[v] for v in vids]], rtol=0, atol=1e-5)
    idx, scores = captioner.retrieve(query)
    inputs = art.video_inputs(vids)
    np.testing.assert_array_equal(captioner.triplets[idx], inputs["triplets"].numpy())
    np.testing.assert_allclose(scores, inputs["sims"].numpy(), atol=1e-5)


@pytest.mark.slow  # trains a model
def test_training_videos_are_not_excluded_from_their_captions(workflow: dict, model_dir: Path) -> None:
    """The workflow hides a training video's own captions from it; a new video owns none, so
    the export searches the whole repository: exact cosine top-K, nothing excluded."""
    from facenet_evc.stages.clip_features import iter_decoded_items
    from facenet_evc.stages.repository import read_repository
    from facenet_evc.stages.retrieval import numpy_topk

    captioner = Captioner(model_dir, "cpu")
    vids = workflow["train_ids"][:4]
    batch = next(iter_decoded_items([_video(workflow, v) for v in vids], N_FRAMES, 64, len(vids), 0))
    _, query = captioner.encode(np.stack([b[1] for b in batch]))  # (4, d) temporal-head embeddings
    idx, scores = captioner.retrieve(query)
    repo = read_repository(model_dir / "retrieval" / "repository.h5")["embeddings"]
    exact_idx, exact_scores = numpy_topk(repo, query, K)  # no query/repository ids: no exclusion
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def _write_avi(src: str, dst: Path) -> None:
    """Re-encode a demo video as MPEG-4 Part 2 in an AVI container, at another size (80x48)."""
    with av.open(src) as inp:
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 80, 48, "yuv420p"
        for rgb in frames:
            big = np.zeros((48, 80, 3), dtype=np.uint8)
            big[:, 8:72] = rgb[8:56]  # letterboxed crop: another aspect ratio than the demo's
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.slow  # trains a model
def test_caption_cli_reports_bad_videos_and_captions_the_others(
    workflow: dict, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = _video(workflow, workflow["test_ids"][0])
    avi = tmp_path / "clip.avi"
    _write_avi(good, avi)
    missing = tmp_path / "nowhere.mp4"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    out = tmp_path / "captions.json"
    rc = main(["caption", str(model_dir), good, str(avi), str(missing), str(corrupt), "--out", str(out),
               "--batch-size", "3", "--num-workers", "0", "--device", "cpu"])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{missing}: video file not found" in err and str(corrupt) in err
    caps = json.loads(out.read_text())
    assert list(caps) == [good, str(avi)] and all(isinstance(c, str) for c in caps.values())

    # all good: exit 0; stdout lines `video<TAB>caption`, the same captions; CSV by extension
    rc = main(["caption", str(model_dir), good, str(avi), "--num-workers", "0"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t", 1) for ln in lines] == [[good, caps[good]], [str(avi), caps[str(avi)]]]
    csv_out = tmp_path / "captions.csv"
    assert main(["caption", str(model_dir), str(avi), "--out", str(csv_out), "--num-workers", "0"]) == 0
    with open(csv_out, newline="", encoding="utf-8") as f:
        assert list(csv.DictReader(f)) == [{"video": str(avi), "caption": caps[str(avi)]}]
    assert main(["caption", str(model_dir), good, "--out", str(tmp_path / "c.txt")]) == 2


@pytest.mark.slow  # trains a model
def test_bad_model_dir_is_a_clear_error(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    triplets = bad / "retrieval" / "triplets.h5"
    data = bytearray(triplets.read_bytes())
    data[-100] ^= 0xFF  # same size, one byte changed
    triplets.write_bytes(bytes(data))
    video = str(tmp_path / "any.mp4")
    assert main(["caption", str(bad), video]) == 2
    err = capsys.readouterr().err
    assert str(triplets) in err and "sha256" in err

    (bad / "clip" / "clip.temporal.pt").unlink()
    with pytest.raises(ModelDirError, match=r"clip\.temporal\.pt: missing"):
        caption_videos(bad, [video], progress=False)
    (bad / "manifest.json").unlink()
    assert main(["caption", str(bad), video]) == 2
    assert "manifest.json: not found" in capsys.readouterr().err


def _tiny_t5(path: Path) -> Path:
    """A tiny FLAN-T5-shaped model and tokenizer saved locally (no hub is reachable)."""
    import string

    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in string.ascii_lowercase] + [("▁" + c, -6.0) for c in string.ascii_lowercase]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                   num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    tok.save_pretrained(path)
    T5ForConditionalGeneration(cfg).save_pretrained(path)
    return path


@pytest.mark.slow  # trains a model
def test_llm_decoder_export_carries_its_base_model(workflow: dict, tmp_path: Path) -> None:
    """A FLAN-T5 + LoRA FACE-net: the export holds the frozen base LLM and its tokenizer, so it
    captions after the original folder is gone, exactly as the prediction path did."""
    pytest.importorskip("peft")
    base = _tiny_t5(tmp_path / "tiny-t5")
    res = workflow["res"]
    data = res / "data"
    cfg = {**MODEL_CFG, "decoder": "t5", "decoder_settings": {"pretrained": str(base), "lora_r": 4}}
    train(cfg, {**TRAIN_CFG, "max_steps": 2, "val_every": 2, "ckpt_every": 2}, workflow["features"],
          workflow["topk"], workflow["triplets"], res / "emotion" / "lexicon.h5",
          [data / "captions" / "EmVideo_trainval_captions.csv"], data / "lexicon", tmp_path / "train_t5")
    out = tmp_path / "t5model"
    assert main(["export", "--config", str(workflow["config"]), "--checkpoint", str(tmp_path / "train_t5" / "best"),
                 "--out", str(out)]) == 0
    m = read_manifest(out)
    assert m["components"]["decoder_base"] == "decoder_base"
    listed = {f[len("decoder_base/"):] for f in m["files"] if f.startswith("decoder_base/")}
    assert listed == {q.relative_to(base).as_posix() for q in base.rglob("*") if q.is_file()}
    assert "config.json" in listed and any(f.startswith("tokenizer") for f in listed)

    vids = workflow["test_ids"]
    model, _ = load_model(tmp_path / "train_t5" / "best")
    art = load_artifacts(workflow["features"], workflow["topk"], workflow["triplets"])
    expected = generate_captions(model, art, vids, num_beams=3, max_len=10)
    shutil.rmtree(base)
    got = caption_videos(out, [_video(workflow, v) for v in vids], device="cpu", num_workers=0, progress=False)
    assert {v: got.captions[_video(workflow, v)] for v in vids} == expected
