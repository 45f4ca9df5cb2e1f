"""Caption repository index and top-K retrieval (paper Sec. 3.2, eq. 3-6).

A video is represented by the mean of its CLIP frame features, v̂ (eq. 3); every repository
caption c_i by its CLIP text embedding w_i (eq. 4). Captions are ranked by the cosine
similarity sim(v̂, w_i) (eq. 5) and the K best are kept (eq. 6). Cosine similarity is the
inner product of L2-normalised vectors, so the repository is stored normalised in a FAISS
inner-product index: exact ``IndexFlatIP`` or approximate ``IndexIVFFlat``.

A video's own captions are never returned: when the repository is built from the training
captions, a training video would otherwise retrieve its ground truth, and the model would
learn to copy retrieved text that is unavailable for test videos.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import Counter
from typing import Any, Iterator, Sequence

import faiss
import numpy as np

from facenet_evc.errors import SetupError
from facenet_evc.data.corpus import EXTERNAL_VIDEO_ID
from facenet_evc.io import atomic_h5, read_attrs, read_strings, write_strings

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "ivf_sq8")
# ivf_sq8 re-ranks this many times the asked-for candidates with the exact vectors.
REFINE_K_FACTOR = 4
# FAISS GPU k-selection is limited to this many results per query; wider searches go to a CPU copy.
GPU_MAX_K = 2048
# Rows normalised and added at a time, so a 1M x 512 repository is never copied whole.
_ADD_CHUNK = 65536


# --------------------------------------------------------------------------- helpers


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return ``x`` as float32 with every row scaled to unit L2 norm (the denominator of eq. 5).

    Zero rows stay zero (their cosine similarity with anything is then 0) instead of
    becoming NaN. A 1-D input is treated as a single row and returned 1-D.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)  # (..., 1)
    return np.ascontiguousarray(x / np.maximum(norms, eps), dtype=np.float32)


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run a block with FAISS' OpenMP pool set to ``threads`` (None: leave it as it is).

    The previous value is restored so one stage's setting does not leak into another's.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _as_2d(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {x.shape}")
    return x


def _rows_2d(name: str, x: Any) -> Any:
    """``x`` itself when it is a disk-backed 2-D array (h5py dataset, np.memmap), else ``_as_2d``.

    A repository is only ever read in row blocks (``x[a:b]``), so an h5py dataset is not
    loaded whole: a 1M x 512 float32 repository is 2 GB that the index holds already.
    """
    if not isinstance(x, np.ndarray) and hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__getitem__"):
        if len(x.shape) != 2:
            raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {tuple(x.shape)}")
        return x
    return _as_2d(name, x)


def _take_rows(x: Any, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` for sorted unique ``rows``, reading a disk-backed ``x`` block by block.

    h5py's point selection is slow for many rows; reading each block whole and picking
    from it streams the file once at disk speed.
    """
    if isinstance(x, np.ndarray):
        return np.asarray(x[rows])
    n = int(x.shape[0])
    out = np.empty((len(rows), int(x.shape[1])), dtype=x.dtype)  # (len(rows), d)
    starts = np.arange(0, n, _ADD_CHUNK)
    bounds = np.searchsorted(rows, np.append(starts, n))  # rows of each block in ``rows``
    for b, start in enumerate(starts):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        if lo < hi:
            out[lo:hi] = x[int(start) : int(start) + _ADD_CHUNK][rows[lo:hi] - start]
    return out


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "index_cpu_to_all_gpus") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _is_gpu_index(index: faiss.Index) -> bool:
    if type(index).__name__.startswith("Gpu"):
        return True
    # Several GPUs: index_cpu_to_all_gpus returns replicas of GPU indexes.
    replicas = getattr(faiss, "IndexReplicas", None)
    return replicas is not None and isinstance(index, replicas)


def default_nlist(n: int) -> int:
    """≈ 2·sqrt(n) inverted lists, at least 1 and at most n.

    FAISS' usual 4-16·sqrt(n) pays off when millions of queries amortise the build; the
    retrieval stage builds the index on every run and searches only a few thousand videos,
    so the build dominates. Measured on 1M x 512 clustered vectors with 2 threads
    (bench/large_repository_bench.py): 2·sqrt(n) = 2000 lists build in 0.5-1.5 min (by
    machine load) against ~6 min for 4000 lists (k-means cost grows with lists x training
    rows: 4x here), and reach recall@4 = 1.0 from nprobe=2.
    """
    return int(min(n, max(1, round(2 * math.sqrt(n)))))


def default_train_sample(n: int, nlist: int) -> int:
    """Training rows for the coarse k-means: 50 per list (FAISS warns below 39), at least 10k.

    FAISS subsamples anything above 256 per list itself, so more than that only costs time.
    """
    return int(min(n, max(50 * nlist, 10_000)))


def _ivf_of(index: faiss.Index) -> Any | None:
    """The IndexIVF inside ``index`` (CPU), the GPU IVF index itself, or None for other kinds."""
    try:
        return faiss.extract_index_ivf(index)
    except (RuntimeError, TypeError):
        pass
    if hasattr(index, "nprobe") and hasattr(index, "nlist"):
        return index
    if _is_gpu_index(index) and hasattr(index, "at") and index.count() > 0:
        first = faiss.downcast_index(index.at(0))
        if hasattr(first, "nprobe"):
            return first
    return None


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    if hasattr(faiss, "GpuParameterSpace") and _is_gpu_index(index):
        # Reaches every replica when the index spans several GPUs.
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))
        return
    ivf = _ivf_of(index)
    if ivf is None:
        raise TypeError(f"{type(index).__name__} has no nprobe")
    ivf.nprobe = int(nprobe)


def index_params(index: faiss.Index) -> dict[str, Any]:
    """Kind, size and IVF parameters of an index built by :func:`build_index` (for attrs/logs)."""
    ivf = _ivf_of(index)
    refine = isinstance(index, faiss.IndexRefine)
    return {
        "index_kind": "ivf_sq8" if refine else "ivf" if ivf is not None else "flat",
        "ntotal": int(index.ntotal),
        "dim": int(index.d),
        "nlist": int(ivf.nlist) if ivf is not None else None,
        "nprobe": int(ivf.nprobe) if ivf is not None else None,
        "gpu": _is_gpu_index(index),
        "refine_k_factor": float(index.k_factor) if refine else None,
    }


# --------------------------------------------------------------------------- index


def build_index(
    embeddings: np.ndarray,
    kind: str = "flat",
    nlist: int | None = None,
    nprobe: int = 4,
    train_sample: int | None = None,
    seed: int = 0,
    use_gpu: bool | None = None,
    threads: int | None = None,
) -> faiss.Index:
    """Index the repository caption embeddings w_i (eq. 4) for cosine search (eq. 5).

    Rows are L2-normalised chunk by chunk as they are added, so the inner product the index
    computes is the cosine similarity of eq. 5.

    ``embeddings`` may live on disk (an h5py dataset or np.memmap): it is read in blocks of
    ``_ADD_CHUNK`` rows, once for the IVF training sample and once to add every row, so the
    only full copy is the index itself.

    Args:
        embeddings: (n, d) caption embeddings; any float dtype; ndarray, np.memmap or h5py dataset.
        kind: ``"flat"`` (exact ``IndexFlatIP``), ``"ivf"`` (``IndexIVFFlat``, inner product) or
            ``"ivf_sq8"``: IVF over 8-bit scalar-quantised vectors (a quarter of the bytes to
            scan, and an IVF search is bound by memory bandwidth), whose ``REFINE_K_FACTOR``
            x k best are re-ranked with the exact vectors (``IndexRefineFlat``; CPU only).
        nlist: IVF lists; default :func:`default_nlist` (≈ 2·sqrt(n)).
        nprobe: IVF lists visited per query (clamped to ``nlist``).
        train_sample: rows drawn (without replacement, with ``seed``) to train the IVF
            coarse quantizer; default :func:`default_train_sample`.
        seed: seed for the training sample and k-means initialisation.
        use_gpu: move the index to all GPUs; None = when the FAISS GPU build sees a GPU
            (never for ``ivf_sq8``).
        threads: FAISS OpenMP threads for training/adding (None: FAISS' current setting).
    """
    x = _rows_2d("embeddings", embeddings)
    n, d = (int(v) for v in x.shape)
    if n == 0:
        raise ValueError("embeddings is empty: the caption repository has no rows")
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    if use_gpu is None:
        use_gpu = gpu_available() and kind != "ivf_sq8"
    elif use_gpu and kind == "ivf_sq8":
        raise ValueError("index kind 'ivf_sq8' runs on the CPU only; use 'ivf' or 'flat' on a GPU")
    elif use_gpu and not gpu_available():
        raise SetupError("use_gpu=True but this FAISS build has no GPU support or sees no GPU")

    with faiss_threads(threads):
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        else:
            if nlist is None:
                nlist = default_nlist(n)
            elif not 1 <= nlist <= n:
                raise ValueError(f"nlist must be in [1, n={n}], got {nlist}")
            if nprobe < 1:
                raise ValueError(f"nprobe must be >= 1, got {nprobe}")
            if train_sample is None:
                train_sample = default_train_sample(n, nlist)
            train_sample = int(min(n, train_sample))
            if train_sample < nlist:
                raise ValueError(f"train_sample={train_sample} is smaller than nlist={nlist}")
            # The factory gives an IndexFlatIP quantizer trained by spherical k-means, which
            # suits normalised vectors compared by inner product.
            codes = "Flat" if kind == "ivf" else "SQ8,RFlat"
            index = faiss.index_factory(d, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
            if kind == "ivf_sq8":
                index.k_factor = float(REFINE_K_FACTOR)
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.seed = int(seed)
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(n, size=train_sample, replace=False))
            t0 = time.perf_counter()
            train = l2_normalize(_take_rows(x, rows))  # (train_sample, d)
            _check_finite("embeddings", train)
            index.train(train)
            del train
            ivf.nprobe = int(min(nprobe, nlist))
            log.info("IVF%d coarse quantizer trained on %d rows in %.1fs", nlist, train_sample,
                     time.perf_counter() - t0)

        from facenet_evc.progress import progress_bar

        with progress_bar(total=n, unit="row", desc=f"index {kind}", disable=n < 4 * _ADD_CHUNK) as bar:
            for start in range(0, n, _ADD_CHUNK):
                chunk = l2_normalize(x[start : start + _ADD_CHUNK])  # (<=chunk, d)
                _check_finite("embeddings", chunk, offset=start)
                index.add(chunk)
                bar.update(chunk.shape[0])

        if use_gpu:
            index = faiss.index_cpu_to_all_gpus(index)
            if kind != "flat":
                # Set again: not every cloner version carries nprobe over.
                set_nprobe(index, int(min(nprobe, nlist)))
    return index


def _check_finite(name: str, x: np.ndarray, offset: int = 0) -> None:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + offset
        raise ValueError(f"{name} row {row} contains NaN or inf")


# --------------------------------------------------------------------------- search


def _own_video_codes(
    query_ids: Sequence[str], repo_video_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes for repository video ids, the queries' codes (-1 if absent) and own counts.

    Used by :func:`numpy_topk`, which masks whole score rows and so needs every code.
    """
    _check_query_ids(query_ids)
    codes_of: dict[str, int] = {}
    repo_codes = np.fromiter(
        (codes_of.setdefault(v, len(codes_of)) for v in repo_video_ids), dtype=np.int64, count=len(repo_video_ids)
    )  # (n,)
    query_codes = np.array([codes_of.get(q, -1) for q in query_ids], dtype=np.int64)  # (m,)
    per_video = np.bincount(repo_codes, minlength=len(codes_of))  # captions per repository video
    own = np.zeros(len(query_codes), dtype=np.int64)  # (m,)
    present = query_codes >= 0
    own[present] = per_video[query_codes[present]]
    return repo_codes, query_codes, own


def _check_query_ids(query_ids: Sequence[str]) -> None:
    # External captions carry this id so that no query's exclusion can match them; a query
    # with the same id would silently lose every external caption instead.
    if any(q == EXTERNAL_VIDEO_ID for q in query_ids):
        i = next(i for i, q in enumerate(query_ids) if q == EXTERNAL_VIDEO_ID)
        raise ValueError(f"query row {i} has the video id {EXTERNAL_VIDEO_ID!r}, which is reserved for "
                         f"external repository captions")


def _own_counts(query_ids: Sequence[str], repo_video_ids: Sequence[str]) -> np.ndarray:
    """(m,) number of repository captions that belong to each query's own video."""
    _check_query_ids(query_ids)
    # Only the queries' ids are counted, filtered at C speed: 15 ms for a 1M repository
    # against 100 ms for counting every id, which would rival an IVF search of all videos.
    wanted = set(query_ids)
    counts = Counter(filter(wanted.__contains__, repo_video_ids))
    return np.array([counts.get(q, 0) for q in query_ids], dtype=np.int64)


def _validate_search(
    n: int, repo_dim: int, queries: np.ndarray, k: int, query_ids: Sequence[str], repo_video_ids: Sequence[str]
) -> np.ndarray:
    q = _as_2d("queries", queries)
    if q.shape[1] != repo_dim:
        raise ValueError(f"query dim {q.shape[1]} != repository dim {repo_dim}")
    if len(query_ids) != q.shape[0]:
        raise ValueError(f"{len(query_ids)} query_ids for {q.shape[0]} query rows")
    if len(repo_video_ids) != n:
        raise ValueError(f"{len(repo_video_ids)} repo_video_ids for a repository of {n} captions")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return q


def _check_enough_foreign(k: int, n: int, query_ids: Sequence[str], own: np.ndarray) -> None:
    foreign = n - own  # (m,)
    short = np.flatnonzero(foreign < k)
    if short.size:
        i = int(short[0])
        raise ValueError(
            f"k={k} but query video {query_ids[i]!r} has only {int(foreign[i])} captions from other videos "
            f"in the repository ({n} captions, {int(own[i])} of its own); {short.size} queries are short"
        )


def _select_foreign(
    I: np.ndarray, D: np.ndarray, query_ids: Sequence[str], own: np.ndarray, repo_video_ids: Sequence[str], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop own-video and empty (-1) hits, keep the first k in the given order.

    Only rows whose video has captions in the repository (``own > 0``) are compared id by
    id; held-out videos skip the check, so a large repository costs no per-caption work.
    Returns indices (r, k), scores (r, k) and a (r,) mask of rows that had k survivors.
    """
    keep = I >= 0  # (r, c)
    for r in np.flatnonzero(own > 0):
        q = query_ids[r]
        keep[r] &= np.fromiter((j < 0 or repo_video_ids[j] != q for j in I[r].tolist()), dtype=bool, count=I.shape[1])
    # Stable sort of the "drop" flag moves survivors to the front without reordering them,
    # so ties keep FAISS' order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # (r, k)
    idx = np.take_along_axis(I, order, axis=1).astype(np.int64)  # (r, k)
    sc = np.take_along_axis(D, order, axis=1).astype(np.float32)  # (r, k)
    enough = keep.sum(axis=1) >= k  # (r,)
    return idx, sc, enough


def _search(index: faiss.Index, q: np.ndarray, kk: int, cpu_copy: list[faiss.Index]) -> tuple[np.ndarray, np.ndarray]:
    if kk > GPU_MAX_K and _is_gpu_index(index):
        # Rare wide re-search: FAISS GPU cannot select more than GPU_MAX_K per query.
        if not cpu_copy:
            cpu_copy.append(faiss.index_gpu_to_cpu(index))
        index = cpu_copy[0]
    D, I = index.search(q, kk)
    return D, I


def retrieve_topk(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    query_ids: Sequence[str],
    repo_video_ids: Sequence[str],
    search_k: int | None = None,
    threads: int | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k repository captions for each video by cosine similarity (eq. 5-6), own video excluded.

    Own-video captions are dropped *before* cutting to k. The first search asks for
    ``k + c`` candidates, c being the largest number of captions any query's own video has
    in the repository (0 for videos not in it): at most c of them can be dropped, so an
    exact index always leaves k. An approximate index may return fewer (its probed lists
    can run out); those rows are searched again with twice the candidates and, for IVF,
    twice the lists probed, until k survive or the whole repository has been searched.

    Args:
        index: built by :func:`build_index` (holds normalised w_i).
        queries: (m, d) mean-pooled video features v̂ (eq. 3).
        k: captions per video (K of eq. 6).
        query_ids: video id of each query row.
        repo_video_ids: video id of each repository caption (index row order).
        search_k: first candidate count; default ``k + c`` as above.
        threads: FAISS OpenMP threads (None: FAISS' current setting).
        normalize: L2-normalise queries (eq. 5); False if they already are.

    Returns:
        indices (m, k) int64 into the repository and scores (m, k) float32 cosine
        similarities, best first; ties keep FAISS' order.
    """
    n = int(index.ntotal)
    q = _validate_search(n, int(index.d), queries, k, query_ids, repo_video_ids)
    m = q.shape[0]
    own = _own_counts(query_ids, repo_video_ids)  # (m,)
    _check_enough_foreign(k, n, query_ids, own)
    q = l2_normalize(q) if normalize else np.ascontiguousarray(q, dtype=np.float32)

    indices = np.empty((m, k), dtype=np.int64)  # (m, k)
    scores = np.empty((m, k), dtype=np.float32)  # (m, k)
    if m == 0:
        return indices, scores
    kk = int(min(n, search_k if search_k is not None else k + int(own.max())))
    if kk < 1:
        raise ValueError(f"search_k must be >= 1, got {search_k}")

    ivf = _ivf_of(index)
    base_nprobe = int(ivf.nprobe) if ivf is not None else None
    nprobe = base_nprobe
    nlist = int(ivf.nlist) if ivf is not None else None
    cpu_copy: list[faiss.Index] = []
    rows = np.arange(m)  # queries still lacking k survivors
    rounds = 0
    with faiss_threads(threads):
        try:
            while True:
                D, I = _search(index, q[rows], kk, cpu_copy)  # (r, kk)
                idx, sc, enough = _select_foreign(I, D, [query_ids[i] for i in rows], own[rows], repo_video_ids, k)
                indices[rows[enough]] = idx[enough]
                scores[rows[enough]] = sc[enough]
                rows = rows[~enough]
                if rows.size == 0:
                    break
                exhausted = kk >= n and (nprobe is None or nprobe >= nlist)
                if exhausted:
                    raise RuntimeError(
                        f"{rows.size} queries (first {query_ids[int(rows[0])]!r}) have fewer than k={k} "
                        f"foreign captions even after searching the whole repository"
                    )
                rounds += 1
                kk = min(n, 2 * kk)
                if nprobe is not None and nprobe < nlist:
                    nprobe = min(nlist, 2 * nprobe)
                    set_nprobe(index, nprobe)
                    for cpu in cpu_copy:
                        set_nprobe(cpu, nprobe)
                log.debug("re-search %d: %d queries, %d candidates, nprobe=%s", rounds, rows.size, kk, nprobe)
        finally:
            if base_nprobe is not None and nprobe != base_nprobe:
                set_nprobe(index, base_nprobe)
    if rounds:
        log.info("retrieve_topk: %d re-search round(s) for queries short of k=%d survivors", rounds, k)
    return indices, scores


def numpy_topk(
    repo: np.ndarray,
    queries: np.ndarray,
    k: int,
    query_ids: Sequence[str] | None = None,
    repo_video_ids: Sequence[str] | None = None,
    batch_size: int | None = None,
    max_block_bytes: int = 256 << 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact brute-force cosine top-k (eq. 5-6) in plain numpy: the reference for tests and bench.

    Scores a batch of queries against the whole repository, masks own-video captions to
    -inf and keeps the k best with ``argpartition``; within equal scores the lower
    repository index comes first. The repository is not copied: its row norms are
    applied to each score block instead.

    Args:
        repo: (n, d) caption embeddings (normalisation not required).
        queries: (m, d) video features.
        k: captions per query.
        query_ids / repo_video_ids: give both to exclude each query's own-video captions.
        batch_size: queries per block; default keeps a block under ``max_block_bytes``.

    Returns:
        indices (m, k) int64 and scores (m, k) float32, best first.
    """
    repo = _as_2d("repo", repo)
    n, d = repo.shape
    exclude = query_ids is not None or repo_video_ids is not None
    if exclude and (query_ids is None or repo_video_ids is None):
        raise ValueError("give both query_ids and repo_video_ids, or neither")
    ids_q = list(query_ids) if query_ids is not None else [""] * np.asarray(queries).shape[0]
    ids_r = list(repo_video_ids) if repo_video_ids is not None else [None] * n  # never equal to a str
    q = _validate_search(n, d, queries, k, ids_q, ids_r)
    m = q.shape[0]
    if exclude:
        repo_codes, query_codes, own = _own_video_codes(ids_q, ids_r)
        _check_enough_foreign(k, n, ids_q, own)
    elif k > n:
        raise ValueError(f"k={k} is larger than the repository ({n} captions)")

    inv_norm = 1.0 / np.maximum(np.linalg.norm(repo, axis=1).astype(np.float32), 1e-12)  # (n,)
    q = l2_normalize(q)
    if batch_size is None:
        batch_size = max(1, int(max_block_bytes // (4 * max(n, 1))))
    indices = np.empty((m, k), dtype=np.int64)  # (m, k)
    scores = np.empty((m, k), dtype=np.float32)  # (m, k)
    repo32 = repo if repo.dtype == np.float32 else repo.astype(np.float32)
    for start in range(0, m, batch_size):
        stop = min(m, start + batch_size)
        s = q[start:stop] @ repo32.T  # (b, n)
        s *= inv_norm[None, :]
        if exclude:
            s[query_codes[start:stop, None] == repo_codes[None, :]] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]  # (b, k), unordered
        ps = np.take_along_axis(s, part, axis=1)  # (b, k)
        # Sort by score descending, then repository index ascending, for a deterministic order.
        order = np.lexsort((part, -ps), axis=1)
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        scores[start:stop] = np.take_along_axis(ps, order, axis=1)
    return indices, scores


# --------------------------------------------------------------------------- artifacts


def write_topk_h5(
    path: str | os.PathLike,
    query_ids: Sequence[str],
    indices: np.ndarray,
    scores: np.ndarray,
    repo_captions: Sequence[str],
    repo_video_ids: Sequence[str],
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write the retrieved top-K (eq. 6) with the repository caption table, atomically.

    Layout: ``video_ids`` (m,) str, ``indices`` (m, k) int64, ``scores`` (m, k) float32,
    ``repository/caption`` and ``repository/video_id`` (n,) str. File attrs: ``k``,
    ``num_queries``, ``num_repository`` plus ``attrs`` (index kind, nlist, nprobe, model, ...).
    """
    indices = np.asarray(indices)
    scores = np.asarray(scores)
    if indices.ndim != 2 or indices.shape != scores.shape:
        raise ValueError(f"indices {indices.shape} and scores {scores.shape} must be equal (m, k) shapes")
    m, k = indices.shape
    n = len(repo_captions)
    if len(query_ids) != m:
        raise ValueError(f"{len(query_ids)} query_ids for {m} rows of indices")
    if len(repo_video_ids) != n:
        raise ValueError(f"{len(repo_video_ids)} repo_video_ids for {n} repo_captions")
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}]")
    all_attrs = dict(attrs or {})
    all_attrs.update(k=int(k), num_queries=int(m), num_repository=int(n))
    with atomic_h5(path, attrs=all_attrs) as f:
        write_strings(f, "video_ids", list(query_ids))
        f.create_dataset("indices", data=indices.astype(np.int64))
        f.create_dataset("scores", data=scores.astype(np.float32))
        g = f.create_group("repository")
        write_strings(g, "caption", list(repo_captions))
        write_strings(g, "video_id", list(repo_video_ids))


def read_topk_h5(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`write_topk_h5`.

    Returns a dict with ``video_ids``, ``indices`` (m, k), ``scores`` (m, k),
    ``repo_captions``, ``repo_video_ids`` and ``attrs``.
    """
    import h5py

    with h5py.File(path, "r") as f:
        return {
            "video_ids": read_strings(f["video_ids"]),
            "indices": f["indices"][()].astype(np.int64),
            "scores": f["scores"][()].astype(np.float32),
            "repo_captions": read_strings(f["repository/caption"]),
            "repo_video_ids": read_strings(f["repository/video_id"]),
            "attrs": read_attrs(f, arrays=True),
        }


# --------------------------------------------------------------------------- stage


def run(
    video_feats: np.ndarray,
    query_ids: Sequence[str],
    repo_text_emb: np.ndarray,
    repo_captions: Sequence[str],
    repo_video_ids: Sequence[str],
    out_path: str | os.PathLike,
    k: int = 4,
    index_kind: str = "flat",
    model_name: str | None = None,
    threads: int | None = None,
    attrs: dict[str, Any] | None = None,
    **index_kw: Any,
) -> dict[str, Any]:
    """Retrieval stage: index the repository, retrieve top-K per video, write the HDF5.

    Args:
        video_feats: (m, d) mean-pooled CLIP video features v̂, or (m, N, d) per-frame CLIP
            features, mean-pooled here over frames (eq. 3).
        query_ids: video id per row of ``video_feats``.
        repo_text_emb: (n, d) CLIP text embeddings w_i of the repository captions (eq. 4);
            an ndarray, np.memmap or h5py dataset (read in row blocks).
        repo_captions / repo_video_ids: caption text and source video per repository row.
        out_path: HDF5 written by :func:`write_topk_h5`.
        k: K of eq. 6.
        index_kind: ``"flat"`` or ``"ivf"``; ``index_kw`` go to :func:`build_index`.
        model_name: CLIP model name, stamped into the file attrs.
        threads: FAISS OpenMP threads (None: all).
        attrs: extra file attrs (e.g. input hashes, config hash).

    Returns:
        Summary: counts, index parameters and timings in seconds.
    """
    t0 = time.perf_counter()
    v = np.asarray(video_feats)
    if v.ndim == 3:
        v = v.mean(axis=1)  # (m, d): eq. 3
    v = _as_2d("video_feats", v)
    repo = _rows_2d("repo_text_emb", repo_text_emb)  # may stay on disk (h5py dataset)
    if v.shape[1] != repo.shape[1]:
        raise ValueError(f"video feature dim {v.shape[1]} != repository text embedding dim {repo.shape[1]}")
    if len(repo_captions) != repo.shape[0]:
        raise ValueError(f"{len(repo_captions)} repo_captions for {repo.shape[0]} repository embeddings")

    index = build_index(repo, kind=index_kind, threads=threads, **index_kw)
    t1 = time.perf_counter()
    indices, scores = retrieve_topk(index, v, k, query_ids, repo_video_ids, threads=threads)
    t2 = time.perf_counter()
    params = index_params(index)
    file_attrs: dict[str, Any] = dict(attrs or {})
    file_attrs.update(
        index_kind=index_kind,
        nlist=params["nlist"],
        nprobe=params["nprobe"],
        model_name=model_name,
        metric="cosine",
        own_video_excluded=True,
        num_videos_in_repository=len(set(repo_video_ids) - {EXTERNAL_VIDEO_ID}),
        num_external_in_repository=sum(1 for v in repo_video_ids if v == EXTERNAL_VIDEO_ID),
    )
    write_topk_h5(out_path, query_ids, indices, scores, repo_captions, repo_video_ids, file_attrs)
    t3 = time.perf_counter()
    return {
        "out_path": str(out_path),
        "num_queries": int(v.shape[0]),
        "num_repository": int(repo.shape[0]),
        "dim": int(repo.shape[1]),
        "k": int(k),
        **params,
        "mean_top1_score": float(scores[:, 0].mean()) if scores.size else None,
        "build_s": t1 - t0,
        "search_s": t2 - t1,
        "write_s": t3 - t2,
        "total_s": t3 - t0,
    }
