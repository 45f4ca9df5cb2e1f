"""Atomic file writes and small HDF5 helpers.

Every artifact of the pipeline is written to a temporary file beside its final path and
renamed into place only once complete, so a killed job never leaves a file that a rerun
(or Snakemake) would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import h5py
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def old_dir(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_dir` moves the previous ``path`` aside while replacing it."""
    path = Path(path)
    return path.parent / f".{path.name}.old"


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it replaces ``path``.

    The previous ``path`` is moved aside to :func:`old_dir` first and removed once the new one is
    in place (``os.replace`` cannot overwrite a non-empty folder); should the last rename fail,
    it is moved back. On any exception the temporary folder is removed and ``path`` is left as
    it was. A reader that finds ``path`` missing but :func:`old_dir` complete was killed between
    the two renames and may move it back (the checkpoints do).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        old = old_dir(path)
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, ensure_ascii=False)
            f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_and_markdown(out_json: str | os.PathLike, report: Any, markdown: str) -> Path:
    """``out_json`` and, beside it under the same name with ``.md``, its markdown; returns the md path."""
    md = Path(out_json).with_suffix(".md")
    write_json(out_json, report)
    write_text(md, markdown)
    return md


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a parse error into one that names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, attrs: dict[str, Any] | None = None) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file for writing; it becomes ``path`` only if the block succeeds."""
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            for key, value in (attrs or {}).items():
                f.attrs[key] = _attr_value(value)
            yield f


def _attr_value(value: Any) -> Any:
    # HDF5 attrs cannot hold None or nested dicts: store those as JSON text.
    if value is None or isinstance(value, (dict, list, tuple)) and not _is_flat_numeric(value):
        return json.dumps(value)
    return value


def _is_flat_numeric(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value) and len(value) > 0


def read_attrs(obj: h5py.HLObject, *, scalars: bool = True, arrays: bool = False,
               json_keys: Iterable[str] = ()) -> dict[str, Any]:
    """An HDF5 object's attrs as Python values: text decoded; with ``scalars`` numpy scalars as
    Python numbers, with ``arrays`` numpy arrays as lists; the ``json_keys`` parsed back from the
    JSON text :func:`atomic_h5` stores None, dicts and nested lists as.

    ``scalars=False`` keeps numpy scalars, so attrs copied into another file keep their dtype.
    """
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif scalars and isinstance(value, np.generic):
            value = value.item()
        elif arrays and isinstance(value, np.ndarray):
            value = value.tolist()
        if key in json_keys and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    return out


def write_strings(group: h5py.Group, name: str, strings: list[str]) -> h5py.Dataset:
    """Store a list of Python strings as a UTF-8 variable-length string dataset."""
    return group.create_dataset(name, data=np.array(strings, dtype=object), dtype=h5py.string_dtype("utf-8"))


def read_strings(dataset: h5py.Dataset) -> list[str]:
    """Read a string dataset written by :func:`write_strings` back to ``list[str]``."""
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in dataset[()]]


def iter_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, stripped text)`` of every line of a UTF-8 text file (blank lines too,
    as ``""``; a BOM on line 1 is dropped); a line that is not UTF-8 is an error naming file:line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: line is not UTF-8 text ({e.reason})") from None
            yield lineno, (line.lstrip("\ufeff") if lineno == 1 else line).strip()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (stamped into artifacts to name their inputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable configuration section."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_h5(path: str | os.PathLike, max_items: int = 3) -> str:
    """A readable listing of an artifact: groups, datasets (shape, dtype, first items), attrs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    lines: list[str] = [str(path)]

    def attrs(obj: h5py.HLObject, indent: str) -> None:
        for k, v in obj.attrs.items():
            v = v.decode() if isinstance(v, bytes) else v
            text = str(v) if not isinstance(v, np.ndarray) else np.array2string(v, threshold=8)
            lines.append(f"{indent}@{k} = {text[:200]}{'...' if len(text) > 200 else ''}")

    def visit(name: str, obj: h5py.HLObject) -> None:
        depth = name.count("/") + 1
        indent = "  " * depth
        if isinstance(obj, h5py.Dataset):
            head = ""
            if obj.shape and obj.dtype.kind in "OSU":
                items = [s.decode() if isinstance(s, bytes) else str(s) for s in obj[: max_items]]
                head = f"  e.g. {items}"
            lines.append(f"{indent}{name.split('/')[-1]}  {obj.shape} {obj.dtype}{head}")
        else:
            lines.append(f"{indent}{name.split('/')[-1]}/")
        attrs(obj, indent + "  ")

    try:
        with h5py.File(path, "r") as f:
            attrs(f, "  ")
            f.visititems(visit)
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from None
    return "\n".join(lines)


def named_metrics(items: list[str], flag: str = "--metrics") -> dict[str, dict]:
    """``NAME=PATH`` arguments -> ``{name: the metrics.json at path}``, in the given order."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {item!r}: expected NAME=PATH")
        out[name] = read_json(path)
    return out
