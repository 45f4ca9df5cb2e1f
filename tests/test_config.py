"""Config validation against the JSON schemas, and the Snakemake workflow's DAG."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facenet_evc.config import ConfigError, load_dataset_config, load_workflow_config, require_paths

PROJECT = Path(__file__).resolve().parents[1]


def write(tmp_path, obj, name="ds.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj))
    return p


BASE = {"name": "toy", "data": {"captions": {"trainval": [{"path": "{emvidcap_root}/a.csv"}],
                                             "test": [{"path": "{emvidcap_root}/b.csv", "sep": ","}]},
                                "lexicon": "{emvidcap_root}/lex"}}


def test_defaults_and_placeholders(tmp_path):
    cfg = load_dataset_config(write(tmp_path, BASE), {"emvidcap_root": "/data/e", "results_root": "r"})
    assert cfg["data"]["captions"]["trainval"][0]["path"] == "/data/e/a.csv"
    assert cfg["text"]["max_caption_len"] == 15
    assert cfg["bias"]["t1"] == pytest.approx(1 / 6)
    assert cfg["data"]["msvd"] is None


def test_unknown_key_is_named(tmp_path):
    bad = {**BASE, "text": {"max_caption_length": 15}}
    with pytest.raises(ConfigError, match=r"ds\.yaml: text\.max_caption_length: unknown key \(allowed here: max_caption_len\)"):
        load_dataset_config(write(tmp_path, bad), {"emvidcap_root": "x"})


def test_wrong_type_is_named(tmp_path):
    bad = {**BASE, "text": {"max_caption_len": "fifteen"}}
    with pytest.raises(ConfigError, match=r"text\.max_caption_len: 'fifteen' is not of type 'integer'"):
        load_dataset_config(write(tmp_path, bad), {"emvidcap_root": "x"})


def test_bad_separator_is_named(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(BASE))
    bad["data"]["captions"]["test"][0]["sep"] = ";"
    with pytest.raises(ConfigError, match=r"data\.captions\.test\[0\]\.sep: ';' is not one of"):
        load_dataset_config(write(tmp_path, bad), {"emvidcap_root": "x"})


def test_unknown_placeholder_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.captions\.test\[0\]\.path: unknown placeholder \{emvidcap_root\}"):
        load_dataset_config(write(tmp_path, BASE), {})


def test_missing_path_is_named(tmp_path):
    (tmp_path / "a.csv").write_text("VideoID,EmCaptions\n")
    cfg = load_dataset_config(write(tmp_path, BASE), {"emvidcap_root": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"data\.captions\.test\[0\]\.path: path '.*b\.csv' does not exist"):
        require_paths(cfg, ["data.captions", "data.lexicon"])


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "ds.yaml"
    p.write_text("name: toy\ndata: [unclosed\n")
    with pytest.raises(ConfigError, match=r"ds\.yaml:\d+: invalid YAML"):
        load_dataset_config(p)


def test_extends_merges_over_the_base_and_names_bad_chains(tmp_path):
    write(tmp_path, {**BASE, "model": {"d": 64, "decoder": "lstm", "decoder_settings": {"hidden_size": 32}}}, "base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "name": "child",
                             "model": {"delta": 2.0, "decoder": "transformer", "decoder_settings": {"num_layers": 2}}},
                  "child.yaml")
    cfg = load_dataset_config(child, {"emvidcap_root": "/e"})
    assert cfg["name"] == "child" and cfg["model"]["d"] == 64 and cfg["model"]["delta"] == 2.0
    assert cfg["model"]["decoder_settings"] == {"num_layers": 2}  # replaced whole, not merged
    assert cfg["data"]["lexicon"] == "/e/lex"
    write(tmp_path, {"extends": "loop.yaml", "name": "loop"}, "loop.yaml")
    with pytest.raises(ConfigError, match="cycle"):
        load_dataset_config(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_dataset_config(write(tmp_path, {"extends": "missing.yaml", "name": "x"}, "x.yaml"))


@pytest.mark.parametrize("name", ["demo", "demo_clip1", "evc_msvd", "evc_ve", "evc_combine"])
def test_shipped_configs_validate(name):
    wf = load_workflow_config(PROJECT / "config" / "config.yaml")
    cfg = load_dataset_config(PROJECT / wf["datasets"][name], wf)
    assert cfg["name"] == name


def snakemake(*args, cwd=PROJECT):
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_dry_run_real_dataset_dag(emvidcap, tmp_path):
    r = snakemake("-n", "--config", f"emvidcap_root={emvidcap}", f"results_root={tmp_path}", "--",
                  f"{tmp_path}/evc_combine/bias_stats.json", f"{tmp_path}/evc_combine/baselines/human/metrics.json")
    assert r.returncode == 0, r.stderr + r.stdout
    for rule in ("bias_stats", "human_baseline", "evaluate"):
        assert f"rule {rule}:" in r.stdout


def test_missing_user_data_is_named_by_the_workflow(tmp_path):
    r = snakemake("-n", "--config", f"emvidcap_root={tmp_path}/nowhere", f"results_root={tmp_path}", "--",
                  f"{tmp_path}/evc_msvd/bias_stats.json")
    assert r.returncode != 0
    assert "config/evc_msvd.yaml: data.captions.trainval[0].path" in r.stdout + r.stderr


def test_unknown_workflow_key_rejected(tmp_path):
    r = snakemake("-n", "--config", "emvidcap_rot=x")
    assert r.returncode != 0
    assert "emvidcap_rot" in r.stdout + r.stderr


def test_validate_config_prints_the_headline_settings(tmp_path):
    """The real datasets default to the paper's headline: FLAN-T5 XL + LoRA r 16 / alpha 32, bf16,
    GloVe 300-d, d 300, 32 queries, K 4, and each dataset's delta / lambda (Sec. 4.1)."""
    paper = {"evc_msvd": (0.1, 1.0, 0.1), "evc_ve": (0.2, 1.0, 0.5), "evc_combine": (0.1, 1.0, 0.2)}
    roots = [f"--var={k}=/u/{k}" for k in ("emvidcap_root", "videos_root", "features_root", "weights_root")]
    for name, (delta, lambda_e, lambda_cls) in paper.items():
        r = subprocess.run([sys.executable, "-m", "facenet_evc", "validate-config", "--config",
                            str(PROJECT / "config" / f"{name}.yaml"), *roots],
                           capture_output=True, text=True, timeout=120, cwd=PROJECT)
        assert r.returncode == 0, r.stderr
        cfg = json.loads(r.stdout)  # stdout stays the validated JSON
        model, settings = cfg["model"], cfg["model"]["decoder_settings"]
        assert (model["decoder"], settings["pretrained"], settings["lora_r"], settings["lora_alpha"]) == \
            ("t5", "google/flan-t5-xl", 16, 32)
        assert settings["dtype"] == "bfloat16" and settings["lora_target_modules"] == "all-linear"
        assert (model["d"], model["n_queries"], cfg["retrieval"]["k"]) == (300, 32, 4)
        assert (model["delta"], model["lambda_e"], model["lambda_cls"]) == (delta, lambda_e, lambda_cls)
        assert cfg["emotion"]["glove"] == "/u/weights_root/glove.6B.300d.txt"
        assert cfg["train"]["max_len"] == 15 and cfg["train"]["num_beams"] == 5 and cfg["train"]["refit"] is False
        summary = r.stderr
        assert f"{name}: decoder t5 google/flan-t5-xl + LoRA r 16, alpha 32" in summary
        assert "weights bfloat16, bf16 autocast on CUDA" in summary
        assert f"d 300, queries 32, K 4, delta {delta}, lambda_e {lambda_e}, lambda_cls {lambda_cls}" in summary
        assert "GloVe /u/weights_root/glove.6B.300d.txt" in summary and "captions 15 words, beam 5" in summary


def test_dry_run_trains_flan_t5_xl(emvidcap, tmp_path):
    """`snakemake -n results/evc_combine/metrics.json` with a user's paths trains FLAN-T5 XL."""
    (tmp_path / "videos" / "evc_combine").mkdir(parents=True)
    r = snakemake("-n", "-p", "--config", f"emvidcap_root={emvidcap}", f"videos_root={tmp_path}/videos",
                  f"weights_root={tmp_path}/weights", f"results_root={tmp_path}/results", "--",
                  f"{tmp_path}/results/evc_combine/metrics.json")
    assert r.returncode == 0, r.stderr + r.stdout
    log = r.stdout + r.stderr
    train_cmd = next(line for line in log.splitlines() if "facenet-evc train " in line)
    assert '"decoder": "t5"' in train_cmd and '"pretrained": "google/flan-t5-xl"' in train_cmd
    assert '"lora_r": 16' in train_cmd and '"lora_alpha": 32' in train_cmd
    assert f"--glove {tmp_path}/weights/glove.6B.300d.txt" in log
    assert f"--checkpoint {tmp_path}/results/evc_combine/train/best" in log
