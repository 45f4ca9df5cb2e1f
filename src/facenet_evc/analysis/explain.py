"""What FACE-net weighed for one caption: figures like the paper's Figs. 7-8, with the numbers.

``facenet-evc explain`` runs the trained model on a few videos and writes, per video,
``<video_id>.json`` and ``<video_id>.png`` (drawn by :mod:`.explain_plot`) with

* the K retrieved captions, their cosine (eq. 5) and S/P/O triplet (eq. 7, the triplet file's
  texts);
* the self-refinement weights alpha (eq. 12, K x 3, rows sum to 1), the cross-refinement
  weights theta (eq. 15, K, sums to 1) and the router weights g (eq. 26, K, sums to 1);
* per triplet the PVEA lexicon attention of eq. 19 (``Attn_c(F_i, E_0)``, head-averaged,
  averaged over the N frames): its mass per lexicon category (a word of two categories counts
  for both, so the masses may sum to a little more than 1), its *lift* (the mass divided by the
  mass uniform attention would give, i.e. the category's share of the lexicon words: without
  this the biggest category peaks whenever attention is flat, which is what the explain figures
  showed before), the lifts normalised to a distribution, and the most attended words; the
  eq. 31 classifier's softmax over categories;
* the gates B_f, B_e (eq. 24-25, d-vectors in (-1, 1)): every value, summary statistics and a
  histogram;
* the beam-search caption (5 beams, 15 words, as ``predict``) beside the references.

Where the numbers come from. Every weight is taken from the ``explain`` entry that
:meth:`FaceNet.encode <facenet_evc.models.facenet.FaceNet.encode>` returns with the memory
of the same call (``FCUE``'s alpha / theta, ``PVEA``'s attention weights, ``DBAR``'s g and
gates, detached); the caption is decoded from that call's memory. Nothing is recomputed
outside the model: only averages over frames, normalisation of the category masses and
sorting for the top words happen here. ``FaceNet.generate`` is exactly
``decoder.generate(encode(batch)["memory"])``, so the caption equals ``predict``'s for the
same batch.

Ablations: a module that is off leaves its entries ``null`` in the JSON and its panels out of
the figure, with a line in ``omitted`` saying why (RE off: no retrieval at all; FC off: no
alpha/theta; SR or CR off: alpha or theta are constant ones and not shown; EA off: no emotion
attention and no B_e; BA off: g = 1/K and no gates). With ``order: emotion_first`` the
lexicon attention comes from the video alone and is the same for every triplet (said in
``notes``).
"""
from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor
from facenet_evc.progress import progress_bar

from facenet_evc.io import atomic_path, read_json, read_strings, write_json
from facenet_evc.models.facenet import FaceNet
from facenet_evc.training.data import (
    Artifacts,
    ArtifactError,
    add_artifact_args,
    iter_video_batches,
    load_artifacts,
    to_device,
)
from facenet_evc.training.factory import load_model
from facenet_evc.training.runtime import autocast_for, resolve_device

log = logging.getLogger(__name__)

TOP_WORDS = 5
GATE_BINS = 20
FRAME_STRIP = 8  # frames shown above the figure


@dataclass
class TripletTexts:
    """S/P/O texts of the triplet file, one row per triplet row (see stages/triplets.py)."""

    subject: list[str]
    predicate: list[str]
    object: list[str]


def read_triplet_texts(path: str | Path) -> TripletTexts:
    """The ``subject`` / ``predicate`` / ``object`` string datasets of a triplets HDF5."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: triplets file not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("subject", "predicate", "object") if k not in f]
        if missing:
            raise ArtifactError(f"{path}: no {missing[0]!r} dataset (not a triplets file written by embed-triplets?)")
        return TripletTexts(read_strings(f["subject"]), read_strings(f["predicate"]), read_strings(f["object"]))


def check_lexicon(model: FaceNet, meta: Mapping[str, Any], artifacts: Artifacts) -> None:
    """The lexicon file must be the one the checkpoint was trained with: same words, same categories."""
    path = artifacts.paths["lexicon"]
    words = list(meta.get("lexicon_words") or [])
    if words and words != artifacts.lexicon_words:
        i = next((i for i, (a, b) in enumerate(zip(words, artifacts.lexicon_words)) if a != b),
                 min(len(words), len(artifacts.lexicon_words)))
        raise ArtifactError(f"{path}: lexicon word {i} is {artifacts.lexicon_words[i] if i < len(artifacts.lexicon_words) else None!r} "
                            f"but the checkpoint's is {words[i] if i < len(words) else None!r}: use the lexicon it was trained with")
    member = torch.as_tensor(np.asarray(artifacts.lexicon_member, dtype=np.float32))
    if tuple(member.shape) != tuple(model.word_category.shape) or not torch.equal(member, model.word_category.cpu()):
        raise ArtifactError(f"{path}: word -> category table {tuple(member.shape)} differs from the checkpoint's "
                            f"{tuple(model.word_category.shape)}: use the lexicon it was trained with")


def omitted_panels(cfg: Any) -> list[str]:
    """Why each missing panel is missing, for the JSON and the figure."""
    if not cfg.use_retrieval:
        return ["RE off (use_retrieval: false): no retrieved captions, so no FCUE / PVEA / DBAR weights"]
    out = []
    if not cfg.use_fcue:
        out.append("FC off (use_fcue: false): no self-/cross-refinement weights alpha, theta (eq. 12, 15)")
    else:
        if not cfg.self_refine:
            out.append("SR off (self_refine: false): alpha = 1, not shown (eq. 12)")
        if not cfg.cross_refine:
            out.append("CR off (cross_refine: false): theta = 1, not shown (eq. 15)")
    if not cfg.use_pvea:
        out.append("EA off (use_pvea: false): no lexicon attention (eq. 19) and no emotional gate B_e")
    if not cfg.use_dbar:
        out.append("BA off (use_dbar: false): g = 1/K (plain mean) and no gates B_f, B_e (eq. 24-26)")
    return out


def config_notes(cfg: Any) -> list[str]:
    """What a reader must know to read the panels that are shown."""
    if cfg.use_retrieval and cfg.use_pvea and cfg.order == "emotion_first":
        return ["order emotion_first: emotions are mined from the video alone, the same for every triplet"]
    return []


@torch.no_grad()
def explain_batch(model: FaceNet, batch: Mapping[str, Tensor], num_beams: int = 5, max_len: int = 15,
                  decode: bool = True) -> tuple[dict[str, Any], list[list[int]] | None]:
    """One encoder call and the beam search on its memory: ``(encode output, token ids per video)``
    (ids None with ``decode=False``: the weights only).

    The model must be in eval mode (dropout off), as ``predict`` runs it.
    """
    device = next(model.parameters()).device
    with autocast_for(model.cfg, device):
        enc = model.encode(batch)
        ids = model.decoder.generate(enc["memory"], num_beams=num_beams, max_len=max_len) if decode else None
    return enc, ids


def _floats(x: Tensor | None) -> Any:
    # float32 -> Python float is exact, so a value read back from the JSON equals the tensor's
    return None if x is None else x.detach().float().cpu().tolist()


def _gate_summary(x: Tensor | None) -> dict[str, Any] | None:
    if x is None:
        return None
    v = x.detach().float().cpu()  # (d,)
    counts, edges = np.histogram(v.numpy(), bins=GATE_BINS, range=(-1.0, 1.0))
    return {"values": v.tolist(), "mean": float(v.mean()), "std": float(v.std(unbiased=False)),
            "min": float(v.min()), "max": float(v.max()), "fraction_positive": float((v > 0).float().mean()),
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}


def video_record(
    b: int,
    enc: Mapping[str, Any],
    ids: Sequence[int] | None,
    model: FaceNet,
    artifacts: Artifacts,
    texts: TripletTexts | None,
    video_id: str,
    top_words: int = TOP_WORDS,
) -> dict[str, Any]:
    """The JSON record of sample ``b`` of a batch explained by :func:`explain_batch` (caption None
    without ``ids``)."""
    cfg = model.cfg
    ex = enc["explain"]
    rec: dict[str, Any] = {
        "video_id": video_id,
        "config": {k: getattr(cfg, k) for k in ("use_retrieval", "use_fcue", "self_refine", "cross_refine",
                                                "use_pvea", "use_dbar", "order", "k", "n_frames", "decoder")},
        "omitted": omitted_panels(cfg),
        "notes": config_notes(cfg),
        "caption": None if ids is None else model.decoder.decode_tokens(list(ids)),
        "retrieved": [],
        "alpha": None, "theta": None, "g": None,
        "categories": list(artifacts.lexicon_categories),
        "emotion": None, "gates": None,
    }
    if not cfg.use_retrieval:
        return rec

    row = artifacts.topk_video_ids.index(video_id)
    repo_rows = artifacts.topk_indices[row]  # (K,)
    t_rows = repo_rows if artifacts.triplet_rows is None else np.searchsorted(artifacts.triplet_rows, repo_rows)
    for rank, (r, t, s) in enumerate(zip(repo_rows.tolist(), np.asarray(t_rows).tolist(),
                                         artifacts.topk_scores[row].tolist()), start=1):
        item = {"rank": rank, "repository_row": int(r), "similarity": float(s), "caption": artifacts.repo_captions[r]}
        if texts is not None:
            item.update(subject=texts.subject[t], predicate=texts.predicate[t], object=texts.object[t])
        rec["retrieved"].append(item)

    if cfg.use_fcue and cfg.self_refine:
        rec["alpha"] = _floats(ex["alpha"][b])  # (K, 3) eq. 12
    if cfg.use_fcue and cfg.cross_refine:
        rec["theta"] = _floats(ex["theta"][b])  # (K,) eq. 15
    if cfg.use_dbar:
        rec["g"] = _floats(ex["g"][b])  # (K,) eq. 26
        rec["gates"] = {"b_f": _gate_summary(ex["b_f"][b]),
                        "b_e": _gate_summary(None if ex["b_e"] is None else ex["b_e"][b])}

    if ex["lexicon_attn"] is not None:
        words = artifacts.lexicon_words
        member = np.asarray(artifacts.lexicon_member, dtype=bool)  # (N_w, C)
        cats = artifacts.lexicon_categories
        word_attn = ex["lexicon_attn"][b].float().mean(1)  # (K, N_w): eq. 19 weights, frame mean
        mass = ex["category_attn"][b].float().mean(1)  # (K, C)
        # Mass relative to uniform attention: categories have 5-8 words in the demo lexicon (1-19 in
        # EmVidCap's), so raw masses peak on the biggest category whenever attention is flat.
        share = torch.as_tensor(member.sum(0) / member.shape[0], dtype=mass.dtype)  # (C,) uniform mass
        lift = mass / share.clamp_min(torch.finfo(mass.dtype).tiny)  # (K, C), 1 = as uniform attention
        dist = lift / lift.sum(-1, keepdim=True).clamp_min(torch.finfo(mass.dtype).tiny)  # (K, C)
        top = []
        for k in range(word_attn.shape[0]):
            w, i = word_attn[k].topk(min(top_words, word_attn.shape[1]))
            top.append([{"word": words[j], "weight": float(x), "categories": [cats[c] for c in np.flatnonzero(member[j])]}
                        for x, j in zip(w.tolist(), i.tolist())])
        classifier = None
        if enc.get("emotion_logits") is not None:
            classifier = _floats(torch.softmax(enc["emotion_logits"][b].float(), -1))  # (C,) eq. 31's softmax
        rec["emotion"] = {"category_mass": _floats(mass), "lift": _floats(lift), "distribution": _floats(dist),
                          "top_words": top,
                          "word_attention": _floats(word_attn), "classifier": classifier}
    return rec


def emotion_words(caption: str, lexicon: Any) -> list[dict[str, Any]]:
    """Lexicon words of a caption (whitespace tokens, case-sensitive, as the official metrics)."""
    return [{"word": w, "categories": list(lexicon.categories_of(w))} for w in caption.split() if w in lexicon]


def find_video_files(videos_dir: str | Path, video_ids: Sequence[str]) -> dict[str, Path]:
    """``{video_id: file}`` for the ids that have a video file in ``videos_dir`` (others are skipped)."""
    from facenet_evc.stages.clip_features import VIDEO_EXTENSIONS

    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir}: video folder not found")
    out: dict[str, Path] = {}
    for vid in video_ids:
        for ext in VIDEO_EXTENSIONS:
            p = videos_dir / f"{vid}{ext}"
            if p.is_file():
                out[vid] = p
                break
    return out


def explained_records(
    checkpoint_dir: str | Path,
    features_h5: str | Path,
    topk_h5: str | Path,
    triplets_h5: str | Path,
    lexicon_h5: str | Path,
    videos: Sequence[str],
    num_beams: int = 5,
    max_len: int = 15,
    batch_size: int = 16,
    device: str = "auto",
    decode: bool = True,
    progress: bool = True,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(video_id, record)`` of :func:`video_record` per video, in order, from one model load
    (checked against the artifacts and the lexicon first). ``decode=False`` skips the beam
    search: the records then hold the weights but no caption."""
    dev = resolve_device(device)
    artifacts = load_artifacts(features_h5, topk_h5, triplets_h5, lexicon_h5)
    artifacts.check_videos(videos)
    model, meta = load_model(checkpoint_dir, dev)
    artifacts.check_model_config(model.cfg)
    check_lexicon(model, meta, artifacts)
    texts = read_triplet_texts(triplets_h5) if model.cfg.use_retrieval else None
    bar = progress_bar(total=len(videos), unit="video", desc="explain", disable=not progress)
    try:
        for chunk in iter_video_batches(list(videos), batch_size):
            batch = to_device(artifacts.video_inputs(chunk), dev)
            enc, ids = explain_batch(model, batch, num_beams, max_len, decode=decode)
            for b, vid in enumerate(chunk):
                rec = video_record(b, enc, None if ids is None else ids[b], model, artifacts, texts, vid)
                rec.update(checkpoint=str(checkpoint_dir), step=meta.get("step"),
                           decoding={"num_beams": num_beams, "max_len": max_len} if decode else None)
                yield vid, rec
                bar.update(1)
    finally:
        bar.close()


def explain(
    checkpoint_dir: str | Path,
    features_h5: str | Path,
    topk_h5: str | Path,
    triplets_h5: str | Path,
    lexicon_h5: str | Path,
    video_ids: Sequence[str],
    out_dir: str | Path,
    lexicon_dir: str | Path | None = None,
    references_json: str | Path | None = None,
    videos_dir: str | Path | None = None,
    num_beams: int = 5,
    max_len: int = 15,
    batch_size: int = 16,
    device: str = "auto",
    threads: int | None = None,
    figures: bool = True,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Write ``<out_dir>/<video_id>.json`` (and ``.png``) per video; return the records by video id."""
    from facenet_evc.analysis.explain_plot import plot_explanation

    if threads:
        torch.set_num_threads(int(threads))
    videos = list(dict.fromkeys(video_ids))
    if not videos:
        raise ValueError("explain: no video given")

    lexicon = None
    if lexicon_dir is not None:
        from facenet_evc.data.lexicon import read_lexicon

        lexicon = read_lexicon(lexicon_dir)
    refs: Mapping[str, Any] | None = None
    if references_json is not None:
        refs = read_json(references_json)
        if not isinstance(refs, dict):
            raise ValueError(f"{references_json}: expected a JSON object {{video_id: [captions]}}")
    files = find_video_files(videos_dir, videos) if videos_dir is not None else {}
    if videos_dir is not None and len(files) < len(videos):
        log.warning("no video file in %s for %s: no frame strip", videos_dir,
                    ", ".join(v for v in videos if v not in files))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict[str, Any]] = {}
    for vid, rec in explained_records(checkpoint_dir, features_h5, topk_h5, triplets_h5, lexicon_h5, videos,
                                      num_beams=num_beams, max_len=max_len, batch_size=batch_size, device=device,
                                      progress=progress):
        rec["references"] = None
        if refs is not None:
            if vid in refs:
                rec["references"] = [str(c) for c in refs[vid]]
            else:
                log.warning("%s: no references for video %r", references_json, vid)
        if lexicon is not None:
            rec["emotion_words"] = {"caption": emotion_words(rec["caption"], lexicon),
                                    "references": [emotion_words(c, lexicon) for c in rec["references"] or []]}
        frames = None
        if vid in files:
            from facenet_evc.data.video import read_frames

            frames = read_frames(files[vid], FRAME_STRIP)  # (8, H, W, 3) uint8
            rec["video_file"] = str(files[vid])
        if figures:
            rec["figure"] = f"{vid}.png"
            with atomic_path(out_dir / f"{vid}.png", suffix=".png") as tmp:
                plot_explanation(rec, tmp, frames)
        write_json(out_dir / f"{vid}.json", rec)
        records[vid] = rec
    log.info("explained %d videos with %s -> %s", len(records), checkpoint_dir, out_dir)
    return records


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc explain``."""
    from facenet_evc.data.sources import add_captions_args

    parser.add_argument("video_ids", nargs="*", metavar="VIDEO_ID", help="videos to explain (or --captions + --first)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. <train out>/best)")
    add_artifact_args(parser)
    parser.add_argument("--lexicon-h5", required=True, help="lexicon embeddings HDF5 (category names of the words)")
    parser.add_argument("--lexicon", help="folder of <category>.txt files: marks the emotion words of the captions")
    parser.add_argument("--references", help="R.json {video_id: [captions]} shown next to the generated caption")
    parser.add_argument("--videos", help="folder of <video_id>.<ext> files: a strip of frames on the figure")
    add_captions_args(parser, required=False)
    parser.add_argument("--first", type=int, default=None, metavar="N",
                        help="with --captions: explain the first N videos of those caption files")
    parser.add_argument("--out-dir", required=True, help="folder for <video_id>.png and <video_id>.json")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i>")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def select_videos(args: argparse.Namespace) -> list[str]:
    """The positional ids, then (with ``--captions``) the first ``--first`` videos of the caption files."""
    videos = list(args.video_ids)
    if args.captions:
        from facenet_evc.data.sources import split_video_ids

        split = split_video_ids(args.captions, args.captions_seps)
        if args.first is not None:
            if args.first < 1:
                raise ValueError(f"--first must be >= 1, got {args.first}")
            split = split[: args.first]
        videos += split
    elif args.first is not None:
        raise ValueError("--first needs --captions (the caption files of the split to take videos from)")
    if not videos:
        raise ValueError("explain: name the videos (VIDEO_ID ...) or give --captions [--first N]")
    return list(dict.fromkeys(videos))


def run_cli(args: argparse.Namespace) -> int:
    videos = select_videos(args)
    records = explain(args.checkpoint, args.features, args.topk, args.triplets, args.lexicon_h5, videos, args.out_dir,
                      lexicon_dir=args.lexicon, references_json=args.references, videos_dir=args.videos,
                      num_beams=args.num_beams, max_len=args.max_len, batch_size=args.batch_size,
                      device=args.device, threads=args.threads)
    print(json.dumps({"n_videos": len(records), "out_dir": str(args.out_dir),
                      "captions": {v: r["caption"] for v, r in records.items()}}))
    return 0
