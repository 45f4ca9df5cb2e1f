"""The emotion lexicon reader: official folder facts and bad input."""
from __future__ import annotations

import pytest

from facenet_evc.data.lexicon import LexiconError, read_lexicon


def test_official_lexicon_facts(lexicon_dir):
    lex = read_lexicon(lexicon_dir)
    assert len(lex.categories) == 34
    assert len(lex.entries) == 183
    assert len(lex.words) == 179
    doubles = {w: lex.categories_of(w) for w in lex.words if len(lex.categories_of(w)) > 1}
    assert doubles == {
        "annoying": ("anger", "annoyance"),
        "worried": ("annoyance", "worry"),
        "hopeful": ("anticipation", "optimistic"),
        "timid": ("fear", "shy"),
    }
    # the hypothesis side credits only the first category in sorted-file order
    assert lex.first_category("timid") == "fear"
    assert lex.categories == tuple(sorted(lex.categories))
    # CRLF endings and the missing final newline leave no '\r' in words
    assert all("\r" not in w and w for w in lex.words)
    assert "delightfully" in lex  # last line of joy.txt, no final newline


def test_reader_rules(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"glad extra tokens\r\n\r\n  \r\nhappy")
    (tmp_path / "a.txt").write_text("happy\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    lex = read_lexicon(tmp_path)
    assert lex.categories == ("a", "b")
    assert lex.entries == (("happy", "a"), ("glad", "b"), ("happy", "b"))
    assert lex.categories_of("happy") == ("a", "b")
    assert lex.first_category("happy") == "a"
    assert lex.first_category("sad") is None


def test_missing_folder(tmp_path):
    with pytest.raises(LexiconError, match="nope.*not found"):
        read_lexicon(tmp_path / "nope")


def test_folder_without_txt(tmp_path):
    (tmp_path / "joy.csv").write_text("happy\n")
    with pytest.raises(LexiconError, match=r"no <category>\.txt"):
        read_lexicon(tmp_path)


def test_empty_category_file_names_file_and_line(tmp_path):
    (tmp_path / "joy.txt").write_text("happy\n")
    (tmp_path / "sad.txt").write_text("\n  \n")
    with pytest.raises(LexiconError, match=r"sad\.txt:1: .*no word"):
        read_lexicon(tmp_path)
