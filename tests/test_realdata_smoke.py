"""Real EmVidCap-S captions and the official lexicon through the whole workflow, with
stand-in features written in EPAN's HDF5 format (one dataset per video id): exercises the
EPAN import, retrieval, triplets, a few training steps, prediction and the evaluation on
real text. The numbers mean nothing (random features, an untrained CLIP text encoder)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_real_captions_through_the_workflow(emvidcap, java, tmp_path):
    s = emvidcap / "EmVidCap-S"
    ids = sorted(set(pd.read_csv(s / "EmVideo_trainval_captions.csv")["VideoID"])
                 | set(pd.read_csv(s / "EmVideo_test_captions.csv")["VideoID"]))
    rng = np.random.default_rng(0)
    epan = tmp_path / "epan_clip_features.hdf5"
    with h5py.File(epan, "w") as f:  # EPAN layout: one (T, d) dataset per video id, T varies
        for vid in ids:
            f.create_dataset(vid, data=rng.standard_normal((int(rng.integers(20, 40)), 64)).astype(np.float32))
    cfg = {
        "name": "msvd_smoke",
        "data": {
            "captions": {"trainval": [{"path": str(s / "EmVideo_trainval_captions.csv"), "sep": ","}],
                         "test": [{"path": str(s / "EmVideo_test_captions.csv"), "sep": ","}]},
            "lexicon": str(emvidcap / "lexicon" / "categories"),
        },
        "clip": {"model": "demo-tiny-rn", "pretrained": None},
        "features": {"source": "epan", "epan": {"files": [str(epan)]}, "n_frames": 8},
        "model": {"d": 32, "n_heads": 2, "n_queries": 4, "decoder": "lstm",
                  "decoder_settings": {"hidden_size": 32, "embed_size": 32, "attn_size": 32}},
        "train": {"max_steps": 3, "val_every": 3, "ckpt_every": 3, "batch_size": 16, "threads": 1,
                  "device": "cpu", "num_beams": 2, "val_fraction": 0.05},
    }
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(cfg))
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"datasets": {"msvd_smoke": str(tmp_path / "ds.yaml")},
                                     "results_root": str(tmp_path / "results")}))
    target = tmp_path / "results" / "msvd_smoke" / "metrics.json"
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([f"{bindir}/snakemake", "--cores", "2", "--configfile", str(extra), "--", str(target)],
                       cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    metrics = json.loads(target.read_text())
    assert metrics["n_videos"] == 134
    preds = json.loads((target.parent / "predictions.json").read_text())
    assert len(preds) == 134 and all(isinstance(c, str) for c in preds.values())
    with h5py.File(target.parent / "features" / "clip_frames.h5") as f:
        assert f["frames"].shape == (len(ids), 8, 64)
    with h5py.File(target.parent / "triplets" / "triplets.h5") as f:
        assert f["embeddings"].shape[0] == 9462
