"""The top-1 retrieval baseline (``facenet-evc retrieval-baseline``).

:func:`retrieval_baseline` predicts, for each video, its best retrieved trainval caption
(own-video captions are excluded by the retrieval stage), normalised like the references.
It measures how much of FACE-net's score the retrieval alone explains. No model and no torch:
only the top-K file.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facenet_evc.data.emvidcap import MAX_CAPTION_LEN, normalize_caption
from facenet_evc.data.sources import add_captions_args, split_video_ids
from facenet_evc.io import write_json


def retrieval_baseline(
    topk_h5: str | Path, video_ids: Sequence[str], out_json: str | Path, max_len: int | None = MAX_CAPTION_LEN
) -> dict[str, str]:
    """Each video's top-1 retrieved caption, normalised like the references; written atomically."""
    from facenet_evc.stages.retrieval import read_topk_h5

    topk_h5 = Path(topk_h5)
    if not topk_h5.is_file():
        raise FileNotFoundError(f"{topk_h5}: top-K file not found")
    topk = read_topk_h5(topk_h5)
    row = {v: i for i, v in enumerate(topk["video_ids"])}
    indices: np.ndarray = topk["indices"]  # (m, K), best first
    out: dict[str, str] = {}
    for vid in dict.fromkeys(video_ids):
        if vid not in row:
            raise ValueError(f"video {vid!r} has no row in the top-K file {topk_h5}")
        out[vid] = normalize_caption(topk["repo_captions"][int(indices[row[vid], 0])], max_len)
    if not out:
        raise ValueError("retrieval_baseline: no video given")
    write_json(out_json, out)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc retrieval-baseline``."""
    parser.add_argument("--topk", required=True, help="top-K retrieval HDF5")
    add_captions_args(parser)  # the split's caption files
    parser.add_argument("--out", required=True, help="P.json to write: {video_id: caption}")
    parser.add_argument("--max-len", type=int, default=MAX_CAPTION_LEN)


def run_cli(args: argparse.Namespace) -> int:
    videos = split_video_ids(args.captions, args.captions_seps)
    preds = retrieval_baseline(args.topk, videos, args.out, max_len=args.max_len)
    print(json.dumps({"n_videos": len(preds), "out": str(args.out)}))
    return 0
