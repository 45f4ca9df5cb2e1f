from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facenet_evc.data import demo
from facenet_evc.data.demo import add_arguments, demo_lexicon_dir, make_demo, run_cli
from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.data.video import read_frames

N_VIDEOS = 12  # >= 8 actions and >= 3 bias classes, so every kind appears (balanced assignment)
CSVS = ("captions/EmVideo_trainval_captions.csv", "captions/EmVideo_test_captions.csv")


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    out = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_demo(root / name, n_videos=N_VIDEOS, seed=seed)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def scenes(demos: dict[str, Path]) -> dict:
    return json.loads((demos["a"] / "scenes.json").read_text())


def _object_track(frames: np.ndarray, rgb: list[int]) -> np.ndarray:
    """Per-frame (centroid x, centroid y, area) of the pixels close to the object colour."""
    dist = np.linalg.norm(frames.astype(np.float64) - np.asarray(rgb, dtype=np.float64), axis=-1)  # (N, H, W)
    rows = []
    for mask in dist < 60:
        ys, xs = np.nonzero(mask)
        assert len(xs) > 0, "object not found in a frame"
        rows.append((xs.mean(), ys.mean(), len(xs)))
    return np.asarray(rows)  # (N, 3)


# ---------------------------------------------------------------- determinism

def test_same_seed_gives_identical_files(demos: dict[str, Path]) -> None:
    for rel in CSVS + ("scenes.json",):
        assert (demos["a"] / rel).read_bytes() == (demos["b"] / rel).read_bytes(), rel
    # With x264 single-threaded and mbtree off, the videos are byte-identical too.
    for video in sorted((demos["a"] / "videos").iterdir()):
        assert video.read_bytes() == (demos["b"] / "videos" / video.name).read_bytes(), video.name


def test_different_seed_differs(demos: dict[str, Path]) -> None:
    for rel in CSVS + ("scenes.json",):
        assert (demos["a"] / rel).read_bytes() != (demos["c"] / rel).read_bytes(), rel
    assert (demos["a"] / "videos" / "vid1.mp4").read_bytes() != (demos["c"] / "videos" / "vid1.mp4").read_bytes()


# ---------------------------------------------------------------- layout and captions

def test_layout_and_summary(tmp_path: Path) -> None:
    summary = make_demo(tmp_path / "d", n_videos=10, seed=3, test_fraction=0.3)
    root = tmp_path / "d"
    assert sorted(p.name for p in root.iterdir()) == ["captions", "lexicon", "scenes.json", "videos"]
    assert sorted(p.name for p in (root / "videos").iterdir()) == sorted(f"vid{i}.mp4" for i in range(1, 11))
    assert summary["n_videos"] == 10 and summary["n_test"] == 3 and summary["n_train"] == 7
    n_rows = sum(len(pd.read_csv(root / rel)) for rel in CSVS)
    assert summary["n_captions"] == n_rows
    assert summary["n_train_captions"] == len(pd.read_csv(summary["trainval_csv"]))
    assert Path(summary["scenes_json"]).is_file() and Path(summary["lexicon_dir"]).is_dir()
    # Nothing but the dataset itself is left beside it (no temporary folders).
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_csvs_have_official_layout(demos: dict[str, Path], scenes: dict) -> None:
    frames = []
    for rel in CSVS:
        raw = (demos["a"] / rel).read_bytes()
        assert raw.startswith(b"VideoID,EmCaptions\r\n")
        df = pd.read_csv(demos["a"] / rel)
        assert list(df.columns) == ["VideoID", "EmCaptions"]
        assert df["VideoID"].str.fullmatch(r"vid\d+").all()
        assert df["EmCaptions"].str.fullmatch(r"[a-z]+( [a-z]+)*").all()  # lowercase, no punctuation
        frames.append(df)
    train, test = frames
    assert set(train["VideoID"]).isdisjoint(test["VideoID"])
    assert set(train["VideoID"]) | set(test["VideoID"]) == {f"vid{i}" for i in range(1, N_VIDEOS + 1)}
    assert test["VideoID"].nunique() == round(N_VIDEOS * 0.2)
    for vid, n in Counter(list(train["VideoID"]) + list(test["VideoID"])).items():
        assert 5 <= n <= 8, vid
        split = "test" if vid in set(test["VideoID"]) else "train"
        assert scenes["videos"][vid]["split"] == split
        assert len(scenes["videos"][vid]["captions"]) == n


def test_scenes_cover_every_kind(scenes: dict) -> None:
    videos = scenes["videos"].values()
    assert {v["action"] for v in videos} == set(demo.ACTIONS)
    assert {v["bias"] for v in videos} == set(demo.BIAS_CLASSES)
    assert {v["emotion"] for v in videos} <= set(demo.EMOTIONS)
    assert len({v["emotion"] for v in videos}) == len(demo.EMOTIONS)
    for v in videos:
        assert set(v["cues"]) >= {"brightness", "warmth", "tempo", "shake", "flicker", "flashes", "pattern"}
        assert len(v["track"]) == scenes["n_frames"]


def test_caption_emotion_words_belong_to_the_lexicon(demos: dict[str, Path], scenes: dict) -> None:
    lexicon = read_lexicon(demos["a"] / "lexicon")
    for vid, v in scenes["videos"].items():
        for cap in v["captions"]:
            hits = [w for w in cap["text"].split() if w in lexicon]
            # Every recorded emotion word is a lexicon word of its recorded category, and
            # no other caption word is a lexicon word.
            assert Counter(hits) == Counter(cap["emotion_words"]), (vid, cap)
            for word, cat in zip(cap["emotion_words"], cap["emotion_categories"]):
                assert cat in lexicon.categories_of(word), (vid, word, cat)


def test_emotional_bias_videos_carry_more_emotion_words(demos: dict[str, Path], scenes: dict) -> None:
    lexicon = read_lexicon(demos["a"] / "lexicon")
    share: dict[str, list[float]] = {c: [] for c in demo.BIAS_CLASSES}
    words: dict[str, list[int]] = {c: [] for c in demo.BIAS_CLASSES}
    for v in scenes["videos"].values():
        counts = [sum(w in lexicon for w in c["text"].split()) for c in v["captions"]]
        share[v["bias"]].append(float(np.mean([n > 0 for n in counts])))
        words[v["bias"]].extend(counts)
    assert min(share["emotional"]) > max(share["factual"])
    assert np.mean(words["emotional"]) > np.mean(words["neutral"]) > np.mean(words["factual"])
    assert any(n == 2 for n in words["emotional"])  # some captions carry two emotion words


def test_emotion_share_sets_the_share_of_emotional_captions(tmp_path: Path, scenes: dict) -> None:
    # The CLIP pretraining pool's captions rarely name an emotion, like web alt-text; the videos,
    # facts and wording of the rest stay those of the default captions.
    lexicon = read_lexicon(demo_lexicon_dir())
    shares = {}
    for share in (0.0, 0.3):
        make_demo(tmp_path / str(share), n_videos=N_VIDEOS, seed=0, emotion_share=share)
        pool = json.loads((tmp_path / str(share) / "scenes.json").read_text())
        assert pool["emotion_share"] == share
        caps = [c for v in pool["videos"].values() for c in v["captions"]]
        shares[share] = np.mean([any(w in lexicon for w in c["text"].split()) for c in caps])
        assert [v["cues"] for v in pool["videos"].values()] == [v["cues"] for v in scenes["videos"].values()]
    assert shares[0.0] == 0.0
    assert 0.1 < shares[0.3] < 0.5  # binomial share of ~80 captions
    default = np.mean([any(w in lexicon for w in c["text"].split())
                       for v in scenes["videos"].values() for c in v["captions"]])
    assert default > 0.65 and scenes["emotion_share"] is None
    with pytest.raises(ValueError, match="emotion_share"):
        make_demo(tmp_path / "bad", n_videos=2, emotion_share=1.5)


def test_package_lexicon_covers_the_caption_vocabulary() -> None:
    lexicon = read_lexicon(demo_lexicon_dir())
    assert 8 <= len(lexicon.categories) <= 12
    per_category = Counter(cat for _, cat in lexicon.entries)
    assert all(4 <= n <= 8 for n in per_category.values()), per_category
    assert any(len(lexicon.categories_of(w)) > 1 for w in lexicon.words)  # as in the official lexicon
    assert set(demo.EMOTION_WORDS) == set(lexicon.categories)
    for cat, by_pos in demo.EMOTION_WORDS.items():
        for pos_words in by_pos.values():
            for w in pos_words:
                assert cat in lexicon.categories_of(w), (cat, w)


def test_lexicon_is_copied(demos: dict[str, Path]) -> None:
    src = sorted(demo_lexicon_dir().glob("*.txt"))
    assert [p.name for p in src] == sorted(p.name for p in (demos["a"] / "lexicon").iterdir())
    for p in src:
        assert p.read_bytes() == (demos["a"] / "lexicon" / p.name).read_bytes()


# ---------------------------------------------------------------- videos

def test_every_video_decodes(demos: dict[str, Path], scenes: dict) -> None:
    for vid in scenes["videos"]:
        frames = read_frames(demos["a"] / "videos" / f"{vid}.mp4", 16)
        assert frames.shape == (16, 64, 64, 3) and frames.dtype == np.uint8


def test_motion_direction_is_visible(demos: dict[str, Path], scenes: dict) -> None:
    # Measured on decoded frames: first vs last four frames of each moving video.
    checked = Counter()
    for vid, v in scenes["videos"].items():
        if v["action"] not in ("moves_left", "moves_right", "falls", "rises", "grows", "shrinks"):
            continue
        frames = read_frames(demos["a"] / "videos" / f"{vid}.mp4", scenes["n_frames"])  # every frame
        track = _object_track(frames, v["colour_rgb"])
        start, end = track[:4].mean(axis=0), track[-4:].mean(axis=0)
        dx, dy, area_ratio = end[0] - start[0], end[1] - start[1], end[2] / start[2]
        expected = {
            "moves_left": dx < -8, "moves_right": dx > 8, "falls": dy > 8, "rises": dy < -8,
            "grows": area_ratio > 2, "shrinks": area_ratio < 0.5,
        }[v["action"]]
        assert expected, (vid, v["action"], dx, dy, area_ratio)
        checked[v["action"]] += 1
    assert checked["moves_left"] >= 1 and checked["moves_right"] >= 1


# ---------------------------------------------------------------- atomicity and CLI

def test_rerun_replaces_previous_demo(tmp_path: Path) -> None:
    out = tmp_path / "d"
    make_demo(out, n_videos=4, seed=0)
    (out / "stale.txt").write_text("old")
    make_demo(out, n_videos=3, seed=1)
    assert not (out / "stale.txt").exists()
    assert len(list((out / "videos").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_refuses_to_replace_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="precious"):
        make_demo(out, n_videos=2)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_failed_run_leaves_previous_demo_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "d"
    make_demo(out, n_videos=4, seed=0)
    before = (out / "scenes.json").read_bytes()
    calls = {"n": 0}
    real_encode = demo._encode

    def failing_encode(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # stands in for a killed run
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(demo, "_encode", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        make_demo(out, n_videos=6, seed=5)
    assert (out / "scenes.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # the temporary folder is gone


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_videos"):
        make_demo(tmp_path / "x", n_videos=0)
    with pytest.raises(ValueError, match="size"):
        make_demo(tmp_path / "x", n_videos=2, size=63)
    with pytest.raises(ValueError, match="test_fraction"):
        make_demo(tmp_path / "x", n_videos=2, test_fraction=1.0)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "cli"), "--n-videos", "5", "--seed", "2"])
    assert run_cli(args) == 0
    printed = capsys.readouterr().out
    assert "5 videos" in printed and str(tmp_path / "cli") in printed
    assert re.search(r"\d+ train, \d+ test", printed)

    blocker = tmp_path / "notdemo"
    blocker.mkdir()
    (blocker / "x").write_text("x")
    args = parser.parse_args(["--out", str(blocker)])
    assert run_cli(args) == 1
    assert "notdemo" in capsys.readouterr().err
