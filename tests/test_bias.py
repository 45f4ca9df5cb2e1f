"""F-E bias statistics (paper Sec. 3.1): thresholds, units, Rule 2, and the real numbers."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from facenet_evc.cli import main
from facenet_evc.data.emvidcap import read_captions
from facenet_evc.data.lexicon import read_lexicon
from facenet_evc.evaluation.bias import (
    apply_rule2,
    bias_statistics,
    classify_ratio,
    emotion_word_counts,
    read_msvd_captions,
    rule1_classes,
)


@pytest.mark.parametrize("ratio,strict,inclusive", [
    (1 / 6, "neutral", "emotional"),     # 1 emotion word in a 6-word caption
    (1 / 5, "emotional", "emotional"),
    (1 / 10, "neutral", "factual"),      # 1 in 10 words
    (1 / 11, "factual", "factual"),
    (1 / 8, "neutral", "neutral"),
    (0.0, "factual", "factual"),
])
def test_rule1_thresholds(ratio, strict, inclusive):
    assert classify_ratio(ratio, "strict") == strict
    assert classify_ratio(ratio, "inclusive") == inclusive


@pytest.fixture
def lex(tmp_path):
    (tmp_path / "joy.txt").write_text("happy\nhappily\n")
    (tmp_path / "sadness.txt").write_text("sad\n")
    return read_lexicon(tmp_path)


def test_counts_use_normalised_untruncated_words(lex):
    assert emotion_word_counts("A HAPPY dog, happily running!", lex) == (2, 5)
    long = "happy " + " ".join(["w"] * 20)
    assert emotion_word_counts(long, lex) == (1, 21)


def table(rows):
    return pd.DataFrame(rows, columns=["VideoID", "EmCaptions"])


def test_units(lex):
    df = table([
        ("v1", "a happy dog"),                                   # 1/3 emotional
        ("v1", "a dog runs in the big green park today"),       # 0/9 factual
        ("v1", "a happy dog runs in the park"),                 # 1/7 neutral
        ("v2", "a dog runs in the big green park today ok"),    # factual
        ("v2", "a sad dog"),                                     # emotional
    ])
    assert list(rule1_classes(df, lex, "caption", "inclusive")) == ["emotional", "factual", "neutral", "factual", "emotional"]
    assert rule1_classes(df, lex, "video_majority", "inclusive").to_dict() == {"v1": "neutral", "v2": "neutral"}  # ties
    # pooled: v1 2/19 -> neutral; v2 1/13 -> factual
    assert rule1_classes(df, lex, "video_pooled", "inclusive").to_dict() == {"v1": "neutral", "v2": "factual"}
    # mean: v1 (1/3 + 0 + 1/7)/3 = 0.159 -> neutral; v2 (0 + 1/3)/2 -> emotional
    assert rule1_classes(df, lex, "video_mean", "inclusive").to_dict() == {"v1": "neutral", "v2": "emotional"}


def test_rule2_moves_only_non_emotional_entries():
    cls = pd.Series({"v1": "factual", "v2": "neutral", "v3": "emotional", "v4": "factual"})
    moved = apply_rule2(cls, None, {"v1", "v3"})
    assert moved.to_dict() == {"v1": "emotional", "v2": "neutral", "v3": "emotional", "v4": "factual"}


def test_msvd_reader_maps_clips_to_vids(tmp_path):
    (tmp_path / "map.txt").write_text("abc_1_5 vid7\nxyz_2_9 vid8\n")
    pd.DataFrame({
        "VideoID": ["abc", "abc", "xyz", "qqq"], "Start": [1, 1, 2, 0], "End": [5, 5, 9, 1],
        "Language": ["English", "French", "English", "English"],
        "Description": ["a happy man", "un homme", None, "unmapped"],
    }).to_csv(tmp_path / "m.csv")
    assert read_msvd_captions([tmp_path / "m.csv"], tmp_path / "map.txt") == {"vid7": ["a happy man"]}


def test_msvd_mapping_bad_line(tmp_path):
    (tmp_path / "map.txt").write_text("abc_1_5 vid7\nbroken\n")
    with pytest.raises(ValueError, match=r"map\.txt:2: expected"):
        read_msvd_captions([], tmp_path / "map.txt")


@pytest.mark.slow  # official metrics (METEOR, Java) over a whole real split
def test_real_evc_msvd_matches_paper_under_default_reading(emvidcap, lexicon_dir):
    lex = read_lexicon(lexicon_dir)
    splits = {s: read_captions(emvidcap / "EmVidCap-S" / f"EmVideo_{s}_captions.csv") for s in ("trainval", "test")}
    msvd = read_msvd_captions([emvidcap / "MSVD/test.csv", emvidcap / "MSVD/val.csv"], emvidcap / "MSVD/youtube_mapping.txt")
    stats = bias_statistics(splits, lex, msvd)
    d = stats["default"]
    assert stats["default_reading"] == "video_majority/inclusive/all"
    assert d["n"] == 374
    assert [round(d["rule1"][c], 1) for c in ("emotional", "neutral", "factual")] == [28.9, 48.7, 22.5]
    assert [round(d["rule2_any"][c], 1) for c in ("emotional", "neutral", "factual")] == [32.9, 45.5, 21.7]
    assert stats["best"]["rule1"]["unit"] == "video_majority"
    assert len(stats["readings"]) == 3 * 4 * 2
    assert len(stats["videos"]) == 374 and set(stats["videos_rule2"]) == set(stats["videos"])


def test_cli_bias_stats(tmp_path, emvidcap, lexicon_dir, capsys):
    out = tmp_path / "bias.json"
    s = emvidcap / "EmVidCap-S"
    rc = main(["bias-stats", "--trainval", str(s / "EmVideo_trainval_captions.csv"), "--trainval-seps", "comma",
               "--test", str(s / "EmVideo_test_captions.csv"), "--lexicon", str(lexicon_dir), "--out", str(out)])
    assert rc == 0
    assert "video_majority/inclusive/all" in capsys.readouterr().out
    stats = json.loads(out.read_text())
    assert "rule2_any" not in stats["default"]
