"""Caption decoders of FACE-net: LSTM, Transformer (word vocabulary) and FLAN-T5 / OPT + LoRA.

Common interface (:class:`CaptionDecoder`, an ``nn.Module``):

* ``d_model: int`` — width of the memory M̄ the decoder reads; the Q-Former projects to it.
* ``pad_id: int`` — padding id of ``targets``.
* ``forward(memory (B, Nq, d_model), targets (B, L) long, target_weights (B, L) float | None)
  -> {"logits": (B, L, V), "loss": scalar}`` — teacher forcing. ``targets`` are the tokens to
  predict (caption then EOS, *no* start token, right-padded with ``pad_id``); each decoder
  prepends its own start token, so ``logits[:, t]`` scores ``targets[:, t]``.
* loss = Σ w_t · NLL_t / #(non-pad targets) — the eq. 30 weighted NLL averaged over real
  tokens; ``target_weights=None`` or δ = 0 gives the plain mean cross-entropy.
* ``generate(memory, num_beams=5, max_len=15) -> list[list[int]]`` — beam search, ids without
  specials (own batched search in :mod:`.beam` for the word decoders; Hugging Face
  ``generate`` for the LLMs, where ``max_len`` is ``max_new_tokens`` in sub-word pieces).
* ``decode_tokens(ids) -> str``.
* ``encode_targets(captions, lexicon_words, delta) -> (targets (B, L), weights (B, L))`` —
  weights ``1 + δ`` on (every piece of) a lexicon word, ``1`` on other real tokens and EOS,
  ``0`` on padding.
* ``trainable_parameters()`` — what the optimiser gets (LoRA only for the LLMs);
  ``trainable_state_dict()`` — the matching checkpoint subset.

Build one with :func:`create_decoder`.
"""
from __future__ import annotations

from .base import CaptionDecoder, weighted_token_nll
from .beam import beam_search
from .factory import KINDS, create_decoder
from .lstm import LSTMDecoder
from .transformer import TransformerCaptionDecoder
from .vocab import Vocab

__all__ = [
    "KINDS",
    "CaptionDecoder",
    "OPTDecoder",
    "T5Decoder",
    "LSTMDecoder",
    "TransformerCaptionDecoder",
    "Vocab",
    "beam_search",
    "create_decoder",
    "weighted_token_nll",
]


def __getattr__(name: str):
    # the LLM decoders import transformers/peft (seconds); only when asked for
    if name in ("T5Decoder", "OPTDecoder"):
        from . import llm

        return getattr(llm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
