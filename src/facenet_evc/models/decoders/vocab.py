"""Word vocabulary of the LSTM / Transformer decoders, built the way EPAN's loader builds it.

EPAN (``loader/data_loader.py``) counts the words of the normalised training captions,
keeps those seen at least ``min_count`` times and then merges in every emotion-lexicon word,
seen or not, so that an emotion word is always *generable* even when the training split
never uses it. The paper (Sec. 4.1) reports vocabularies of 9,637 / 13,980 / 14,034 words
built this way. The exact id order of EPAN is not reproduced (nothing depends on it); ours
is deterministic: specials, training words by descending count (ties alphabetical), then
the lexicon words not yet present in the order given.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch

PAD, SOS, EOS, UNK = "<PAD>", "<SOS>", "<EOS>", "<UNK>"
SPECIALS: tuple[str, ...] = (PAD, SOS, EOS, UNK)
PAD_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


class Vocab:
    """Bidirectional word <-> id map with the four specials ``<PAD>=0 <SOS>=1 <EOS>=2 <UNK>=3``.

    Args:
        words: the non-special words, in id order (ids start at 4).
    """

    pad_id = PAD_ID
    sos_id = SOS_ID
    eos_id = EOS_ID
    unk_id = UNK_ID

    def __init__(self, words: Sequence[str]) -> None:
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(SPECIALS)}
        for w in words:
            if w in self.stoi:
                raise ValueError(f"duplicate vocabulary word {w!r}")
            self.stoi[w] = len(self.itos)
            self.itos.append(w)

    @classmethod
    def build(
        cls,
        captions: Iterable[str],
        lexicon_words: Iterable[str] = (),
        min_count: int = 1,
    ) -> Vocab:
        """Vocabulary of the (already normalised) training captions plus every lexicon word.

        Args:
            captions: normalised caption strings (lowercase, no punctuation, <= 15 words).
            lexicon_words: emotion words merged in even when unseen or rarer than
                ``min_count``; a ``set`` is merged in sorted order for determinism.
            min_count: minimum number of occurrences for a caption word to be kept.
        """
        counts = Counter(w for c in captions for w in c.split())
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        lex = sorted(lexicon_words) if isinstance(lexicon_words, (set, frozenset)) else list(lexicon_words)
        seen = set(kept)
        for w in lex:
            if w not in seen and w not in SPECIALS:
                kept.append(w)
                seen.add(w)
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def encode(self, caption: str, max_len: int = 15) -> list[int]:
        """``[SOS, w_1 … w_n, EOS]`` with ``n <= max_len`` (extra words are cut), OOV -> UNK."""
        words = caption.split()[:max_len]
        return [SOS_ID, *(self.stoi.get(w, UNK_ID) for w in words), EOS_ID]

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first EOS, specials skipped."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i < len(SPECIALS):
                continue
            out.append(self.itos[i])
        return " ".join(out)

    def emotion_mask(self, lexicon_words: Iterable[str]) -> torch.Tensor:
        """BoolTensor ``(V,)``: True at the ids of lexicon words present in the vocabulary."""
        mask = torch.zeros(len(self), dtype=torch.bool)
        for w in lexicon_words:
            i = self.stoi.get(w)
            if i is not None and i >= len(SPECIALS):
                mask[i] = True
        return mask

    def to_dict(self) -> dict:
        """JSON-serialisable form, stored in checkpoints next to the weights."""
        return {"specials": list(SPECIALS), "words": self.itos[len(SPECIALS):]}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if list(d.get("specials", SPECIALS)) != list(SPECIALS):
            raise ValueError(f"vocabulary has specials {d.get('specials')}, expected {list(SPECIALS)}")
        return cls(d["words"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"
