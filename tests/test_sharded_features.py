"""Sharded feature extraction (features.shards): N shard jobs + a merge give exactly the file
one `extract-features` job writes, and the workflow's DAG scatters only when asked to."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from facenet_evc.cli import main
from facenet_evc.data.demo import make_demo
from facenet_evc.data.emvidcap import video_ids_in_files
from facenet_evc.stages.clip_model import (
    DEMO_MODEL,
    TemporalHead,
    embed_dim,
    load_clip,
    temporal_head_path,
    temporal_head_state,
)
from facenet_evc.stages.feature_shards import merge_feature_shards, parse_shard, shard_ids, shard_rows

PROJECT = Path(__file__).resolve().parents[1]
N_SHARDS = 3
BATCH = 3  # 12 videos -> 4 batches -> shards of 1, 1 and 2 batches (uneven on purpose)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 12-video demo, a random-init tiny CLIP with a non-trivial temporal head, and its
    features extracted once in one job and once in 3 shards (CLI, as the rules call it)."""
    tmp = tmp_path_factory.mktemp("shards")
    demo = tmp / "demo"
    make_demo(demo, n_videos=12, seed=5, n_frames=8)
    torch.manual_seed(0)
    model, _, _ = load_clip(DEMO_MODEL, None)
    ckpt = tmp / "clip.pt"
    torch.save(model.state_dict(), ckpt)
    head = TemporalHead(embed_dim(model), hidden=8)
    torch.nn.init.normal_(head.proj[-1].weight)  # else the head is exactly the mean
    torch.save(temporal_head_state(head), temporal_head_path(ckpt))
    # test before trainval: the written order is caption-file order, not sorted
    captions = [str(demo / "captions" / "EmVideo_test_captions.csv"),
                str(demo / "captions" / "EmVideo_trainval_captions.csv")]
    common = ["--videos", str(demo / "videos"), "--captions", *captions, "--model", DEMO_MODEL,
              "--pretrained", str(ckpt), "--n-frames", "4", "--batch-size", str(BATCH), "--num-workers", "0",
              "--threads", "1"]
    single = tmp / "single.h5"
    assert main(["extract-features", *common, "--out", str(single)]) == 0
    shards = [tmp / "shards" / f"clip_frames.{i}-of-{N_SHARDS}.h5" for i in range(N_SHARDS)]
    for i, out in enumerate(shards):
        assert main(["extract-features", *common, "--shard", f"{i}/{N_SHARDS}", "--out", str(out)]) == 0
    merged = tmp / "merged.h5"
    order = shards[:]
    random.Random(1).shuffle(order)  # the merge places shards by their index, not argument order
    assert main(["merge-features", "--shards", *map(str, order), "--captions", *captions, "--out", str(merged)]) == 0
    return {"tmp": tmp, "single": single, "merged": merged, "shards": shards, "captions": captions,
            "common": common}


def _contents(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        out["attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        for k, ds in f.items():
            out[k] = (ds[()], ds.dtype, ds.chunks)
    return out


def test_merged_shards_equal_a_single_job(extracted: dict) -> None:
    a, b = _contents(extracted["single"]), _contents(extracted["merged"])
    assert set(a) == set(b) == {"attrs", "video_ids", "frames", "mean", "video_embed"}
    assert a["attrs"] == b["attrs"]
    assert not {"shard_index", "n_shards", "shard_rows"} & set(b["attrs"])
    ids = [s.decode() for s in a["video_ids"][0]]
    assert [s.decode() for s in b["video_ids"][0]] == ids == video_ids_in_files(extracted["captions"])
    assert ids != sorted(ids)  # the order is the caption files', and it survived the merge
    for k in ("frames", "mean", "video_embed"):
        (xa, ta, ca), (xb, tb, cb) = a[k], b[k]
        assert ta == tb and ca == cb and xa.shape == xb.shape, k
        assert xa.tobytes() == xb.tobytes(), k  # bit-identical, not merely close
    assert a["frames"][0].shape == (12, 4, a["mean"][0].shape[1])
    assert not np.allclose(a["video_embed"][0], a["mean"][0])  # the head was used, so both were compared


def test_shards_hold_contiguous_whole_batches(extracted: dict) -> None:
    ids = video_ids_in_files(extracted["captions"])
    sizes = []
    for i, path in enumerate(extracted["shards"]):
        with h5py.File(path, "r") as f:
            got = [s.decode() for s in f["video_ids"][()]]
            assert int(f.attrs["shard_index"]) == i and int(f.attrs["n_shards"]) == N_SHARDS
        assert got == shard_ids(ids, BATCH, i, N_SHARDS)
        sizes.append(len(got))
    assert sizes == [3, 3, 6]


@pytest.mark.parametrize("n,batch,count", [(12, 3, 3), (40, 8, 2), (1000, 16, 7), (5, 1, 5), (17, 4, 5), (9, 10, 1)])
def test_shard_rows_tile_the_single_jobs_batches(n: int, batch: int, count: int) -> None:
    rows = [shard_rows(n, batch, i, count) for i in range(count)]
    assert rows[0][0] == 0 and rows[-1][1] == n
    assert all(hi == lo2 for (_, hi), (lo2, _) in zip(rows, rows[1:]))  # contiguous, in order
    assert all(hi > lo for lo, hi in rows)  # none empty
    assert all(lo % batch == 0 for lo, _ in rows)  # a batch is never cut
    assert rows == [shard_rows(n, batch, i, count) for i in range(count)]  # deterministic


def test_too_many_shards_and_bad_specs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"use at most 2 shards \(features.shards\)"):
        shard_rows(12, 8, 0, 3)
    with pytest.raises(ValueError, match="INDEX/COUNT"):
        parse_shard("1-of-3")
    with pytest.raises(ValueError, match="0..COUNT-1"):
        parse_shard("3/3")
    assert parse_shard(" 2/5 ") == (2, 5)


def test_cli_rejects_a_shard_index_out_of_range(extracted: dict, capsys: pytest.CaptureFixture) -> None:
    out = extracted["tmp"] / "bad.h5"
    assert main(["extract-features", *extracted["common"], "--shard", "4/4", "--out", str(out)]) == 2
    assert "--shard 4/4" in capsys.readouterr().err
    assert main(["extract-features", *extracted["common"], "--shard", "0/5", "--out", str(out)]) == 2
    assert "features.shards" in capsys.readouterr().err
    assert not out.exists()


def test_merge_rejects_missing_repeated_and_foreign_shards(extracted: dict) -> None:
    s0, s1, s2 = extracted["shards"]
    out = extracted["tmp"] / "never.h5"
    with pytest.raises(ValueError, match=r"missing shard\(s\) 1"):
        merge_feature_shards([s0, s2], out)
    with pytest.raises(ValueError, match="given twice"):
        merge_feature_shards([s0, s1, s1, s2], out)
    with pytest.raises(ValueError, match="not a feature shard"):
        merge_feature_shards([extracted["single"]], out)
    foreign = extracted["tmp"] / "foreign.h5"
    foreign.write_bytes(s1.read_bytes())
    with h5py.File(foreign, "a") as f:
        f.attrs["checkpoint_sha256"] = "0" * 64  # a shard made with another CLIP
    with pytest.raises(ValueError, match=r"foreign\.h5: attr 'checkpoint_sha256'.*different extractions"):
        merge_feature_shards([s0, foreign, s2], out)
    ids = video_ids_in_files(extracted["captions"])
    with pytest.raises(ValueError, match="differ from the caption files'"):
        merge_feature_shards([s0, s1, s2], out, expected_ids=sorted(ids))
    assert not out.exists()


def _dry_run(tmp: Path, shards: int) -> str:
    cfg = yaml.safe_load((PROJECT / "tests" / "data" / "demo_small.yaml").read_text())
    cfg["features"]["shards"] = shards
    (tmp / f"ds{shards}.yaml").write_text(yaml.safe_dump(cfg))
    extra = tmp / f"extra{shards}.yaml"
    extra.write_text(yaml.safe_dump({"datasets": {"demo_small": str(tmp / f"ds{shards}.yaml")},
                                     "results_root": str(tmp / "results")}))
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([f"{bindir}/snakemake", "-n", "-p", "--configfile", str(extra), "--",
                        str(tmp / "results" / "demo_small" / "features" / "clip_frames.h5")],
                       cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def test_workflow_scatters_only_when_asked(tmp_path: Path) -> None:
    one = _dry_run(tmp_path, 1)
    assert "rule clip_features:" in one and "clip_features_shard" not in one
    assert "extract-features" in one and "merge-features" not in one
    three = _dry_run(tmp_path, 3)
    assert three.count("rule clip_features_shard:") == 3 and "rule clip_features:" in three
    for i in range(3):
        assert f"clip_frames.{i}-of-3.h5" in three and f"--shard {i}/3" in three
    assert "merge-features --shards" in three
