"""Readable logs: plain progress lines (no carriage returns) when stderr is a file, and the CLI's
error reporting (a user error is one line; a bug shows its traceback; -v shows it for both)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from facenet_evc import cli
from facenet_evc.progress import LineTqdm, progress_bar


def test_lines_mode_writes_whole_lines(monkeypatch):
    monkeypatch.setenv("FACENET_EVC_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("FACENET_EVC_PROGRESS", raising=False)
    buf = io.StringIO()  # not a TTY
    bar = progress_bar(total=5, desc="train", unit="step", stream=buf)
    assert isinstance(bar, LineTqdm)
    for _ in range(5):
        bar.update(1)
        bar.set_postfix(loss=0.5)
    bar.close()
    text = buf.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("train: 0/5 (0%)") and lines[-1].startswith("train: 5/5 (100%)")
    assert "loss=0.5" in lines[-1]


def test_lines_are_periodic(monkeypatch):
    monkeypatch.setenv("FACENET_EVC_PROGRESS_INTERVAL", "3600")
    buf = io.StringIO()
    with progress_bar(total=1000, desc="x", stream=buf) as bar:
        for _ in range(1000):
            bar.update(1)
    assert len(buf.getvalue().splitlines()) == 2  # the start and the end, not one per update


def test_forced_modes(monkeypatch):
    monkeypatch.setenv("FACENET_EVC_PROGRESS", "off")
    buf = io.StringIO()
    with progress_bar(total=3, stream=buf) as bar:
        bar.update(3)
    assert buf.getvalue() == ""
    monkeypatch.setenv("FACENET_EVC_PROGRESS", "sideways")
    with pytest.raises(ValueError, match="FACENET_EVC_PROGRESS"):
        progress_bar(total=3, stream=buf)


def test_a_stage_logging_to_a_file_writes_no_carriage_return(tmp_path):
    """A real long stage (thumbnails, PyAV decode) as a Snakemake rule runs it: stderr to a log file."""
    from helpers import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(3):
        write_video(videos / f"v{i}.mp4")
    (tmp_path / "c.csv").write_text("VideoID,EmCaptions\n" + "".join(f"v{i},a man\n" for i in range(3)))
    log = tmp_path / "thumbnails.log"
    env = {**os.environ, "FACENET_EVC_PROGRESS_INTERVAL": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("FACENET_EVC_PROGRESS", None)
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "facenet_evc", "thumbnails", "--videos", str(videos), "--captions",
                            str(tmp_path / "c.csv"), "--out", str(tmp_path / "t")], stdout=f, stderr=subprocess.STDOUT,
                           env=env, timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text
    assert "thumbnails: 3/3 (100%)" in text and "thumbnails: 1/3 (33%)" in text


def _boom(args):
    raise KeyError("internal_key")  # a bug, not a user error


def _bad_input(args):
    raise FileNotFoundError("x.json: file not found")


@pytest.mark.parametrize("verbose", [False, True])
def test_cli_bug_shows_its_stack_user_error_one_line(monkeypatch, capsys, verbose):
    real = cli.build_parser

    def parser_with(func):
        def build(command=None):
            p = real(command)
            p._subparsers._group_actions[0].choices["inspect"].set_defaults(func=func)
            return p
        return build

    flags = ["-v"] if verbose else []
    monkeypatch.setattr(cli, "build_parser", parser_with(_boom))
    assert cli.main([*flags, "inspect", "f.h5"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "_boom" in err
    assert err.rstrip().splitlines()[-1].startswith("facenet-evc: internal error")
    assert "KeyError: 'internal_key'" in err.rstrip().splitlines()[-1]

    monkeypatch.setattr(cli, "build_parser", parser_with(_bad_input))
    assert cli.main([*flags, "inspect", "f.h5"]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == "facenet-evc: error: x.json: file not found"
    assert ("Traceback" in err) == verbose


def test_setup_and_not_found_errors_are_user_errors():
    from facenet_evc.errors import NotFoundError, SetupError, UserError
    from facenet_evc.evaluation.emotion import EmotionMetricError

    assert issubclass(SetupError, RuntimeError) and issubclass(NotFoundError, KeyError)  # as they were raised before
    for e in (SetupError("no java"), NotFoundError("video id 'x' not found"), EmotionMetricError("overflow")):
        assert isinstance(e, cli.USER_ERRORS)
    assert str(NotFoundError("video id 'x' not found")) == "video id 'x' not found"  # not KeyError's quoting
    assert not isinstance(KeyError("k"), cli.USER_ERRORS) and not isinstance(RuntimeError("r"), cli.USER_ERRORS)
