"""`facenet-evc metrics-table`: runs side by side in the paper's column order."""
from __future__ import annotations

import pytest

from facenet_evc.ablations import COLUMNS
from facenet_evc.cli import main
from facenet_evc.io import write_json


def test_rows_in_given_order_values_x100(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(a, {**{c: 0.5 for c in COLUMNS}, "CIDEr": 1.234, "n_videos": 60})
    write_json(b, {**{c: 0.25 for c in COLUMNS}, "n_videos": 60})
    out = tmp_path / "m.md"
    assert main(["metrics-table", "--metrics", f"FACE-net={a}", f"top-1 retrieved={b}", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    header = lines[2].split("|")
    assert [h.strip() for h in header[2:5]] == ["Acc_sw", "Acc_c", "BLEU-1"]
    assert lines[4].startswith("| FACE-net | 50.0 | 50.0 |") and "| 123.4 |" in lines[4]
    assert lines[5].startswith("| top-1 retrieved | 25.0 |")
    capsys.readouterr()


def test_missing_metric_names_the_run(tmp_path, capsys):
    a = tmp_path / "a.json"
    write_json(a, {"CIDEr": 0.1})
    assert main(["metrics-table", "--metrics", f"x={a}", "--out", str(tmp_path / "m.md")]) == 2
    assert "metrics of 'x': missing" in capsys.readouterr().err
    assert not (tmp_path / "m.md").exists()
