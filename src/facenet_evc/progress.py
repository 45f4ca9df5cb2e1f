"""Progress of long stages: a tqdm bar in a terminal, plain periodic lines in a log file.

A tqdm bar redraws itself with carriage returns; written to a Snakemake ``log:`` file (stderr
redirected, not a TTY) that leaves one line holding thousands of ``\\r``-separated states. So
:func:`progress_bar` returns a tqdm bar whose output depends on where stderr goes:

* a terminal: the usual bar (``dynamic_ncols``), refreshed as tqdm does;
* anything else (a file, a pipe): one plain line per refresh, ``desc: n/total (p%) elapsed<eta,
  rate, postfix``, at most every ``FACENET_EVC_PROGRESS_INTERVAL`` seconds (default 30) plus
  the final state, and never a ``\\r``.

``FACENET_EVC_PROGRESS`` forces the mode: ``bar``, ``lines`` or ``off``. ``bar.write(msg)``
(``tqdm.write``) prints a message line in both modes without breaking the bar.
"""
from __future__ import annotations

import os
import sys
from typing import IO, Any

from tqdm import tqdm

LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) {elapsed}<{remaining}, {rate_fmt}{postfix}"
LINE_FORMAT_NO_TOTAL = "{desc}: {n_fmt} {elapsed}, {rate_fmt}{postfix}"
DEFAULT_INTERVAL = 30.0
MODES = ("bar", "lines", "off")


class LineWriter:
    """A file-like wrapper that turns tqdm's ``\\r``-redrawn states into whole lines."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, s: str) -> int:
        # tqdm writes "\r<state><padding>" per refresh and "\n" on close; a message is "<msg>" then "\n"
        text = s.replace("\r", "").replace("\x1b[A", "").rstrip()
        if text:
            self.stream.write(text + "\n")
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


class LineTqdm(tqdm):
    """tqdm whose postfix and description changes wait for the next periodic line (in a terminal
    they redraw the bar at once; here each would be a line of its own)."""

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        super().set_description(desc, refresh=False)


def mode(stream: IO[str] | None = None) -> str:
    """``bar`` for a terminal, ``lines`` otherwise, unless ``FACENET_EVC_PROGRESS`` says which."""
    forced = os.environ.get("FACENET_EVC_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise ValueError(f"FACENET_EVC_PROGRESS={forced!r}: expected one of {MODES}")
        return forced
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "lines"


def interval() -> float:
    value = os.environ.get("FACENET_EVC_PROGRESS_INTERVAL", "")
    try:
        return float(value) if value else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"FACENET_EVC_PROGRESS_INTERVAL={value!r}: expected seconds (a number)") from None


def progress_bar(iterable: Any = None, *, total: int | float | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, stream: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (``iterable`` wrapped, or ``total`` for manual ``update``) for a terminal, or
    plain periodic lines elsewhere (module docstring). Extra keyword arguments go to tqdm
    (e.g. ``initial``); the output settings are this function's."""
    stream = sys.stderr if stream is None else stream
    how = "off" if disable else mode(stream)
    for key in ("file", "dynamic_ncols", "mininterval", "bar_format", "ascii"):
        kwargs.pop(key, None)
    if how == "bar":
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, **kwargs)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    return LineTqdm(iterable, total=total, desc=desc, unit=unit, file=LineWriter(stream), disable=how == "off",
                mininterval=interval(), maxinterval=float("inf"), ascii=True,
                bar_format=LINE_FORMAT if total else LINE_FORMAT_NO_TOTAL, **kwargs)
