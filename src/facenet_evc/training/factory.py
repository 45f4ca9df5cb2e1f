"""One entry point that builds FACE-net, and loads its weights when given a checkpoint.

In the spirit of open_clip's ``create_model``: :func:`create_facenet` is the only place that
turns a configuration into a :class:`~facenet_evc.models.facenet.FaceNet` (decoder of
``cfg.decoder`` inside, memory width ``cfg.d`` for the word decoders). Two uses:

* a new model (training): ``create_facenet(cfg, vocab=..., lexicon_words=..., lexicon_vectors=...,
  word_category=...)`` -- the lexicon tensors become buffers (E_0 of eq. 2 and the word ->
  category table);
* a trained one: ``create_facenet(checkpoint=dir)`` or ``create_facenet(meta=..., weights=...)``
  (an exported model directory keeps the two apart): the config, vocabulary and lexicon words
  come from ``meta.json``, the lexicon tensors and weights from ``model.safetensors``; the
  model is returned in eval mode on ``device``.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from facenet_evc.models.config import FaceNetConfig
from facenet_evc.models.decoders import Vocab, create_decoder
from facenet_evc.models.facenet import FaceNet
from facenet_evc.training.checkpoint import MODEL_FILE, CheckpointError, load_model_tensors, read_meta


def create_facenet(
    cfg: FaceNetConfig | None = None,
    *,
    vocab: Vocab | None = None,
    lexicon_words: Collection[str] = (),
    lexicon_vectors: Any = None,
    word_category: Any = None,
    checkpoint: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    decoder_pretrained: str | None = None,
    random_init: bool = False,
) -> FaceNet:
    """FACE-net, new (``cfg`` + lexicon tensors) or trained (``checkpoint``, or ``meta`` + ``weights``).

    ``decoder_pretrained`` replaces ``decoder_settings.pretrained`` of a trained LLM decoder (an
    exported model carries its base LLM in its own folder); ``random_init`` gives a new LLM decoder
    random weights of its pretrained shape (efficiency measurements). A new model is returned on the CPU
    in training mode, as the trainer builds it; a trained one in eval mode on ``device``.
    """
    if checkpoint is not None:
        if meta is not None or weights is not None:
            raise ValueError("create_facenet: give checkpoint, or meta and weights, not both")
        meta, weights = read_meta(checkpoint), Path(checkpoint) / MODEL_FILE
    if meta is None:
        if cfg is None or lexicon_vectors is None or word_category is None:
            raise ValueError("create_facenet: a new model needs cfg, lexicon_vectors and word_category")
        return _build(cfg, vocab, lexicon_words, lexicon_vectors, word_category, random_init)
    if weights is None:
        raise ValueError("create_facenet: meta without weights")
    return _load(meta, weights, device, decoder_pretrained)


def load_model(checkpoint_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FaceNet, dict[str, Any]]:
    """FACE-net rebuilt from a checkpoint directory, in eval mode on ``device``; and its meta."""
    meta = read_meta(checkpoint_dir)
    return create_facenet(meta=meta, weights=Path(checkpoint_dir) / MODEL_FILE, device=device), meta


def _build(cfg: FaceNetConfig, vocab: Vocab | None, lexicon_words: Collection[str], lexicon_vectors: Any,
           word_category: Any, random_init: bool = False) -> FaceNet:
    decoder = create_decoder(cfg.decoder, cfg.d, cfg.decoder_settings, vocab, list(lexicon_words),
                             random_init=random_init)
    return FaceNet(cfg, torch.as_tensor(lexicon_vectors, dtype=torch.float32),
                   torch.as_tensor(word_category, dtype=torch.float32), decoder)


def _load(meta: Mapping[str, Any], weights: str | Path, device: str | torch.device,
          decoder_pretrained: str | None) -> FaceNet:
    from safetensors.torch import load_file

    cfg_dict = dict(meta["model_config"])
    if decoder_pretrained is not None:
        cfg_dict["decoder_settings"] = {**dict(cfg_dict.get("decoder_settings") or {}), "pretrained": str(decoder_pretrained)}
    cfg = FaceNetConfig.from_dict(cfg_dict)
    vocab = Vocab.from_dict(meta["vocab"]) if meta.get("vocab") else None
    tensors = load_file(str(weights), device="cpu")
    for key in ("lexicon", "word_category"):
        if key not in tensors:
            raise CheckpointError(f"{weights}: has no {key!r} tensor")
    model = _build(cfg, vocab, meta.get("lexicon_words") or [], tensors["lexicon"], tensors["word_category"])
    load_model_tensors(model, tensors, str(weights))
    return model.to(device).eval()
