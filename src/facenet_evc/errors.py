"""Errors a user fixes (an input, a setting, the environment), as opposed to bugs.

``facenet-evc`` reports a user error as one line, ``facenet-evc: error: <message>`` with exit
status 2; anything else is a bug and shows its traceback (``cli.main``). Most user errors are
``ValueError`` / ``OSError`` subclasses raised where the input is read (``ConfigError``,
``CaptionFileError``, ``ArtifactError``, ...); the classes here cover what those do not.
"""
from __future__ import annotations


class UserError(Exception):
    """Base of the user errors that are not a ``ValueError`` or ``OSError``."""


class SetupError(UserError, RuntimeError):
    """The machine lacks something a setting asks for: Java for METEOR, CUDA, a FAISS GPU build.
    A ``RuntimeError`` too, as these were before."""


class NotFoundError(UserError, KeyError):
    """A requested key (e.g. a video id) is not in an input file. A ``KeyError`` too, as before."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message is a sentence
        return str(self.args[0]) if self.args else ""
