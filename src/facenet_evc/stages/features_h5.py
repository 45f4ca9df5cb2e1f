"""The float datasets of a frame-features file (``clip_frames.h5``), created in one place.

Extraction (:mod:`.clip_features`) and the merge of its shards (:mod:`.feature_shards`) both
create them here, so a merged file is stored exactly like an extracted one.
"""
from __future__ import annotations

import h5py

FEATURE_DATASETS = ("frames", "mean", "video_embed")  # float datasets, rows = videos


def create_feature_datasets(f: h5py.File, n: int, n_frames: int, d: int, video_embed: bool) -> None:
    """Create the (empty) float datasets of a features file; one layout for every writer."""
    f.create_dataset("frames", shape=(n, n_frames, d), dtype="float32", chunks=(max(1, min(n, 64)), n_frames, d))
    f.create_dataset("mean", shape=(n, d), dtype="float32")
    if video_embed:
        f.create_dataset("video_embed", shape=(n, d), dtype="float32")
