"""The Snakemake workflow end to end on a reduced demo: every stage runs for real, a rerun
does nothing, and a retrieval-only change re-runs retrieval and what follows only."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# The reduced demo (40 videos, 2 feature shards), shared with .ci/slurm_test.sh.
SMALL = yaml.safe_load((PROJECT / "tests" / "data" / "demo_small.yaml").read_text())


def snakemake(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess:
    """The environment's snakemake, run as a user who did not activate it: its bin is not on the PATH
    (the rules find `facenet-evc` beside the interpreter that runs Snakemake)."""
    bindir = Path(sys.executable).parent
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != bindir)
    return subprocess.run([str(bindir / "snakemake"), *args], cwd=cwd, env={**os.environ, "PATH": path},
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wf")
    cfg = tmp / "demo_small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    extra = tmp / "extra.yaml"
    extra.write_text(yaml.safe_dump({"datasets": {"demo_small": str(cfg)}, "results_root": str(tmp / "results")}))
    return tmp, extra, cfg


@pytest.fixture(scope="module")
def demo_run(workflow):
    """The reduced demo run once for the module; every test that needs its outputs asks for it."""
    tmp, extra, _ = workflow
    r = snakemake("--cores", "2", "--configfile", str(extra), "--", *targets(tmp))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return workflow


def targets(tmp: Path) -> list[str]:
    # A 6-step model on 8 test videos may make the official Acc_c undefined: demo_small.yaml
    # sets evaluation.on_undefined: null, so metrics.json then holds null and the reason.
    r = tmp / "results" / "demo_small"
    return [str(r / "metrics.json"), str(r / "baselines" / "retrieval" / "metrics.json")]


def test_reduced_demo_end_to_end(demo_run):
    tmp, extra, _ = demo_run
    base = tmp / "results" / "demo_small"
    refs = json.loads((base / "references" / "test.json").read_text())
    m = json.loads((base / "baselines" / "retrieval" / "metrics.json").read_text())
    assert {"Bleu_4", "METEOR", "CIDEr", "Acc_sw", "Acc_c", "BFS", "CFS"} <= set(m)
    assert m["n_videos"] == len(refs)
    preds = json.loads((base / "predictions.json").read_text())
    assert set(preds) == set(refs) and all(isinstance(c, str) for c in preds.values())
    fm = json.loads((base / "metrics.json").read_text())
    assert fm["n_videos"] == len(refs) and fm["CIDEr"] is not None
    assert (fm["Acc_c"] is None) == ("undefined" in fm)
    with h5py.File(base / "features" / "clip_frames.h5") as f:
        assert f["frames"].shape[1] == 4 and f["mean"].shape[0] == f["frames"].shape[0]
        assert f.attrs["model_name"] == "demo-tiny-rn"
    with h5py.File(base / "retrieval" / "topk_k2.h5") as f:
        assert f["indices"].shape[1] == 2
    with h5py.File(base / "triplets" / "triplets.h5") as f:
        assert f["embeddings"].shape[1] == 3
    for rule in ("make_demo", "clip_pretrain", "clip_features.0-of-2", "clip_features.1-of-2", "clip_features",
                 "repository", "retrieval_k2", "triplets", "lexicon_embeddings", "train", "predict"):
        assert (base / "benchmarks" / f"{rule}.tsv").is_file(), rule
        assert (base / "logs" / f"{rule}.log").is_file(), rule
    assert not list((base / "features" / "shards").glob("*.h5"))  # temp(): gone once merged

    # a second run has nothing to do
    again = snakemake("-n", "--configfile", str(extra), "--", *targets(tmp))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def check_browse_and_logs(base: Path, extra: Path, tmp: Path) -> None:
    """The results browser of a finished run, its place in the report, TensorBoard events, clean logs."""
    from facenet_evc.training.tensorboard_log import read_scalars

    r = snakemake("--cores", "2", "--configfile", str(extra), "--", str(base / "browse"))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    text = (base / "browse" / "data.js").read_text(encoding="utf-8")
    data = json.loads(text[text.index("{"):].rstrip().rstrip(";"))
    refs = json.loads((base / "references" / "test.json").read_text())
    videos = data["videos"]
    assert [v["id"] for v in videos] == sorted(refs) and data["runs"] == ["facenet", "retrieval_baseline"]
    assert all(len(v["retrieved"]) == 2 and len(v["alpha"]) == 2 and len(v["g"]) == 2 for v in videos)
    assert all(v["thumb"] and (base / "browse" / v["thumb"]).is_file() for v in videos)
    assert sum(bool(v["figure"]) for v in videos) == 4  # analysis.explain_videos
    preds = json.loads((base / "predictions.json").read_text())
    assert [row[0] for row in data["results"]["facenet"]] == [preds[v["id"]] for v in videos]
    # snakemake --report embeds the page with its data and thumbnails
    rep = snakemake("--configfile", str(extra), "--report", str(tmp / "report.zip"), "--", str(base / "browse"))
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(tmp / "report.zip").namelist()
    assert any(n.endswith("/index.html") for n in names) and any(n.endswith("/data.js") for n in names)
    # TensorBoard events of the 6-step run, and no carriage-return progress floods in any log
    assert [s for s, _ in read_scalars(base / "train" / "tensorboard")["loss/total"]] == list(range(1, 7))
    logs = list((base / "logs").rglob("*.log"))
    assert len(logs) > 10
    for path in logs:
        assert "\r" not in path.read_text(encoding="utf-8", errors="replace"), path


def test_browse_page_report_and_logs(demo_run):
    tmp, extra, _ = demo_run
    base = tmp / "results" / "demo_small"
    check_browse_and_logs(base, extra, tmp)


def test_retrieval_change_reruns_only_downstream(demo_run):
    tmp, extra, cfg = demo_run
    changed = yaml.safe_load(cfg.read_text())
    changed["retrieval"]["nprobe"] = 8  # a retrieval-only setting (the default is 4)
    cfg2 = tmp / "demo_small_changed.yaml"
    cfg2.write_text(yaml.safe_dump(changed))
    extra2 = tmp / "extra2.yaml"
    extra2.write_text(yaml.safe_dump({"datasets": {"demo_small": str(cfg2)}, "results_root": str(tmp / "results")}))
    r = snakemake("-n", "--configfile", str(extra2), "--", *targets(tmp))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "rule retrieval:" in out and "rule train:" in out and "rule predict:" in out
    for upstream in ("clip_pretrain", "clip_features", "repository", "triplets", "make_demo"):
        assert f"rule {upstream}:" not in out, upstream


@pytest.mark.parametrize(
    "section, key, reruns, kept",
    [
        ("train", "max_steps", ["train", "predict"], ["clip_features", "retrieval", "triplets"]),
        ("features", "batch_size", ["clip_features", "retrieval", "train"], ["clip_pretrain", "make_demo"]),
    ],
)
def test_setting_change_reruns_its_stage(demo_run, section, key, reruns, kept):
    """A changed setting re-runs its stage even where the rule also reads {threads}: params functions
    that take `threads` are evaluated late and Snakemake does not record them (train.max_steps once
    changed nothing)."""
    tmp, _, cfg = demo_run
    changed = yaml.safe_load(cfg.read_text())
    changed.setdefault(section, {})
    changed[section][key] = int(changed[section].get(key) or 1) + 1
    cfg2 = tmp / f"demo_small_{section}.yaml"
    cfg2.write_text(yaml.safe_dump(changed))
    extra2 = tmp / f"extra_{section}.yaml"
    extra2.write_text(yaml.safe_dump({"datasets": {"demo_small": str(cfg2)}, "results_root": str(tmp / "results")}))
    r = snakemake("-n", "--configfile", str(extra2), "--", *targets(tmp))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    for rule in reruns:
        assert f"rule {rule}:" in out, rule
    for rule in kept:
        assert f"rule {rule}:" not in out, rule


def test_pretraining_pool_gets_its_emotion_share(workflow):
    """clip.pretrain.pool_emotion_share reaches make-demo for the pool only (a dry run, nothing trained)."""
    tmp, _, cfg = workflow
    commands = {}
    for share in (None, 0.4):
        pooled = yaml.safe_load(cfg.read_text())
        pooled["name"] = "demo_pool"
        pooled["clip"]["pretrain"].update(pool_videos=12, pool_emotion_share=share)
        cfg_p = tmp / f"demo_pool_{share}.yaml"
        cfg_p.write_text(yaml.safe_dump(pooled).replace("demo_small", "demo_pool"))
        extra_p = tmp / f"extra_pool_{share}.yaml"
        extra_p.write_text(yaml.safe_dump({"datasets": {"demo_pool": str(cfg_p)}, "results_root": str(tmp / "pool")}))
        r = snakemake("-n", "-p", "--configfile", str(extra_p), "--", str(tmp / "pool" / "demo_pool" / "clip" / "clip.pt"))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        commands[share] = [line for line in r.stdout.splitlines() if "facenet-evc make-demo" in line]
    assert len(commands[0.4]) == 2 and len(commands[None]) == 2  # the captioning data and the pool
    pool = [c for c in commands[0.4] if "/clip/pool" in c]
    assert len(pool) == 1 and "--emotion-share 0.4" in pool[0]
    assert not any("--emotion-share" in c for c in commands[None] + [c for c in commands[0.4] if c not in pool])


def test_ablation_variants_rerun_only_what_they_change(demo_run):
    """A model overlay re-trains only; a K overlay also re-retrieves; cached stages are shared."""
    tmp, extra, _ = demo_run
    r = tmp / "results" / "demo_small"

    def jobs(target: str) -> set[str]:
        out = snakemake("-n", "--configfile", str(extra), "--", str(r / target))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return {line.split()[-1].rstrip(":") for line in (out.stdout + out.stderr).splitlines()
                if line.startswith(("rule ", "localrule "))}

    assert jobs("ablations/re_fc_ea/metrics.json") == {"train", "predict", "evaluate"}
    assert jobs("ablations/k1/metrics.json") == {"retrieval", "train", "predict", "evaluate"}


def test_inspect_prints_an_artifact(demo_run, capsys):
    from facenet_evc.cli import main

    tmp, _, _ = demo_run
    path = tmp / "results" / "demo_small" / "retrieval" / "topk_k2.h5"
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "indices" in out and "repository/" in out


def test_compare_runs_names_the_stages_that_differ(demo_run, tmp_path):
    """bench/compare_runs.py (the report of bench/cpu_isa_repro.sh): a run against itself is
    identical at every stage; a copy with one frame value and one caption changed differs there."""
    tmp, _, _ = demo_run
    base = tmp / "results" / "demo_small"
    script = [sys.executable, str(PROJECT / "bench" / "compare_runs.py")]
    same = subprocess.run([*script, str(base), str(base)], capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stderr
    assert "max |diff|" not in same.stdout and "differ (" not in same.stdout
    assert "0 of 8 test captions differ" in same.stdout
    assert "tensors identical" in same.stdout and "log.csv: " in same.stdout and "identical" in same.stdout

    copy = tmp_path / "demo_small"
    shutil.copytree(base, copy)
    with h5py.File(copy / "features" / "clip_frames.h5", "r+") as f:
        f["frames"][0, 0, 0] += 0.5
    preds = json.loads((copy / "predictions.json").read_text())
    first = sorted(preds)[0]
    preds[first] = preds[first] + " again"
    (copy / "predictions.json").write_text(json.dumps(preds))
    diff = subprocess.run([*script, str(base), str(copy)], capture_output=True, text=True, timeout=300)
    assert diff.returncode == 0, diff.stderr
    frames = next(line for line in diff.stdout.splitlines() if line.strip().startswith("frames "))
    assert "max |diff| 0.5" in frames
    assert "1 of 8 test captions differ" in diff.stdout
    assert "mean (" in diff.stdout and "video_embed" in diff.stdout


def test_demo_probe_reads_the_trained_encoder(demo_run):
    """bench/demo_probe.py --model: a probe per attribute on the frames and on FACE-net's memory."""
    tmp, _, _ = demo_run
    base = tmp / "results" / "demo_small"
    r = subprocess.run([sys.executable, str(PROJECT / "bench" / "demo_probe.py"), str(base),
                        "--model", str(base / "train" / "last")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if "FACE-net memory" in line]
    assert [line.split()[0] for line in lines] == ["emotion", "action", "shape", "colour"]
    # the right-action share of the run's captions and the retrieval baseline's, checked by hand
    sys.path.insert(0, str(PROJECT / "bench"))
    try:
        from demo_probe import named_action
    finally:
        sys.path.remove(str(PROJECT / "bench"))
    assert named_action("a red ball is rolling to the left happily") == "moves_left"
    assert named_action("a red ball bounces up and down") == "bounces" and named_action("a red ball") is None
    scenes = json.loads((base / "data" / "scenes.json").read_text())["videos"]
    for f in (base / "predictions.json", base / "baselines" / "retrieval" / "predictions.json"):
        preds = json.loads(f.read_text())
        right = sum(named_action(c) == scenes[v]["action"] for v, c in preds.items())
        assert f"{f}: the caption names the video's action for {100 * right / len(preds):.1f}% of {len(preds)}" \
            in r.stdout
