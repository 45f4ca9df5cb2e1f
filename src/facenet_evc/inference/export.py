"""A self-contained model directory for captioning new videos (``facenet-evc export``).

Training leaves its inputs spread over the workflow's cache: the checkpoint, the caption
repository, its triplets, the CLIP weights the frame features came from and the settings
they were extracted with. :func:`export_model` gathers them into one folder that
``facenet-evc caption`` (:mod:`facenet_evc.inference.caption`) needs alone::

    MODEL_DIR/
      manifest.json             format, settings, and the sha256 and size of every file below
      model/model.safetensors   FACE-net weights (the checkpoint's, E_0 and word categories included)
      model/meta.json           FaceNetConfig, the decoder's word vocabulary, the lexicon words
      retrieval/repository.h5   the caption repository: captions, video ids, CLIP text embeddings (eq. 4)
      retrieval/index.faiss     FAISS index of the repository, built as the retrieval stage built it
      retrieval/triplets.h5     S-P-O triplet embeddings of every repository caption (eq. 7-9)
      emotion/lexicon.h5        the lexicon words and their GloVe vectors (eq. 2)
      clip/clip<ext>            the open_clip checkpoint the features were extracted with
      clip/clip.temporal.pt     its temporal head, when the features used one
      decoder_base/             the base LLM and tokenizer of a FLAN-T5 / OPT decoder (LLM decoders only)

The manifest also holds the feature settings (N frames, crop size, sampling, tubelet, the
vector retrieval queries with), the retrieval K and index parameters, and the default
beam search. Every source is checked against the others before anything is written: the
CLIP file must be the one the features were extracted with (sha256 of the features'
attrs), the triplets must follow the repository caption for caption, and the model's
sizes must match the files. The directory is built beside its destination and renamed
into place (a previous export there is replaced only once the new one is complete).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facenet_evc import layout
from facenet_evc.io import atomic_dir, file_sha256, read_attrs, read_json, write_json

log = logging.getLogger(__name__)

FORMAT = "facenet_evc.model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_DIR_HELP = "model directory written by `facenet-evc export`"

# Paths inside MODEL_DIR (the CLIP file keeps its suffix: open_clip picks the loader by it).
WEIGHTS = "model/model.safetensors"
META = "model/meta.json"
REPOSITORY = "retrieval/repository.h5"
INDEX = "retrieval/index.faiss"
TRIPLETS = "retrieval/triplets.h5"
LEXICON = "emotion/lexicon.h5"
CLIP_STEM = "clip/clip"
TEMPORAL_HEAD = "clip/clip.temporal.pt"
DECODER_BASE = "decoder_base"


class ModelDirError(ValueError):
    """An exported model directory that is incomplete, altered or of an unknown format."""


@dataclass
class ExportSources:
    """Where an export reads from. ``clip`` / ``temporal_head`` None: as recorded in the
    features file's attrs (the files the features were extracted with)."""

    checkpoint: Path
    features: Path
    topk: Path
    repository: Path
    triplets: Path
    lexicon: Path
    clip: str | None = None
    temporal_head: str | None = None


def standard_sources(config: str | os.PathLike, results_root: str | None = None) -> tuple[ExportSources, dict[str, Any]]:
    """The workflow's artifact paths of a dataset config, and its ``train`` section.

    ``{..._root}`` placeholders are filled from ``config.yaml`` beside the dataset config
    (the workflow config), ``results_root`` overriding its ``results_root``.
    """
    from facenet_evc.config import load_dataset_config, read_yaml

    config = Path(config)
    variables: dict[str, Any] = {}
    workflow = config.parent / "config.yaml"
    if workflow.is_file() and workflow.resolve() != config.resolve():
        variables = {k: v for k, v in read_yaml(workflow).items() if k.endswith("_root")}
    if results_root is not None:
        variables["results_root"] = results_root
    variables.setdefault("results_root", "results")
    cfg = load_dataset_config(config, variables)
    root, name = str(variables["results_root"]), cfg["name"]
    inputs = layout.model_inputs(root, name, cfg["retrieval"]["k"])
    sources = ExportSources(
        checkpoint=Path(layout.artifact_path(root, name, layout.final_checkpoint(cfg.get("train") or {}), run="")),
        features=Path(inputs["features"]),
        topk=Path(inputs["topk"]),
        repository=Path(layout.artifact_path(root, name, layout.REPOSITORY)),
        triplets=Path(inputs["triplets"]),
        lexicon=Path(inputs["lexicon_h5"]),
    )
    return sources, dict(cfg.get("train") or {})


# --------------------------------------------------------------------------- reading the sources


def _json_attr(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def _feature_settings(path: Path) -> dict[str, Any]:
    _require(path, "feature file")
    with h5py.File(path, "r") as f:
        if "frames" not in f:
            raise ValueError(f"{path}: not a CLIP feature file (no 'frames' dataset)")
        attrs = read_attrs(f)
        _, n_frames, dim = (int(v) for v in f["frames"].shape)
        has_embed = "video_embed" in f
    if attrs.get("source") != "clip":
        raise ValueError(f"{path}: the features were not extracted by this package (attr source="
                         f"{attrs.get('source')!r}, e.g. imported from EPAN's files); captioning new videos needs "
                         "features extracted with `facenet-evc extract-features` and their CLIP weights")
    for key in ("model_name", "crop_size", "n_frames"):
        if key not in attrs:
            raise ValueError(f"{path}: attr {key!r} is missing (features written by an older version?)")
    if int(attrs["n_frames"]) != n_frames:
        raise ValueError(f"{path}: attr n_frames={attrs['n_frames']} but frames hold {n_frames} per video")
    return {"attrs": attrs, "n_frames": n_frames, "dim": dim, "has_video_embed": has_embed}


def _resolve_file(recorded: str, features: Path) -> Path | None:
    """A path recorded in the features' attrs, as given (relative to the working directory,
    as the workflow ran) or relative to the project the features file lies in."""
    p = Path(recorded)
    if p.is_file():
        return p
    if not p.is_absolute():
        for parent in features.resolve().parents:
            if (parent / p).is_file():
                return parent / p
    return None


def _clip_file(model_name: str, pretrained: str) -> Path:
    """A local checkpoint file for ``pretrained``: the path itself, or the cached download of an open_clip tag."""
    p = Path(pretrained)
    if p.is_file():
        return p
    import open_clip

    from facenet_evc.stages.clip_model import register_package_configs

    register_package_configs()
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        raise FileNotFoundError(f"CLIP weights {pretrained!r}: neither a file nor an open_clip tag of {model_name}")
    try:
        return Path(open_clip.download_pretrained(cfg))
    except Exception as e:  # noqa: BLE001 - open_clip/hf raise many kinds; the message says what failed
        raise FileNotFoundError(f"CLIP weights {model_name}/{pretrained}: not in open_clip's cache and cannot be "
                                f"downloaded ({e}); pass the checkpoint file with --clip") from None


def _llm_base_dir(name_or_path: str) -> Path:
    """The folder of a decoder's base LLM: a local folder, or its Hugging Face cache snapshot."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as e:  # noqa: BLE001
        raise FileNotFoundError(f"decoder base model {name_or_path!r}: not a local folder and not in the Hugging Face "
                                f"cache ({e})") from None


def _check_same_captions(a: list[str], b: list[str], what_a: str, what_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what_a} holds {len(a)} captions but {what_b} holds {len(b)}: they come from different "
                         "repositories")
    if a != b:
        i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        raise ValueError(f"caption {i} differs between {what_a} ({a[i]!r}) and {what_b} ({b[i]!r})")


@dataclass
class _ClipSource:
    """The CLIP an export ships: the weights (and temporal head) the features were extracted with."""

    source: str  # as recorded in the features file, or given
    path: Path
    sha256: str
    head_path: Path | None
    tubelet: Any
    tubelet_init: str
    mean: list[float]
    std: list[float]


def _clip_source(s: ExportSources, feat: dict[str, Any], video_vector: str) -> _ClipSource:
    """Find and check the CLIP checkpoint (and temporal head) of the features file; load it once to
    check that it encodes frames like the features (crop size, width)."""
    from facenet_evc.stages.clip_features import load_image_encoder
    from facenet_evc.stages.clip_model import embed_dim, image_mean_std, load_temporal_head

    fa = feat["attrs"]
    clip_src = s.clip or str(fa.get("pretrained") or "")
    if not clip_src:
        raise ValueError(f"{s.features}: the features come from a randomly initialised CLIP (attr pretrained is "
                         "empty); its weights were never saved, so new videos cannot be encoded like them")
    recorded = _resolve_file(clip_src, Path(s.features)) if s.clip is None else None
    clip_path = recorded or _clip_file(str(fa["model_name"]), clip_src)
    want_sha = str(fa.get("checkpoint_sha256") or "")
    clip_sha = file_sha256(clip_path)
    if want_sha and clip_sha != want_sha:
        raise ValueError(f"{clip_path}: sha256 {clip_sha[:12]}... but {s.features} was extracted with a CLIP "
                         f"checkpoint of sha256 {want_sha[:12]}...: not the same weights")
    head_path: Path | None = None
    head_sha = str(fa.get("temporal_head_sha256") or "")
    if s.temporal_head is not None:
        head_path = _require(Path(s.temporal_head), "temporal head file")
    elif fa.get("temporal_head"):
        head_path = _resolve_file(str(fa["temporal_head"]), Path(s.features))
        if head_path is None:
            raise FileNotFoundError(f"{fa['temporal_head']}: temporal head file (attr temporal_head of {s.features}) "
                                    "not found; pass it with --temporal-head")
    if head_path is not None:
        got = file_sha256(head_path)
        if head_sha and got != head_sha:
            raise ValueError(f"{head_path}: sha256 {got[:12]}... but {s.features} used a temporal head of sha256 "
                             f"{head_sha[:12]}...")
        load_temporal_head(head_path)  # fails early, naming the file, when it is not a head
    elif video_vector == "video_embed":
        raise ValueError(f"{s.topk}: retrieval used the temporal head's video_embed but {s.features} names no head")
    tubelet = _json_attr(fa.get("tubelet"))
    tubelet_init = str(fa.get("tubelet_init") or "central")
    clip_model, size, _ = load_image_encoder(str(fa["model_name"]), clip_src if recorded is None else str(clip_path),
                                             feat["n_frames"], tubelet, tubelet_init)
    if size != int(fa["crop_size"]) or embed_dim(clip_model) != feat["dim"]:
        raise ValueError(f"{clip_path}: CLIP input {size} / width {embed_dim(clip_model)} but the features were "
                         f"extracted at crop {fa['crop_size']} with width {feat['dim']}")
    mean, std = image_mean_std(clip_model)
    return _ClipSource(clip_src, clip_path, clip_sha, head_path, tubelet, tubelet_init, list(mean), list(std))


# --------------------------------------------------------------------------- export


def export_model(
    sources: ExportSources,
    out_dir: str | os.PathLike,
    num_beams: int | None = None,
    max_len: int | None = None,
) -> dict[str, Any]:
    """Write the model directory ``out_dir`` (see module docstring); return its manifest.

    ``num_beams`` / ``max_len``: the default beam search of ``caption`` (None: the
    checkpoint's training config, i.e. what ``predict`` used).
    """
    import faiss

    from facenet_evc.models.config import LLM_DECODERS, FaceNetConfig
    from facenet_evc.stages.emotion_embed import read_lexicon_h5
    from facenet_evc.stages.repository import read_repository
    from facenet_evc.stages.retrieval import build_index, read_topk_h5
    from facenet_evc.stages.triplets import read_triplets_h5
    from facenet_evc.training.checkpoint import MODEL_FILE, read_meta

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    s = sources
    _check_target(out_dir)

    # ---- the model
    meta = read_meta(_require(Path(s.checkpoint), "checkpoint directory"))
    cfg = FaceNetConfig.from_dict(meta["model_config"])
    tcfg = meta.get("train_config") or {}
    num_beams = int(num_beams if num_beams is not None else tcfg.get("num_beams", 5))
    max_len = int(max_len if max_len is not None else tcfg.get("max_len", 15))
    if num_beams < 1 or max_len < 1:
        raise ValueError(f"num_beams and max_len must be >= 1, got {num_beams} and {max_len}")

    # ---- features: the settings a new video must be encoded with
    feat = _feature_settings(Path(s.features))
    fa = feat["attrs"]
    if cfg.n_frames != feat["n_frames"] or cfg.d_v != feat["dim"]:
        raise ValueError(f"{s.checkpoint}: model n_frames={cfg.n_frames}, d_v={cfg.d_v} but {s.features} holds "
                         f"{feat['n_frames']} frames of width {feat['dim']}: not the features it was trained on")

    # ---- retrieval: repository, the top-K file's index settings, triplets
    topk = read_topk_h5(_require(Path(s.topk), "top-K file"))
    ta = topk["attrs"]
    k = int(topk["indices"].shape[1])
    if cfg.use_retrieval and cfg.k != k:
        raise ValueError(f"{s.checkpoint}: model k={cfg.k} but {s.topk} holds top-{k}")
    repo = read_repository(_require(Path(s.repository), "repository file"))
    _check_same_captions(topk["repo_captions"], repo["caption"], f"the repository of {s.topk}", str(s.repository))
    emb = np.asarray(repo["embeddings"], dtype=np.float32)  # (n_repo, d)
    if emb.ndim != 2 or emb.shape[1] != feat["dim"]:
        raise ValueError(f"{s.repository}: embeddings of shape {emb.shape}, expected (n, {feat['dim']}) "
                         f"like the frame features of {s.features}")
    _require(Path(s.triplets), "triplets file")
    with h5py.File(s.triplets, "r") as f:
        if "repository_index" in f:
            raise ValueError(f"{s.triplets}: holds the triplets of the retrieved captions only (scope 'retrieved'); "
                             "a new video can retrieve any repository caption: extract the triplets of all of them")
    t_caps, _, t_emb, _ = read_triplets_h5(s.triplets)
    _check_same_captions(t_caps, repo["caption"], str(s.triplets), str(s.repository))
    if cfg.use_retrieval and (t_emb.ndim != 3 or t_emb.shape[1:] != (3, cfg.d_t)):
        raise ValueError(f"{s.triplets}: embeddings of shape {t_emb.shape}, the model expects (n, 3, {cfg.d_t})")
    video_vector = str(ta.get("video_vector") or ("video_embed" if feat["has_video_embed"] else "mean"))
    if video_vector not in ("mean", "video_embed"):
        raise ValueError(f"{s.topk}: attr video_vector={video_vector!r}, expected 'mean' or 'video_embed'")
    index_kind = str(ta.get("index_kind") or "flat")
    nlist = _json_attr(ta.get("nlist"))  # None is stored as the JSON text "null"
    nprobe = _json_attr(ta.get("nprobe"))

    # ---- lexicon: the checkpoint carries E_0; the file must be the one it was built from
    lex = read_lexicon_h5(_require(Path(s.lexicon), "lexicon embedding file"))
    if meta.get("lexicon_words") and list(lex["words"]) != list(meta["lexicon_words"]):
        raise ValueError(f"{s.lexicon}: its {len(lex['words'])} words differ from the {len(meta['lexicon_words'])} "
                         f"lexicon words of the checkpoint {s.checkpoint}")

    # ---- CLIP: the very weights (and temporal head) the features came from
    clip = _clip_source(s, feat, video_vector)

    # ---- LLM decoders bring their base model and tokenizer
    llm_dir: Path | None = None
    if cfg.decoder in LLM_DECODERS:
        llm_dir = _llm_base_dir(str(cfg.decoder_settings.get("pretrained", "")))

    # ---- write
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is meant to be shared
        for rel in (WEIGHTS, REPOSITORY, INDEX, LEXICON, TEMPORAL_HEAD):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(s.checkpoint) / MODEL_FILE, tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(meta, indent=1, allow_nan=True) + "\n", encoding="utf-8")
        shutil.copyfile(s.repository, tmp / REPOSITORY)
        shutil.copyfile(s.triplets, tmp / TRIPLETS)
        shutil.copyfile(s.lexicon, tmp / LEXICON)
        clip_rel = CLIP_STEM + (clip.path.suffix or ".pt")
        shutil.copyfile(clip.path, tmp / clip_rel)
        if clip.head_path is not None:
            shutil.copyfile(clip.head_path, tmp / TEMPORAL_HEAD)
        # The same index the retrieval stage searched (same rows, kind, lists and seed), on the CPU.
        index_kw: dict[str, Any] = {"kind": index_kind, "use_gpu": False}
        if index_kind == "ivf":
            index_kw.update(nlist=int(nlist) if nlist else None, nprobe=int(nprobe or 16))
        index = build_index(emb, **index_kw)
        faiss.write_index(index, str(tmp / INDEX))
        if llm_dir is not None:
            shutil.copytree(llm_dir, tmp / DECODER_BASE, symlinks=False)  # HF cache files are symlinks

        files = {}
        for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
            rel = p.relative_to(tmp).as_posix()
            files[rel] = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "components": {
                "weights": WEIGHTS, "meta": META, "repository": REPOSITORY, "index": INDEX, "triplets": TRIPLETS,
                "lexicon": LEXICON, "clip": clip_rel, "temporal_head": TEMPORAL_HEAD if clip.head_path else None,
                "decoder_base": DECODER_BASE if llm_dir else None,
            },
            "clip": {"model_name": str(fa["model_name"]), "source": clip.source, "sha256": clip.sha256,
                     "image_mean": clip.mean, "image_std": clip.std},
            "features": {
                "n_frames": feat["n_frames"], "dim": feat["dim"], "crop_size": int(fa["crop_size"]),
                "frame_sampling": str(fa.get("frame_sampling", "")), "resize": str(fa.get("resize", "")),
                "tubelet": clip.tubelet, "tubelet_init": clip.tubelet_init if clip.tubelet else "",
            },
            "retrieval": {"k": k, "video_vector": video_vector, "index_kind": index_kind,
                          "nlist": None if nlist is None else int(nlist), "nprobe": None if nprobe is None else int(nprobe),
                          "metric": "cosine", "n_captions": len(repo["caption"]),
                          "own_video_excluded": False},
            "decode": {"num_beams": num_beams, "max_len": max_len},
            "model": {"decoder": cfg.decoder, "step": meta.get("step"), "best_step": meta.get("best_step"),
                      "metrics": meta.get("metrics")},
            "sources": {k_: str(v) for k_, v in asdict(s).items() if v is not None}
                       | {"clip_file": str(clip.path), "temporal_head_file": str(clip.head_path or "")},
            "files": files,
        }
        write_json(tmp / MANIFEST, manifest)
    log.info("exported %s (step %s, %d repository captions, %d files, %.1f MB) -> %s in %.1f s", s.checkpoint,
             meta.get("step"), len(repo["caption"]), len(files), sum(f["bytes"] for f in files.values()) / 1e6,
             out_dir, time.perf_counter() - t0)
    return manifest


def _check_target(out_dir: Path) -> None:
    # Replacing a folder is destructive: only an earlier export or an empty folder may be replaced.
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise ValueError(f"{out_dir}: a non-empty folder that is not an exported model; refusing to replace it")


# --------------------------------------------------------------------------- reading an export


def read_manifest(model_dir: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """The manifest of an exported model directory, after checking every file it lists.

    Raises :class:`ModelDirError` naming the missing or altered file (size or sha256
    different from the manifest's), or a manifest of another format.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir}: model directory not found (make one with `facenet-evc export`)")
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelDirError(f"{path}: not found: {model_dir} is not an exported model (make one with `facenet-evc export`)")
    try:
        manifest = read_json(path)
    except ValueError as e:
        raise ModelDirError(str(e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelDirError(f"{path}: not a facenet-evc model manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(f"{path}: format_version {manifest.get('format_version')} (this version reads {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelDirError(f"{path}: 'files' lists no file")
    for key, rel in (manifest.get("components") or {}).items():
        if rel is not None and rel not in files and not any(f.startswith(f"{rel}/") for f in files):
            raise ModelDirError(f"{path}: component {key!r} ({rel}) is not among the listed files")
    for rel, info in files.items():
        p = model_dir / rel
        if not p.is_file():
            raise ModelDirError(f"{p}: missing (listed in {path})")
        if p.stat().st_size != int(info["bytes"]):
            raise ModelDirError(f"{p}: {p.stat().st_size} bytes but {path} lists {info['bytes']}: "
                                "the file was changed or damaged after export")
        if verify:
            got = file_sha256(p)
            if got != info["sha256"]:
                raise ModelDirError(f"{p}: sha256 {got[:12]}... does not match {path} ({str(info['sha256'])[:12]}...): "
                                    "the file was changed or damaged after export")
    return manifest


# --------------------------------------------------------------------------- CLI


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc export``."""
    parser.add_argument("--out", required=True, help="model directory to write (replaced atomically)")
    parser.add_argument("--config", help="dataset config (e.g. config/demo.yaml): take the workflow's artifacts of "
                                         "that dataset; the options below override single paths")
    parser.add_argument("--results-root", default=None,
                        help="results folder of the workflow (default: results_root of config.yaml beside --config)")
    parser.add_argument("--checkpoint", help="checkpoint directory (default with --config: <results>/<ds>/train/best)")
    parser.add_argument("--features", help="clip_frames.h5 the model was trained on")
    parser.add_argument("--topk", help="top-K retrieval HDF5 (its K and index settings)")
    parser.add_argument("--repository", help="repository.h5 (captions and CLIP text embeddings)")
    parser.add_argument("--triplets", help="triplets.h5 of the repository")
    parser.add_argument("--lexicon-h5", help="emotion/lexicon.h5")
    parser.add_argument("--clip", help="CLIP checkpoint file (default: the one named in the features' attrs)")
    parser.add_argument("--temporal-head", help="temporal head file (default: the one named in the features' attrs)")
    parser.add_argument("--num-beams", type=int, default=None, help="default beams of `caption` (default: training's)")
    parser.add_argument("--max-len", type=int, default=None, help="default max words of `caption` (default: training's)")


def run_export_cli(args: argparse.Namespace) -> int:
    """``facenet-evc export``. Errors propagate to the CLI's handler (exit 2)."""
    given = {"checkpoint": args.checkpoint, "features": args.features, "topk": args.topk,
             "repository": args.repository, "triplets": args.triplets, "lexicon": args.lexicon_h5}
    train: dict[str, Any] = {}
    if args.config:
        sources, train = standard_sources(args.config, args.results_root)
        for key, value in given.items():
            if value is not None:
                setattr(sources, key, Path(value))
    else:
        missing = [f"--{k if k != 'lexicon' else 'lexicon-h5'}" for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"export: give --config <dataset config> or every artifact path; missing {', '.join(missing)}")
        sources = ExportSources(**{k: Path(v) for k, v in given.items()})
    sources.clip, sources.temporal_head = args.clip, args.temporal_head
    num_beams = args.num_beams if args.num_beams is not None else train.get("num_beams")
    max_len = args.max_len if args.max_len is not None else train.get("max_len")
    manifest = export_model(sources, args.out, num_beams=num_beams, max_len=max_len)
    print(json.dumps({"out": str(args.out), "files": len(manifest["files"]), "k": manifest["retrieval"]["k"],
                      "step": manifest["model"]["step"]}), file=sys.stdout)
    return 0
