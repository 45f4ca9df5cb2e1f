"""Metrics per F-E bias group: a designed split whose classes and emotion metrics are counted
by hand, Acc_c undefined in one group, and the `bias-groups` command."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from facenet_evc.analysis.bias_groups import bias_group_report, group_metrics, parse_labelled, video_groups
from facenet_evc.cli import main
from facenet_evc.data.emvidcap import CaptionSource, read_split
from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.evaluation import evaluate

LEXICON = {"joy": ["happy", "happily"], "sadness": ["sad", "sadly"]}
# Rule 1, video_majority / inclusive: emotion-word ratio >= 1/6 emotional, <= 1/10 factual
CAPTIONS = {
    "ve": ["a happy dog runs", "the sad cat sleeps"],  # 1/4, 1/4: emotional
    "vn": ["a happy man walks in the park today", "a sad woman sits on the old bench"],  # 1/8, 1/8: neutral
    "vt": ["a happy dog", "a dog runs"],  # emotional + factual: a tie, neutral
    "vf": ["a man rides a bike down the long road", "a boy throws a red ball"],  # 0, 0: factual
    "vf2": ["a happy man drives a car on a long wet street today", "two people talk"],  # 1/11, 0: factual
}
PREDICTIONS = {
    "ve": "a happy dog runs",  # joy: right
    "vn": "a sad woman happily sits",  # sadness and joy: both right
    "vt": "a dog",  # no emotion word
    "vf": "a man rides a bike",  # no emotion word
    "vf2": "a happy sad man drives",  # joy right, sadness wrong: N_h == N_r1 == 1 in its group
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    lex = tmp_path / "lexicon"
    lex.mkdir()
    for cat, words in LEXICON.items():
        (lex / f"{cat}.txt").write_text("\n".join(words), encoding="utf-8")
    with open(tmp_path / "test.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["VideoID", "EmCaptions"])
        w.writerows((v, c) for v, caps in CAPTIONS.items() for c in caps)
    (tmp_path / "refs.json").write_text(json.dumps(CAPTIONS))
    (tmp_path / "p1.json").write_text(json.dumps(PREDICTIONS))
    (tmp_path / "p2.json").write_text(json.dumps({**PREDICTIONS, "vf2": "a happy man drives"}))
    return {"lexicon": lex, "captions": tmp_path / "test.csv", "refs": tmp_path / "refs.json",
            "p1": tmp_path / "p1.json", "p2": tmp_path / "p2.json", "root": tmp_path}


def test_groups_follow_the_bias_statistics_rule(files) -> None:
    captions = read_split([CaptionSource(files["captions"], ",")])
    lexicon = read_lexicon(files["lexicon"])
    assert video_groups(captions, lexicon) == {"ve": "emotional", "vn": "neutral", "vt": "neutral",
                                               "vf": "factual", "vf2": "factual"}
    # a ratio of exactly 1/6 is emotional with inclusive thresholds, neutral with strict ones
    edge = pd.DataFrame({"VideoID": ["v6"], "EmCaptions": ["a happy man walks in parks"]})
    assert video_groups(edge, lexicon) == {"v6": "emotional"}
    assert video_groups(edge, lexicon, threshold="strict") == {"v6": "neutral"}
    # Rule 2: a neutral/factual video whose MSVD captions carry an emotion word becomes emotional
    moved = video_groups(captions, lexicon, msvd={"vf": ["a man rides happily"], "vn": ["a man walks"]})
    assert moved["vf"] == "emotional" and moved["vn"] == "neutral"
    with pytest.raises(ValueError, match="per-video"):
        video_groups(captions, lexicon, unit="caption")


def test_group_metrics_by_hand(files) -> None:
    lexicon = read_lexicon(files["lexicon"])
    groups = {"ve": "emotional", "vn": "neutral", "vt": "neutral", "vf": "factual", "vf2": "factual"}
    got = group_metrics(PREDICTIONS, CAPTIONS, lexicon, groups, meteor=False)
    assert [got[g]["n_videos"] for g in ("emotional", "neutral", "factual", "all")] == [1, 2, 2, 5]

    emo = got["emotional"]["metrics"]  # the prediction is one of its references
    assert emo["Bleu_4"] == pytest.approx(1.0, abs=1e-6) and emo["ROUGE_L"] == pytest.approx(1.0)
    assert emo["Acc_sw"] == 1.0 and emo["Acc_c"] == 1.0 and got["emotional"]["undefined"] == {}

    neu = got["neutral"]["metrics"]  # N_r = 2 (vn), phi = 1 (vt); N_r1 = 1, N_h = 0, N = 2
    assert neu["Acc_sw"] == pytest.approx(2 / 3)
    assert neu["Acc_c"] == pytest.approx(math.exp(0 / (0 - 1 + 1e-4)) * 1 / 2)
    assert neu["CFS"] == pytest.approx(0.8 * neu["CIDEr"] + 0.1 * (2 / 3 + 0.5))

    fac = got["factual"]  # vf2: one right, one wrong; vf: none. N_h == N_r1 == 1: Acc_c undefined
    assert fac["metrics"]["Acc_sw"] == pytest.approx(1 / 3)
    assert fac["metrics"]["Acc_c"] is None and fac["metrics"]["BFS"] is None and fac["metrics"]["CFS"] is None
    assert "N_h == N_r1" in fac["undefined"]["Acc_c"] and fac["undefined"]["CFS"] == "needs Acc_c"
    assert fac["metrics"]["Bleu_1"] > 0 and fac["metrics"]["CIDEr"] is not None

    whole = got["all"]["metrics"]  # N_r = 4, N_w = 1, phi = 2; N_r1 = 3, N_h = 1, N = 5
    assert whole["Acc_sw"] == pytest.approx(4 / 7)
    assert whole["Acc_c"] == pytest.approx(math.exp(1 / (1 - 3 + 1e-4)) * 3 / 5)
    assert whole == evaluate(PREDICTIONS, CAPTIONS, lexicon, meteor=False)  # the `evaluate` command's numbers
    # CIDEr with the whole test idf: per-video means that average back to the whole-test CIDEr
    weighted = sum(got[g]["n_videos"] * got[g]["CIDEr_test_idf"] for g in ("emotional", "neutral", "factual"))
    assert weighted / 5 == pytest.approx(whole["CIDEr"]) == pytest.approx(got["all"]["CIDEr_test_idf"])

    empty = group_metrics(PREDICTIONS, CAPTIONS, lexicon, {v: "factual" for v in PREDICTIONS}, meteor=False)
    assert empty["emotional"]["n_videos"] == 0 and empty["emotional"]["metrics"] is None
    assert "no video" in empty["emotional"]["undefined"]["*"]
    with pytest.raises(ValueError, match="no class"):
        group_metrics(PREDICTIONS, CAPTIONS, lexicon, {"ve": "emotional"}, meteor=False)


def test_report_compares_labelled_files(files) -> None:
    captions = read_split([CaptionSource(files["captions"], ",")])
    report = bias_group_report({"full": files["p1"], "ba_off": files["p2"]}, files["refs"], files["lexicon"],
                               captions, meteor=False)
    assert {g: report["groups"][g]["n_videos"] for g in report["groups"]} == {"emotional": 1, "neutral": 2,
                                                                              "factual": 2}
    assert report["groups"]["neutral"]["share"] == pytest.approx(40.0)
    assert report["groups"]["factual"]["videos"] == ["vf", "vf2"]
    # the second file drops the wrong "sad" of vf2: its factual group has a defined Acc_c = exp(0) * 1/2
    assert report["runs"]["ba_off"]["groups"]["factual"]["metrics"]["Acc_c"] == pytest.approx(0.5)
    assert report["runs"]["full"]["groups"]["emotional"] == report["runs"]["ba_off"]["groups"]["emotional"]


def test_parse_labelled() -> None:
    assert parse_labelled(["full=a/p.json", "b/q.json"]) == {"full": "a/p.json", "b/q.json": "b/q.json"}
    with pytest.raises(ValueError, match="twice"):
        parse_labelled(["x=a.json", "x=b.json"])


def test_cli_writes_json_and_md(files, capsys: pytest.CaptureFixture[str]) -> None:
    out = files["root"] / "res" / "bias_groups.json"
    common = ["--references", str(files["refs"]), "--lexicon", str(files["lexicon"]),
              "--captions", str(files["captions"]), "--no-meteor", "--out", str(out)]
    assert main(["bias-groups", "--predictions", f"full={files['p1']}", "--predictions-ba-off", str(files["p2"]),
                 *common]) == 0
    report = json.loads(out.read_text())
    assert list(report["runs"]) == ["full", "ba_off"]
    assert report["reading"]["name"] == "video_majority/inclusive"
    md = out.with_suffix(".md").read_text()
    assert "| full | factual-bias | 2 |" in md and "null" in md  # undefined Acc_c shown as null
    assert "Difference to `full`" in md and "| ba_off | factual-bias |" in md
    assert "Acc_c, BFS, CFS null" in md

    bad = files["root"] / "bad.json"
    bad.write_text(json.dumps({k: v for k, v in PREDICTIONS.items() if k != "vt"}))
    capsys.readouterr()
    assert main(["bias-groups", "--predictions", f"x={bad}", *common]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "'vt'" in err
