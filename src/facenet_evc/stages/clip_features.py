"""Per-frame CLIP features of every video (paper Sec. 3.2, eq. 1 and 3).

For each video, N frames are sampled uniformly (EPAN's ``np.linspace(0, T-1, N, dtype=int)``),
resized on the short side and centre-cropped to the CLIP input size, and encoded one by one
by the CLIP image tower: V = {v_1, ..., v_N} (eq. 1). Their mean is the video
representation v̂ used for retrieval (eq. 3).

Eq. 1 replaces the ViT's 2D patch projection by a 3D one with a ``t × h × w`` kernel
(following CLIP4Clip's "3D linear"); :func:`inflate_patch_embed` implements it as an
option (``tubelet=(t, h, w)``). It keeps one token map per frame (temporal stride 1), so
the output is still N per-frame features.

Output ``results/<ds>/features/clip_frames.h5``:

* ``video_ids``  (n,) UTF-8 strings: the row order of every other dataset;
* ``frames``     (n, N, d) float32: per-frame CLIP image embeddings (not normalised);
* ``mean``       (n, d) float32: v̂ = frames.mean(1) (eq. 3);
* ``video_embed`` (n, d) float32, only when the CLIP checkpoint comes with a temporal head
  (the demo's): the order-aware video embedding the head was trained with;

with attrs naming the model, pretrained tag/path, checkpoint SHA-256, N and crop size.
:func:`import_epan_features` writes the same layout from EPAN's released feature files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from facenet_evc.errors import NotFoundError
from facenet_evc.progress import progress_bar

from facenet_evc.data.emvidcap import video_ids_in_files
from facenet_evc.data.video import VideoError, read_frames, resize_center_crop
from facenet_evc.io import atomic_h5, file_sha256, read_attrs, read_strings, write_strings
from facenet_evc.stages.feature_shards import parse_shard, shard_attrs, shard_ids
from facenet_evc.stages.features_h5 import create_feature_datasets

log = logging.getLogger(__name__)

FRAME_SAMPLING = "np.linspace(0, T - 1, N, dtype=int)"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
TUBELET_INITS = ("central", "average")
FORMAT = "facenet_evc.clip_frames"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- decoding


class VideoFrames(Dataset):
    """Decode-and-crop dataset: item i is ``(i, frames (N, S, S, 3) uint8 | None, error | None)``.

    Errors are returned rather than raised so the main process can raise one clean
    :class:`VideoError` naming the file instead of a worker traceback dump.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], n_frames: int, size: int) -> None:
        self.paths = [str(p) for p in paths]
        self.n_frames = n_frames
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            frames = read_frames(self.paths[i], self.n_frames)  # (N, H, W, 3)
            return i, resize_center_crop(frames, self.size), None  # (N, S, S, 3)
        except (VideoError, FileNotFoundError, OSError) as e:
            return i, None, str(e)


def _collate(batch: list[tuple[int, np.ndarray | None, str | None]]) -> list[tuple[int, np.ndarray | None, str | None]]:
    return batch


def _worker_init(_: int) -> None:
    # A decoding worker must not compete with the encoder for cores: resize_center_crop
    # uses torch ops, which would otherwise start a full intra-op thread pool per worker.
    torch.set_num_threads(1)


def iter_decoded_items(
    paths: Sequence[str | os.PathLike], n_frames: int, size: int, batch_size: int = 8, num_workers: int = 1
) -> Iterator[list[tuple[int, np.ndarray | None, str | None]]]:
    """Yield batches of ``(index, frames (N, S, S, 3) uint8 | None, error | None)`` in input order.

    A video that cannot be read comes back with ``frames=None`` and an error naming its file,
    so a caller may skip it (``facenet-evc caption``) or stop (:func:`iter_decoded`).
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    loader = DataLoader(
        VideoFrames(paths, n_frames, size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
    for batch in loader:
        yield [(i, frames, err if err is None or str(paths[i]) in err else f"{paths[i]}: {err}")
               for i, frames, err in batch]


def iter_decoded(
    paths: Sequence[str | os.PathLike], n_frames: int, size: int, batch_size: int = 8, num_workers: int = 1
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield ``(indices, frames (b, N, S, S, 3) uint8)`` in input order, decoded in DataLoader workers.

    Raises :class:`VideoError` naming the file for the first video that cannot be decoded.
    """
    for batch in iter_decoded_items(paths, n_frames, size, batch_size, num_workers):
        for _, _, err in batch:
            if err is not None:
                raise VideoError(err)
        yield [b[0] for b in batch], np.stack([b[1] for b in batch])


def find_videos(
    videos_dir: str | os.PathLike, video_ids: Sequence[str] | None = None, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> dict[str, Path]:
    """Map video ids to files ``<videos_dir>/<id><ext>``.

    With ``video_ids=None`` every video file in the folder is taken, in natural id order
    (vid2 before vid10). A listed id without a file raises :class:`FileNotFoundError`
    naming the folder and the first missing ids.
    """
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir}: video folder not found")
    by_stem: dict[str, Path] = {}
    for p in sorted(videos_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in extensions and p.stem not in by_stem:
            by_stem[p.stem] = p
    if video_ids is None:
        return {v: by_stem[v] for v in sorted(by_stem, key=_natural_key)}
    missing = [v for v in video_ids if v not in by_stem]
    if missing:
        raise FileNotFoundError(
            f"{videos_dir}: no video file ({'/'.join(extensions)}) for {len(missing)} id(s): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    return {v: by_stem[v] for v in video_ids}


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# --------------------------------------------------------------------------- eq. 1: 3D patch embedding


class TubeletEmbed(nn.Module):
    """φ_3D of eq. 1: a ``t × h × w`` Conv3d over the frame sequence, temporal stride 1.

    Replaces a ViT's ``conv1``. The image tower still sees a batch of frames
    ``(B·N, 3, H, W)``; this module regroups them into ``B`` videos of ``n_frames``
    consecutive frames, convolves over time, and returns one token map per frame, so the
    transformer and everything after it run unchanged and eq. 1 still yields N features.

    The temporal edges are padded by repeating the first/last frame ("replicate"), not with
    zeros as CLIP4Clip does: that way an ``average``-initialised kernel applied to a static
    video gives exactly the 2D embedding at every frame, edges included. For the ``central``
    init the padding is irrelevant (the non-centre slots are zero).
    """

    def __init__(self, conv2d: nn.Conv2d, t: int, n_frames: int, init: str = "central") -> None:
        super().__init__()
        if t < 1:
            raise ValueError(f"tubelet temporal size t must be >= 1, got {t}")
        if n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        if init not in TUBELET_INITS:
            raise ValueError(f"tubelet init must be one of {TUBELET_INITS}, got {init!r}")
        self.t = t
        self.n_frames = n_frames
        self.init = init
        self.pad = ((t - 1) // 2, t // 2)  # frames before / after the centre slot
        kh, kw = conv2d.kernel_size
        sh, sw = conv2d.stride
        self.conv = nn.Conv3d(
            conv2d.in_channels, conv2d.out_channels, kernel_size=(t, kh, kw), stride=(1, sh, sw),
            padding=(0,) + tuple(conv2d.padding), bias=conv2d.bias is not None,
        )
        w2 = conv2d.weight.detach()  # (out, in, kh, kw)
        with torch.no_grad():
            if init == "central":
                # CLIP4Clip's "central frame" init: the 2D kernel at the slot aligned with the
                # output frame, zeros elsewhere → identical to the 2D embedding before fine-tuning.
                w3 = torch.zeros(w2.shape[0], w2.shape[1], t, kh, kw, dtype=w2.dtype, device=w2.device)
                w3[:, :, self.pad[0]] = w2
            else:
                # Averaged inflation (I3D): the 2D kernel spread evenly over t slots.
                w3 = w2.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
            self.conv.weight.copy_(w3)  # (out, in, t, kh, kw)
            if conv2d.bias is not None:
                self.conv.bias.copy_(conv2d.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c, h, w = x.shape
        if bn % self.n_frames:
            raise ValueError(
                f"tubelet patch embedding needs whole videos of {self.n_frames} frames per batch, got {bn} frames"
            )
        b = bn // self.n_frames
        v = x.reshape(b, self.n_frames, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, N, H, W)
        if self.t > 1:
            v = F.pad(v, (0, 0, 0, 0, self.pad[0], self.pad[1]), mode="replicate")  # (B, C, N+t-1, H, W)
        y = self.conv(v)  # (B, width, N, gh, gw)
        return y.permute(0, 2, 1, 3, 4).reshape(bn, y.shape[1], y.shape[3], y.shape[4])  # (B·N, width, gh, gw)


def inflate_patch_embed(visual: nn.Module, t: int, n_frames: int = 16, init: str = "central") -> TubeletEmbed:
    """Swap a ViT image tower's 2D patch projection for eq. 1's 3D one, in place; return it.

    ``init="central"`` (default): the output equals the 2D patch embedding of each frame
    exactly, for any video. ``init="average"``: it equals it for frames whose ``t``-frame
    window is static (all frames identical). A ModifiedResNet tower has no patch
    embedding and raises :class:`ValueError`.
    """
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, ModifiedResNet):
        raise ValueError(
            "tubelet (3D patch) embedding needs a ViT image tower; this CLIP model's image tower is a "
            "ModifiedResNet, which has no patch embedding (use tubelet=None or a ViT model such as ViT-B-32)"
        )
    if not isinstance(visual, VisionTransformer):
        raise ValueError(f"tubelet embedding needs an open_clip VisionTransformer image tower, got {type(visual).__name__}")
    if isinstance(visual.conv1, TubeletEmbed):
        raise ValueError("the image tower's patch embedding is already inflated")
    visual.conv1 = TubeletEmbed(visual.conv1, t, n_frames, init)
    return visual.conv1


def _check_tubelet(tubelet: Sequence[int] | None, visual: nn.Module) -> tuple[int, int, int] | None:
    if tubelet is None:
        return None
    if len(tubelet) != 3 or any(int(v) < 1 for v in tubelet):
        raise ValueError(f"tubelet must be three positive sizes (t, h, w), got {tubelet}")
    t, h, w = (int(v) for v in tubelet)
    patch = getattr(visual, "patch_size", None)
    if patch is not None and (h, w) != tuple(patch):
        # The 3D kernel is inflated from the pretrained 2D one, so its spatial size is fixed.
        raise ValueError(f"tubelet spatial size {h}x{w} must equal the ViT patch size {patch[0]}x{patch[1]}")
    return t, h, w


# --------------------------------------------------------------------------- extraction


def load_image_encoder(
    model_name: str,
    pretrained: str | None,
    n_frames: int,
    tubelet: Sequence[int] | None = None,
    tubelet_init: str = "central",
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, int, tuple[int, int, int] | None]:
    """CLIP set up for frame features: ``(model, crop size S, tubelet or None)``.

    The one place extraction and ``facenet-evc caption`` prepare the image tower, so a new
    video is encoded exactly as the training videos were.
    """
    from facenet_evc.stages.clip_model import load_clip

    model, size, _ = load_clip(model_name, pretrained, device)
    # NHWC weights: about 1.7x faster ResNet convolutions on CPU; a no-op for other layers.
    model = model.to(memory_format=torch.channels_last)
    tub = _check_tubelet(tubelet, model.visual)
    if tub is not None:
        inflate_patch_embed(model.visual, tub[0], n_frames, tubelet_init)
    return model, size, tub


@torch.inference_mode()
def encode_video_batch(
    model: nn.Module, frames: np.ndarray, head: nn.Module | None = None, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frames ``(b, N, S, S, 3)`` uint8 → per-frame features V ``(b, N, d)`` (eq. 1), their mean
    v̂ ``(b, d)`` (eq. 3) and, with a temporal head, the video embedding ``(b, d)`` (else None)."""
    from facenet_evc.stages.clip_model import encode_images

    b, n, s = frames.shape[0], frames.shape[1], frames.shape[2]
    x = frames.reshape(b * n, s, s, 3)  # (b·N, S, S, 3)
    # One forward per batch of whole videos: the tubelet embedding groups frames by video.
    feats = encode_images(model, x).reshape(b, n, -1)  # (b, N, d)
    embed = None
    if head is not None:
        embed = head(torch.from_numpy(feats).to(device)).float().cpu().numpy()  # (b, d)
    return feats, feats.mean(axis=1), embed  # mean: (b, d), eq. 3


def extract_features(
    video_paths: dict[str, str | os.PathLike],
    model_name: str,
    pretrained: str | None,
    out_path: str | os.PathLike,
    n_frames: int = 16,
    batch_size: int = 8,
    num_workers: int = 1,
    threads: int | None = None,
    tubelet: Sequence[int] | None = None,
    tubelet_init: str = "central",
    temporal_head: str | os.PathLike | None = "auto",
    device: str = "cpu",
    progress: bool = True,
    extra_attrs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write per-frame CLIP features V (eq. 1) and their mean v̂ (eq. 3) to ``out_path``.

    Args:
        video_paths: ``{video_id: video file}``; rows are written in this order.
        model_name / pretrained: passed to :func:`facenet_evc.stages.clip_model.load_clip`.
        out_path: HDF5 file (written atomically: nothing remains if any video fails).
        n_frames: N frames sampled per video.
        batch_size: videos decoded and encoded together (``batch_size · N`` images per forward).
        num_workers: DataLoader decoding processes (decoding overlaps encoding when >= 1).
        threads: torch intra-op threads for encoding (None: leave torch's setting).
        tubelet: ``(t, h, w)`` to use eq. 1's 3D patch embedding (ViT towers only), or None.
        tubelet_init: ``"central"`` or ``"average"`` inflation of the 2D kernel.
        temporal_head: ``"auto"`` (use ``<ckpt stem>.temporal.pt`` beside a checkpoint file
            when present), a path, or None; when used, ``video_embed`` is written.
        device: torch device for encoding.
        extra_attrs: more file attrs (a shard's position, see :mod:`facenet_evc.stages.feature_shards`).

    Returns:
        Summary: counts, dims and wall-clock seconds.
    """
    from facenet_evc.stages.clip_model import load_temporal_head, temporal_head_path

    t0 = time.perf_counter()
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ids = list(video_paths)
    if not ids:
        raise ValueError("extract_features: no videos given")
    paths = [Path(video_paths[v]) for v in ids]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: video file not found")
    if threads is not None:
        torch.set_num_threads(int(threads))

    model, size, tub = load_image_encoder(model_name, pretrained, n_frames, tubelet, tubelet_init, device)

    head_path: Path | None = None
    if temporal_head == "auto":
        if pretrained is not None and os.path.isfile(str(pretrained)) and temporal_head_path(pretrained).is_file():
            head_path = temporal_head_path(pretrained)
    elif temporal_head is not None:
        head_path = Path(temporal_head)
    head = load_temporal_head(head_path, device) if head_path is not None else None

    ckpt_sha = file_sha256(pretrained) if pretrained is not None and os.path.isfile(str(pretrained)) else None
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": "clip",
        "model_name": model_name,
        "pretrained": "" if pretrained is None else str(pretrained),
        "checkpoint_sha256": ckpt_sha or "",
        "n_frames": int(n_frames),
        "crop_size": int(size),
        "frame_sampling": FRAME_SAMPLING,
        "resize": "short side to crop_size (bilinear, antialias), centre crop",
        "feature": "CLIP encode_image output, not L2-normalised",
        "tubelet": json.dumps(list(tub) if tub else None),
        "tubelet_init": tubelet_init if tub else "",
        "temporal_head": "" if head_path is None else str(head_path),
        "temporal_head_sha256": "" if head_path is None else file_sha256(head_path),
        "dims": "frames (n_videos, N, d); mean (n_videos, d) = frames.mean(1) (eq. 3)",
        **(extra_attrs or {}),
    }
    n = len(ids)
    d = None
    t_encode = 0.0
    with atomic_h5(out_path, attrs) as f:
        write_strings(f, "video_ids", ids)
        # closed on an error too, so that the error message starts on a line of its own
        with progress_bar(total=n, unit="video", desc="clip features", disable=not progress) as bar, \
                torch.inference_mode():
            for idx, frames in iter_decoded(paths, n_frames, size, batch_size, num_workers):
                te = time.perf_counter()
                b = len(idx)
                feats, mean, embed = encode_video_batch(model, frames, head, device)  # (b, N, d), (b, d), (b, d)
                if d is None:
                    d = feats.shape[-1]
                    create_feature_datasets(f, n, n_frames, d, video_embed=head is not None)
                lo, hi = idx[0], idx[-1] + 1  # DataLoader keeps order, so rows are contiguous
                f["frames"][lo:hi] = feats
                f["mean"][lo:hi] = mean
                if embed is not None:
                    f["video_embed"][lo:hi] = embed
                t_encode += time.perf_counter() - te
                bar.update(b)
        f.attrs["dim"] = int(d)
    total = time.perf_counter() - t0
    log.info("features of %d videos (N=%d, d=%d) -> %s in %.1f s", n, n_frames, d, out_path, total)
    return {
        "out_path": str(out_path),
        "n_videos": n,
        "n_frames": int(n_frames),
        "dim": int(d),
        "crop_size": int(size),
        "video_embed": head is not None,
        "encode_s": t_encode,
        "total_s": total,
    }


# --------------------------------------------------------------------------- EPAN features


def _prefixes(vid_prefix: str | None | Sequence[str | None], n_files: int) -> list[str | None]:
    if vid_prefix is None or isinstance(vid_prefix, str):
        return [vid_prefix or None] * n_files
    prefixes = [p or None for p in vid_prefix]
    if len(prefixes) != n_files:
        raise ValueError(f"{len(prefixes)} vid prefixes given for {n_files} EPAN feature file(s)")
    return prefixes


def import_epan_features(
    h5_paths: Sequence[str | os.PathLike],
    video_ids: Sequence[str],
    out_path: str | os.PathLike,
    n_frames: int = 16,
    vid_prefix: str | None | Sequence[str | None] = None,
) -> dict[str, Any]:
    """Convert EPAN's released CLIP feature files into the ``clip_frames.h5`` layout.

    EPAN's files hold one dataset per video, ``fin[key][()]`` of shape ``(T, d)``; EPAN
    samples ``np.linspace(0, T - 1, N, dtype=int)`` frames of it, as done here. Its
    EmVidCap-L (VE) file names videos without the ``vid`` prefix of the caption files and
    EPAN prepends it when loading: ``vid_prefix`` says which prefix a file's keys lack — one
    value for all files or one per file (None: keys are the video ids). E.g. for
    EVC-Combine, ``h5_paths=[msvd.h5, ve.h5], vid_prefix=[None, "vid"]``.

    Raises :class:`KeyError` naming the id and the file(s) searched when a video is
    missing, or found in two files; :class:`ValueError` naming the file and key for an
    array that is not 2-D, is empty, or has another width than the others.
    """
    t0 = time.perf_counter()
    if not h5_paths:
        raise ValueError("import_epan_features: no EPAN feature file given")
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    files = [Path(p) for p in h5_paths]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: EPAN feature file not found")
    prefixes = _prefixes(vid_prefix, len(files))
    ids = list(video_ids)
    if not ids:
        raise ValueError("import_epan_features: no video ids given")
    if len(set(ids)) != len(ids):
        raise ValueError("import_epan_features: video ids are not unique")

    handles = [h5py.File(p, "r") for p in files]
    try:
        keys = [set(h.keys()) for h in handles]
        where: list[tuple[int, str]] = []
        for vid in ids:
            found = []
            for j, (ks, pre) in enumerate(zip(keys, prefixes)):
                if pre is None:
                    key = vid
                elif vid.startswith(pre):
                    key = vid[len(pre):]
                else:
                    continue
                if key in ks:
                    found.append((j, key))
            if not found:
                looked = ", ".join(
                    f"{files[j]} (key {vid if pre is None else vid[len(pre):]!r})"
                    for j, pre in enumerate(prefixes) if pre is None or vid.startswith(pre)
                ) or ", ".join(str(p) for p in files)
                hint = ""
                bare = vid[3:] if vid.startswith("vid") else None
                if bare and any(pre is None and bare in ks for ks, pre in zip(keys, prefixes)):
                    hint = f"; a key {bare!r} exists: EPAN's VE files store ids without 'vid' (set vid_prefix='vid')"
                raise NotFoundError(f"video id {vid!r} not found in EPAN feature file(s): {looked}{hint}")
            if len(found) > 1:
                raise NotFoundError(
                    f"video id {vid!r} is ambiguous: found in {', '.join(f'{files[j]} (key {k!r})' for j, k in found)}"
                )
            where.append(found[0])

        attrs = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "source": "epan",
            "model_name": "EPAN released CLIP features (ViT-B-32 per the EPAN README)",
            "pretrained": "",
            "checkpoint_sha256": "",
            "epan_files": json.dumps([str(p) for p in files]),
            "epan_files_sha256": json.dumps([file_sha256(p) for p in files]),
            "vid_prefix": json.dumps(prefixes),
            "n_frames": int(n_frames),
            "crop_size": 0,
            "frame_sampling": FRAME_SAMPLING,
            "feature": "as stored in the EPAN files",
            "tubelet": json.dumps(None),
            "dims": "frames (n_videos, N, d); mean (n_videos, d) = frames.mean(1) (eq. 3)",
        }
        n = len(ids)
        d = None
        with atomic_h5(out_path, attrs) as f:
            write_strings(f, "video_ids", ids)
            for row, (vid, (j, key)) in enumerate(zip(ids, where)):
                arr = handles[j][key]
                if not isinstance(arr, h5py.Dataset) or arr.ndim != 2:
                    shape = arr.shape if isinstance(arr, h5py.Dataset) else "a group"
                    raise ValueError(f"{files[j]}: key {key!r} (video {vid!r}) must be a (T, d) array, got {shape}")
                if arr.shape[0] < 1:
                    raise ValueError(f"{files[j]}: key {key!r} (video {vid!r}) has no frames")
                if d is None:
                    d = int(arr.shape[1])
                    f.create_dataset("frames", shape=(n, n_frames, d), dtype="float32",
                                     chunks=(min(n, 64), n_frames, d))
                    f.create_dataset("mean", shape=(n, d), dtype="float32")
                elif arr.shape[1] != d:
                    raise ValueError(f"{files[j]}: key {key!r} (video {vid!r}) has width {arr.shape[1]}, expected {d}")
                idx = np.linspace(0, arr.shape[0] - 1, n_frames, dtype=int)  # (N,), EPAN's sampling
                feats = np.asarray(arr[()], dtype=np.float32)[idx]  # (N, d)
                if not np.isfinite(feats).all():
                    raise ValueError(f"{files[j]}: key {key!r} (video {vid!r}) holds non-finite values")
                f["frames"][row] = feats
                f["mean"][row] = feats.mean(axis=0)  # (d,): eq. 3
            f.attrs["dim"] = int(d)
    finally:
        for h in handles:
            h.close()
    return {"out_path": str(out_path), "n_videos": len(ids), "n_frames": int(n_frames), "dim": int(d),
            "total_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------- reading


def read_features(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``clip_frames.h5``: ``{"video_ids", "frames" (n, N, d), "mean" (n, d), "video_embed"?, "attrs"}``.

    ``video_embed`` is present only when the file has it. JSON-encoded attrs stay strings.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature file not found")
    with h5py.File(path, "r") as f:
        for name in ("video_ids", "frames", "mean"):
            if name not in f:
                raise ValueError(f"{path}: not a CLIP feature file (no {name!r} dataset)")
        out: dict[str, Any] = {
            "video_ids": read_strings(f["video_ids"]),
            "frames": f["frames"][()],
            "mean": f["mean"][()],
            "attrs": read_attrs(f),
        }
        if "video_embed" in f:
            out["video_embed"] = f["video_embed"][()]
    return out


# --------------------------------------------------------------------------- CLI


def add_extract_features_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc extract-features``."""
    parser.add_argument("--videos", required=True, type=Path, help="folder of <video id>.<ext> files")
    parser.add_argument("--captions", nargs="+", type=Path,
                        help="caption CSV(s) whose video ids to extract, in file order (default: every video file)")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (default: %(default)s)")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip pretrained tag (e.g. openai) or checkpoint path (default: random init)")
    parser.add_argument("--out", required=True, type=Path, help="output HDF5 (clip_frames.h5)")
    parser.add_argument("--n-frames", type=int, default=16, help="frames N per video (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per forward pass (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=1, help="decoding worker processes (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for encoding (default: torch's)")
    parser.add_argument("--tubelet", type=int, nargs=3, metavar=("T", "H", "W"), default=None,
                        help="eq. 1 3D patch embedding with a TxHxW kernel (ViT models only)")
    parser.add_argument("--tubelet-init", choices=TUBELET_INITS, default="central",
                        help="inflation of the 2D patch kernel (default: %(default)s)")
    parser.add_argument("--no-temporal-head", action="store_true",
                        help="ignore a <ckpt>.temporal.pt beside the checkpoint (no video_embed)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="extract only shard I (0-based) of N: a contiguous run of whole batches; "
                             "join the N files with `facenet-evc merge-features`")


def run_extract_features_cli(args: argparse.Namespace) -> int:
    """``facenet-evc extract-features``. Errors propagate to the CLI's handler (exit 2)."""
    ids = video_ids_in_files(args.captions) if args.captions else None
    videos = find_videos(args.videos, ids)
    extra = None
    if args.shard is not None:
        index, count = parse_shard(args.shard)
        extra = shard_attrs(len(videos), args.batch_size, index, count)
        videos = {v: videos[v] for v in shard_ids(list(videos), args.batch_size, index, count)}
    summary = extract_features(
        videos, args.model, args.pretrained, args.out, n_frames=args.n_frames, batch_size=args.batch_size,
        num_workers=args.num_workers, threads=args.threads, tubelet=args.tubelet, tubelet_init=args.tubelet_init,
        temporal_head=None if args.no_temporal_head else "auto", device=args.device, extra_attrs=extra,
    )
    print(json.dumps(summary, indent=2))
    return 0


def add_import_features_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc import-features``."""
    parser.add_argument("--epan-h5", nargs="+", required=True, type=Path, help="EPAN feature HDF5 file(s)")
    parser.add_argument("--vid-prefix", nargs="+", default=None, metavar="PREFIX",
                        help="prefix the keys of each file lack, e.g. 'none vid' for an MSVD and a VE file "
                             "(one value: all files; default: none)")
    parser.add_argument("--captions", nargs="+", required=True, type=Path,
                        help="caption CSV(s) whose video ids to import, in file order")
    parser.add_argument("--out", required=True, type=Path, help="output HDF5 (clip_frames.h5)")
    parser.add_argument("--n-frames", type=int, default=16, help="frames N per video (default: %(default)s)")


def run_import_features_cli(args: argparse.Namespace) -> int:
    """``facenet-evc import-features``. Errors propagate to the CLI's handler (exit 2)."""
    prefixes: str | None | list[str | None] = None
    if args.vid_prefix:
        values = [None if p.lower() == "none" else p for p in args.vid_prefix]
        prefixes = values[0] if len(values) == 1 else values
    summary = import_epan_features(args.epan_h5, video_ids_in_files(args.captions), args.out,
                                   n_frames=args.n_frames, vid_prefix=prefixes)
    print(json.dumps(summary, indent=2))
    return 0
