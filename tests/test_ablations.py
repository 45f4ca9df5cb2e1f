"""The ablation grid: overlays merge and validate like a dataset config, and the table."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from facenet_evc import ablations as A
from facenet_evc.cli import main
from facenet_evc.config import ConfigError, load_dataset_config
from facenet_evc.io import write_json

PROJECT = Path(__file__).resolve().parents[1]
GRID = PROJECT / "config" / "ablations.yaml"


@pytest.fixture(scope="module")
def demo_cfg() -> dict:
    return load_dataset_config(PROJECT / "config" / "demo.yaml", {"results_root": "results"})


def test_merge_replaces_decoder_settings_and_merges_other_mappings():
    base = {"model": {"d": 128, "decoder": "lstm", "decoder_settings": {"hidden_size": 256, "attn_size": 128}},
            "retrieval": {"k": 4, "nprobe": 16}}
    out = A.deep_merge(base, {"model": {"decoder": "transformer", "decoder_settings": {"num_layers": 2}},
                              "retrieval": {"k": 1}})
    assert out["model"] == {"d": 128, "decoder": "transformer", "decoder_settings": {"num_layers": 2}}
    assert out["retrieval"] == {"k": 1, "nprobe": 16}
    assert base["retrieval"]["k"] == 4  # the base is not modified


def test_every_shipped_variant_is_a_valid_demo_config(demo_cfg):
    grid = A.load_grid(GRID)
    for name, overlay in A.overlays(grid, demo_cfg).items():
        cfg = A.variant_config(demo_cfg, overlay, name)
        assert cfg["_variant"] == name
        # a variant changes only what its overlay names
        for section in ("data", "clip", "features", "train"):
            if section not in overlay:
                assert cfg[section] == demo_cfg[section], (name, section)
    assert A.variant_config(demo_cfg, {"retrieval": {"k": 1}}, "k1")["retrieval"]["k"] == 1


def test_a_bad_overlay_is_an_error_naming_the_variant_and_key(demo_cfg):
    with pytest.raises(ConfigError, match=r"variant 'oops'.*model\.use_fcu.*unknown key"):
        A.variant_config(demo_cfg, {"model": {"use_fcu": False}}, "oops")
    with pytest.raises(ConfigError, match=r"variant 'k0'.*retrieval\.k"):
        A.variant_config(demo_cfg, {"retrieval": {"k": 0}}, "k0")


def test_selected_variants_default_skips_llms_and_checks_names(demo_cfg):
    grid = A.load_grid(GRID)
    demo_cfg = {**demo_cfg, "ablations": {**demo_cfg["ablations"], "variants": None, "overlays": {}}}  # every variant
    names = A.selected_variants(grid, demo_cfg)
    assert names[0] == "full" and "t5" not in names and "opt" not in names
    assert {"base", "re", "re_fc", "re_fc_ea", "k1", "k5", "no_refine", "emotion_first", "lstm"} <= set(names)
    # the demo already decodes with the Transformer and reads the motion token: those variants
    # are the full run, not re-trained
    assert "transformer" not in names and "motion_token" not in names and "no_motion_token" in names
    assert sorted(A.same_as_full(grid, demo_cfg)) == ["motion_token", "transformer"]
    picked = {**demo_cfg, "ablations": {"variants": ["k1", "t5"], "overlays": {}}}
    assert A.selected_variants(grid, picked) == ["full", "k1", "t5"]
    with pytest.raises(ValueError, match="unknown.*'k9'"):
        A.selected_variants(grid, {**demo_cfg, "ablations": {"variants": ["k9"], "overlays": {}}})


def test_grid_tables_must_name_known_variants(tmp_path):
    bad = tmp_path / "grid.yaml"
    bad.write_text("variants: {k1: {retrieval: {k: 1}}}\ntables: [{title: T, rows: {k2: 'K = 2'}}]\n")
    with pytest.raises(ValueError, match="'k2', which is not under variants"):
        A.load_grid(bad)


def _metrics(x: float) -> dict:
    return {c: x for c in A.COLUMNS}


def test_table_cli_writes_paper_ordered_md_and_csv(tmp_path, capsys):
    paths = {}
    for name, x in {"full": 0.5, "k1": 0.4, "k5": 0.45, "base": 0.3}.items():
        paths[name] = tmp_path / f"{name}.json"
        write_json(paths[name], {**_metrics(x), "n_videos": 3})
    md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    rc = main(["ablation-table", "--grid", str(GRID), "--metrics", *(f"{k}={v}" for k, v in paths.items()),
               "--out-md", str(md), "--out-csv", str(out_csv)])
    assert rc == 0
    text = md.read_text()
    # Table 3's rows in the paper's order, the best (full, 50.0) in bold
    t3 = text[text.index("## Table 3"):]
    assert t3.index("K = 1") < t3.index("K = 4 (full)") < t3.index("K = 5")
    assert "| K = 4 (full) (`full`) | **50.0** |" in t3
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [r["variant"] for r in rows if r["table"].startswith("Table 3")] == ["k1", "full", "k5"]
    assert float(rows[0]["CIDEr"]) == pytest.approx(0.3)  # Fig. 3 comes first: base
    assert list(rows[0])[3:] == A.HEADERS
    capsys.readouterr()


def test_table_cli_rejects_a_malformed_metrics_argument(tmp_path, capsys):
    rc = main(["ablation-table", "--grid", str(GRID), "--metrics", "full", "--out-md", str(tmp_path / "t.md"),
               "--out-csv", str(tmp_path / "t.csv")])
    assert rc == 2 and "expected NAME=PATH" in capsys.readouterr().err
    assert not (tmp_path / "t.md").exists()
