"""Captions of a split from a trained checkpoint, and the top-1 retrieval baseline.

:func:`predict` rebuilds FACE-net from a checkpoint directory alone (``meta.json`` holds the
model config, vocabulary and lexicon words; ``model.safetensors`` holds E_0 and the word ->
category table as buffers), so only the frame features, top-K and triplet files of the split
are needed. Decoding is batched beam search (paper: beam 5, at most 15 words).

:func:`retrieval_baseline` predicts, for each video, its best retrieved trainval caption
(own-video captions are excluded by the retrieval stage), normalised like the references.
It measures how much of FACE-net's score the retrieval alone explains.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from facenet_evc.errors import SetupError
from facenet_evc.progress import progress_bar

from facenet_evc.data.emvidcap import MAX_CAPTION_LEN, normalize_caption
from facenet_evc.io import write_json
from facenet_evc.models.config import FaceNetConfig
from facenet_evc.models.decoders import Vocab, create_decoder
from facenet_evc.models.facenet import FaceNet
from facenet_evc.training.checkpoint import MODEL_FILE, CheckpointError, load_model_tensors, read_meta
from facenet_evc.training.data import Artifacts, iter_video_batches, load_artifacts, to_device

log = logging.getLogger(__name__)

LLM_DECODERS = ("t5", "opt")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SetupError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def autocast_for(cfg: FaceNetConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the LLM decoders on CUDA only; the word decoders stay float32 (exact resume)."""
    if device.type == "cuda" and cfg.decoder in LLM_DECODERS:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_facenet(
    cfg: FaceNetConfig,
    vocab: Vocab | None,
    lexicon_words: Collection[str],
    lexicon_vectors: Any,
    word_category: Any,
) -> FaceNet:
    """Decoder (memory width ``cfg.d`` for the word decoders) plus FACE-net around it."""
    decoder = create_decoder(cfg.decoder, cfg.d, cfg.decoder_settings, vocab, list(lexicon_words))
    return FaceNet(cfg, torch.as_tensor(lexicon_vectors, dtype=torch.float32),
                   torch.as_tensor(word_category, dtype=torch.float32), decoder)


def load_model(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FaceNet, dict[str, Any]]:
    """FACE-net rebuilt from a checkpoint directory, in eval mode on ``device``; and its meta."""
    meta = read_meta(checkpoint_dir)
    return load_model_files(meta, Path(checkpoint_dir) / MODEL_FILE, device), meta


def load_model_files(
    meta: dict[str, Any], weights: str | Path, device: str | torch.device = "cpu", decoder_pretrained: str | None = None
) -> FaceNet:
    """FACE-net from a checkpoint's meta dict and its safetensors file, in eval mode on ``device``.

    ``decoder_pretrained`` replaces ``decoder_settings.pretrained`` of an LLM decoder (an
    exported model carries its base LLM in its own folder).
    """
    from safetensors.torch import load_file

    cfg_dict = dict(meta["model_config"])
    if decoder_pretrained is not None:
        cfg_dict["decoder_settings"] = {**dict(cfg_dict.get("decoder_settings") or {}), "pretrained": str(decoder_pretrained)}
    cfg = FaceNetConfig.from_dict(cfg_dict)
    vocab = Vocab.from_dict(meta["vocab"]) if meta.get("vocab") else None
    tensors = load_file(str(weights), device="cpu")
    for key in ("lexicon", "word_category"):
        if key not in tensors:
            raise CheckpointError(f"{weights}: has no {key!r} tensor")
    model = build_facenet(cfg, vocab, meta.get("lexicon_words") or [], tensors["lexicon"], tensors["word_category"])
    load_model_tensors(model, tensors, str(weights))
    return model.to(device).eval()


@torch.no_grad()
def generate_captions(
    model: FaceNet,
    artifacts: Artifacts,
    video_ids: Sequence[str],
    num_beams: int = 5,
    max_len: int = 15,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: bool = False,
) -> dict[str, str]:
    """``{video_id: caption}`` by batched beam search; leaves the model in the mode it found it."""
    device = device or next(model.parameters()).device
    artifacts.check_videos(video_ids)
    was_training = model.training
    model.eval()  # FACE-net's dropout too, not only the decoder's (decoder.generate sets only its own)
    out: dict[str, str] = {}
    try:
        bar = progress_bar(total=len(video_ids), unit="video", desc="decode", disable=not progress)
        for chunk in iter_video_batches(video_ids, batch_size):
            batch = to_device(artifacts.video_inputs(chunk), device)
            with autocast_for(model.cfg, device):
                ids = model.generate(batch, num_beams=num_beams, max_len=max_len)
            out.update((v, model.decoder.decode_tokens(list(s))) for v, s in zip(chunk, ids))
            bar.update(len(chunk))
        bar.close()
    finally:
        model.train(was_training)
    return out


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


# --------------------------------------------------------------------------- CLI


def _split_video_ids(paths: list[str], seps: list[str] | None) -> list[str]:
    """Video ids of a split's caption files, in first-appearance order."""
    from facenet_evc.cli import _caption_sources
    from facenet_evc.data.emvidcap import read_split

    return list(dict.fromkeys(str(v) for v in read_split(_caption_sources(paths, seps))["VideoID"]))


def _add_split_captions(parser: argparse.ArgumentParser) -> None:
    from facenet_evc.cli import _add_captions_args

    _add_captions_args(parser)  # --captions FILE... [--captions-seps SEP...]: the split's caption files


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc predict``."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. <train out>/best)")
    parser.add_argument("--features", required=True, help="frame features HDF5 (covers the split's videos)")
    parser.add_argument("--topk", required=True, help="top-K retrieval HDF5")
    parser.add_argument("--triplets", required=True, help="triplet embeddings HDF5 of the repository")
    _add_split_captions(parser)
    parser.add_argument("--out", required=True, help="P.json to write: {video_id: caption}")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i>")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run_predict_cli(args: argparse.Namespace) -> int:
    videos = _split_video_ids(args.captions, args.captions_seps)
    preds = predict(args.checkpoint, args.features, args.topk, args.triplets, videos, args.out,
                    num_beams=args.num_beams, max_len=args.max_len, batch_size=args.batch_size,
                    device=args.device, threads=args.threads)
    print(json.dumps({"n_videos": len(preds), "out": str(args.out)}))
    return 0


def add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc retrieval-baseline``."""
    parser.add_argument("--topk", required=True, help="top-K retrieval HDF5")
    _add_split_captions(parser)
    parser.add_argument("--out", required=True, help="P.json to write: {video_id: caption}")
    parser.add_argument("--max-len", type=int, default=MAX_CAPTION_LEN)


def run_baseline_cli(args: argparse.Namespace) -> int:
    videos = _split_video_ids(args.captions, args.captions_seps)
    preds = retrieval_baseline(args.topk, videos, args.out, max_len=args.max_len)
    print(json.dumps({"n_videos": len(preds), "out": str(args.out)}))
    return 0
