"""What the two word-vocabulary decoders (LSTM, Transformer) share: targets and decoding."""
from __future__ import annotations

from collections.abc import Collection

import torch

from .base import CaptionDecoder, pad_batch
from .vocab import PAD_ID, SOS_ID, UNK_ID, Vocab


class WordDecoder(CaptionDecoder):
    """Base of the decoders that predict words of a :class:`Vocab`.

    ``targets`` are ``Vocab.encode`` ids without the leading ``<SOS>`` (the words and
    ``<EOS>``), right-padded with ``<PAD>`` = 0.
    """

    def __init__(self, vocab: Vocab, max_words: int = 15) -> None:
        super().__init__()
        self.vocab = vocab
        self.pad_id = PAD_ID
        self.max_words = max_words
        # never generated: padding, the start token and <UNK> (an <UNK> caption word is useless)
        banned = torch.zeros(len(vocab), dtype=torch.bool)
        banned[[PAD_ID, SOS_ID, UNK_ID]] = True
        self.register_buffer("banned", banned, persistent=False)

    def encode_targets(
        self,
        captions: list[str],
        lexicon_words: Collection[str],
        delta: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``(B, L)`` and eq. 30 weights: ``1 + delta`` where the target word is in
        ``lexicon_words`` (by vocabulary entry, so an out-of-vocabulary word mapped to <UNK>
        is not weighted), ``1`` on other words and <EOS>, ``0`` on padding."""
        seqs = [self.vocab.encode(c, self.max_words)[1:] for c in captions]
        targets = pad_batch(seqs, PAD_ID)  # (B, L)
        is_lex = self.vocab.emotion_mask(lexicon_words)[targets]  # (B, L)
        weights = torch.where(is_lex, 1.0 + delta, 1.0) * (targets != PAD_ID)
        return targets, weights.float()

    def decode_tokens(self, ids: list[int]) -> str:
        return self.vocab.decode(ids)

    def _shift_right(self, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs: ``<SOS>`` then the targets but the last. (B, L)"""
        sos = targets.new_full((targets.size(0), 1), SOS_ID)
        return torch.cat([sos, targets[:, :-1]], dim=1)
