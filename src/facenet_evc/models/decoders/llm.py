"""Frozen pretrained LLM decoders with a LoRA adapter: FLAN-T5 (seq2seq) and OPT (causal).

Sec. 3.5 ends with "we send M̄ to the LLMs"; Sec. 4.1 freezes the LLM and trains a LoRA
adapter with r = 16, α = 32. As in BLIP-2, the ``Nq`` Q-Former outputs M̄ are soft tokens in
the LLM's input-embedding space: the T5 *encoder input* (``inputs_embeds``), or a *prefix*
before the caption tokens for the decoder-only OPT. Gradients flow through the frozen LLM
into M̄, so the fusion modules and the Q-Former train end to end.

The loss is eq. 30 computed here from the logits (:func:`weighted_token_nll`), not the
models' internal unweighted loss. Sub-word tokenisers: every piece of a lexicon word gets the
weight ``1 + δ`` (see :meth:`HFDecoder.encode_targets`).

Captions are limited in *words*, as the references are (EPAN's Truncate(15) keeps 15 words),
not in sub-word pieces: an emotion adverb is two or three pieces, so a 15-piece cap cut
T5/OPT captions at about 11-13 words. :meth:`HFDecoder.generate` runs the project's beam
search (:func:`.beam.beam_search`) over the LLM with its key/value cache, counting words
with the tokenizer's word-opening pieces (``▁`` / ``Ġ``): a beam that holds ``max_len`` words
may only finish its last word or end, up to ``max_len * max_pieces_per_word`` pieces, and
hypotheses are length-normalised by their number of words, so candidates of equal word
length compete on their log-probability whatever their piece counts. The ids are then
detokenised and cut the way the references are (:func:`~facenet_evc.data.emvidcap.normalize_caption`:
ASCII, lower case, no punctuation, at most ``max_words`` words).

Checked with transformers 5.24 and peft 0.21 (T5's ``EncoderDecoderCache`` and OPT's
``DynamicCache`` are reordered between steps with their ``reorder_cache``).
"""
from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from facenet_evc.data.emvidcap import normalize_caption

from .base import CaptionDecoder, pad_batch, weighted_token_nll
from .beam import beam_search

# the markers a tokenizer puts on a piece that opens a word: SentencePiece (T5) and byte-level BPE (OPT, GPT-2)
WORD_MARKERS = ("\u2581", "\u0120", " ")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def attach_lora(
    model: nn.Module, r: int, alpha: float, dropout: float, target_modules: list[str] | str
) -> nn.Module:
    """Freeze ``model`` and wrap the ``target_modules`` linears with peft LoRA adapters.

    Each targeted linear ``x ↦ W₀x`` becomes ``x ↦ W₀x + (α / r)·B·A·dropout(x)`` with
    ``A ∈ R^{r×in}`` (Kaiming-uniform init) and ``B ∈ R^{out×r}`` (zero init, so training
    starts from the pretrained model); only ``A`` and ``B`` are trainable.

    Returns:
        the ``peft.PeftModel`` (its LoRA layers are injected in place into ``model``).
    """
    from peft import LoraConfig, get_peft_model

    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    peft_model = get_peft_model(model, config)
    # peft already freezes the base; made explicit because the optimiser relies on it
    for name, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in name)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise ValueError(f"LoRA target modules {target_modules} matched no layer of {type(model).__name__}")
    return peft_model


class HFDecoder(CaptionDecoder):
    """What the T5 and OPT decoders share: tokenizer targets, decoding, LoRA bookkeeping.

    ``self.model`` is the ``peft.PeftModel``; ``self.lm`` the underlying Hugging Face model
    (same modules, LoRA layers inside), which is what we call.

    Args:
        name_or_path: hub name (``google/flan-t5-xl``) or local folder with model + tokenizer.
        lora_r (int): rank r of the low-rank update. Default 16 (Sec. 4.1).
        lora_alpha (float): scaling α. Default 32 (Sec. 4.1).
        lora_dropout (float): dropout on the adapter input. Default 0.05 (not in the paper).
        target_modules (list[str] | str): module names to adapt, or peft's ``"all-linear"``
            (default).
        dtype: dtype the LLM weights are loaded in (``"bfloat16"`` halves memory); ``None``
            keeps the checkpoint's default.
        max_target_tokens (int): cap on training-target pieces (EOS excluded); 64 never cuts a
            15-word caption.
        max_words (int): words kept by :meth:`decode_tokens` (the references' 15).
        max_pieces_per_word (int): the search stops after ``max_len * max_pieces_per_word``
            pieces even without EOS (a safety cap; the word limit ends captions first).
        random_init (bool): random weights from the checkpoint's config (shape only, for
            efficiency measurements without the weights); default False.
    """

    @staticmethod
    def auto_model_class() -> type:
        """The ``transformers`` Auto class that loads this decoder's LLM (subclasses)."""
        raise TypeError("HFDecoder is built through T5Decoder or OPTDecoder")

    def __init__(
        self,
        name_or_path: str,
        lora_r: int = 16,
        lora_alpha: float = 32,
        lora_dropout: float = 0.05,
        target_modules: list[str] | str = "all-linear",
        dtype: str | torch.dtype | None = None,
        max_target_tokens: int = 64,
        random_init: bool = False,
        max_words: int = 15,
        max_pieces_per_word: int = 4,
    ) -> None:
        super().__init__()
        lm, peft_model, tokenizer = _load_with_lora(self.auto_model_class(), name_or_path, dtype, lora_r, lora_alpha,
                                                    lora_dropout, target_modules, random_init)
        self.model = peft_model
        self.tokenizer = tokenizer
        self.max_target_tokens = max_target_tokens
        if max_words < 1 or max_pieces_per_word < 1:
            raise ValueError(f"max_words and max_pieces_per_word must be >= 1, got {max_words}, {max_pieces_per_word}")
        self.max_words = max_words
        self.max_pieces_per_word = max_pieces_per_word
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer; offsets are needed for "
                            "the per-piece emotion weights")
        self.eos_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        if pad is None or pad == self.eos_id:
            # padding must be distinguishable from the EOS we train on
            raise ValueError(f"tokenizer pad id {pad} is missing or equals the EOS id {self.eos_id}")
        self.pad_id = pad
        self._special_ids = set(tokenizer.all_special_ids)
        n_vocab = self.lm.get_output_embeddings().weight.shape[0]  # T5-XL: 32128 rows > 32100 tokenizer ids
        self.register_buffer("word_start", word_start_mask(tokenizer, n_vocab), persistent=False)  # (V,)
        banned = torch.zeros(n_vocab, dtype=torch.bool)
        banned[[i for i in self._special_ids if i != self.eos_id and i < n_vocab]] = True
        banned[len(tokenizer):] = True  # padding rows of the embedding matrix: no token
        self.register_buffer("banned", banned, persistent=False)  # (V,) never generated
        self.d_model = lm.get_input_embeddings().embedding_dim

    @property
    def lm(self) -> nn.Module:
        return self.model.get_base_model()

    @property
    def embed_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA ``A``/``B`` matrices, nothing else of the LLM."""
        return [p for n, p in self.named_parameters() if p.requires_grad and "lora_" in n]

    def encode_targets(
        self,
        captions: list[str],
        lexicon_words: Collection[str],
        delta: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sub-word targets: the caption pieces (at most ``max_target_tokens``) then EOS.

        A piece gets ``1 + delta`` when its character span (fast-tokenizer offset mapping)
        overlaps a lexicon word, where a word's span also covers the whitespace before it, so
        a lone space piece (``▁`` of SentencePiece, ``Ġ`` of byte-level BPE) counts with the
        word it introduces. Pieces are produced on the whole caption, so the ids are exactly
        those of ordinary tokenisation; EOS gets 1 and padding 0.
        """
        lex = set(lexicon_words)
        enc = self.tokenizer(list(captions), add_special_tokens=False, return_offsets_mapping=True,
                             truncation=True, max_length=self.max_target_tokens)
        seqs: list[list[int]] = []
        wseqs: list[list[float]] = []
        for caption, ids, offsets in zip(captions, enc["input_ids"], enc["offset_mapping"]):
            owner_is_lex = [False] * len(caption)  # char -> belongs to a lexicon word (+ its leading space)
            prev_end = 0
            for m in re.finditer(r"\S+", caption):
                if m.group() in lex:
                    owner_is_lex[prev_end:m.end()] = [True] * (m.end() - prev_end)
                prev_end = m.end()
            w = [1.0 + delta if e > s and any(owner_is_lex[s:e]) else 1.0 for s, e in offsets]
            seqs.append(list(ids) + [self.eos_id])
            wseqs.append(w + [1.0])
        targets = pad_batch(seqs, self.pad_id)  # (B, L)
        weights = torch.zeros(targets.shape, dtype=torch.float)
        for i, w in enumerate(wseqs):
            weights[i, : len(w)] = torch.tensor(w)
        return targets, weights

    def decode_tokens(self, ids: list[int]) -> str:
        """Detokenise, then cut as the references are cut: ASCII, lower case, no punctuation,
        at most ``max_words`` words (:func:`~facenet_evc.data.emvidcap.normalize_caption`)."""
        return normalize_caption(self.tokenizer.decode(ids, skip_special_tokens=True), self.max_words)

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, V)`` float32 log-probabilities of the next piece; special pieces but EOS get -inf."""
        return logits.float().log_softmax(-1).masked_fill(self.banned, float("-inf"))

    def _search(self, step, state: dict, batch_size: int, num_beams: int, max_len: int, start_id: int) -> list[list[int]]:
        """Beam search by words (module docstring): ``max_len`` words, at most
        ``max_len * max_pieces_per_word`` pieces."""
        seqs = beam_search(step, state, batch_size, num_beams, max_len * self.max_pieces_per_word, start_id,
                           self.eos_id, word_start=self.word_start, max_words=max_len)
        return [self._clean(s) for s in seqs]

    def _clean(self, seq: list[int]) -> list[int]:
        """Generated ids up to the first EOS, special tokens removed."""
        if self.eos_id in seq:
            seq = seq[: seq.index(self.eos_id)]
        return [i for i in seq if i not in self._special_ids]


def word_start_mask(tokenizer, n_vocab: int) -> torch.Tensor:
    """``(n_vocab,)`` bool: the pieces that open a new word.

    A piece opens a word when its raw form starts with the tokenizer's word marker
    (SentencePiece ``▁``, byte-level BPE ``Ġ``, or a literal space); special tokens and ids
    beyond the tokenizer (the padded rows of T5's embedding) never do.
    """
    ids = list(range(len(tokenizer)))
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_ids)
    mask = torch.zeros(n_vocab, dtype=torch.bool)
    for i, p in zip(ids, pieces):
        if i < n_vocab and i not in special and p and p.startswith(WORD_MARKERS):
            mask[i] = True
    if not mask.any():
        raise ValueError(f"{type(tokenizer).__name__}: no piece starts with a word marker {WORD_MARKERS}; "
                         "cannot count words")
    return mask


def _load_with_lora(auto_cls: Any, name_or_path: str, dtype: str | torch.dtype | None, lora_r: int,
                    lora_alpha: float, lora_dropout: float, target_modules: list[str] | str,
                    random_init: bool = False) -> tuple[Any, Any, Any]:
    """``(lm, lm with a LoRA adapter, tokenizer)`` loaded with ``from_pretrained(name_or_path)``.

    ``random_init`` builds the LLM from its ``config.json`` alone, with random weights: the
    shape of a model whose weights are not at hand (efficiency measurements), never a
    trained decoder.
    """
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    kwargs = {"dtype": _resolve_dtype(dtype)} if dtype is not None else {}
    if random_init:
        lm = auto_cls.from_config(AutoConfig.from_pretrained(name_or_path), **kwargs)
    else:
        lm = auto_cls.from_pretrained(name_or_path, **kwargs)
    return lm, attach_lora(lm, lora_r, lora_alpha, lora_dropout, target_modules), tokenizer


class T5Decoder(HFDecoder):
    """FLAN-T5 (any ``AutoModelForSeq2SeqLM``) frozen, with LoRA on the attention projections.

    LoRA perturbs each targeted linear via a trainable low-rank update: instead of
    :math:`x \\mapsto W_0x` the layer computes :math:`x \\mapsto W_0x + (\\alpha / r)BAx`, where
    :math:`r` is the rank of :math:`A` and :math:`B` and :math:`\\alpha` a scaling factor,
    with dropout before the low-rank product. The paper (Sec. 4.1) does not name the adapted
    modules. The default is peft's ``"all-linear"``: every linear of the encoder and decoder
    blocks (attention ``q k v o`` of the encoder self-, decoder self- and cross-attention, and
    the feed-forward ``wi_0 wi_1 wo``), not the LM head. On FLAN-T5 XL that is 35.4M LoRA
    parameters at r = 16, the closest of the usual choices to Table 6's 63.9M trainable
    parameters (``["q", "v"]``, the LoRA paper's Sec. 7.1 choice, gives 9.4M); QLoRA
    (Dettmers et al., 2023) finds adapting all linears needed to match full fine-tuning.

    M̄ ``(B, Nq, d_model)`` is the encoder input (``inputs_embeds``, all positions attended);
    the decoder is teacher-forced on the caption pieces.

    Args: those of :class:`HFDecoder`.
    """

    @staticmethod
    def auto_model_class() -> type:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM

    def forward(
        self,
        memory: torch.Tensor,
        targets: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        lm = self.lm
        mem = memory.to(self.embed_dtype)  # (B, Nq, D)
        attn = torch.ones(mem.shape[:2], dtype=torch.long, device=mem.device)
        # decoder start token then the targets but the last (T5 starts with <pad>)
        dec_in = lm.prepare_decoder_input_ids_from_labels(labels=targets)  # (B, L)
        out = lm(inputs_embeds=mem, attention_mask=attn, decoder_input_ids=dec_in, use_cache=False)
        logits = out.logits  # (B, L, V)
        return {"logits": logits, "loss": weighted_token_nll(logits, targets, target_weights, self.pad_id)}

    def generate(self, memory: torch.Tensor, num_beams: int = 5, max_len: int = 15) -> list[list[int]]:
        """Beam search by words (module docstring): captions of at most ``max_len`` words.

        The encoder runs once; each step feeds the last piece to the decoder with the cache.
        """
        lm = self.lm
        with self._eval_mode():
            mem = memory.to(self.embed_dtype)  # (B, Nq, D)
            attn = torch.ones(mem.shape[:2], dtype=torch.long, device=mem.device)  # (B, Nq)
            enc = lm.get_encoder()(inputs_embeds=mem, attention_mask=attn).last_hidden_state  # (B, Nq, D)

            def step(prefix: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
                out = lm(encoder_outputs=(state["enc"],), attention_mask=state["attn"],
                         decoder_input_ids=prefix[:, -1:], cache=state["cache"], use_cache=True)
                return self._log_probs(out.logits[:, -1]), {**state, "cache": out.cache}

            start = lm.config.decoder_start_token_id
            return self._search(step, {"enc": enc, "attn": attn, "cache": None}, mem.size(0), num_beams, max_len,
                                self.pad_id if start is None else start)


class OPTDecoder(HFDecoder):
    """OPT (any ``AutoModelForCausalLM``) frozen, with LoRA, M̄ as a soft prefix.

    LoRA perturbs each targeted linear via a trainable low-rank update: instead of
    :math:`x \\mapsto W_0x` the layer computes :math:`x \\mapsto W_0x + (\\alpha / r)BAx`, where
    :math:`r` is the rank of :math:`A` and :math:`B` and :math:`\\alpha` a scaling factor,
    with dropout before the low-rank product. The default targets are peft's ``"all-linear"``
    (``q_proj k_proj v_proj out_proj fc1 fc2`` of every block, not the LM head), as for T5.

    The input is ``[M̄; E(BOS); E(y_1) … E(y_{L-1})]``; the logits at positions
    ``Nq … Nq+L-1`` score ``y_1 … y_L`` (EOS last). The prefix positions are never scored,
    which is what ``labels = -100`` on the prefix would do. ``d_model`` is the width of the
    input embeddings (``word_embed_proj_dim`` for OPT, before ``project_in``).

    Args: those of :class:`HFDecoder` (``name_or_path`` e.g. ``facebook/opt-2.7b``).
    """

    @staticmethod
    def auto_model_class() -> type:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def __init__(self, name_or_path: str, **settings: Any) -> None:
        super().__init__(name_or_path, **settings)
        # OPT's tokenizer uses </s> as BOS too; a tokenizer without BOS starts from EOS likewise
        bos = self.tokenizer.bos_token_id
        self.bos_id = bos if bos is not None else self.eos_id

    def _prefix(self, memory: torch.Tensor) -> torch.Tensor:
        """``[M̄; E(BOS)]`` (B, Nq + 1, D) in the embedding dtype."""
        embed = self.lm.get_input_embeddings()
        bos = torch.full((memory.size(0), 1), self.bos_id, dtype=torch.long, device=memory.device)
        return torch.cat([memory.to(embed.weight.dtype), embed(bos)], dim=1)

    def forward(
        self,
        memory: torch.Tensor,
        targets: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        lm = self.lm
        B, L = targets.shape
        prev = targets[:, :-1]  # (B, L-1) inputs after BOS
        inputs = torch.cat([self._prefix(memory), lm.get_input_embeddings()(prev)], dim=1)  # (B, Nq+L, D)
        # right padding after the caption: the causal mask already hides it from real tokens
        attn = torch.cat([torch.ones(B, memory.size(1) + 1, dtype=torch.long, device=targets.device),
                          (prev != self.pad_id).long()], dim=1)
        out = lm(inputs_embeds=inputs, attention_mask=attn, use_cache=False, logits_to_keep=L)
        logits = out.logits  # (B, L, V): positions Nq … Nq+L-1
        return {"logits": logits, "loss": weighted_token_nll(logits, targets, target_weights, self.pad_id)}

    def generate(self, memory: torch.Tensor, num_beams: int = 5, max_len: int = 15) -> list[list[int]]:
        """Beam search by words (module docstring) from ``[M̄; E(BOS)]``: at most ``max_len`` words.

        The first step runs the whole prefix; later steps feed the last piece with the cache.
        """
        lm = self.lm
        with self._eval_mode():
            prefix = self._prefix(memory)  # (B, Nq + 1, D)

            def step(tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
                n = tokens.size(0)
                if state["cache"] is None:
                    ones = torch.ones(state["prefix"].shape[:2], dtype=torch.long, device=tokens.device)
                    out = lm(inputs_embeds=state["prefix"], attention_mask=ones, use_cache=True)
                else:
                    past = state["cache"].get_seq_length()
                    ones = torch.ones(n, past + 1, dtype=torch.long, device=tokens.device)
                    out = lm(input_ids=tokens[:, -1:], attention_mask=ones, cache=state["cache"],
                             use_cache=True)
                return self._log_probs(out.logits[:, -1]), {"prefix": None, "cache": out.cache}

            return self._search(step, {"prefix": prefix, "cache": None}, prefix.size(0), num_beams, max_len,
                                self.bos_id)
