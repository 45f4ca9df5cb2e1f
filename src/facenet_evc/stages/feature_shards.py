"""Sharded frame-feature extraction: scatter the videos over N jobs, gather one file.

``features.shards: N`` in a dataset config splits rule ``clip_features`` into N jobs
``clip_features_shard`` (e.g. one GPU each on SLURM) writing
``results/<ds>/features/shards/clip_frames.<i>-of-<N>.h5``, and a gather job that merges them
into the ``clip_frames.h5`` a single job would have written: same datasets, same row order
of ``video_ids``, bit-identical values, same attrs.

Shard assignment is deterministic: the video ids in the order a single job writes them
(caption-file order, see ``facenet-evc extract-features``) are cut into the single job's
batches of ``batch_size`` videos, and shard ``i`` takes the contiguous run of batches
``[i·B/N, (i+1)·B/N)`` of the ``B`` batches. Keeping the single job's batches whole matters
for the "bit-identical" promise: a CPU convolution may round differently for another batch
size, so every video is encoded in exactly the forward pass it would have had in one job.

Each shard file carries the attrs ``shard_index``, ``n_shards``, ``shard_rows`` (its first
and end row in the merged file) and ``n_videos_total``; the merge checks them (every shard
present once, rows tiling ``0..n``, all other attrs equal) and drops them from its output.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
from facenet_evc.progress import progress_bar

from facenet_evc.data.emvidcap import video_ids_in_files
from facenet_evc.io import atomic_h5, read_attrs, read_strings, write_strings
from facenet_evc.stages.features_h5 import FEATURE_DATASETS, create_feature_datasets

log = logging.getLogger(__name__)

SHARD_ATTRS = ("shard_index", "n_shards", "shard_rows", "n_videos_total")
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0-based ``i < N``) → ``(i, N)``; anything else is a :class:`ValueError`."""
    m = _SHARD_RE.match(str(text))
    if not m:
        raise ValueError(f"--shard: expected INDEX/COUNT such as 0/4 (0-based index), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"--shard {text}: the index must be in 0..COUNT-1 and COUNT >= 1")
    return index, count


def shard_rows(n_videos: int, batch_size: int, index: int, n_shards: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of shard ``index`` of ``n_shards``: a contiguous run of whole batches.

    Raises :class:`ValueError` when a shard would be empty (more shards than batches).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_shards < 1 or not 0 <= index < n_shards:
        raise ValueError(f"shard {index} of {n_shards}: the index must be in 0..{n_shards - 1}")
    n_batches = -(-n_videos // batch_size)
    if n_shards > n_batches:
        raise ValueError(
            f"{n_shards} shards for {n_videos} videos in {n_batches} batch(es) of {batch_size}: a shard would be "
            f"empty; use at most {n_batches} shards (features.shards) or a smaller features.batch_size"
        )
    b_lo, b_hi = index * n_batches // n_shards, (index + 1) * n_batches // n_shards
    return b_lo * batch_size, min(b_hi * batch_size, n_videos)


def shard_ids(video_ids: Sequence[str], batch_size: int, index: int, n_shards: int) -> list[str]:
    """The video ids of one shard (see :func:`shard_rows`)."""
    lo, hi = shard_rows(len(video_ids), batch_size, index, n_shards)
    return list(video_ids[lo:hi])


def shard_attrs(n_videos: int, batch_size: int, index: int, n_shards: int) -> dict[str, Any]:
    """The attrs that stamp a shard file with its place in the merged file."""
    lo, hi = shard_rows(n_videos, batch_size, index, n_shards)
    return {"shard_index": index, "n_shards": n_shards, "shard_rows": [lo, hi], "n_videos_total": n_videos}


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a, b)) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else a == b


def merge_feature_shards(
    shard_paths: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    expected_ids: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Merge shard files of one extraction into ``out_path`` (written atomically).

    Shards may be given in any order; they are placed by their ``shard_index``. With
    ``expected_ids`` (the ids a single job would write, in order) the merged ids must equal
    them. Raises :class:`ValueError` naming the file for a missing, repeated or foreign
    shard, and :class:`FileNotFoundError` for a missing file.
    """
    t0 = time.perf_counter()
    paths = [Path(p) for p in shard_paths]
    if not paths:
        raise ValueError("merge_feature_shards: no shard files given")
    shards: dict[int, tuple[Path, dict[str, Any], list[str]]] = {}
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: feature shard not found")
        with h5py.File(p, "r") as f:
            attrs = read_attrs(f, scalars=False)  # numpy scalars kept: the merged file stores them as they were
            missing = [k for k in SHARD_ATTRS if k not in attrs]
            if missing:
                raise ValueError(f"{p}: not a feature shard (attrs {', '.join(missing)} missing; "
                                 "write shards with `facenet-evc extract-features --shard I/N`)")
            ids = read_strings(f["video_ids"])
        i = int(attrs["shard_index"])
        if i in shards:
            raise ValueError(f"{p}: shard {i} given twice (also {shards[i][0]})")
        shards[i] = (p, attrs, ids)

    first_path, ref, _ = shards[min(shards)]
    n_shards, n_total = int(ref["n_shards"]), int(ref["n_videos_total"])
    common = {k: v for k, v in ref.items() if k not in SHARD_ATTRS}
    if sorted(shards) != list(range(n_shards)):
        absent = sorted(set(range(n_shards)) - set(shards))
        raise ValueError(f"{first_path}: {n_shards} shards expected, got {len(shards)}"
                         + (f" (missing shard(s) {', '.join(map(str, absent))})" if absent else ""))
    row = 0
    for i in range(n_shards):
        p, attrs, ids = shards[i]
        for k in set(common) | {k for k in attrs if k not in SHARD_ATTRS}:
            if k not in attrs or k not in common or not _same(attrs[k], common[k]):
                raise ValueError(f"{p}: attr {k!r} is {attrs.get(k)!r} but {common.get(k)!r} in {first_path}: "
                                 "the shards come from different extractions")
        if int(attrs["n_shards"]) != n_shards or int(attrs["n_videos_total"]) != n_total:
            raise ValueError(f"{p}: shard of {attrs['n_shards']} shards / {attrs['n_videos_total']} videos, "
                             f"but {first_path} says {n_shards} / {n_total}")
        lo, hi = (int(v) for v in attrs["shard_rows"])
        if lo != row or hi - lo != len(ids):
            raise ValueError(f"{p}: shard {i} holds rows {lo}:{hi} ({len(ids)} videos), expected to start at row {row}")
        row = hi
    if row != n_total:
        raise ValueError(f"{first_path}: the shards hold {row} videos, expected {n_total}")
    all_ids = [v for i in range(n_shards) for v in shards[i][2]]
    if len(set(all_ids)) != len(all_ids):
        raise ValueError(f"{first_path}: a video id appears in two shards")
    if expected_ids is not None and list(expected_ids) != all_ids:
        diff = next((j for j, (a, b) in enumerate(zip(all_ids, expected_ids)) if a != b), min(len(all_ids), len(expected_ids)))
        raise ValueError(
            f"{first_path}: the shards' video ids differ from the caption files' from row {diff} on "
            f"({len(all_ids)} vs {len(expected_ids)} ids): the shards were extracted for other captions"
        )

    with h5py.File(shards[0][0], "r") as f0:
        names = [k for k in FEATURE_DATASETS if k in f0]
        n_frames, d = f0["frames"].shape[1:]
    bar = progress_bar(total=n_total, unit="video", desc="merge features", disable=not progress)
    with atomic_h5(out_path, common) as out:
        write_strings(out, "video_ids", all_ids)
        create_feature_datasets(out, n_total, int(n_frames), int(d), video_embed="video_embed" in names)
        for i in range(n_shards):
            p, attrs, ids = shards[i]
            lo, hi = (int(v) for v in attrs["shard_rows"])
            with h5py.File(p, "r") as f:
                if sorted(k for k in FEATURE_DATASETS if k in f) != sorted(names):
                    raise ValueError(f"{p}: datasets {sorted(k for k in FEATURE_DATASETS if k in f)}, "
                                     f"but {shards[0][0]} has {sorted(names)}")
                for k in names:
                    if f[k].shape[1:] != out[k].shape[1:] or f[k].shape[0] != hi - lo:
                        raise ValueError(f"{p}: {k} has shape {f[k].shape}, expected ({hi - lo}, "
                                         f"{', '.join(map(str, out[k].shape[1:]))})")
                    out[k][lo:hi] = f[k][()]  # (rows, N, d) or (rows, d)
            bar.update(hi - lo)
        bar.close()
    total = time.perf_counter() - t0
    log.info("merged %d shards (%d videos) -> %s in %.1f s", n_shards, n_total, out_path, total)
    return {"out_path": str(out_path), "n_shards": n_shards, "n_videos": n_total, "n_frames": int(n_frames),
            "dim": int(d), "datasets": names, "total_s": total}


# --------------------------------------------------------------------------- CLI


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc merge-features``."""
    parser.add_argument("--shards", nargs="+", required=True, type=Path,
                        help="shard files written by `extract-features --shard I/N` (any order)")
    parser.add_argument("--captions", nargs="+", type=Path,
                        help="caption CSV(s) the shards were extracted for: the merged ids must be theirs, in order")
    parser.add_argument("--out", required=True, type=Path, help="output HDF5 (clip_frames.h5)")


def run_merge_cli(args: argparse.Namespace) -> int:
    """``facenet-evc merge-features``. Errors propagate to the CLI's handler (exit 2)."""
    expected = video_ids_in_files(args.captions) if args.captions else None
    print(json.dumps(merge_feature_shards(args.shards, args.out, expected), indent=2))
    return 0
