"""A large retrieval repository: external caption corpora, embeddings streamed to and from
disk, IVF recall, and triplets of the retrieved captions only."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from facenet_evc.cli import main as cli_main
from facenet_evc.data.corpus import EXTERNAL_VIDEO_ID, CorpusSource, iter_corpus, read_corpus
from facenet_evc.data.emvidcap import CaptionSource, read_split
from facenet_evc.io import atomic_h5, write_strings
from facenet_evc.stages import retrieval as R
from facenet_evc.stages.repository import (
    build_repository,
    read_repository,
    run_retrieval,
    run_triplets,
    triplet_scope,
    write_repository,
)
from facenet_evc.stages.retrieval import read_topk_h5
from facenet_evc.stages.triplets import read_repository_index, read_triplets_h5
from facenet_evc.training.data import ArtifactError, load_artifacts

PROJECT = Path(__file__).resolve().parents[1]
DEMO_MODEL = "demo-tiny-rn"


# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def clustered(n: int, d: int, n_centres: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) Gaussian-mixture points and their centre ids: unit centres plus noise of norm ``noise``."""
    centres = R.l2_normalize(rng.standard_normal((n_centres, d)).astype(np.float32))
    which = rng.integers(0, n_centres, size=n)
    x = centres[which] + (noise / np.sqrt(d)) * rng.standard_normal((n, d)).astype(np.float32)
    return x.astype(np.float32), which


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return sum(len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist())) / exact.size


# --------------------------------------------------------------------------- corpus files


def test_text_corpus_lines_and_chunks(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_bytes("\ufeffa dog runs happily\n  a cat sleeps  \r\na bird sings\n".encode())
    src = CorpusSource(p)
    assert read_corpus(src) == ["a dog runs happily", "a cat sleeps", "a bird sings"]
    assert list(iter_corpus(src, chunk_size=2)) == [["a dog runs happily", "a cat sleeps"], ["a bird sings"]]


def test_csv_corpus_column_quoting_and_tsv(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('id,caption,lang\n1,"a man, smiling",en\n2,"two\nlines",en\n3,a girl cries,en\n', encoding="utf-8")
    assert read_corpus(CorpusSource(p, "caption")) == ["a man, smiling", "two\nlines", "a girl cries"]
    t = tmp_path / "c.tsv"
    t.write_text("caption\tid\na, b and c\t1\n", encoding="utf-8")
    assert read_corpus(CorpusSource(t, "caption")) == ["a, b and c"]  # TAB from the suffix


@pytest.mark.parametrize("name, body, column, match", [
    ("blank.txt", "one\n\nthree\n", None, r"blank\.txt:2: empty caption"),
    ("nocol.csv", "id,text\n1,a dog\n", "caption", r"nocol\.csv:1: no column 'caption'.*\['id', 'text'\]"),
    # the multi-line quoted record of line 2 pushes the empty caption to line 4
    ("emptycap.csv", 'id,caption\n1,"a\nb"\n2,  \n', "caption", r"emptycap\.csv:4: empty caption in column 'caption'"),
    ("short.csv", "id,x,caption\n1,2,ok\n2,3\n", "caption", r"short\.csv:3: row has 2 fields"),
    ("empty.txt", "", None, r"empty\.txt: the caption corpus holds no caption"),
    ("wrongsep.tsv", "id,caption\n1,a dog\n", "caption", r"wrongsep\.tsv:1: no column 'caption'.*TAB"),
])
def test_bad_corpus_names_file_and_line(tmp_path, name, body, column, match):
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_corpus(CorpusSource(p, column))


def test_corpus_errors_missing_file_and_bad_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt: caption corpus not found"):
        read_corpus(CorpusSource(tmp_path / "nope.txt"))
    p = tmp_path / "latin.txt"
    p.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin\.txt:2: line is not UTF-8"):
        read_corpus(CorpusSource(p))


# --------------------------------------------------------------------------- repository build


@pytest.fixture(scope="module")
def clip_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised tiny CLIP saved as a checkpoint (same weights on every load)."""
    from facenet_evc.stages.clip_model import load_clip

    torch.manual_seed(0)
    model, _, _ = load_clip(DEMO_MODEL, None)
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("captions")
    (d / "trainval.csv").write_text(
        "VideoID,EmCaptions\n"
        "v1,a man is slicing a tomato happily\nv1,a man cuts a tomato\n"
        "v2,a girl cries sadly in the rain\nv2,the girl is sad\n"
        "v3,a puppy plays with a ball joyfully\nv3,a dog chases a ball\n", encoding="utf-8")
    (d / "test.csv").write_text("VideoID,EmCaptions\nt1,a cat sleeps calmly on a sofa\n", encoding="utf-8")
    corpus = [f"caption number {i} about a {w}" for i, w in enumerate(["dog", "cat", "car", "tree", "boat"] * 7)]
    corpus += ["A man cuts a tomato!", "a cat sleeps calmly on a sofa"]  # copies of a train / a test caption
    (d / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    return {"trainval": d / "trainval.csv", "test": d / "test.csv", "corpus": d / "corpus.txt"}


@pytest.fixture(scope="module")
def repo(clip_ckpt, splits, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("repo") / "repository.h5"
    summary = build_repository([CaptionSource(splits["trainval"])], DEMO_MODEL, str(clip_ckpt), out,
                               extra=[CorpusSource(splits["corpus"])], exclude=[CaptionSource(splits["test"])],
                               chunk_size=8)  # several chunks, the last one partial
    return out, summary


def test_repository_holds_training_then_external_captions(repo, splits):
    path, summary = repo
    r = read_repository(path)
    train = read_split([CaptionSource(splits["trainval"])])
    n_train = len(train)
    assert r["caption"][:n_train] == list(train["EmCaptions"]) and r["video_id"][:n_train] == list(train["VideoID"])
    external = read_corpus(CorpusSource(splits["corpus"]))[:-2]  # the two copies of split captions are dropped
    assert r["caption"][n_train:] == external
    assert set(r["video_id"][n_train:]) == {EXTERNAL_VIDEO_ID}
    assert summary["n_external"] == len(external) and summary["n_external_duplicates_dropped"] == 2
    assert int(r["attrs"]["n_external"]) == len(external) and int(r["attrs"]["n_training"]) == n_train


def test_streamed_embeddings_equal_in_memory_encoding(repo, clip_ckpt):
    from facenet_evc.stages.clip_model import encode_text, load_clip

    path, _ = repo
    r = read_repository(path)
    model, _, tok = load_clip(DEMO_MODEL, str(clip_ckpt))
    whole = encode_text(model, tok, r["caption"])  # (n, d) in one go
    assert r["embeddings"].shape == whole.shape and r["embeddings"].dtype == np.float32
    np.testing.assert_allclose(r["embeddings"], whole, atol=1e-5)


def test_cli_bad_corpus_is_an_error_naming_the_file(splits, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,a dog\n", encoding="utf-8")
    for extra, match in ([str(tmp_path / "missing.txt"), "none"], r"missing\.txt: caption corpus not found"), \
                        ([str(bad), "caption"], r"bad\.csv:1: no column 'caption'"):
        rc = cli_main(["build-repository", "--captions", str(splits["trainval"]), "--model", DEMO_MODEL,
                       "--pretrained", "none", "--extra-captions", extra[0], "--extra-columns", extra[1],
                       "--out", str(tmp_path / "r.h5")])
        err = capsys.readouterr().err
        assert rc == 2 and "facenet-evc: error:" in err
        assert __import__("re").search(match, err), err
        assert not (tmp_path / "r.h5").exists()


# --------------------------------------------------------------------------- retrieval


def _synthetic_repository(tmp_path: Path, rng: np.random.Generator, d: int = 32):
    """Training captions of 10 videos (8 each, tight around the video's centre) and 2000
    external captions, a few of them right next to each video: a query at a video's centre
    has its own captions nearest, then external ones."""
    n_vid, per = 10, 8
    centres = R.l2_normalize(rng.standard_normal((n_vid, d)).astype(np.float32))  # (V, d)
    own = np.repeat(centres, per, axis=0) + 0.01 * rng.standard_normal((n_vid * per, d)).astype(np.float32)
    near = np.repeat(centres, 3, axis=0) + 0.05 * rng.standard_normal((n_vid * 3, d)).astype(np.float32)
    far = rng.standard_normal((2000 - n_vid * 3, d)).astype(np.float32)
    emb = np.concatenate([own, near, far]).astype(np.float32)  # (n, d)
    vids = [f"v{i}" for i in range(n_vid) for _ in range(per)] + [EXTERNAL_VIDEO_ID] * (2000)
    caps = [f"caption {i}" for i in range(len(vids))]
    path = tmp_path / "repository.h5"
    write_repository(path, len(vids), d, ((caps[s:s + 300], vids[s:s + 300], emb[s:s + 300])
                                          for s in range(0, len(vids), 300)), progress=False)
    feats = tmp_path / "features.h5"
    with atomic_h5(feats) as f:
        write_strings(f, "video_ids", [f"v{i}" for i in range(n_vid)] + ["held_out"])
        f.create_dataset("mean", data=np.concatenate([centres, centres[:1]]))
    return path, feats, emb, vids


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf_sq8"])
def test_retrieval_returns_external_but_never_own_captions(tmp_path, kind):
    path, feats, _, vids = _synthetic_repository(tmp_path, np.random.default_rng(0))
    out = tmp_path / "topk.h5"
    run_retrieval(feats, path, out, k=4, index_kind=kind, nlist=16, nprobe=4, threads=1)
    t = read_topk_h5(out)
    for qid, row in zip(t["video_ids"], t["indices"]):
        got = [vids[j] for j in row]
        assert qid not in got
        if qid != "held_out":  # its 3 near external captions come right after its own
            assert got.count(EXTERNAL_VIDEO_ID) >= 3
    held = t["video_ids"].index("held_out")  # a held-out video at v0's centre gets v0's own captions
    assert [vids[j] for j in t["indices"][held]] == ["v0"] * 4
    assert t["attrs"]["num_external_in_repository"] == 2000 and t["attrs"]["num_videos_in_repository"] == 10


def test_ivf_sq8_scores_are_exact_cosines():
    rng = np.random.default_rng(2)
    x, _ = clustered(4000, 32, 40, 1.0, rng)
    q, _ = clustered(30, 32, 40, 1.0, rng)
    index = R.build_index(x, kind="ivf_sq8", nlist=40, nprobe=40, use_gpu=False)
    params = R.index_params(index)
    assert params["index_kind"] == "ivf_sq8" and params["refine_k_factor"] == R.REFINE_K_FACTOR
    idx, sc = R.retrieve_topk(index, q, 4, [f"q{i}" for i in range(30)], ["r"] * len(x))
    ex_idx, ex_sc = R.numpy_topk(x, q, 4)
    # all lists probed: the 8-bit codes only preselect, the re-ranking with exact vectors decides
    np.testing.assert_array_equal(idx, ex_idx)
    np.testing.assert_allclose(sc, ex_sc, atol=1e-5)
    with pytest.raises(ValueError, match="CPU only"):
        R.build_index(x, kind="ivf_sq8", use_gpu=True)


def test_query_with_the_external_id_is_refused():
    emb = np.eye(4, dtype=np.float32)
    index = R.build_index(emb, kind="flat")
    with pytest.raises(ValueError, match="reserved for external"):
        R.retrieve_topk(index, emb[:1], 1, [EXTERNAL_VIDEO_ID], ["a", "b", "c", EXTERNAL_VIDEO_ID])


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivf_sq8"])
def test_index_built_from_hdf5_equals_in_memory(tmp_path, kind):
    rng = np.random.default_rng(1)
    x, _ = clustered(5000, 32, 50, 1.0, rng)
    q, _ = clustered(50, 32, 50, 1.0, rng)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f.create_dataset("embeddings", data=x)
    rows = np.sort(rng.choice(5000, 700, replace=False))
    with h5py.File(tmp_path / "e.h5", "r") as f:
        ds = f["embeddings"]
        np.testing.assert_array_equal(R._take_rows(ds, rows), x[rows])
        disk = R.build_index(ds, kind=kind, nlist=40, nprobe=4, use_gpu=False)
    mem = R.build_index(x, kind=kind, nlist=40, nprobe=4, use_gpu=False)
    d1, i1 = disk.search(R.l2_normalize(q), 4)
    d2, i2 = mem.search(R.l2_normalize(q), 4)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


def test_ivf_recall_on_a_clustered_set_rises_with_nprobe():
    rng = np.random.default_rng(0)
    # 20k points of 400 clusters whose noise makes neighbours straddle lists, so one probed
    # list is not enough and more lists must help (measured: 0.36, 0.64, 0.87, 0.985).
    x, _ = clustered(20_000, 64, 400, 0.7, rng)
    q, _ = clustered(300, 64, 400, 0.7, rng)
    ids = [f"q{i}" for i in range(300)]
    vids = [EXTERNAL_VIDEO_ID] * len(x)
    exact, _ = R.numpy_topk(x, q, 4)
    index = R.build_index(x, kind="ivf", nprobe=1, use_gpu=False, threads=1)  # default nlist = 2 sqrt(n) = 283
    assert R.index_params(index)["nlist"] == 283
    rec = {}
    for nprobe in (1, 4, 16, 64):
        R.set_nprobe(index, nprobe)
        idx, _ = R.retrieve_topk(index, q, 4, ids, vids, threads=1)
        rec[nprobe] = recall(idx, exact)
    assert rec[64] >= 0.95, rec
    assert rec[1] < rec[4] < rec[16] < rec[64], rec


# --------------------------------------------------------------------------- triplets of retrieved captions


def test_triplet_scope():
    assert triplet_scope("auto", []) == "all" and triplet_scope("auto", [{"path": "c.txt"}]) == "retrieved"
    assert triplet_scope("all", [{"path": "c.txt"}]) == "all"
    with pytest.raises(ValueError, match="triplets.scope"):
        triplet_scope("some", [])


def test_triplets_of_retrieved_captions_only_feed_training(repo, clip_ckpt, splits, tmp_path):
    path, _ = repo
    r = read_repository(path)
    n = len(r["caption"])
    vids = ["v1", "v2", "v3", "t1"]
    rng = np.random.default_rng(0)
    # Video features: a few repository embeddings, so the retrieved rows are known to be few.
    feats = tmp_path / "features.h5"
    with atomic_h5(feats) as f:
        write_strings(f, "video_ids", vids)
        f.create_dataset("frames", data=rng.standard_normal((4, 2, r["embeddings"].shape[1])).astype(np.float32))
        f.create_dataset("mean", data=r["embeddings"][[0, 2, 4, n - 1]])
    topk = tmp_path / "topk_k2.h5"
    run_retrieval(feats, path, topk, k=2, index_kind="flat")
    out = tmp_path / "triplets.h5"
    summary = run_triplets(path, out, DEMO_MODEL, str(clip_ckpt), topk_paths=[topk])
    rows = read_repository_index(out)
    retrieved = np.unique(read_topk_h5(topk)["indices"])
    np.testing.assert_array_equal(rows, retrieved)
    caps, _, emb, attrs = read_triplets_h5(out)
    assert caps == [r["caption"][i] for i in rows] and emb.shape[:2] == (len(rows), 3)
    assert summary["n_captions"] == len(rows) < n and attrs["scope"] == "retrieved"

    # every caption's triplets, the small-repository layout, for comparison
    full = tmp_path / "triplets_all.h5"
    run_triplets(path, full, DEMO_MODEL, str(clip_ckpt))
    assert read_repository_index(full) is None
    _, _, full_emb, _ = read_triplets_h5(full)
    np.testing.assert_allclose(emb, full_emb[rows], atol=1e-5)

    a = load_artifacts(feats, topk, out)
    b = load_artifacts(feats, topk, full)
    torch.testing.assert_close(a.video_inputs(vids)["triplets"], b.video_inputs(vids)["triplets"])
    a.check_repository(read_split([CaptionSource(splits["trainval"])]))  # training rows, then external ones

    # a top-K file retrieving a row the subset lacks is named
    other = tmp_path / "topk_other.h5"
    t = read_topk_h5(topk)
    missing = int(np.setdiff1d(np.arange(n), rows)[0])
    idx = t["indices"].copy()
    idx[1, 0] = missing
    R.write_topk_h5(other, t["video_ids"], idx, t["scores"], t["repo_captions"], t["repo_video_ids"])
    with pytest.raises(ArtifactError, match=rf"row {missing} for video 'v2'.*triplets\.h5 has no triplet"):
        load_artifacts(feats, other, out)


# --------------------------------------------------------------------------- workflow wiring


def test_workflow_passes_corpus_and_topk_to_the_commands(tmp_path, splits):
    from facenet_evc.config import load_dataset_config

    cfg = {
        "name": "big", "data": {"captions": {"trainval": [{"path": str(splits["trainval"])}],
                                             "test": [{"path": str(splits["test"])}]},
                                "lexicon": str(tmp_path)},
        "clip": {"model": DEMO_MODEL, "pretrained": "none"},
        "features": {"videos": str(tmp_path)},
        "retrieval": {"k": 2, "index": "ivf", "nprobe": 8,
                      "extra_captions": [{"path": str(splits["corpus"])}]},
    }
    cfg_path = tmp_path / "big.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    loaded = load_dataset_config(cfg_path)
    assert loaded["retrieval"]["extra_captions"][0]["column"] is None and loaded["triplets"]["scope"] == "auto"
    extra = tmp_path / "wf.yaml"
    extra.write_text(yaml.safe_dump({"datasets": {"big": str(cfg_path)}, "results_root": str(tmp_path / "res")}))
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([f"{bindir}/snakemake", "-n", "-p", "--configfile", str(extra), "--",
                        str(tmp_path / "res" / "big" / "triplets" / "triplets.h5")],
                       cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert f"--extra-captions {splits['corpus']} --extra-columns none --extra-seps auto" in out
    assert f"--exclude {splits['test']}" in out
    assert f"--topk {tmp_path}/res/big/retrieval/topk_k2.h5" in out
