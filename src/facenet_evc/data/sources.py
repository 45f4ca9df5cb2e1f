"""Caption files and corpora named on the command line: the shared ``--captions`` arguments.

Every command that reads a split takes ``--captions FILE... [--captions-seps SEP...]``
(:func:`add_captions_args`); :func:`caption_sources` turns the parsed lists into
:class:`~facenet_evc.data.emvidcap.CaptionSource` objects and :func:`split_video_ids` into the
split's video ids. They live here, in the data layer, so that stages, training, inference and
analysis commands share them without importing the CLI.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from facenet_evc.data.corpus import CorpusSource
from facenet_evc.data.emvidcap import CaptionSource, read_split

SEPARATORS = {"comma": ",", "tab": "\t", "auto": None}
"""``--*-seps`` names -> the separator a reader expects (None: detect from the header)."""


def caption_sources(paths: Sequence[str], seps: Sequence[str] | None = None) -> list[CaptionSource]:
    """Caption files with their expected separators (``--seps comma tab``; default: detect)."""
    seps = list(seps or ["auto"] * len(paths))
    if len(seps) != len(paths):
        raise ValueError(f"--seps lists {len(seps)} separators for {len(paths)} caption files")
    return [CaptionSource(Path(p), SEPARATORS[s]) for p, s in zip(paths, seps)]


def add_captions_args(parser: argparse.ArgumentParser, flag: str = "--captions", required: bool = True) -> None:
    """``FLAG FILE...`` and ``FLAG-seps SEP...``: the caption files of one split."""
    parser.add_argument(flag, nargs="+", required=required,
                        help="caption CSV file(s) of one split; several = their union")
    parser.add_argument(f"{flag}-seps", nargs="+", choices=sorted(SEPARATORS), metavar="SEP",
                        help="separator of each file: comma, tab or auto (default: detect from the header)")


def split_video_ids(paths: Sequence[str], seps: Sequence[str] | None = None) -> list[str]:
    """Video ids of a split's caption files, in first-appearance order."""
    return list(dict.fromkeys(str(v) for v in read_split(caption_sources(paths, seps))["VideoID"]))


def corpus_sources(paths: Sequence[str], columns: Sequence[str] | None, seps: Sequence[str] | None) -> list[CorpusSource]:
    """External corpora (``--extra-columns``: a CSV column or 'none' = one caption per line)."""
    columns = list(columns or ["none"] * len(paths))
    seps = list(seps or ["auto"] * len(paths))
    if len(columns) != len(paths) or len(seps) != len(paths):
        raise ValueError(f"--extra-columns lists {len(columns)} and --extra-seps {len(seps)} entries for "
                         f"{len(paths)} --extra-captions files")
    return [CorpusSource(Path(p), None if c == "none" else c, SEPARATORS[s]) for p, c, s in zip(paths, columns, seps)]
