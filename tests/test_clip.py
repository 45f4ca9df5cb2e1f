"""CLIP loading, demo pre-training, frame features (eq. 1, 3) and EPAN feature import."""
from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import h5py
import numpy as np
import open_clip
import pytest
import torch

from facenet_evc.data.demo import make_demo
from facenet_evc.data.video import VideoError
from facenet_evc.stages.clip_features import (
    TubeletEmbed,
    extract_features,
    find_videos,
    import_epan_features,
    inflate_patch_embed,
    read_features,
)
from facenet_evc.stages.clip_model import (
    DEMO_MODEL,
    TemporalHead,
    create_clip,
    encode_images,
    encode_text,
    load_clip,
    load_temporal_head,
    temporal_head_path,
    temporal_head_state,
)
from facenet_evc.stages.clip_pretrain import ClipPretrainConfig, retrieval_recall, sidecar_path, train_demo_clip

TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    make_demo(out, n_videos=16, seed=3, n_frames=12)
    return out


# a 4-step CLIP on 8 frames per video: seconds
SMALL = ClipPretrainConfig(threads=1, max_seconds=3, max_steps=4, batch_size=8, n_frames=8, frames_per_clip=2,
                           progress=False)


@pytest.fixture(scope="module")
def trained(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    ckpt = tmp_path_factory.mktemp("clip") / "demo_clip.pt"
    summary = train_demo_clip(
        demo / "videos", demo / "captions" / "EmVideo_trainval_captions.csv",
        demo / "captions" / "EmVideo_test_captions.csv", ckpt, SMALL,
    )
    return ckpt, summary


def _frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- clip_model


def test_load_clip_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, size, tok = load_clip(DEMO_MODEL, None)
    assert size == 64 and tok.context_length == 24
    ckpt = tmp_path / "m.pt"
    torch.save(model.state_dict(), ckpt)
    assert isinstance(torch.load(ckpt, weights_only=True), dict)
    # Exactly the call a user makes: the packaged config is registered with open_clip.
    reloaded, _, _ = open_clip.create_model_and_transforms(DEMO_MODEL, pretrained=str(ckpt))
    reloaded.eval()
    again, _, _ = load_clip(DEMO_MODEL, str(ckpt))
    frames = _frames(5, size)
    a = encode_images(model, frames)
    assert a.shape == (5, 64) and a.dtype == np.float32
    np.testing.assert_allclose(encode_images(reloaded, frames), a, atol=1e-6)
    np.testing.assert_allclose(encode_images(again, frames, batch_size=2), a, atol=1e-5)
    t = encode_text(model, tok, ["a red ball moves left", "a sad blue square"], batch_size=1)
    assert t.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encode_text(again, tok, ["a red ball moves left", "a sad blue square"]), t, atol=1e-5)


def test_load_clip_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_clip(DEMO_MODEL, str(tmp_path / "nope.pt"))


def test_temporal_head_starts_as_mean_and_round_trips(tmp_path: Path) -> None:
    head = TemporalHead(8, hidden=4)
    x = torch.randn(3, 6, 8)  # (B, N, d)
    torch.testing.assert_close(head(x), x.mean(1))
    torch.nn.init.normal_(head.proj[-1].weight)
    path = tmp_path / "h.temporal.pt"
    torch.save(temporal_head_state(head), path)
    torch.testing.assert_close(load_temporal_head(path)(x), head(x))
    # Reversing time flips the order-aware term, so the embedding changes.
    assert not torch.allclose(head(x.flip(1)), head(x))


def test_retrieval_recall() -> None:
    v = np.eye(3, dtype=np.float32)
    t = np.array([[1, 0, 0], [0, 1, 0], [0, 0.9, 0.1], [1, 0, 0]], dtype=np.float32)
    r = retrieval_recall(v, t, [0, 1, 2, 2], ks=(1, 2))
    assert r["t2v_r1"] == pytest.approx(0.5)  # captions 2, 3 rank another video first
    assert r["t2v_r2"] == pytest.approx(0.75)
    assert r["v2t_r1"] == pytest.approx(2 / 3)  # video 0's caption ties with caption 3: ties count against
    assert r["v2t_r2"] == pytest.approx(1.0)
    assert r["n_videos"] == 3 and r["n_texts"] == 4


# --------------------------------------------------------------------------- clip_pretrain


@pytest.mark.slow  # trains a model
def test_train_demo_clip_writes_loadable_checkpoint(trained: tuple[Path, dict]) -> None:
    ckpt, summary = trained
    assert ckpt.is_file() and temporal_head_path(ckpt).is_file()
    side = json.loads(sidecar_path(ckpt).read_text())
    assert side["steps"] == 4 and side["checkpoint_sha256"] == summary["checkpoint_sha256"]
    for split in ("test", "trainval"):
        for kind in ("mean_pool", "video_embed"):
            r = side["recall"][split][kind]
            for key in ("t2v_r1", "t2v_r4", "v2t_r1", "v2t_r4"):
                assert 0.0 <= r[key] <= 1.0
    state = torch.load(ckpt, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    create_clip(DEMO_MODEL, str(ckpt))  # strict open_clip load


@pytest.mark.slow  # trains a model
def test_train_demo_clip_is_deterministic(demo: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    ckpt, summary = trained
    again = train_demo_clip(
        demo / "videos", demo / "captions" / "EmVideo_trainval_captions.csv",
        demo / "captions" / "EmVideo_test_captions.csv", tmp_path / "c.pt", SMALL,
    )
    a, b = torch.load(ckpt, weights_only=True), torch.load(tmp_path / "c.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["recall"] == summary["recall"]


# --------------------------------------------------------------------------- clip_features


@pytest.mark.slow  # trains a model
def test_extract_features_layout(demo: Path, trained: tuple[Path, dict], tmp_path: Path) -> None:
    ckpt, _ = trained
    videos = find_videos(demo / "videos")
    assert list(videos)[:3] == ["vid1", "vid2", "vid3"]  # natural order
    out = tmp_path / "features" / "clip_frames.h5"
    s = extract_features(videos, DEMO_MODEL, str(ckpt), out, n_frames=6, batch_size=5, num_workers=1, threads=1,
                         progress=False)
    assert s["n_videos"] == 16 and s["video_embed"]
    feats = read_features(out)
    assert feats["video_ids"] == list(videos)
    assert feats["frames"].shape == (16, 6, 64) and feats["frames"].dtype == np.float32
    np.testing.assert_allclose(feats["mean"], feats["frames"].mean(1), rtol=1e-6, atol=1e-6)
    assert feats["video_embed"].shape == (16, 64)
    attrs = feats["attrs"]
    assert attrs["model_name"] == DEMO_MODEL and attrs["pretrained"] == str(ckpt)
    assert attrs["n_frames"] == 6 and attrs["crop_size"] == 64
    assert attrs["checkpoint_sha256"] == json.loads(sidecar_path(ckpt).read_text())["checkpoint_sha256"]
    # The temporal head applied to the stored frames gives the stored video_embed.
    head = load_temporal_head(temporal_head_path(ckpt))
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(feats["frames"])).numpy(), feats["video_embed"], atol=1e-5)
    # num_workers=0 (in-process decoding) writes the same features.
    out0 = tmp_path / "f0.h5"
    extract_features(dict(list(videos.items())[:4]), DEMO_MODEL, str(ckpt), out0, n_frames=6, num_workers=0,
                     temporal_head=None, progress=False)
    f0 = read_features(out0)
    assert "video_embed" not in f0
    np.testing.assert_allclose(f0["frames"], feats["frames"][:4], atol=1e-5)


def test_extract_features_corrupt_video(demo: Path, tmp_path: Path) -> None:
    bad = tmp_path / "vidbad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    videos = {"vid1": demo / "videos" / "vid1.mp4", "vid2": demo / "videos" / "vid2.mp4", "vidbad": bad}
    out = tmp_path / "out" / "clip_frames.h5"
    with pytest.raises(VideoError, match="vidbad.mp4"):
        extract_features(videos, DEMO_MODEL, None, out, n_frames=4, batch_size=2, num_workers=1, progress=False)
    assert not out.exists()
    assert not any(out.parent.iterdir())  # no temporary file left behind either
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        extract_features({"m": tmp_path / "missing.mp4"}, DEMO_MODEL, None, out, progress=False)


# --------------------------------------------------------------------------- eq. 1 tubelets


@pytest.fixture(scope="module")
def tiny_vit_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = tmp_path_factory.mktemp("cfg") / "test-tiny-vit.json"
    cfg.write_text(json.dumps(TINY_VIT))
    open_clip.add_model_config(cfg)
    return "test-tiny-vit"


def _tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return open_clip.model.CLIP(**TINY_VIT).eval()


@pytest.mark.parametrize("t", [1, 2, 3])
def test_tubelet_central_init_equals_2d(t: int) -> None:
    """Central init: the 3D embedding equals the 2D one on every frame of any video."""
    model = _tiny_vit()
    x = torch.randn(2 * 5, 3, 32, 32)  # 2 videos of 5 different frames
    with torch.no_grad():
        ref = model.encode_image(x)
        emb2d = model.visual.conv1(x)
        tub = inflate_patch_embed(model.visual, t, n_frames=5, init="central")
        assert isinstance(model.visual.conv1, TubeletEmbed)
        torch.testing.assert_close(tub(x), emb2d, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_image(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [2, 3, 4])
def test_tubelet_average_init_on_static_video(t: int) -> None:
    """Average init: equals the 2D embedding when the frames are identical (edges replicate-padded)."""
    model = _tiny_vit()
    frame = torch.randn(1, 3, 32, 32)
    x = frame.repeat(6, 1, 1, 1)  # one static video of 6 frames
    moving = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        emb2d = model.visual.conv1(x)
        emb2d_moving = model.visual.conv1(moving)
        tub = inflate_patch_embed(model.visual, t, n_frames=6, init="average")
        torch.testing.assert_close(tub(x), emb2d, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(tub(moving), emb2d_moving, atol=1e-3)  # it does mix frames


def test_tubelet_errors() -> None:
    model = _tiny_vit()
    inflate_patch_embed(model.visual, 3, n_frames=4)
    with pytest.raises(ValueError, match="whole videos of 4 frames"):
        model.encode_image(torch.randn(6, 3, 32, 32))
    with pytest.raises(ValueError, match="already inflated"):
        inflate_patch_embed(model.visual, 3)
    rn = create_clip(DEMO_MODEL, None)
    with pytest.raises(ValueError, match="needs a ViT image tower.*ModifiedResNet"):
        inflate_patch_embed(rn.visual, 3)


def test_extract_features_with_tubelet(demo: Path, tiny_vit_name: str, tmp_path: Path) -> None:
    videos = dict(list(find_videos(demo / "videos").items())[:3])
    torch.manual_seed(0)
    extract_features(videos, tiny_vit_name, None, tmp_path / "a.h5", n_frames=4, num_workers=0, progress=False)
    torch.manual_seed(0)
    extract_features(videos, tiny_vit_name, None, tmp_path / "b.h5", n_frames=4, num_workers=0, tubelet=(3, 8, 8),
                     progress=False)
    a, b = read_features(tmp_path / "a.h5"), read_features(tmp_path / "b.h5")
    assert json.loads(b["attrs"]["tubelet"]) == [3, 8, 8] and b["attrs"]["tubelet_init"] == "central"
    np.testing.assert_allclose(b["frames"], a["frames"], atol=1e-4)  # central init = 2D before fine-tuning
    with pytest.raises(ValueError, match="patch size"):
        extract_features(videos, tiny_vit_name, None, tmp_path / "c.h5", tubelet=(3, 4, 4), progress=False)
    with pytest.raises(ValueError, match="ViT"):
        extract_features(videos, DEMO_MODEL, None, tmp_path / "d.h5", tubelet=(3, 8, 8), progress=False)
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "d.h5").exists()


# --------------------------------------------------------------------------- EPAN import


def _write_epan(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v


def test_import_epan_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    msvd = {"vid1": rng.normal(size=(30, 8)), "vid2": rng.normal(size=(5, 8))}
    ve = {"10005": rng.normal(size=(20, 8))}  # EPAN's VE file: keys without the "vid" prefix
    _write_epan(tmp_path / "msvd.h5", msvd)
    _write_epan(tmp_path / "ve.h5", ve)
    out = tmp_path / "f.h5"
    import_epan_features([tmp_path / "msvd.h5", tmp_path / "ve.h5"], ["vid2", "vid10005", "vid1"], out,
                         n_frames=16, vid_prefix=[None, "vid"])
    f = read_features(out)
    assert f["video_ids"] == ["vid2", "vid10005", "vid1"]
    assert f["frames"].shape == (3, 16, 8)
    idx = np.linspace(0, 4, 16, dtype=int)  # EPAN's sampling repeats frames of a short video
    np.testing.assert_allclose(f["frames"][0], msvd["vid2"][idx].astype(np.float32))
    np.testing.assert_allclose(f["frames"][1], ve["10005"][np.linspace(0, 19, 16, dtype=int)].astype(np.float32))
    np.testing.assert_allclose(f["mean"], f["frames"].mean(1), atol=1e-6)
    assert f["attrs"]["source"] == "epan"

    # One file, one prefix for all.
    import_epan_features([tmp_path / "ve.h5"], ["vid10005"], tmp_path / "g.h5", n_frames=4, vid_prefix="vid")
    assert read_features(tmp_path / "g.h5")["frames"].shape == (1, 4, 8)

    with pytest.raises(KeyError, match=r"'vid3'.*msvd\.h5"):
        import_epan_features([tmp_path / "msvd.h5"], ["vid1", "vid3"], tmp_path / "h.h5")
    assert not (tmp_path / "h.h5").exists()
    with pytest.raises(KeyError, match=r"'vid10005'.*ve\.h5.*'10005' exists.*vid_prefix"):
        import_epan_features([tmp_path / "ve.h5"], ["vid10005"], tmp_path / "h.h5")  # prefix forgotten


def test_import_epan_features_bad_arrays(tmp_path: Path) -> None:
    _write_epan(tmp_path / "bad.h5", {"vid1": np.zeros((4, 8)), "vid2": np.zeros((4, 2, 8)), "vid3": np.zeros((4, 5))})
    with pytest.raises(ValueError, match=r"bad\.h5: key 'vid2'.*\(T, d\)"):
        import_epan_features([tmp_path / "bad.h5"], ["vid1", "vid2"], tmp_path / "o.h5")
    with pytest.raises(ValueError, match=r"key 'vid3'.*width 5"):
        import_epan_features([tmp_path / "bad.h5"], ["vid1", "vid3"], tmp_path / "o.h5")
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.slow  # trains a model
def test_train_demo_clip_time_budget(demo: Path, tmp_path: Path) -> None:
    """Without max_steps the clock binds: the run ends at max_seconds with the schedule annealed."""
    s = train_demo_clip(
        demo / "videos", demo / "captions" / "EmVideo_trainval_captions.csv",
        demo / "captions" / "EmVideo_test_captions.csv", tmp_path / "t.pt",
        dataclasses.replace(SMALL, max_seconds=1.5, max_steps=None, temporal_head=False),
    )
    assert s["stopped_by"] == "time" and s["time_limited"] and s["steps"] >= 1
    assert s["train_s"] < 1.5 * 1.25 + 1.0
    assert s["temporal_head"] is None and not temporal_head_path(tmp_path / "t.pt").exists()
    assert set(s["recall"]["test"]) == {"mean_pool"}
