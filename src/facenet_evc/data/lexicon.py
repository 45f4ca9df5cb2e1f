"""Read an emotion lexicon in the official EmVidCap layout: a folder of ``<category>.txt``.

The official evaluation (EPAN ``EmotionEval/getEmationVocab.py``) lists the folder, sorts
the file names, takes the category label as ``filename.split('.')[0]`` and, from every
line, the first whitespace-separated token (blank lines skipped). The files have CRLF line
endings and no final newline, which ``str.split()`` absorbs. The order matters: when a
*hypothesis* word belongs to several categories, the official code credits only the first
one in this sorted order, while a *reference* word contributes every category.

On the official folder this gives 34 categories, 183 entries, 179 distinct words; four
words (``annoying``, ``worried``, ``hopeful``, ``timid``) sit in two categories.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class LexiconError(ValueError):
    """A lexicon folder that does not have the expected layout."""


@dataclass(frozen=True)
class Lexicon:
    """Emotion categories and their words, in the official (sorted-file, line) order."""

    categories: tuple[str, ...]
    entries: tuple[tuple[str, str], ...]  # (word, category), sorted-file order then line order
    source: str = ""
    _by_word: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_word: dict[str, list[str]] = {}
        for word, category in self.entries:
            cats = by_word.setdefault(word, [])
            if category not in cats:
                cats.append(category)
        self._by_word.update({w: tuple(c) for w, c in by_word.items()})

    @property
    def words(self) -> list[str]:
        """Distinct words in first-seen order."""
        return list(self._by_word)

    def categories_of(self, word: str) -> tuple[str, ...]:
        """Every category ``word`` belongs to (empty if it is not a lexicon word)."""
        return self._by_word.get(word, ())

    def first_category(self, word: str) -> str | None:
        """The category the official code assigns to a *hypothesis* token (first in file order)."""
        cats = self._by_word.get(word)
        return cats[0] if cats else None

    def __contains__(self, word: object) -> bool:
        return word in self._by_word

    def category_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.categories)}


def read_lexicon(folder: str | Path) -> Lexicon:
    """Read ``folder/*.txt`` as the official evaluation does (see module docstring).

    Raises :class:`LexiconError` naming the folder or the file and line when the folder is
    missing, holds no ``.txt`` file, or a file holds no word.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LexiconError(f"{folder}: lexicon folder not found (expected a folder of <category>.txt files)")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".txt"))
    if not files:
        raise LexiconError(f"{folder}: no <category>.txt file in the lexicon folder")
    categories: list[str] = []
    entries: list[tuple[str, str]] = []
    for name in files:
        label = name.split(".")[0]
        if not label:
            raise LexiconError(f"{folder / name}: file name gives an empty category label")
        if label in categories:
            raise LexiconError(f"{folder / name}: category '{label}' defined by two files")
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LexiconError(f"{path}: not UTF-8 text ({e})") from None
        n_before = len(entries)
        for line in text.splitlines():
            tokens = line.split()
            if tokens:
                entries.append((tokens[0], label))
        if len(entries) == n_before:
            raise LexiconError(f"{path}:1: category file holds no word (expected one word per line)")
        categories.append(label)
    return Lexicon(categories=tuple(categories), entries=tuple(entries), source=str(folder))
