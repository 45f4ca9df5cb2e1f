"""EmVidCap caption readers on the real files, the EPAN normalisation, and bad input."""
from __future__ import annotations

import pytest

from facenet_evc.data.emvidcap import (
    CaptionFileError,
    CaptionSource,
    captions_by_video,
    normalize_caption,
    prepare_references,
    read_captions,
    read_split,
)

COUNTS = {  # (rows, videos) as pandas reads the official files
    ("EmVidCap-S", "trainval"): (9462, 240),
    ("EmVidCap-S", "test"): (5622, 134),
    ("EmVidCap-L", "trainval"): (19398, 1134),
    ("EmVidCap-L", "test"): (6527, 382),
}


@pytest.mark.parametrize("ds,split", list(COUNTS))
def test_row_and_video_counts(emvidcap, ds, split):
    df = read_captions(emvidcap / ds / f"EmVideo_{split}_captions.csv")
    assert (len(df), df["VideoID"].nunique()) == COUNTS[(ds, split)]
    assert df["line"].iloc[0] == 2 and df["line"].is_monotonic_increasing


def test_separators_detected_and_checked(emvidcap):
    s = emvidcap / "EmVidCap-S" / "EmVideo_test_captions.csv"
    l = emvidcap / "EmVidCap-L" / "EmVideo_test_captions.csv"
    assert len(read_captions(s, ",")) == 5622
    assert len(read_captions(l, "\t")) == 6527
    with pytest.raises(CaptionFileError, match=r"EmVideo_test_captions\.csv:1: wrong separator: the file is TAB-separated"):
        read_captions(l, ",")


def test_quoted_rows_follow_pandas_default_quoting(emvidcap):
    df = read_captions(emvidcap / "EmVidCap-L" / "EmVideo_test_captions.csv")
    row = df[df["line"] == 1174].iloc[0]
    assert row["VideoID"] == "vid20902"
    # a field opening with '"' is a quoted field: the quotes go, the text after them stays
    assert row["EmCaptions"].startswith(" One of the big uses")
    assert '"' not in row["EmCaptions"] and row["EmCaptions"].endswith("Lance Ulanoff said expectantly")
    # a quote inside an unquoted field is kept verbatim
    assert df[df["line"] == 519].iloc[0]["EmCaptions"] == 'A wrathful man shouted "no" at the two other women'


def test_combine_is_the_union(emvidcap):
    sources = [CaptionSource(emvidcap / "EmVidCap-S" / "EmVideo_test_captions.csv", ","),
               CaptionSource(emvidcap / "EmVidCap-L" / "EmVideo_test_captions.csv", "\t")]
    df = read_split(sources)
    assert len(df) == 5622 + 6527
    assert df["VideoID"].nunique() == 134 + 382


def test_union_rejects_shared_video_ids(emvidcap, tmp_path):
    s = emvidcap / "EmVidCap-S" / "EmVideo_test_captions.csv"
    copy = tmp_path / "copy.csv"
    copy.write_text(s.read_text())
    with pytest.raises(CaptionFileError, match=r"copy\.csv: video id 'vid1301' also appears in"):
        read_split([CaptionSource(s), CaptionSource(copy)])


def test_normalisation_matches_epan_transform_sentence():
    assert normalize_caption("A Man's dog, jumping!  happily") == "a mans dog jumping happily"
    assert normalize_caption("café au lait") == "caf au lait"  # non-ASCII dropped, not transliterated
    long = " ".join(f"w{i}" for i in range(20))
    assert normalize_caption(long).split() == [f"w{i}" for i in range(15)]
    assert normalize_caption(long, max_len=None) == long
    assert normalize_caption("...") == ""


def test_prepare_references_keeps_file_order(emvidcap):
    df = read_captions(emvidcap / "EmVidCap-S" / "EmVideo_test_captions.csv")
    refs = prepare_references(df)
    assert list(refs) == list(captions_by_video(df))
    assert refs["vid1301"][0] == "a dog pats his trainer s hands with his front paws delightfully"
    assert sum(map(len, refs.values())) == 5622


def write(tmp_path, text, name="c.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_captions(tmp_path / "nope.csv")


def test_wrong_header(tmp_path):
    p = write(tmp_path, "video,caption\nvid1,a dog\n")
    with pytest.raises(CaptionFileError, match=r"c\.csv:1: header 'video,caption' is not an EmVidCap header"):
        read_captions(p)


def test_wrong_separator_names_expected(tmp_path):
    p = write(tmp_path, "VideoID,EmCaptions\nvid1,a dog\n")
    with pytest.raises(CaptionFileError, match=r"c\.csv:1: wrong separator: the file is comma-separated but TAB"):
        read_captions(p, "\t")


def test_blank_caption_names_line(tmp_path):
    p = write(tmp_path, "VideoID,EmCaptions\nvid1,a dog runs\nvid1,a cat sits\nvid2,   \n")
    with pytest.raises(CaptionFileError, match=r"c\.csv:4: empty caption for video 'vid2'"):
        read_captions(p)


def test_null_caption_dropped_like_official(tmp_path):
    p = write(tmp_path, "VideoID,EmCaptions\nvid1,a dog runs\nvid1,\nvid2,a cat sits\n")
    df = read_captions(p)
    assert list(df["EmCaptions"]) == ["a dog runs", "a cat sits"]
    assert list(df["line"]) == [2, 4]


def test_missing_video_id_names_line(tmp_path):
    p = write(tmp_path, "VideoID,EmCaptions\nvid1,a dog runs\n,a cat sits\n")
    with pytest.raises(CaptionFileError, match=r"c\.csv:3: row has no VideoID"):
        read_captions(p)


def test_malformed_row_is_reported(tmp_path):
    p = write(tmp_path, "VideoID,EmCaptions\nvid1,a dog runs\nvid2,a cat,sits,here\n")
    with pytest.raises(CaptionFileError, match=r"c\.csv:3: cannot parse.*4 fields, expected 2"):
        read_captions(p)
