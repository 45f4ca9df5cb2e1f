"""Batched beam search for the word-level decoders (LSTM, Transformer).

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

All ``B × K`` beams advance in one call of ``step_fn``; samples are independent, so the
result of a batch equals the results of its samples searched one by one.
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
) -> list[list[int]]:
    """Best hypothesis per sample, as token ids without BOS / EOS (see module docstring).

    Args:
        step_fn: ``step_fn(prefix, state) -> (log_probs, new_state)`` with ``prefix`` the
            ``(N, t)`` tokens so far (BOS first), ``log_probs`` ``(N, V)`` normalised
            log-probabilities of the next token, ``N = batch_size * num_beams``. A recurrent
            decoder reads ``prefix[:, -1]`` and its state; a Transformer may recompute from
            the whole prefix. Tokens that must never be produced get ``-inf``.
        init_state: state for the ``batch_size`` samples (leading dim ``B`` on every tensor);
            it is repeated to ``B * K`` rows (row ``b * K + k`` is beam ``k`` of sample ``b``)
            and re-indexed along dim 0 whenever beams are reordered. Per-sample constants
            (e.g. the memory) can ride in it.
        batch_size: ``B``.
        num_beams: ``K``.
        max_len: maximum number of generated tokens, EOS excluded.
        bos_id / eos_id: start token fed first / token that closes a hypothesis.
        length_penalty: exponent of the length normalisation.
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

    def put_aside(b: int, raw: float, seq: list[int], length: int) -> None:
        finished[b].append((raw / max(length, 1) ** length_penalty, seq))

    for _ in range(max_len):
        if not bool(((live > 0) & torch.isfinite(scores).any(dim=1)).any()):
            break
        log_probs, state = step_fn(tokens, state)
        V = log_probs.size(-1)
        cand = scores.unsqueeze(-1) + log_probs.float().view(B, K, V)  # (B, K, V)
        top_s, top_i = cand.view(B, K * V).topk(min(K, K * V), dim=1)  # (B, K) best first
        if top_s.size(1) < K:  # vocabulary smaller than the beam
            pad = K - top_s.size(1)
            top_s = torch.cat([top_s, top_s.new_full((B, pad), float("-inf"))], dim=1)
            top_i = torch.cat([top_i, top_i[:, :1].expand(B, pad)], dim=1)
        src_beam, tok = top_i // V, top_i % V  # (B, K)
        usable = (rank < live.unsqueeze(1)) & torch.isfinite(top_s)  # (B, K)
        ends = usable & (tok == eos_id)
        src_rows = (base + src_beam).view(-1)  # (N,)
        if ends.any():
            for b, r in ends.nonzero().tolist():
                seq = tokens[b * K + src_beam[b, r], 1:].tolist()
                put_aside(b, float(top_s[b, r]), seq, len(seq) + 1)
        live = live - ends.sum(dim=1)
        scores = torch.where(usable & ~ends, top_s, torch.full_like(top_s, float("-inf")))
        tokens = torch.cat([tokens[src_rows], tok.view(-1, 1)], dim=1)  # (N, t + 1)
        state = map_state(state, lambda t: t.index_select(0, src_rows))

    out: list[list[int]] = []
    for b in range(B):
        for k in range(K):
            if live[b] > 0 and torch.isfinite(scores[b, k]):  # cut at max_len, no EOS
                seq = tokens[b * K + k, 1:].tolist()
                put_aside(b, float(scores[b, k]), seq, len(seq))
        out.append(max(finished[b], key=lambda h: h[0])[1] if finished[b] else [])
    return out
