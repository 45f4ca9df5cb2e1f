"""Caption retrieval (paper Sec. 3.2, eq. 5-6): exactness, own-video exclusion, artifacts."""
from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from facenet_evc.stages import retrieval as R


def _assert_same_topk(idx_a, sc_a, idx_b, sc_b, atol=1e-5):
    """Equal scores; equal indices except where neighbouring scores tie (order then arbitrary)."""
    assert idx_a.shape == idx_b.shape
    np.testing.assert_allclose(sc_a, sc_b, atol=atol)
    for row in range(idx_a.shape[0]):
        if np.array_equal(idx_a[row], idx_b[row]):
            continue
        differ = np.flatnonzero(idx_a[row] != idx_b[row])
        for j in differ:
            tied = np.isclose(sc_a[row], sc_a[row, j], atol=atol)
            assert tied.sum() > 1, f"row {row} position {j}: {idx_a[row]} vs {idx_b[row]}"


def _videos(n_videos, per_video, d, rng, spread=0.05):
    """Repository where each video's captions sit close together around their own centre."""
    centres = rng.standard_normal((n_videos, d)).astype(np.float32)
    emb = np.repeat(centres, per_video, axis=0) + spread * rng.standard_normal((n_videos * per_video, d)).astype(
        np.float32
    )
    vids = [f"v{i}" for i in range(n_videos) for _ in range(per_video)]
    return centres, emb.astype(np.float32), vids


def test_l2_normalize_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=np.float64)
    y = R.l2_normalize(x)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-7)
    np.testing.assert_allclose(R.l2_normalize(np.zeros(4)), np.zeros(4))


def test_own_video_captions_excluded_and_exactly_k_returned():
    rng = np.random.default_rng(0)
    centres, emb, vids = _videos(n_videos=12, per_video=5, d=16, rng=rng)
    queries = centres.copy()  # each video's own captions are its 5 nearest neighbours
    qids = [f"v{i}" for i in range(12)]
    k = 4
    index = R.build_index(emb, kind="flat")
    # Sanity: without exclusion the own captions do win.
    _, raw = index.search(R.l2_normalize(queries), k)
    assert all(vids[j] == qids[i] for i in range(12) for j in raw[i])

    idx, sc = R.retrieve_topk(index, queries, k, qids, vids)
    assert idx.shape == (12, k) and sc.shape == (12, k)
    assert idx.dtype == np.int64 and sc.dtype == np.float32
    for i, q in enumerate(qids):
        assert all(vids[j] != q for j in idx[i])
        assert len(set(idx[i].tolist())) == k
    assert np.all(np.diff(sc, axis=1) <= 1e-6)  # best first
    ref_idx, ref_sc = R.numpy_topk(emb, queries, k, qids, vids)
    _assert_same_topk(idx, sc, ref_idx, ref_sc)


def test_flat_equals_numpy_on_random_data():
    rng = np.random.default_rng(1)
    repo = rng.standard_normal((3000, 48)).astype(np.float32)
    queries = rng.standard_normal((64, 48)).astype(np.float32)
    qids = [f"q{i}" for i in range(64)]
    rvids = [f"r{j // 3}" for j in range(3000)]
    index = R.build_index(repo, kind="flat", threads=1)
    idx, sc = R.retrieve_topk(index, queries, 10, qids, rvids)
    ref_idx, ref_sc = R.numpy_topk(repo, queries, 10, batch_size=7)  # odd batch: exercises the loop
    _assert_same_topk(idx, sc, ref_idx, ref_sc)
    # Scores are cosine similarities (eq. 5).
    j = idx[0, 0]
    cos = repo[j] @ queries[0] / np.linalg.norm(repo[j]) / np.linalg.norm(queries[0])
    assert sc[0, 0] == pytest.approx(cos, abs=1e-5)


def test_ivf_with_all_lists_probed_is_exact():
    rng = np.random.default_rng(2)
    _, repo, rvids = _videos(n_videos=400, per_video=6, d=32, rng=rng, spread=0.3)
    queries = repo[rng.choice(len(repo), 40, replace=False)] + 0.1 * rng.standard_normal((40, 32)).astype(np.float32)
    qids = [rvids[0], rvids[100], *[f"test{i}" for i in range(38)]]
    index = R.build_index(repo, kind="ivf", nlist=24, nprobe=24, seed=3)
    params = R.index_params(index)
    assert params["index_kind"] == "ivf" and params["nlist"] == 24 and params["nprobe"] == 24
    idx, sc = R.retrieve_topk(index, queries, 5, qids, rvids)
    ref_idx, ref_sc = R.numpy_topk(repo, queries, 5, qids, rvids)
    _assert_same_topk(idx, sc, ref_idx, ref_sc)


def test_research_when_first_candidates_too_few_flat():
    rng = np.random.default_rng(4)
    centres, emb, vids = _videos(n_videos=10, per_video=6, d=16, rng=rng)
    qids = [f"v{i}" for i in range(10)]
    index = R.build_index(emb)
    # search_k=k: the first search returns only own captions, so every row needs re-searching.
    idx, sc = R.retrieve_topk(index, centres, 3, qids, vids, search_k=3)
    ref_idx, ref_sc = R.numpy_topk(emb, centres, 3, qids, vids)
    _assert_same_topk(idx, sc, ref_idx, ref_sc)


def test_research_when_ivf_probed_lists_run_out(caplog):
    d = 8
    rng = np.random.default_rng(5)
    e0, e1 = np.eye(d, dtype=np.float32)[0], np.eye(d, dtype=np.float32)[1]
    noise = lambda n: 0.02 * rng.standard_normal((n, d)).astype(np.float32)  # noqa: E731
    # List A: 5 captions of "own" and 1 foreign caption; list B: 30 foreign captions.
    emb = np.concatenate([e0 + noise(5), e0 + noise(1), e1 + noise(30)])
    vids = ["own"] * 5 + ["a1"] + [f"b{i}" for i in range(30)]
    index = R.build_index(emb, kind="ivf", nlist=2, nprobe=1, train_sample=len(emb), seed=0)
    q = e0[None, :]
    k = 3
    # One search with k + 5 candidates visits list A only: 5 own, 1 foreign, the rest empty.
    _, first = index.search(R.l2_normalize(q), k + 5)
    survivors = [j for j in first[0] if j >= 0 and vids[j] != "own"]
    assert len(survivors) < k

    with caplog.at_level(logging.INFO, logger=R.__name__):
        idx, sc = R.retrieve_topk(index, q, k, ["own"], vids)
    assert "re-search" in caplog.text
    assert all(vids[j] != "own" for j in idx[0]) and idx.shape == (1, k)
    ref_idx, ref_sc = R.numpy_topk(emb, q, k, ["own"], vids)
    _assert_same_topk(idx, sc, ref_idx, ref_sc)
    assert R.index_params(index)["nprobe"] == 1  # widened nprobe is put back


def test_run_writes_h5_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    centres, emb, vids = _videos(n_videos=8, per_video=3, d=16, rng=rng)
    captions = [f"caption {i} — ünïcode" for i in range(len(emb))]
    frames = centres[:, None, :] + 0.01 * rng.standard_normal((8, 5, 16)).astype(np.float32)  # (m, N, d)
    qids = [f"v{i}" for i in range(8)]
    out = tmp_path / "retrieval" / "topk.h5"
    summary = R.run(frames, qids, emb, captions, vids, out, k=4, model_name="ViT-B-32", attrs={"config": "abc"})
    assert summary["num_queries"] == 8 and summary["num_repository"] == 24 and summary["k"] == 4
    assert summary["index_kind"] == "flat" and summary["total_s"] >= 0

    got = R.read_topk_h5(out)
    assert got["video_ids"] == qids
    assert got["repo_captions"] == captions and got["repo_video_ids"] == vids
    assert got["indices"].shape == (8, 4) and got["indices"].dtype == np.int64
    assert got["scores"].dtype == np.float32
    a = got["attrs"]
    assert a["k"] == 4 and a["index_kind"] == "flat" and a["model_name"] == "ViT-B-32"
    assert a["num_queries"] == 8 and a["num_repository"] == 24 and a["config"] == "abc"
    for i, q in enumerate(got["video_ids"]):
        assert all(got["repo_video_ids"][j] != q for j in got["indices"][i])
    ref_idx, ref_sc = R.numpy_topk(emb, frames.mean(axis=1), 4, qids, vids)
    _assert_same_topk(got["indices"], got["scores"], ref_idx, ref_sc)
    assert not list(out.parent.glob(".*tmp"))  # atomic write left no temporary behind


def test_shape_and_k_errors():
    rng = np.random.default_rng(7)
    repo = rng.standard_normal((10, 8)).astype(np.float32)
    vids = ["a"] * 7 + ["b"] * 3
    index = R.build_index(repo)
    with pytest.raises(ValueError, match="query dim 4 != repository dim 8"):
        R.retrieve_topk(index, np.ones((2, 4), np.float32), 2, ["x", "y"], vids)
    with pytest.raises(ValueError, match="query dim 4 != repository dim 8"):
        R.numpy_topk(repo, np.ones((2, 4), np.float32), 2)
    with pytest.raises(ValueError, match=r"k=4 but query video 'a' has only 3 captions from other videos"):
        R.retrieve_topk(index, np.ones((1, 8), np.float32), 4, ["a"], vids)
    with pytest.raises(ValueError, match=r"k=4 but query video 'a'"):
        R.numpy_topk(repo, np.ones((1, 8), np.float32), 4, ["a"], vids)
    with pytest.raises(ValueError, match="query_ids for 2 query rows"):
        R.retrieve_topk(index, np.ones((2, 8), np.float32), 1, ["x"], vids)
    with pytest.raises(ValueError, match="repo_video_ids for a repository of 10"):
        R.retrieve_topk(index, np.ones((1, 8), np.float32), 1, ["x"], vids[:-1])
    with pytest.raises(ValueError, match="video feature dim 4 != repository text embedding dim 8"):
        R.run(np.ones((1, 4)), ["x"], repo, ["c"] * 10, vids, "/nonexistent/out.h5")
    with pytest.raises(ValueError, match="unknown index kind"):
        R.build_index(repo, kind="hnsw")
    with pytest.raises(ValueError, match="nlist must be in"):
        R.build_index(repo, kind="ivf", nlist=11)
    with pytest.raises(ValueError, match="NaN"):
        R.build_index(np.full((3, 8), np.nan, np.float32))


def test_threads_setting_is_restored():
    before = faiss.omp_get_max_threads()
    with R.faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
