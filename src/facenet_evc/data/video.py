"""Sample and decode video frames with PyAV.

Videos in EVC datasets are short clips (about 10 s), so a reader decodes the whole stream
once and keeps the decoded frames in their native pixel format, converting only the
sampled ones to RGB. The frame count comes from decoding, because container metadata
(``stream.frames``, duration x rate) is missing or wrong for many real-world files.
"""
from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter


class VideoError(ValueError):
    """A video file that exists but cannot be decoded into frames."""


def sample_indices(n_total: int, n: int) -> np.ndarray:
    """Return ``n`` frame indices spread uniformly over ``n_total`` frames.

    Follows EPAN's ``UniformSample``: ``np.linspace(0, n_total - 1, n, dtype=int)``, i.e.
    the positions are truncated (floored) to integers, so the first and last frames are
    always included. EPAN returns fewer than ``n`` frames for a short video and zero-pads
    later; here the same formula simply repeats frames, so exactly ``n`` always come back.
    """
    if n_total < 1:
        raise ValueError(f"sample_indices: n_total must be >= 1, got {n_total}")
    if n < 1:
        raise ValueError(f"sample_indices: n must be >= 1, got {n}")
    # dtype=int floors non-negative positions, exactly as EPAN does.
    return np.linspace(0, n_total - 1, n, dtype=np.int64)  # (n,)


def read_frames(path: str | os.PathLike, n_frames: int = 16) -> np.ndarray:
    """Decode ``path`` and return ``n_frames`` uniformly sampled RGB frames.

    Returns a ``uint8`` array of shape ``(n_frames, H, W, 3)``. Raises
    :class:`FileNotFoundError` if ``path`` does not exist and :class:`VideoError` (naming
    the file and the problem) if it cannot be opened, has no video stream, fails while
    decoding, changes resolution mid-stream or yields no frame at all.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video file not found")
    if not path.is_file():
        raise VideoError(f"{path}: not a regular file")
    if n_frames < 1:
        raise ValueError(f"read_frames: n_frames must be >= 1, got {n_frames}")

    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: cannot open as a video container ({e})") from None
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: file holds no video stream")
        stream = container.streams.video[0]
        # Threaded decoding speeds up full-size real videos but costs more than it saves on
        # tiny clips such as the demo's 64x64 (thread start-up dominates: about 7x slower).
        if stream.codec_context.width * stream.codec_context.height >= 320 * 240:
            stream.thread_type = "AUTO"
        decoded: list[av.VideoFrame] = []
        try:
            for frame in container.decode(stream):
                decoded.append(frame)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: decoding failed after {len(decoded)} frame(s) ({e})") from None
        if not decoded:
            raise VideoError(f"{path}: video stream has no decodable frame")

        idx = sample_indices(len(decoded), n_frames)  # (n_frames,)
        # One reformatter keeps its conversion context across frames; frame.to_ndarray(format=...)
        # builds a new one per frame, which made decoding small clips about 3x slower.
        reformatter = VideoReformatter()
        out: list[np.ndarray] = []
        cache: dict[int, np.ndarray] = {}
        for i in idx.tolist():
            if i not in cache:
                cache[i] = reformatter.reformat(decoded[i], format="rgb24").to_ndarray()  # (H, W, 3)
            out.append(cache[i])
    finally:
        container.close()

    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise VideoError(f"{path}: frame size changes within the stream ({sorted(shapes)})")
    return np.stack(out).astype(np.uint8, copy=False)  # (n_frames, H, W, 3)


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side of every frame to ``size`` (bilinear) and centre-crop to a square.

    ``frames`` is ``(N, H, W, 3)`` uint8; returns ``(N, size, size, 3)`` uint8.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"resize_center_crop: expected (N, H, W, 3) frames, got shape {frames.shape}")
    if size < 1:
        raise ValueError(f"resize_center_crop: size must be >= 1, got {size}")
    n, h, w, _ = frames.shape
    scale = size / min(h, w)
    # max(size, ...) guards against rounding the short side one pixel below the crop.
    new_h = max(size, int(round(h * scale)))
    new_w = max(size, int(round(w * scale)))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    if (new_h, new_w) != (h, w):
        # antialias avoids aliasing when downscaling full-size video to CLIP resolution.
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]  # (N, 3, size, size)
    x = x.round().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, size, size, 3)
