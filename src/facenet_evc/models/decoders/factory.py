"""Build a caption decoder from its kind and a settings dict (the ``decoder`` config section).

The lead's Q-Former must project M̄ to ``decoder.d_model``: for ``lstm``/``transformer`` that is
``d_memory``; for ``t5``/``opt`` it is the LLM's input-embedding width (``d_memory`` unused).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..config import DECODER_KINDS as KINDS
from .base import CaptionDecoder
from .vocab import Vocab

# settings keys -> constructor keyword, per kind (defaults live in the constructors)
_KEYS: dict[str, dict[str, str]] = {
    "lstm": {"hidden_size": "hidden_size", "num_layers": "num_layers", "embed_size": "embed_size",
             "attn_size": "attn_size", "dropout": "dropout", "max_words": "max_words"},
    "transformer": {"hidden_size": "hidden_size", "num_layers": "num_layers", "num_heads": "num_heads",
                    "ffn_size": "ffn_size", "dropout": "dropout", "max_positions": "max_positions",
                    "max_words": "max_words"},
    "t5": {"lora_r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
           "lora_target_modules": "target_modules", "dtype": "dtype", "max_target_tokens": "max_target_tokens",
           "max_pieces_per_word": "max_pieces_per_word"},
}
_KEYS["opt"] = _KEYS["t5"]


def create_decoder(
    kind: str,
    d_memory: int,
    settings: Mapping[str, Any] | None,
    vocab: Vocab | None,
    lexicon_words: Collection[str] = (),
    random_init: bool = False,
) -> CaptionDecoder:
    """Decoder of ``kind`` in ``lstm | transformer | t5 | opt``.

    Args:
        d_memory: memory width for the word decoders (ignored by the LLMs, see module doc).
        settings: per-kind keys (unknown keys raise, to catch typos):
            lstm: hidden_size, num_layers, embed_size, attn_size, dropout, max_words;
            transformer: hidden_size, num_layers, num_heads, ffn_size, dropout, max_positions,
            max_words; t5 / opt: ``pretrained`` (hub name or local folder, required), lora_r,
            lora_alpha, lora_dropout, lora_target_modules (a list or "all-linear"), dtype,
            max_target_tokens, max_pieces_per_word.
        vocab: required by the word decoders, ignored by the LLMs (they bring a tokenizer).
        lexicon_words: emotion words; the word decoders need each of them in ``vocab``
            (``Vocab.build`` merges them) so that they can be generated.
        random_init: t5 / opt only: random LLM weights built from ``pretrained``'s config (a
            shape for efficiency measurements). Not a setting, so no checkpoint can carry it.
            The word decoders are always built randomly initialised.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown decoder kind {kind!r}; expected one of {KINDS}")
    settings = dict(settings or {})
    pretrained = settings.pop("pretrained", None)
    unknown = sorted(set(settings) - set(_KEYS[kind]))
    if unknown:
        raise ValueError(f"unknown {kind} decoder settings {unknown}; allowed: {sorted(_KEYS[kind])}")
    kwargs = {_KEYS[kind][k]: v for k, v in settings.items()}

    if kind in ("lstm", "transformer"):
        if vocab is None:
            raise ValueError(f"the {kind} decoder needs a word vocabulary")
        missing = [w for w in lexicon_words if w not in vocab]
        if missing:
            raise ValueError(f"{len(missing)} lexicon words are not in the vocabulary (e.g. {missing[:5]}); "
                             "build it with Vocab.build(captions, lexicon_words)")
        if kind == "lstm":
            from .lstm import LSTMDecoder

            return LSTMDecoder(vocab, d_memory, **kwargs)
        from .transformer import TransformerCaptionDecoder

        return TransformerCaptionDecoder(vocab, d_memory, **kwargs)

    if not pretrained:
        raise ValueError(f"the {kind} decoder needs settings['pretrained'] (hub name or local folder)")
    from .llm import OPTDecoder, T5Decoder

    return (T5Decoder if kind == "t5" else OPTDecoder)(str(pretrained), random_init=random_init, **kwargs)
