"""External caption corpora added to the retrieval repository beside the training captions.

The paper's second failure case (Sec. 4.6, Fig. 4) is a repository too small to hold a
caption similar to the video; any caption collection can widen it. A corpus is either

* a plain text file, one caption per line (``column`` None), or
* a delimited file with a header row and a caption column (``column`` named; the
  separator is ``sep`` or, when None, TAB for ``*.tsv`` and a comma otherwise; quoting as
  pandas' default, i.e. Python's ``csv`` module defaults).

External captions belong to no video: the repository stores them with the video id
:data:`EXTERNAL_VIDEO_ID` (the empty string), which no EmVidCap video can have (the caption
reader rejects a row without a VideoID), so the own-video exclusion of retrieval never
drops them.

A corpus may hold millions of captions, so it is read as a stream (:func:`iter_corpus_lines`,
:func:`iter_corpus`); the repository stage reads it once to validate and count it (an error
then costs seconds, not an hour of encoding) and once more to encode it chunk by chunk. An
empty caption, a missing column, a short row or a line that is not UTF-8 is an error naming
the file and line.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from facenet_evc.io import iter_text_lines

EXTERNAL_VIDEO_ID = ""
"""Video id of an external caption in the repository: equal to no query video's id."""

_SEP_OF_SUFFIX = {".tsv": "\t"}


@dataclass(frozen=True)
class CorpusSource:
    """One external caption corpus: a text file (``column`` None) or a CSV/TSV caption column."""

    path: Path
    column: str | None = None
    sep: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.column is None else f"{self.path}[{self.column}]"


def _separator(src: CorpusSource) -> str:
    return src.sep if src.sep is not None else _SEP_OF_SUFFIX.get(src.path.suffix.lower(), ",")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: caption corpus not found")


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, caption) of a one-caption-per-line file; blank lines are errors."""
    for lineno, text in iter_text_lines(path):
        if not text:
            raise ValueError(f"{path}:{lineno}: empty caption (expected one caption per line)")
        yield lineno, text


def _iter_column(path: Path, column: str, sep: str) -> Iterator[tuple[int, str]]:
    """(first line of the record, caption) of a delimited file's ``column``."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}:1: empty file (expected a header with a {column!r} column)")
            if column not in header:
                name = "TAB" if sep == "\t" else repr(sep)
                raise ValueError(f"{path}:1: no column {column!r} in the header {header} "
                                 f"(separator {name}; set 'column' to one of these or 'sep' to the file's separator)")
            col = header.index(column)
            start = reader.line_num + 1  # first physical line of the next record
            for row in reader:
                lineno, start = start, reader.line_num + 1
                if not row:  # csv yields [] for a blank line
                    raise ValueError(f"{path}:{lineno}: empty line (expected a row with a {column!r} caption)")
                if col >= len(row):
                    raise ValueError(f"{path}:{lineno}: row has {len(row)} fields, the {column!r} column is field "
                                     f"{col + 1}")
                text = row[col].strip()
                if not text:
                    raise ValueError(f"{path}:{lineno}: empty caption in column {column!r}")
                yield lineno, text
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{reader.line_num + 1}: not UTF-8 text ({e.reason})") from None
        except csv.Error as e:
            raise ValueError(f"{path}:{reader.line_num}: cannot parse as {sep!r}-separated values: {e}") from None


def iter_corpus_lines(src: CorpusSource) -> Iterator[tuple[int, str]]:
    """Every caption of ``src`` with the file line it starts on, in file order.

    Raises FileNotFoundError for a missing file (at once) and, while iterating, ValueError
    naming ``file:line`` for a missing column, a short row, an empty caption or non-UTF-8
    text, and naming the file for a corpus without any caption.
    """
    _check_file(src.path)
    lines = _iter_lines(src.path) if src.column is None else _iter_column(src.path, src.column, _separator(src))
    return _non_empty(src, lines)


def _non_empty(src: CorpusSource, lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    n = 0
    for item in lines:
        n += 1
        yield item
    if n == 0:
        raise ValueError(f"{src.path}: the caption corpus holds no caption")


def iter_corpus(src: CorpusSource, chunk_size: int = 8192) -> Iterator[list[str]]:
    """The captions of ``src`` in lists of at most ``chunk_size``, in file order."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk: list[str] = []
    for _, text in iter_corpus_lines(src):
        chunk.append(text)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_corpus(src: CorpusSource) -> list[str]:
    """All captions of a (small) corpus; large ones are read with :func:`iter_corpus`."""
    return [text for _, text in iter_corpus_lines(src)]
