#!/usr/bin/env python
"""Benchmark caption retrieval (paper Sec. 3.2, eq. 5-6): FAISS flat / IVF against plain numpy.

For each repository size it builds synthetic "caption embeddings" from a Gaussian mixture
(clustered, like real CLIP text embeddings; uniformly random vectors have no neighbourhood
structure and make any approximate index look broken), draws queries from the same
mixture, and prints build time, query time and recall@K against the exact numpy result.

    python bench/retrieval_bench.py --sizes 10000 100000 1000000 --dim 512 --queries 500 --k 4

The numbers are printed only; nothing is asserted.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from facenet_evc.stages import retrieval as R  # noqa: E402

CHUNK = 65536


def mixture(
    n: int, centres: np.ndarray, noise: float, rng: np.random.Generator, chunk: int = CHUNK
) -> np.ndarray:
    """(n, d) float32 points = random centre + isotropic noise, generated chunk by chunk.

    ``noise`` is the per-vector noise norm relative to the unit-norm centres, so the
    clusters overlap at a controllable level whatever the dimension.
    """
    d = centres.shape[1]
    out = np.empty((n, d), dtype=np.float32)  # (n, d)
    scale = np.float32(noise / np.sqrt(d))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        which = rng.integers(0, len(centres), size=stop - start)
        block = rng.standard_normal((stop - start, d), dtype=np.float32)
        block *= scale
        block += centres[which]
        out[start:stop] = block
    return out


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-K found in the approximate top-K."""
    k = exact.shape[1]
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / (k * len(exact))


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def bench_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> list[dict]:
    d = args.dim
    ncent = min(args.centres, n)
    centres = R.l2_normalize(rng.standard_normal((ncent, d), dtype=np.float32))  # (c, d)
    repo, gen_s = timed(mixture, n, centres, args.noise, rng)
    queries = mixture(args.queries, centres, args.noise, rng)
    # Query ids absent from the repository (held-out videos): timings are about the index,
    # the own-video filter is covered by the tests. 20 captions per repository video, as in
    # the EVC datasets, so counting captions per video costs what it does there.
    qids = [f"q{i}" for i in range(args.queries)]
    rvids = [f"r{j // 20}" for j in range(n)]
    print(f"\n# n={n:,} d={d} centres={ncent} noise={args.noise} (generated in {gen_s:.1f}s)", flush=True)

    rows = []
    (exact_idx, _), np_s = timed(R.numpy_topk, repo, queries, args.k)
    rows.append(dict(method="numpy exact", build_s=0.0, query_s=np_s, recall=1.0))
    print(f"  numpy done in {np_s:.2f}s", flush=True)

    index, build_s = timed(R.build_index, repo, kind="flat", use_gpu=False, threads=args.threads)
    (idx, _), q_s = timed(R.retrieve_topk, index, queries, args.k, qids, rvids, threads=args.threads)
    rows.append(dict(method="faiss FlatIP", build_s=build_s, query_s=q_s, recall=recall_at_k(idx, exact_idx)))
    del index
    gc.collect()
    print(f"  flat done", flush=True)

    nlist = args.nlist or R.default_nlist(n)
    train = args.train_sample or R.default_train_sample(n, nlist)
    index, build_s = timed(
        R.build_index, repo, kind="ivf", nlist=nlist, nprobe=args.nprobe[0], train_sample=train,
        use_gpu=False, threads=args.threads,
    )
    print(f"  ivf nlist={nlist} trained on {train:,} rows in {build_s:.1f}s", flush=True)
    for nprobe in args.nprobe:
        R.set_nprobe(index, min(nprobe, nlist))
        (idx, _), q_s = timed(R.retrieve_topk, index, queries, args.k, qids, rvids, threads=args.threads)
        rows.append(
            dict(
                method=f"faiss IVF{nlist} np={min(nprobe, nlist)}",
                build_s=build_s, query_s=q_s, recall=recall_at_k(idx, exact_idx),
            )
        )
    del index, repo
    gc.collect()
    for r in rows:
        r.update(n=n, d=d)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--centres", type=int, default=2000, help="Gaussian mixture components")
    p.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the unit centres")
    p.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--nlist", type=int, default=None, help="default: the package's default_nlist (about 2*sqrt(n))")
    p.add_argument("--train-sample", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import faiss

    print(
        f"faiss {faiss.__version__}, threads={args.threads or faiss.omp_get_max_threads()}, "
        f"gpus={faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0} (bench runs on CPU), "
        f"queries={args.queries}, k={args.k}"
    )
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    for n in args.sizes:
        rows += bench_size(n, args, rng)

    header = f"{'n':>10} {'d':>4}  {'method':<24} {'build_s':>8} {'query_s':>8} {'ms/query':>9} {'recall@' + str(args.k):>9}"
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['n']:>10,} {r['d']:>4}  {r['method']:<24} {r['build_s']:>8.2f} {r['query_s']:>8.3f} "
            f"{1000 * r['query_s'] / args.queries:>9.3f} {r['recall']:>9.3f}"
        )


if __name__ == "__main__":
    main()
