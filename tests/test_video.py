from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from facenet_evc.data.video import VideoError, read_frames, resize_center_crop, sample_indices


def _write_gray_video(path: Path, n: int, h: int = 32, w: int = 48, fps: int = 10) -> list[int]:
    """A video whose frame i is a flat grey level; returns the levels in order."""
    levels = [int(v) for v in np.linspace(20, 230, n)]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "10"}
        for i, level in enumerate(levels):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), level, dtype=np.uint8), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return levels


# ---------------------------------------------------------------- sample_indices

@pytest.mark.parametrize("n_total,n", [(1, 16), (5, 16), (16, 16), (17, 16), (24, 16), (300, 16), (1000, 8)])
def test_sample_indices_properties(n_total: int, n: int) -> None:
    idx = sample_indices(n_total, n)
    assert idx.shape == (n,)
    assert np.issubdtype(idx.dtype, np.integer)
    assert idx[0] == 0 and idx[-1] == n_total - 1
    assert np.all(np.diff(idx) >= 0)
    assert idx.min() >= 0 and idx.max() <= n_total - 1
    if n_total >= n:
        assert len(np.unique(idx)) == n  # no frame repeated when there are enough
    else:
        assert len(np.unique(idx)) == n_total  # every frame used, some repeated


def test_sample_indices_matches_epan_uniform_sample() -> None:
    for n_total in (16, 20, 37, 240):
        np.testing.assert_array_equal(sample_indices(n_total, 16), np.linspace(0, n_total - 1, 16, dtype=int))
    np.testing.assert_array_equal(sample_indices(16, 16), np.arange(16))


@pytest.mark.parametrize("n_total,n", [(0, 4), (4, 0), (-1, 3)])
def test_sample_indices_rejects_bad_sizes(n_total: int, n: int) -> None:
    with pytest.raises(ValueError):
        sample_indices(n_total, n)


# ---------------------------------------------------------------- read_frames

def test_read_frames_samples_uniformly_in_order(tmp_path: Path) -> None:
    path = tmp_path / "gray.mp4"
    levels = _write_gray_video(path, n=20)
    frames = read_frames(path, n_frames=5)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    expected = np.array(levels)[sample_indices(20, 5)]
    np.testing.assert_allclose(frames.reshape(5, -1).mean(axis=1), expected, atol=3)


def test_read_frames_repeats_frames_of_a_short_video(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    levels = _write_gray_video(path, n=6)
    frames = read_frames(path, n_frames=16)
    assert frames.shape == (16, 32, 48, 3)
    means = frames.reshape(16, -1).mean(axis=1)
    np.testing.assert_allclose(means, np.array(levels)[sample_indices(6, 16)], atol=3)
    assert means[0] < means[-1]


def test_read_frames_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "missing.mp4"
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_frames(path)


def test_read_frames_corrupt_file_raises_video_error(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="corrupt.mp4") as info:
        read_frames(path)
    assert isinstance(info.value, ValueError)


def test_read_frames_empty_file_raises_video_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError, match="empty.mp4"):
        read_frames(path)


def test_read_frames_truncated_file_raises_video_error(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    _write_gray_video(good, n=10)
    data = good.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match="truncated.mp4"):
        read_frames(bad)


def test_read_frames_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(VideoError, match=r"audio\.wav.*no video stream"):
        read_frames(path)


def test_read_frames_directory_raises_video_error(tmp_path: Path) -> None:
    folder = tmp_path / "clip.mp4"
    folder.mkdir()
    with pytest.raises(VideoError, match="clip.mp4"):
        read_frames(folder)


# ---------------------------------------------------------------- resize_center_crop

@pytest.mark.parametrize("h,w", [(48, 80), (80, 48), (32, 32), (10, 14)])
def test_resize_center_crop_shape_and_dtype(h: int, w: int) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    out = resize_center_crop(frames, 24)
    assert out.shape == (3, 24, 24, 3) and out.dtype == np.uint8


def test_resize_center_crop_keeps_the_centre() -> None:
    # Landscape frame: left third red, middle third green, right third blue. The square
    # centre crop after resizing keeps the green band; only the outermost columns may
    # pick up a little red/blue from the antialiased downscale.
    frames = np.zeros((1, 30, 90, 3), dtype=np.uint8)
    frames[:, :, :30, 0] = 255
    frames[:, :, 30:60, 1] = 255
    frames[:, :, 60:, 2] = 255
    out = resize_center_crop(frames, 20)
    assert out.shape == (1, 20, 20, 3)
    inner = out[0, :, 1:-1]
    assert np.all(inner[..., 1] == 255) and inner[..., 0].max() == 0 and inner[..., 2].max() == 0
    assert out[0, :, [0, -1]][..., [0, 2]].max() < 64


def test_resize_center_crop_constant_image_stays_constant() -> None:
    frames = np.full((2, 50, 70, 3), 137, dtype=np.uint8)
    assert np.all(resize_center_crop(frames, 32) == 137)


def test_resize_center_crop_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        resize_center_crop(np.zeros((4, 4, 3), dtype=np.uint8), 2)
    with pytest.raises(ValueError):
        resize_center_crop(np.zeros((1, 4, 4, 3), dtype=np.uint8), 0)
