"""Caption any video with an exported model directory (``facenet-evc caption``).

Each video goes through the same steps as a test video in the workflow, with the same
code: N frames sampled and centre-cropped (:func:`~facenet_evc.stages.clip_features.iter_decoded_items`),
encoded by the exported CLIP (:func:`~facenet_evc.stages.clip_features.encode_video_batch`,
plus the temporal head when the features had one), top-K repository captions retrieved by
cosine similarity from the exported FAISS index (:func:`~facenet_evc.stages.retrieval.retrieve_topk`),
their triplet embeddings gathered, and FACE-net's beam search run
(:func:`~facenet_evc.training.decoding.generate_captions`). A new video owns no repository
caption, so nothing is excluded — as for the workflow's test videos, which are not in the
training repository either.

A video that is missing or cannot be decoded is reported and skipped; the others are
captioned. On the demo the frame features equal the stored ones bit for bit whatever the
batch size or thread count; a batch of a single video rounds the temporal head's output
differently in the last bits (~1e-6), which did not change any top-K or caption there.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from facenet_evc.progress import progress_bar

from facenet_evc.inference.export import MODEL_DIR_HELP, read_manifest
from facenet_evc.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".json", ".csv")


@dataclass
class CaptionResult:
    """``captions``: {video: caption} in input order; ``errors``: {video: why it was skipped}."""

    captions: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Captioner:
    """An exported model loaded once: CLIP (+ temporal head), FAISS index, triplets, FACE-net."""

    def __init__(self, model_dir: str | os.PathLike, device: str = "auto") -> None:
        import faiss

        from facenet_evc.stages.clip_features import load_image_encoder
        from facenet_evc.stages.clip_model import image_mean_std, load_temporal_head
        from facenet_evc.stages.repository import read_repository
        from facenet_evc.stages.triplets import read_triplets_h5
        from facenet_evc.training.factory import create_facenet
        from facenet_evc.training.runtime import resolve_device

        self.root = Path(model_dir)
        self.manifest = m = read_manifest(self.root)
        comp = m["components"]
        self.device = resolve_device(device)
        feat = m["features"]
        self.n_frames = int(feat["n_frames"])
        self.k = int(m["retrieval"]["k"])
        self.video_vector = str(m["retrieval"]["video_vector"])

        self.clip, self.size, _ = load_image_encoder(m["clip"]["model_name"], str(self.root / comp["clip"]),
                                                     self.n_frames, feat.get("tubelet"),
                                                     feat.get("tubelet_init") or "central", self.device)
        if self.size != int(feat["crop_size"]):
            raise ValueError(f"{self.root}: CLIP input size {self.size} but the manifest's crop_size is {feat['crop_size']}")
        mean, std = (tuple(float(v) for v in m["clip"][key]) for key in ("image_mean", "image_std"))
        if image_mean_std(self.clip) != (mean, std):
            # Loaded from a file instead of the open_clip tag the features used: restore the
            # tag's normalisation, part of how the frames were encoded.
            self.clip.visual.preprocess_cfg = {**(getattr(self.clip.visual, "preprocess_cfg", None) or {}),
                                               "mean": mean, "std": std}
        self.head: nn.Module | None = None
        if comp.get("temporal_head"):
            self.head = load_temporal_head(self.root / comp["temporal_head"], self.device)

        repo = read_repository(self.root / comp["repository"])
        self.repo_captions: list[str] = repo["caption"]
        # A new video owns no repository caption: ids no query carries switch the own-video
        # exclusion off (retrieve_topk keeps it for the workflow's training videos).
        self.repo_no_owner = [""] * len(self.repo_captions)
        self.index = faiss.read_index(str(self.root / comp["index"]))
        if int(self.index.ntotal) != len(self.repo_captions):
            raise ValueError(f"{self.root / comp['index']}: {self.index.ntotal} rows for {len(self.repo_captions)} "
                             "repository captions")
        _, _, t_emb, _ = read_triplets_h5(self.root / comp["triplets"])
        self.triplets = np.asarray(t_emb, dtype=np.float32)  # (n_repo, 3, d_T)

        meta = read_json(self.root / comp["meta"])
        base = str(self.root / comp["decoder_base"]) if comp.get("decoder_base") else None
        self.model = create_facenet(meta=meta, weights=self.root / comp["weights"], device=self.device,
                                    decoder_pretrained=base)
        self.meta = meta

    def encode(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames ``(b, N, S, S, 3)`` uint8 → per-frame features ``(b, N, d)`` and the retrieval query ``(b, d)``."""
        from facenet_evc.stages.clip_features import encode_video_batch

        feats, mean, embed = encode_video_batch(self.clip, frames, self.head, self.device)
        if self.video_vector == "video_embed":
            if embed is None:
                raise ValueError(f"{self.root}: retrieval queries with the temporal head but the export has none")
            return feats, embed
        return feats, mean

    def retrieve(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-K repository rows ``(b, K)`` and cosine scores ``(b, K)`` (eq. 5-6)."""
        from facenet_evc.stages.retrieval import retrieve_topk

        ids = [f"q{i}" for i in range(len(queries))]
        return retrieve_topk(self.index, queries, self.k, ids, self.repo_no_owner)

    def caption_frames(
        self, frames: np.ndarray, num_beams: int, max_len: int, batch_size: int
    ) -> list[str]:
        """Captions of decoded videos ``(b, N, S, S, 3)``, through the prediction path of the workflow."""
        from facenet_evc.training.data import Artifacts
        from facenet_evc.training.decoding import generate_captions

        feats, queries = self.encode(frames)  # (b, N, d), (b, d)
        idx, scores = self.retrieve(queries)  # (b, K), (b, K)
        keys = [str(i) for i in range(len(frames))]
        art = Artifacts(
            paths={"features": "<decoded videos>", "topk": str(self.root / self.manifest["components"]["index"]),
                   "triplets": str(self.root / self.manifest["components"]["triplets"])},
            video_ids=keys, frames=np.ascontiguousarray(feats, dtype=np.float32), topk_video_ids=keys,
            topk_indices=idx, topk_scores=scores, repo_captions=self.repo_captions,
            repo_video_ids=self.repo_no_owner, triplet_embeddings=self.triplets,
        )
        art.check_model_config(self.model.cfg)
        out = generate_captions(self.model, art, keys, num_beams, max_len, batch_size, self.device)
        return [out[key] for key in keys]

    def caption(
        self,
        videos: Sequence[str | os.PathLike],
        batch_size: int = 8,
        num_beams: int | None = None,
        max_len: int | None = None,
        num_workers: int = 1,
        progress: bool = True,
    ) -> CaptionResult:
        """Caption ``videos`` (files of any container/codec PyAV reads), ``batch_size`` at a time.

        Keys of the result are the paths as given (duplicates once). ``num_beams`` /
        ``max_len`` None: the manifest's defaults (what ``predict`` used).
        """
        from facenet_evc.stages.clip_features import iter_decoded_items

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        decode = self.manifest["decode"]
        num_beams = int(num_beams if num_beams is not None else decode["num_beams"])
        max_len = int(max_len if max_len is not None else decode["max_len"])
        names = list(dict.fromkeys(str(v) for v in videos))
        result = CaptionResult()
        bar = progress_bar(total=len(names), unit="video", desc="caption", disable=not progress)
        for batch in iter_decoded_items(names, self.n_frames, self.size, batch_size, num_workers):
            ok = [(i, fr) for i, fr, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    result.errors[names[i]] = err
                    log.warning("skipped %s", err)
            if ok:
                caps = self.caption_frames(np.stack([fr for _, fr in ok]), num_beams, max_len, batch_size)
                result.captions.update((names[i], c) for (i, _), c in zip(ok, caps))
            bar.update(len(batch))
        bar.close()
        # input order, whatever order the batches finished in
        result.captions = {n: result.captions[n] for n in names if n in result.captions}
        return result


def caption_videos(
    model_dir: str | os.PathLike,
    videos: Sequence[str | os.PathLike],
    batch_size: int = 8,
    num_beams: int | None = None,
    max_len: int | None = None,
    device: str = "auto",
    num_workers: int = 1,
    progress: bool = True,
) -> CaptionResult:
    """Load ``model_dir`` (verifying its manifest) and caption ``videos``; see :meth:`Captioner.caption`."""
    return Captioner(model_dir, device).caption(videos, batch_size, num_beams, max_len, num_workers, progress)


def write_captions(path: str | os.PathLike, captions: dict[str, str]) -> None:
    """``{video: caption}`` as JSON, or CSV with columns ``video,caption``, by extension; atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_json(path, captions)
    elif suffix == ".csv":
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["video", "caption"])
                w.writerows(captions.items())
    else:
        raise ValueError(f"{path}: unknown output format {suffix or '(no extension)'!r}; use one of {OUTPUT_FORMATS}")


# --------------------------------------------------------------------------- CLI


def add_caption_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc caption``."""
    parser.add_argument("model_dir", help=MODEL_DIR_HELP)
    parser.add_argument("videos", nargs="+", help="video files (any container/codec FFmpeg reads)")
    parser.add_argument("--out", default=None,
                        help="captions.json ({video: caption}) or captions.csv (video,caption); "
                             "default: print 'video<TAB>caption' lines")
    parser.add_argument("--batch-size", type=int, default=8, help="videos encoded and decoded together (default: %(default)s)")
    parser.add_argument("--beams", "--num-beams", dest="num_beams", type=int, default=None,
                        help="beam width (default: the export's, i.e. what predict used)")
    parser.add_argument("--max-len", type=int, default=None, help="maximum caption length (default: the export's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i> (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=1, help="video decoding processes (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def run_caption_cli(args: argparse.Namespace) -> int:
    """``facenet-evc caption``: 0 when every video got a caption, 1 when some failed (each named
    on stderr), 2 (through the CLI's handler) for a bad model directory or arguments."""
    if args.out is not None and Path(args.out).suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--out {args.out}: unknown output format; use a name ending in {' or '.join(OUTPUT_FORMATS)}")
    if args.threads:
        torch.set_num_threads(int(args.threads))
    t0 = time.perf_counter()
    result = caption_videos(args.model_dir, args.videos, batch_size=args.batch_size, num_beams=args.num_beams,
                            max_len=args.max_len, device=args.device, num_workers=args.num_workers)
    for err in result.errors.values():
        print(f"facenet-evc: error: {err}", file=sys.stderr)
    if args.out is not None:
        write_captions(args.out, result.captions)
    else:
        for video, caption in result.captions.items():
            print(f"{video}\t{caption}")
    log.info("captioned %d of %d videos in %.1f s%s", len(result.captions), len(result.captions) + len(result.errors),
             time.perf_counter() - t0, f" -> {args.out}" if args.out else "")
    return 1 if result.errors else 0
