"""Read EmVidCap caption files the way the official EPAN code reads them.

Layout (one row per caption, several rows per video):

* EVC-MSVD = EmVidCap-S: comma-separated, header ``VideoID,EmCaptions``;
* EVC-VE = EmVidCap-L: TAB-separated, header ``VideoID<TAB>EmCaptions``;
* EVC-Combine = their union;

each with a ``trainval`` and a ``test`` file. The official loader calls
``pd.read_csv(path)`` (or with ``'\\t'``), i.e. pandas' default quoting (a field that starts
with ``"`` is a quoted field), and drops null captions with ``pd.notnull``. We read with the
same pandas call, then check what the official code silently trusts: the header, the
separator, and that no caption is empty.

Training targets and evaluation references are prepared as EPAN's ``Corpus.transform_sentence``
does (``loader/data_loader.py``, ``loader/transform.py``): drop non-ASCII characters
(``s.encode('utf-8').decode('ascii', 'ignore')``), lowercase, delete every character of
``string.punctuation``, split on whitespace, keep the first 15 words, join with one space.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

HEADER = ("VideoID", "EmCaptions")
MAX_CAPTION_LEN = 15  # EPAN config.py: loader.max_caption_len
_SEP_NAMES = {",": "comma", "\t": "TAB"}
_PUNCT = re.compile("[%s]" % re.escape(string.punctuation))


class CaptionFileError(ValueError):
    """A caption file that does not have the EmVidCap layout."""


@dataclass(frozen=True)
class CaptionSource:
    """One caption file of a split, with its expected separator (None: detect from the header)."""

    path: Path
    sep: str | None = None


def detect_separator(path: str | Path) -> str:
    """Return ``","`` or ``"\\t"`` from the header line, or raise naming the file and line 1."""
    path = Path(path)
    header = _first_line(path)
    sep = detect_separator_or_none(header)
    if sep is not None:
        return sep
    raise CaptionFileError(
        f"{path}:1: header {header!r} is not an EmVidCap header "
        f"(expected 'VideoID,EmCaptions' or 'VideoID<TAB>EmCaptions')"
    )


def _first_line(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: caption file not found")
    with open(path, encoding="utf-8", newline="") as f:
        return f.readline().rstrip("\r\n")


def read_captions(path: str | Path, sep: str | None = None) -> pd.DataFrame:
    """Read one EmVidCap caption file into a DataFrame with columns ``VideoID, EmCaptions, line``.

    ``line`` is the 1-based line number of the row in the file (header = line 1), kept so
    that later errors can point at the row. Rows with a null caption are dropped, as the
    official loader does; a caption that is present but blank is an error.

    Raises :class:`CaptionFileError` naming the file (and line) for a wrong header, a wrong
    separator, a row with a missing video id, or a blank caption.
    """
    path = Path(path)
    header = _first_line(path)
    if sep is None:
        sep = detect_separator(path)
    elif header.split(sep) != list(HEADER):
        found = detect_separator_or_none(header)
        if found is not None:
            raise CaptionFileError(
                f"{path}:1: wrong separator: the file is {_SEP_NAMES[found]}-separated "
                f"but {_SEP_NAMES.get(sep, repr(sep))}-separated was expected"
            )
        raise CaptionFileError(
            f"{path}:1: header {header!r} is not an EmVidCap header "
            f"(expected {sep.join(HEADER)!r})"
        )
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=True)
    except pd.errors.ParserError as e:
        where, problem = _locate_bad_record(path, sep, str(e))
        raise CaptionFileError(f"{path}{where}: cannot parse as {_SEP_NAMES.get(sep, sep)}-separated values: "
                               f"{problem}") from None
    if list(df.columns) != list(HEADER):
        raise CaptionFileError(f"{path}:1: expected exactly the columns {HEADER}, found {list(df.columns)}")
    df["line"] = _row_lines(path, len(df))
    missing_vid = df["VideoID"].isna()
    if missing_vid.any():
        line = int(df.loc[missing_vid, "line"].iloc[0])
        raise CaptionFileError(f"{path}:{line}: row has no VideoID")
    df = df[pd.notnull(df["EmCaptions"])].reset_index(drop=True)
    blank = df["EmCaptions"].str.strip() == ""
    if blank.any():
        line = int(df.loc[blank, "line"].iloc[0])
        raise CaptionFileError(f"{path}:{line}: empty caption for video {df.loc[blank, 'VideoID'].iloc[0]!r}")
    return df


def detect_separator_or_none(header: str) -> str | None:
    for sep in (",", "\t"):
        if header.split(sep) == list(HEADER):
            return sep
    return None


def _locate_bad_record(path: Path, sep: str, pandas_error: str) -> tuple[str, str]:
    """(``":<line>"``, problem) of the record pandas rejected, found with the csv module.

    pandas' tokenizer names rows inconsistently ("line 3" for a field count, "row 2" for an
    open quote), so the first record with another field count than the header, or the
    record an unclosed quote runs to the end of the file from, is located here instead.
    """
    import csv

    last: tuple[int, list[str]] | None = None
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        start = 1
        for row in reader:
            if row and len(row) != len(HEADER):
                return f":{start}", (f"the row has {len(row)} fields, expected {len(HEADER)} ({sep.join(HEADER)}); "
                                     f"quote a caption that contains the separator")
            last = (start, row)
            start = reader.line_num + 1
    if "EOF inside string" in pandas_error and last is not None:
        return f":{last[0]}", "a quoted field opened on this line is never closed (unterminated '\"')"
    return "", pandas_error


def _row_lines(path: Path, n_rows: int) -> list[int]:
    """1-based file line of each data row, accounting for quoted fields spanning lines."""
    # pandas does not report source lines; quoted multi-line fields are rare but possible,
    # so count physical lines per record with the csv module's own quoting rules.
    import csv

    lines: list[int] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=detect_separator_or_none(_first_line(path)) or ",")
        next(reader, None)
        start = 2
        for _ in reader:
            lines.append(start)
            start = reader.line_num + 1
    if len(lines) != n_rows:
        # Blank lines are skipped by pandas but not counted as records by csv either; if the
        # two still disagree fall back to row order (line numbers then are approximate).
        return list(range(2, n_rows + 2))
    return lines


def read_split(sources: Iterable[CaptionSource]) -> pd.DataFrame:
    """Concatenate the caption files of one split (EVC-Combine = EmVidCap-S ∪ EmVidCap-L).

    A video id appearing in two different files is an error: the union must keep the two
    datasets' videos apart.
    """
    frames = []
    seen: dict[str, Path] = {}
    for src in sources:
        df = read_captions(src.path, src.sep)
        df["file"] = str(src.path)
        for vid in df["VideoID"].unique():
            if vid in seen and seen[vid] != src.path:
                raise CaptionFileError(f"{src.path}: video id {vid!r} also appears in {seen[vid]}")
            seen[vid] = src.path
        frames.append(df)
    if not frames:
        raise CaptionFileError("no caption file given for the split")
    return pd.concat(frames, ignore_index=True)


def video_ids_in_files(paths: Iterable[str | Path]) -> list[str]:
    """Video ids of caption files in first-appearance order (a video may appear in several files)."""
    ids: dict[str, None] = {}
    for p in paths:
        for vid in read_captions(p)["VideoID"]:
            ids.setdefault(str(vid), None)
    return list(ids)


def captions_by_video(df: pd.DataFrame) -> dict[str, list[str]]:
    """``{video_id: [captions]}`` in file order (the order EPAN's loader builds)."""
    out: dict[str, list[str]] = {}
    for vid, cap in zip(df["VideoID"], df["EmCaptions"]):
        out.setdefault(vid, []).append(cap)
    return out


def normalize_caption(caption: str, max_len: int | None = MAX_CAPTION_LEN) -> str:
    """EPAN's ``transform_sentence``: ASCII only, lowercase, no punctuation, ≤ ``max_len`` words."""
    s = caption.encode("utf-8").decode("ascii", "ignore")
    s = _PUNCT.sub("", s.lower())
    words = s.split()
    if max_len is not None:
        words = words[:max_len]
    return " ".join(words)


def prepare_references(df: pd.DataFrame, max_len: int | None = MAX_CAPTION_LEN) -> dict[str, list[str]]:
    """References as the official evaluation receives them: normalised captions per video.

    A caption that normalises to the empty string (e.g. only punctuation) is kept, as EPAN
    keeps it; :func:`facenet_evc.evaluation.evaluate` scores whatever it is given.
    """
    return {vid: [normalize_caption(c, max_len) for c in caps] for vid, caps in captions_by_video(df).items()}
