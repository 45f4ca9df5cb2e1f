"""Batched beam search for every caption decoder (LSTM, Transformer; FLAN-T5 / OPT by words).

The search is the classic captioning variant (SA-LSTM / Show-Attend-Tell style): every
sample keeps ``K = num_beams`` slots; at each step the ``k`` best one-token extensions of the
live beams are taken, where ``k`` is the number of slots still live; an extension ending in
EOS is put aside as a finished hypothesis and its slot closes. A sample is done when all its
``K`` slots have closed; after ``max_len`` tokens the still-live beams are put aside too,
unfinished. With ``K = 1`` this is exactly greedy decoding.

The returned hypothesis is the finished one with the highest length-normalised score

    score(y) = Σ_t log P(y_t | y_<t) / |y|^length_penalty

where ``|y|`` counts the generated tokens *including* the EOS (a hypothesis cut at
``max_len`` has ``|y| = max_len`` and no EOS term). ``length_penalty = 0`` ranks by raw
log-probability; ``1`` (default, as Hugging Face) by mean per-token log-probability.

All beams of the samples still searching advance in one call of ``step_fn``; a sample
whose ``K`` slots have closed is dropped from the rows (and the state), so a batch does no
more steps per sample than searching it alone. Samples are independent, so the result of a
batch equals the results of its samples searched one by one.

Sub-word decoders (FLAN-T5, OPT) search by *words*: the references are cut at 15 words
(EPAN's Truncate(15)), not at 15 pieces. Given ``word_start`` (a ``(V,)`` bool mask of the
pieces that open a new word: SentencePiece ``▁…``, byte-level BPE ``Ġ…``) and ``max_words``:

* each beam counts its words (its first piece always opens one);
* a beam holding ``max_words`` words may only continue its last word or emit EOS: every
  word-opening piece gets ``-inf``, so no hypothesis exceeds ``max_words`` words and none is
  cut in the middle of a word (``max_len`` is then only a safety cap on pieces);
* the length in the normalisation above is the number of *words* (+ 1 for the EOS), so two
  candidates of the same word length are ranked by their total log-probability whatever
  the number of pieces the tokenizer split their words into (an emotion adverb of three
  pieces does not count as three tokens of "length"). This is what makes the comparison of
  captions of equal word length fair; it changes the ranking only where the piece counts of
  the candidates differ.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

State = Any  # a tensor, or a (nested) tuple / list / dict of tensors, each with leading dim N
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]


def map_state(state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    """Apply ``fn`` to every tensor of a nested state (``None`` and non-tensors pass through)."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, tuple):
        return tuple(map_state(s, fn) for s in state)
    if isinstance(state, list):
        return [map_state(s, fn) for s in state]
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    return state


def select_rows(state: State, index: torch.Tensor) -> State:
    """Rows ``index`` of every tensor of a nested state; a Hugging Face ``Cache`` object (the
    LLMs' key/value cache) is reordered in place with its own ``reorder_cache``."""
    if hasattr(state, "reorder_cache") and not isinstance(state, torch.Tensor):
        state.reorder_cache(index)
        return state
    if isinstance(state, tuple):
        return tuple(select_rows(s, index) for s in state)
    if isinstance(state, list):
        return [select_rows(s, index) for s in state]
    if isinstance(state, dict):
        return {k: select_rows(v, index) for k, v in state.items()}
    return state.index_select(0, index) if isinstance(state, torch.Tensor) else state


def _first_tensor(state: State) -> torch.Tensor | None:
    if isinstance(state, torch.Tensor):
        return state
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (tuple, list)) else ()
    for s in items:
        t = _first_tensor(s)
        if t is not None:
            return t
    return None


def beam_search(
    step_fn: StepFn,
    init_state: State,
    batch_size: int,
    num_beams: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
    length_penalty: float = 1.0,
    word_start: torch.Tensor | None = None,
    max_words: int | None = None,
) -> list[list[int]]:
    """Best hypothesis per sample, as token ids without BOS / EOS (see module docstring).

    Args:
        step_fn: ``step_fn(prefix, state) -> (log_probs, new_state)`` with ``prefix`` the
            ``(N, t)`` tokens so far (BOS first), ``log_probs`` ``(N, V)`` normalised
            log-probabilities of the next token, ``N = n * num_beams`` for the ``n <= batch_size``
            samples still searching (finished ones are dropped from the rows). A recurrent
            decoder reads ``prefix[:, -1]`` and its state; a Transformer may recompute from
            the whole prefix. Tokens that must never be produced get ``-inf``.
        init_state: state for the ``batch_size`` samples (leading dim ``B`` on every tensor);
            it is repeated to ``B * K`` rows (row ``b * K + k`` is beam ``k`` of sample ``b``)
            and re-indexed along dim 0 whenever beams are reordered or samples finish. Per-sample constants
            (e.g. the memory) can ride in it.
        batch_size: ``B``.
        num_beams: ``K``.
        max_len: maximum number of generated tokens, EOS excluded.
        bos_id / eos_id: start token fed first / token that closes a hypothesis.
        length_penalty: exponent of the length normalisation.
        word_start: ``(V,)`` bool, the tokens that open a new word; with it the length of the
            normalisation counts words (+ EOS) instead of tokens (see module docstring).
        max_words: with ``word_start``: a beam holding this many words may only continue its
            last word or end.
    """
    B, K = batch_size, num_beams
    if K < 1 or max_len < 0:
        raise ValueError(f"num_beams must be >= 1 and max_len >= 0, got {K}, {max_len}")
    first = _first_tensor(init_state)
    device = first.device if first is not None else torch.device("cpu")

    state = map_state(init_state, lambda t: t.repeat_interleave(K, dim=0))
    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (N, 1)
    scores = torch.full((B, K), float("-inf"), device=device)  # raw log-probs of the live beams
    scores[:, 0] = 0.0  # one start beam, else the K copies would fill the beam with duplicates
    live = torch.full((B,), K, dtype=torch.long, device=device)  # open slots per sample
    rank = torch.arange(K, device=device)
    base = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    by_words = word_start is not None
    if by_words:
        word_start = word_start.to(device=device, dtype=torch.bool)  # (V,)
    nwords = torch.zeros(B * K, dtype=torch.long, device=device)  # (N,) words in each beam so far

    def put_aside(b: int, raw: float, seq: list[int], length: int) -> None:
        finished[b].append((raw / max(length, 1) ** length_penalty, seq))

    # Samples still searching, in row order: a sample whose slots have all closed leaves the
    # batch, so its rows stop costing a step. Without this a batch runs every row until its
    # slowest sample ends (on the demo model ~30% more rows per caption at B=64 than B=1).
    sample_of = list(range(B))
    for _ in range(max_len):
        if not sample_of:
            break
        A = len(sample_of)
        log_probs, state = step_fn(tokens, state)
        V = log_probs.size(-1)
        if by_words and max_words is not None:
            full = nwords >= max_words  # (N,) these beams may not open another word
            if bool(full.any()):
                log_probs = log_probs.masked_fill(full.unsqueeze(1) & word_start.unsqueeze(0), float("-inf"))
        cand = scores.unsqueeze(-1) + log_probs.float().view(A, K, V)  # (A, K, V)
        top_s, top_i = cand.view(A, K * V).topk(min(K, K * V), dim=1)  # (A, K) best first
        if top_s.size(1) < K:  # vocabulary smaller than the beam
            pad = K - top_s.size(1)
            top_s = torch.cat([top_s, top_s.new_full((A, pad), float("-inf"))], dim=1)
            top_i = torch.cat([top_i, top_i[:, :1].expand(A, pad)], dim=1)
        src_beam, tok = top_i // V, top_i % V  # (A, K)
        usable = (rank < live.unsqueeze(1)) & torch.isfinite(top_s)  # (A, K)
        ends = usable & (tok == eos_id)
        if ends.any():
            for a, r in ends.nonzero().tolist():
                row = a * K + int(src_beam[a, r])
                seq = tokens[row, 1:].tolist()
                put_aside(sample_of[a], float(top_s[a, r]), seq, (int(nwords[row]) if by_words else len(seq)) + 1)
        live = live - ends.sum(dim=1)
        scores = torch.where(usable & ~ends, top_s, torch.full_like(top_s, float("-inf")))
        src_rows = (base[:A] + src_beam).view(-1)  # (A * K,)
        alive = (live > 0) & torch.isfinite(scores).any(dim=1)  # (A,)
        if not bool(alive.all()):  # drop the finished samples in the same gather as the reorder
            keep = alive.nonzero().flatten()  # (A',)
            src_rows = src_rows.view(A, K)[keep].view(-1)
            tok, scores, live = tok[keep], scores[keep], live[keep]
            sample_of = [sample_of[a] for a in keep.tolist()]
        if by_words:  # the first piece opens a word whatever its form
            nwords = nwords[src_rows] + (word_start[tok.reshape(-1)] | (nwords[src_rows] == 0)).long()
        tokens = torch.cat([tokens[src_rows], tok.reshape(-1, 1)], dim=1)  # (A' * K, t + 1)
        state = select_rows(state, src_rows)

    out: list[list[int]] = []
    for a, b in enumerate(sample_of):  # still searching after max_len
        for k in range(K):
            if live[a] > 0 and torch.isfinite(scores[a, k]):  # cut at max_len, no EOS
                seq = tokens[a * K + k, 1:].tolist()
                put_aside(b, float(scores[a, k]), seq, int(nwords[a * K + k]) if by_words else len(seq))
    for b in range(B):
        out.append(max(finished[b], key=lambda h: h[0])[1] if finished[b] else [])
    return out
