"""Shared fixtures: one torch thread, the real EmVidCap annotations (tests skip cleanly without them).

Shared builders of synthetic artifacts live in ``helpers.py``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
EMVIDCAP = Path(os.environ.get("FACENET_EMVIDCAP", PROJECT.parent / "shared" / "data" / "emvidcap"))


@pytest.fixture(scope="session")
def emvidcap() -> Path:
    """The folder of real EmVidCap annotations (``../shared/data/emvidcap``), or skip."""
    if not (EMVIDCAP / "EmVidCap-S" / "EmVideo_test_captions.csv").is_file():
        pytest.skip(f"real EmVidCap annotations not found at {EMVIDCAP}")
    return EMVIDCAP


@pytest.fixture(scope="session")
def lexicon_dir(emvidcap: Path) -> Path:
    return emvidcap / "lexicon" / "categories"


@pytest.fixture(scope="session")
def java() -> str:
    path = shutil.which("java")
    if path is None:
        pytest.skip("METEOR needs Java")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: OpenMP synchronisation dominates them, and on a
    busy CPU extra threads cost 10-30x. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
