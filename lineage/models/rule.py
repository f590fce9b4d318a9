"""Rule-based language models (1950s–80s): hand-written word classes and class transitions.

``RuleLM`` follows the knowledge-engineering tradition of early grammar-based systems: closed
word classes (determiners, prepositions, pronouns, auxiliaries, conjunctions, punctuation, numbers,
end of sentence) are listed by hand, every other type is "open", and a hand-set table says how
likely each class is to follow each class. Within a class all members are equally likely, and the
result is mixed with a uniform floor ε so that every type has non-zero probability:

    P(w | prev) = (1 - ε) · W[c(prev), c(w)] / Σ_c' W[c(prev), c'] / |c(w)|  +  ε / V

where the sum runs over the classes that have members in the vocabulary. Nothing is estimated
from the corpus beyond the vocabulary itself. ``UniformLM`` is the sanity baseline: P(w) = 1/V,
so its perplexity is exactly V.

References: Chomsky 1957 (Syntactic Structures); Greene & Rubin 1971 (the TAGGIT rule tagger);
Jurafsky & Martin, *Speech and Language Processing*, ch. 8 (closed and open classes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from lineage.data.vocab import EOS, Vocabulary
from lineage.interface import Capability

OPEN = "open"
EOS_CLASS = "eos"


class UniformLM:
    """Every type equally likely: P(w | h) = 1 / V, perplexity exactly V."""

    family = "rule"
    year = 1948
    era = "1950s–80s"
    citation = "Shannon 1948 (uniform source: the zero-knowledge baseline)"
    capabilities = frozenset({Capability.LOG_PROB, Capability.GENERATE})

    def __init__(self, vocab: Vocabulary):
        self.V = len(vocab)

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        out = np.full(tokens.shape, -math.log(self.V))  # (N,)
        out[0] = 0.0
        return out

    def next_token_log_probs(self, contexts: np.ndarray) -> np.ndarray:
        return np.full((contexts.shape[0], self.V), -math.log(self.V))  # (B, V)

    def cost(self) -> dict[str, float]:
        return {"params": 0.0}


class RuleLM:
    """Class-transition rules written by hand, mixed with a uniform floor.

    Args:
        vocab: the corpus vocabulary.
        classes: class name -> list of member words, or ``{"pattern": regex}`` for classes
            defined by form (numbers, punctuation). A word belongs to the first class that
            claims it, in the order given; ``<eos>`` is the class ``eos``; all else is ``open``.
        transitions: previous class -> {next class: weight}, weights set by hand (unnormalised).
            Every class, including ``open`` and ``eos``, needs a row.
        floor: ε, the share of probability spread uniformly over the vocabulary (0 < ε ≤ 1).
        lowercase: match words case-insensitively.
    """

    family = "rule"
    year = 1957
    era = "1950s–80s"
    citation = "Chomsky 1957; Greene & Rubin 1971 (hand-written word-class rules)"
    capabilities = frozenset({Capability.LOG_PROB, Capability.GENERATE})

    def __init__(
        self,
        vocab: Vocabulary,
        classes: Mapping[str, Sequence[str] | Mapping[str, str]],
        transitions: Mapping[str, Mapping[str, float]],
        floor: float = 0.05,
        lowercase: bool = True,
    ):
        if not 0.0 < floor <= 1.0:
            raise ValueError(f"model.lm.floor must be in (0, 1], got {floor}")
        self.V = len(vocab)
        self.floor = float(floor)
        self.class_names = [*classes.keys(), EOS_CLASS, OPEN]
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"model.lm.classes must not define {EOS_CLASS!r} or {OPEN!r} itself")
        index = {c: i for i, c in enumerate(self.class_names)}
        self.word_class = self._assign(vocab, classes, index, lowercase)  # (V,)
        sizes = np.bincount(self.word_class, minlength=len(self.class_names))  # (C,)

        weights = np.zeros((len(self.class_names),) * 2)  # (C, C) prev -> next
        for prev in self.class_names:
            if prev not in transitions:
                raise ValueError(
                    f"model.lm.transitions has no row for class {prev!r}; add one "
                    f"(known classes: {', '.join(self.class_names)})"
                )
            for nxt, w in transitions[prev].items():
                if nxt not in index:
                    raise ValueError(
                        f"model.lm.transitions.{prev} names unknown class {nxt!r} "
                        f"(known classes: {', '.join(self.class_names)})"
                    )
                if w < 0:
                    raise ValueError(f"model.lm.transitions.{prev}.{nxt} must be >= 0, got {w}")
                weights[index[prev], index[nxt]] = float(w)
        weights[:, sizes == 0] = 0.0  # a class with no member in this vocabulary gets no mass
        totals = weights.sum(axis=1, keepdims=True)  # (C, 1)
        if (totals[sizes > 0] <= 0).any():
            rows = zip(self.class_names, totals[:, 0], sizes, strict=True)
            empty = [c for c, t, s in rows if s and t <= 0]
            raise ValueError(f"model.lm.transitions gives no weight after classes {empty}")
        class_probs = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        # (C, V): P(w | previous class) = (1-ε) P(class of w | prev class) / |class of w| + ε/V
        per_word = class_probs[:, self.word_class] / sizes[self.word_class]
        self.table = np.log((1.0 - self.floor) * per_word + self.floor / self.V)  # (C, V)
        self.sizes = sizes

    @staticmethod
    def _assign(vocab, classes, index, lowercase) -> np.ndarray:
        word_class = np.full(len(vocab), index[OPEN], dtype=np.int64)  # (V,)
        assigned = np.zeros(len(vocab), dtype=bool)
        words = [w.lower() if lowercase else w for w in vocab.itos]
        for name, spec in classes.items():
            if isinstance(spec, Mapping):
                if "pattern" not in spec:
                    raise ValueError(f"model.lm.classes.{name} needs a word list or a 'pattern'")
                pattern = re.compile(spec["pattern"])
                member = np.array([bool(pattern.fullmatch(w)) for w in vocab.itos])
            else:
                odd = [w for w in spec if not isinstance(w, str)]
                if odd:
                    raise ValueError(
                        f"model.lm.classes.{name} has non-word entries {odd}: quote words that "
                        'YAML reads as booleans or numbers ("no", "on", "off", "yes")'
                    )
                listed = {w.lower() if lowercase else w for w in spec}
                member = np.array([w in listed for w in words])
            member &= ~assigned
            word_class[member] = index[name]
            assigned |= member
        word_class[vocab.eos_id] = index[EOS_CLASS]
        return word_class

    def log_probs(self, tokens: np.ndarray) -> np.ndarray:
        out = np.zeros(tokens.shape, dtype=np.float64)  # (N,)
        out[1:] = self.table[self.word_class[tokens[:-1]], tokens[1:]]
        return out

    def next_token_log_probs(self, contexts: np.ndarray) -> np.ndarray:
        if contexts.shape[1] == 0:  # no history: as after an end of sentence
            prev = np.full(contexts.shape[0], self.class_names.index(EOS_CLASS))
        else:
            prev = self.word_class[contexts[:, -1]]
        return self.table[prev].copy()  # (B, V)

    def class_of(self, word_id: int) -> str:
        return self.class_names[self.word_class[word_id]]

    def cost(self) -> dict[str, float]:
        # the hand-set numbers: transition weights, plus ε
        return {"params": float(len(self.class_names) ** 2 + 1)}


__all__ = ["EOS", "RuleLM", "UniformLM"]
