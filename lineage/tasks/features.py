"""Text -> feature vectors, per family; the probe (``lineage.tasks.probe``) is the same for all.

Texts are tokenised the way the run's corpus was (the data module's ``tokenizer``, ``lowercase``
and ``line_is_sentence``: a multi-sentence text is split into sentences, joined by ``<eos>`` as in
the corpus stream), so that LM features see in-vocabulary ids (out-of-vocabulary -> ``<unk>``).

Which features a family gives (looked up here by family and capability, so that a new family with
the FEATURES capability needs no code here):

* ``ngram`` — a TF-IDF bag of word n-grams (orders ``probe.ngram_range``, default 1–2) fitted by
  scikit-learn's ``TfidfVectorizer`` on the task's own train texts: the classic linear baseline
  (Wang & Manning 2012; the NB/SVM rows of Socher et al. 2013). It does not use the n-gram LM's
  counts; the n-gram table row reads "bag of n-grams + logistic regression".
* ``word2vec`` / ``glove`` (models with ``keyed_vectors()``) — the mean word vector of the text,
  optionally TF-IDF weighted (``probe.pooling``), optionally with vectors also trained on the
  task's unlabelled train texts (``probe.task_texts``).
* every other family with the ``features`` capability (``rnn``, ``lstm``, ``gru``,
  ``transformer``) — ``model.features(ids)``: the LM's pooled hidden states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from lineage.data.tokenizers import tokenize
from lineage.data.vocab import EOS
from lineage.interface import Capability
from lineage.tasks.base import ProbeConfig


class TextEncoder:
    """Tokenise task texts as the run's corpus was tokenised.

    Args:
        tokenizer: ``whitespace`` or ``nltk``.
        lowercase: lowercase tokens.
        line_is_sentence: False: split a text into sentences first (joined by ``<eos>``).
        vocab: the corpus vocabulary (for :meth:`ids`).
    """

    def __init__(self, tokenizer="whitespace", lowercase=False, line_is_sentence=True, vocab=None):
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.line_is_sentence = line_is_sentence
        self.vocab = vocab

    @classmethod
    def from_datamodule(cls, datamodule) -> TextEncoder:
        return cls(
            getattr(datamodule, "tokenizer", "whitespace"),
            getattr(datamodule, "lowercase", False),
            getattr(datamodule, "line_is_sentence", True),
            datamodule.vocab,
        )

    def sentences(self, text: str) -> list[list[str]]:
        return tokenize([text], self.tokenizer, self.lowercase, self.line_is_sentence)

    def words(self, texts: Sequence[str]) -> list[list[str]]:
        """Word tokens of each text (sentence boundaries dropped)."""
        return [[w for s in self.sentences(t) for w in s] for t in texts]

    def ids(self, texts: Sequence[str], extra: dict[str, int] | None = None) -> list[list[int]]:
        """Corpus-vocabulary ids of each text, sentences joined by ``<eos>`` (none at the end).

        ``extra`` (from :meth:`new_words`) gives ids to words the corpus vocabulary lacks; any
        other unknown word is ``<unk>``.
        """
        assert self.vocab is not None
        unk = self.vocab.unk_id
        out = []
        for text in texts:
            words: list[str] = []
            for i, sentence in enumerate(self.sentences(text)):
                if i:
                    words.append(EOS)
                words.extend(sentence)
            ids = self.vocab.encode(words).tolist()
            if extra:
                ids = [
                    extra.get(w, unk) if i == unk else i for w, i in zip(words, ids, strict=True)
                ]
            out.append(ids)
        return out

    def new_words(self, texts: Sequence[str], min_count: int) -> dict[str, int]:
        """Words of ``texts`` outside the corpus vocabulary seen at least ``min_count`` times,
        most frequent first (ties alphabetical), numbered from ``len(vocab)`` on."""
        assert self.vocab is not None
        counts = Counter(
            w for words in self.words(texts) for w in words if w not in self.vocab.stoi
        )
        kept = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return {w: len(self.vocab) + j for j, w in enumerate(kept)}


class TfidfFeatures:
    """TF-IDF bag of word n-grams, fitted on the task's train texts (sparse features)."""

    kind = "tfidf"

    def __init__(self, encoder: TextEncoder, cfg: ProbeConfig):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.encoder = encoder
        self.vectorizer = TfidfVectorizer(
            analyzer="word",
            tokenizer=str.split,  # texts arrive tokenised and joined by single spaces
            token_pattern=None,
            lowercase=False,
            ngram_range=tuple(cfg.ngram_range),
            min_df=cfg.min_df,
            sublinear_tf=cfg.sublinear_tf,
        )

    def _joined(self, texts: Sequence[str]) -> list[str]:
        return [" ".join(words) for words in self.encoder.words(texts)]

    def fit(self, texts: Sequence[str]) -> TfidfFeatures:
        self.vectorizer.fit(self._joined(texts))
        return self

    def transform(self, texts: Sequence[str]):
        return self.vectorizer.transform(self._joined(texts))  # (N, n-gram types) sparse

    def describe(self) -> dict[str, float]:
        return {"dim": float(len(self.vectorizer.vocabulary_))}


class LMFeatures:
    """``model.features(ids)``: the LM's pooled hidden states (the model is frozen); with
    ``batch_size`` where the family's ``features`` takes one."""

    kind = "lm"

    def __init__(self, model, encoder: TextEncoder, batch_size: int = 64):
        import inspect

        self.model = model
        self.encoder = encoder
        self.batch_size = batch_size
        # the interface's features(texts) takes no batch size; the neural families' does
        accepts = "batch_size" in inspect.signature(model.features).parameters
        self._batching = {"batch_size": batch_size} if accepts else {}

    def fit(self, texts: Sequence[str]) -> LMFeatures:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.encoder.ids(texts)
        out = []
        for i in range(0, len(ids), 4096):  # bounded memory; the model batches inside
            chunk = self.model.features(ids[i : i + 4096], **self._batching)
            out.append(chunk.detach().cpu().numpy())
        return np.concatenate(out).astype(np.float32)  # (N, H)

    def describe(self) -> dict[str, float]:
        return {}


class VectorFeatures:
    """Mean (or TF-IDF weighted mean) word vector of a text."""

    kind = "vectors"

    def __init__(self, model, encoder: TextEncoder, cfg: ProbeConfig):
        self.model = model
        self.encoder = encoder
        self.pooling = cfg.pooling
        self.task_texts = cfg.task_texts
        self.kv = None
        self.weights: dict[str, float] | None = None

    def _words(self, texts: Sequence[str]) -> list[list[str]]:
        words = self.encoder.words(texts)
        if self.task_texts:
            return words  # the vectors were trained on these spellings
        vocab = self.encoder.vocab  # corpus-only vectors: out-of-vocabulary -> <unk>
        return [vocab.decode(vocab.encode(w)) for w in words]

    def fit(self, texts: Sequence[str]) -> VectorFeatures:
        words = self._words(texts)
        if self.task_texts:
            self.kv = self.model.train_vectors(words)
        else:
            self.kv = self.model.keyed_vectors()
        if self.pooling == "tfidf":
            n = len(words)
            df: dict[str, int] = {}
            for ws in words:
                for w in set(ws):
                    df[w] = df.get(w, 0) + 1
            # scikit-learn's smooth idf: ln((1 + n) / (1 + df)) + 1; unseen words get df = 0
            self.weights = {w: float(np.log((1 + n) / (1 + d)) + 1) for w, d in df.items()}
            self.default_weight = float(np.log(1 + n) + 1)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        from lineage.models.embeddings import pool

        weights = None
        if self.weights is not None:
            weights = (self.weights, self.default_weight)
        return pool(self.kv, self._words(texts), weights)  # (N, D)

    def describe(self) -> dict[str, float]:
        return {"dim": float(self.kv.vector_size)} if self.kv is not None else {}


def feature_extractor(model, encoder: TextEncoder, cfg: ProbeConfig):
    """The family's features for a task, or None if the family has none (then: rules or "—")."""
    if getattr(model, "family", None) == "ngram":
        return TfidfFeatures(encoder, cfg)
    if hasattr(model, "keyed_vectors"):
        return VectorFeatures(model, encoder, cfg)
    if Capability.FEATURES in getattr(model, "capabilities", ()):
        return LMFeatures(model, encoder, cfg.batch_size)
    return None
