"""Captions of a split's cached videos from a trained checkpoint (``facenet-evc predict``).

:func:`predict` rebuilds FACE-net from a checkpoint directory alone
(:func:`~facenet_evc.training.factory.create_facenet`: ``meta.json`` holds the model config,
vocabulary and lexicon words; ``model.safetensors`` holds E_0 and the word -> category table
as buffers), so only the frame features, top-K and triplet files of the split are needed.
Decoding is batched beam search (:mod:`facenet_evc.training.decoding`).
"""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from facenet_evc.data.sources import add_captions_args, split_video_ids
from facenet_evc.io import write_json
from facenet_evc.training.data import add_artifact_args, load_artifacts
from facenet_evc.training.decoding import generate_captions
from facenet_evc.training.factory import load_model
from facenet_evc.training.runtime import resolve_device

log = logging.getLogger(__name__)


def predict(
    checkpoint_dir: str | Path,
    features_h5: str | Path,
    topk_h5: str | Path,
    triplets_h5: str | Path,
    split_videos: Sequence[str],
    out_json: str | Path,
    num_beams: int = 5,
    max_len: int = 15,
    batch_size: int = 64,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Caption every video of ``split_videos`` with the checkpoint; write ``{video_id: caption}`` atomically."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    videos = list(dict.fromkeys(split_videos))
    if not videos:
        raise ValueError("predict: no video to caption")
    artifacts = load_artifacts(features_h5, topk_h5, triplets_h5)
    artifacts.check_videos(videos)
    model, meta = load_model(checkpoint_dir, dev)
    artifacts.check_model_config(model.cfg)
    preds = generate_captions(model, artifacts, videos, num_beams, max_len, batch_size, dev, progress)
    write_json(out_json, preds)
    log.info("captioned %d videos with %s (step %s) -> %s", len(preds), checkpoint_dir, meta.get("step"), out_json)
    return preds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc predict``."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. <train out>/best)")
    add_artifact_args(parser)
    add_captions_args(parser)  # --captions FILE... [--captions-seps SEP...]: the split's caption files
    parser.add_argument("--out", required=True, help="P.json to write: {video_id: caption}")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i>")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run_cli(args: argparse.Namespace) -> int:
    videos = split_video_ids(args.captions, args.captions_seps)
    preds = predict(args.checkpoint, args.features, args.topk, args.triplets, videos, args.out,
                    num_beams=args.num_beams, max_len=args.max_len, batch_size=args.batch_size,
                    device=args.device, threads=args.threads)
    print(json.dumps({"n_videos": len(preds), "out": str(args.out)}))
    return 0
