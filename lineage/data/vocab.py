"""One word vocabulary per corpus, built from the train split only (design.md §3.1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

UNK = "<unk>"
EOS = "<eos>"


class Vocabulary:
    """An ordered list of types; ``<unk>`` and ``<eos>`` are ordinary entries.

    >>> v = Vocabulary.build([["a", "b", "a"], ["c"]], min_freq=2)
    >>> v.itos
    ['<unk>', '<eos>', 'a']
    >>> v.encode(["a", "z"]).tolist()
    [2, 0]
    """

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate entries")
        for special in (UNK, EOS):
            if special not in self.stoi:
                raise ValueError(f"vocabulary lacks the special token {special!r}")
        self.unk_id = self.stoi[UNK]
        self.eos_id = self.stoi[EOS]

    @classmethod
    def build(
        cls,
        sentences: Iterable[Sequence[str]],
        max_size: int | None = None,
        min_freq: int = 1,
    ) -> Vocabulary:
        """Specials first, then train types by descending frequency (ties alphabetical).

        ``max_size`` counts the specials; ``<unk>`` written literally in the text (as PTB does)
        is the special, so PTB yields its own 10,000 types.
        """
        counts = Counter(w for s in sentences for w in s)
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        kept = (w for w, c in counts.items() if c >= min_freq)
        words = sorted(kept, key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - 2)]
        return cls([UNK, EOS, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def encode(self, words: Sequence[str]) -> np.ndarray:
        unk = self.unk_id
        return np.fromiter((self.stoi.get(w, unk) for w in words), dtype=np.int64, count=len(words))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]
