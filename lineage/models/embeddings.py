"""Word embeddings: word2vec (gensim) and GloVe (written here), pooling, intrinsic evaluation.

No Lightning here; the LightningModules are in :mod:`lineage.modules.embedding`.

* :class:`Word2Vec` — Mikolov et al. 2013, "Efficient Estimation of Word Representations in Vector
  Space" / "Distributed Representations of Words and Phrases and their Compositionality": gensim's
  ``Word2Vec`` (Řehůřek & Sojka 2010), skip-gram with negative sampling by default, CBOW as a
  variant (``sg=0``). Seeded, and bit-for-bit repeatable with ``workers=1``, the default
  (gensim's threads race; its initial vectors come from numpy's generator seeded by ``seed``, so
  Python's per-process hash salt does not enter).
* :class:`GloVe` — Pennington, Socher & Manning 2014, "GloVe: Global Vectors for Word
  Representation" (EMNLP). Written by hand (the one family implemented here rather than taken
  from a library): co-occurrence counts over a symmetric window with 1/distance weighting
  (:func:`cooccurrence`, sparse and vectorised), then weighted least squares

      J = Σ_{ij: X_ij > 0} f(X_ij) (w_i·w̃_j + b_i + b̃_j − log X_ij)²,
      f(x) = min(1, (x / x_max)^α),  x_max = 100, α = 0.75,

  minimised with AdaGrad (``torch.optim.Adagrad``, learning rate 0.05 and initial accumulator 1 as
  in the reference C code), on shuffled mini-batches of non-zero entries; the word vectors are
  W + W̃.

Both export gensim ``KeyedVectors`` and are evaluated intrinsically (:func:`intrinsic`) on the test
sets gensim ships: Google analogies, WordSim-353 and SimLex-999.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lineage.data.vocab import Vocabulary
from lineage.interface import Capability

log = logging.getLogger(__name__)

# torch.optim.Adagrad builds sparse gradients' updates itself; the notice is about user tensors.
warnings.filterwarnings("ignore", message=r"Sparse invariant checks are implicitly disabled")

ANALOGIES = "questions-words.txt"
WORDSIM = "wordsim353.tsv"
SIMLEX = "simlex999.txt"


# ---------------------------------------------------------------------------- text


def stream_sentences(ids: np.ndarray, eos_id: int) -> list[np.ndarray]:
    """Split an id stream at ``<eos>`` into sentences (``<eos>`` dropped, empty ones too)."""
    ids = np.asarray(ids)
    cuts = np.flatnonzero(ids == eos_id)
    out, start = [], 0
    for cut in [*cuts.tolist(), len(ids)]:
        if cut > start:
            out.append(ids[start:cut])
        start = cut + 1
    return out


def sentences_as_words(ids: np.ndarray, vocab: Vocabulary) -> list[list[str]]:
    """The stream's sentences as lists of word strings (``<unk>`` kept as a word)."""
    return [vocab.decode(s) for s in stream_sentences(ids, vocab.eos_id)]


def pool(kv, texts: Sequence[Sequence[str]], weights=None) -> np.ndarray:
    """(N, D) mean word vector of each text; words missing from ``kv`` are skipped.

    Args:
        kv: gensim ``KeyedVectors``.
        texts: word lists.
        weights: None (plain mean), or ``(word -> weight, default weight)`` for a weighted mean
            (e.g. IDF).

    A text with no known word gets the zero vector.
    """
    dim = kv.vector_size
    out = np.zeros((len(texts), dim), dtype=np.float32)
    index = kv.key_to_index
    vectors = kv.vectors  # (V', D)
    for i, words in enumerate(texts):
        rows = [index[w] for w in words if w in index]
        if not rows:
            continue
        if weights is None:
            out[i] = vectors[rows].mean(axis=0)
        else:
            table, default = weights
            w = np.array([table.get(x, default) for x in words if x in index], dtype=np.float32)
            out[i] = (vectors[rows] * w[:, None]).sum(axis=0) / w.sum()
    return out


def keyed_vectors(words: Sequence[str], vectors: np.ndarray):
    """gensim ``KeyedVectors`` holding ``vectors`` (V, D) for ``words``."""
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=int(vectors.shape[1]), dtype=np.float32)
    kv.add_vectors(list(words), np.asarray(vectors, dtype=np.float32))
    return kv


# ---------------------------------------------------------------------------- intrinsic


def _count_questions(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip() and not line.startswith(":"))


def _count_pairs(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip() and not line.startswith("#"))


def intrinsic(kv, case_insensitive: bool = True) -> dict[str, float]:
    """Analogy accuracy and word-similarity Spearman ρ on gensim's shipped test sets.

    Returns ``intrinsic/analogy_acc`` (3CosAdd over the whole vocabulary, questions with an
    out-of-vocabulary word skipped), ``intrinsic/{wordsim353,simlex999}_spearman``, and for each
    the share of questions or pairs out of vocabulary, ``intrinsic/*_oov``. A score is left out
    when every question or pair is out of vocabulary (then ``*_oov`` is 1.0).
    """
    import logging as _logging

    from gensim.test.utils import datapath

    out: dict[str, float] = {}
    gensim_log = _logging.getLogger("gensim.models.keyedvectors")
    previous = gensim_log.level
    gensim_log.setLevel(_logging.ERROR)  # gensim logs every section and warns on empty ones
    try:
        path = datapath(ANALOGIES)
        total = _count_questions(path)
        _, sections = kv.evaluate_word_analogies(
            path, restrict_vocab=len(kv), case_insensitive=case_insensitive
        )
        used = sections[-1]  # "Total accuracy"
        n = len(used["correct"]) + len(used["incorrect"])
        out["intrinsic/analogy_oov"] = 1.0 - n / total
        if n:
            out["intrinsic/analogy_acc"] = len(used["correct"]) / n
        for key, name in (("wordsim353", WORDSIM), ("simlex999", SIMLEX)):
            path = datapath(name)
            total = _count_pairs(path)
            try:
                _, spearman, oov_percent = kv.evaluate_word_pairs(
                    path, restrict_vocab=len(kv), case_insensitive=case_insensitive
                )
            except (ValueError, ZeroDivisionError):  # no pair in vocabulary
                out[f"intrinsic/{key}_oov"] = 1.0
                continue
            out[f"intrinsic/{key}_oov"] = float(oov_percent) / 100.0
            rho = float(spearman.statistic if hasattr(spearman, "statistic") else spearman[0])
            if np.isfinite(rho):
                out[f"intrinsic/{key}_spearman"] = rho
    finally:
        gensim_log.setLevel(previous)
    return out


# ---------------------------------------------------------------------------- word2vec


class Word2Vec:
    """gensim Word2Vec behind the family interface (skip-gram + negative sampling by default).

    Args:
        vocab: the corpus vocabulary (the vectors cover its types that occur ``min_count`` times).
        vector_size: dimensions.
        window: maximum distance between the centre and a context word.
        sg: 1 skip-gram, 0 CBOW.
        negative: negative samples (0: none).
        hs: 1 hierarchical softmax.
        sample: down-sampling threshold of frequent words.
        min_count: ignore words rarer than this.
        epochs: passes over the corpus.
        alpha, min_alpha: linearly decayed learning rate.
        workers: threads.
        seed: initialisation and sampling seed.
    """

    family = "word2vec"
    year = 2013
    era = "2010s"
    citation = "Mikolov et al. 2013 (word2vec; gensim: Řehůřek & Sojka 2010)"
    capabilities = frozenset({Capability.FEATURES})

    def __init__(
        self,
        vocab: Vocabulary,
        vector_size: int = 100,
        window: int = 5,
        sg: int = 1,
        negative: int = 5,
        hs: int = 0,
        sample: float = 1e-3,
        min_count: int = 1,
        epochs: int = 5,
        alpha: float = 0.025,
        min_alpha: float = 0.0001,
        workers: int = 1,
        seed: int = 0,
    ):
        self.vocab = vocab
        self.settings = {
            "vector_size": int(vector_size),
            "window": int(window),
            "sg": int(sg),
            "negative": int(negative),
            "hs": int(hs),
            "sample": float(sample),
            "min_count": int(min_count),
            "epochs": int(epochs),
            "alpha": float(alpha),
            "min_alpha": float(min_alpha),
            "workers": int(workers),
            "seed": int(seed),
        }
        if self.settings["sg"] == 0:
            self.citation = "Mikolov et al. 2013 (word2vec CBOW; gensim: Řehůřek & Sojka 2010)"
        self.kv = None
        self.words_per_sec = 0.0

    def train(self, sentences: list[list[str]]):
        """A fresh gensim model trained on ``sentences``; returns its ``KeyedVectors``."""
        from gensim.models import Word2Vec as GensimWord2Vec

        start = time.perf_counter()
        model = GensimWord2Vec(sentences=sentences, **self.settings)
        seconds = time.perf_counter() - start
        words = sum(len(s) for s in sentences) * self.settings["epochs"]
        self.words_per_sec = words / seconds if seconds > 0 else 0.0
        return model.wv

    def fit(self, sentences: list[list[str]]) -> None:
        """Train the family's vectors on the corpus train split's sentences."""
        self.kv = self.train(sentences)

    def cost(self) -> dict[str, float]:
        if self.kv is None:
            return {"params": 0.0}
        # input vectors + output weights (syn1neg or syn1)
        return {"params": float(2 * self.kv.vectors.size)}

    def state_dict(self) -> dict:
        if self.kv is None:
            return {}
        return {"words": list(self.kv.index_to_key), "vectors": torch.from_numpy(self.kv.vectors)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.kv = keyed_vectors(state["words"], state["vectors"].numpy())


# ---------------------------------------------------------------------------- GloVe


def cooccurrence(
    ids: np.ndarray,
    vocab_size: int,
    window: int = 10,
    boundary_id: int | None = None,
    distance_weighting: bool = True,
    symmetric: bool = True,
):
    """GloVe's co-occurrence matrix X (scipy CSR, float64, shape (V, V)).

    For every pair of tokens ``d`` = 1..``window`` positions apart in the same sentence, add
    1/d (or 1 without ``distance_weighting``) to X[left, right], and with ``symmetric`` also to
    X[right, left]. Sentences end at ``boundary_id`` (``<eos>``), which is never counted; windows
    do not cross it. Vectorised: one pass per distance over the whole stream.

    Args:
        ids: (N,) the token stream.
        vocab_size: V.
        window: context size on each side.
        boundary_id: the sentence separator, or None for one unbroken stream.
        distance_weighting: weight a pair by 1/distance (Pennington et al. 2014, §4.2).
        symmetric: count left and right contexts (else X[i, j] counts j to the right of i).
    """
    import scipy.sparse as sp

    ids = np.asarray(ids, dtype=np.int64)
    if boundary_id is None:
        sentence = np.zeros(len(ids), dtype=np.int64)
        keep = np.ones(len(ids), dtype=bool)
    else:
        is_boundary = ids == boundary_id
        sentence = np.cumsum(is_boundary)  # (N,) sentence index; a boundary starts the next one
        keep = ~is_boundary
    X = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for d in range(1, window + 1):
        if d >= len(ids):
            break
        ok = keep[:-d] & keep[d:] & (sentence[:-d] == sentence[d:])  # (N-d,)
        left, right = ids[:-d][ok], ids[d:][ok]
        weight = 1.0 / d if distance_weighting else 1.0
        data = np.full(len(left), weight, dtype=np.float64)
        X = X + sp.csr_matrix((data, (left, right)), shape=(vocab_size, vocab_size))
    if symmetric:
        X = X + X.T
    X = X.tocsr()
    X.sum_duplicates()
    X.eliminate_zeros()
    return X


class GloVe(nn.Module):
    """GloVe's parameters and loss (Pennington et al. 2014); trained by AdaGrad outside.

    Args:
        vocab_size: V.
        dim: vector dimensions.
        x_max: the weighting function's cut-off.
        alpha: the weighting function's exponent.

    Embeddings are sparse (``nn.Embedding(sparse=True)``): a mini-batch touches few rows, and
    AdaGrad updates only those, as in the reference implementation. Initialisation as there:
    uniform in [-0.5, 0.5] / dim for vectors and biases.
    """

    family = "glove"
    year = 2014
    era = "2010s"
    citation = "Pennington, Socher & Manning 2014 (GloVe)"
    capabilities = frozenset({Capability.FEATURES})

    def __init__(self, vocab_size: int, dim: int = 100, x_max: float = 100.0, alpha: float = 0.75):
        super().__init__()
        self.x_max = float(x_max)
        self.alpha = float(alpha)
        self.w = nn.Embedding(vocab_size, dim, sparse=True)  # word vectors W
        self.w_ctx = nn.Embedding(vocab_size, dim, sparse=True)  # context vectors W̃
        self.b = nn.Embedding(vocab_size, 1, sparse=True)
        self.b_ctx = nn.Embedding(vocab_size, 1, sparse=True)
        for emb in (self.w, self.w_ctx, self.b, self.b_ctx):
            nn.init.uniform_(emb.weight, -0.5 / dim, 0.5 / dim)

    def weighting(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = min(1, (x / x_max)^α)."""
        return torch.clamp((x / self.x_max) ** self.alpha, max=1.0)

    def predict(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(B,) w_i·w̃_j + b_i + b̃_j: the model's log co-occurrence."""
        dots = (self.w(rows) * self.w_ctx(cols)).sum(-1)  # (B,)
        return dots + self.b(rows).squeeze(-1) + self.b_ctx(cols).squeeze(-1)

    def loss(
        self, rows: torch.Tensor, cols: torch.Tensor, log_x: torch.Tensor, f_x: torch.Tensor
    ) -> torch.Tensor:
        """Σ_batch ½ f(X_ij) (prediction − log X_ij)², a scalar (the reference code's cost)."""
        diff = self.predict(rows, cols) - log_x  # (B,)
        return 0.5 * (f_x * diff * diff).sum()

    def vectors(self) -> np.ndarray:
        """(V, D) the word vectors W + W̃ (Pennington et al. 2014, §4.2)."""
        return (self.w.weight + self.w_ctx.weight).detach().cpu().numpy().astype(np.float32)


def glove_entries(X, model: GloVe) -> dict[str, torch.Tensor]:
    """The non-zero entries of X as tensors: ``rows``, ``cols`` (int64), ``log_x``, ``f_x``."""
    coo = X.tocoo()
    x = torch.from_numpy(coo.data.astype(np.float32))
    return {
        "rows": torch.from_numpy(coo.row.astype(np.int64)),
        "cols": torch.from_numpy(coo.col.astype(np.int64)),
        "log_x": torch.log(x),
        "f_x": model.weighting(x),
    }


def glove_epoch(
    model: GloVe,
    optimizer,
    entries: dict[str, torch.Tensor],
    batch_size: int,
    generator: torch.Generator,
    backward: Callable[[torch.Tensor], None] | None = None,
) -> float:
    """One pass over the shuffled non-zero entries; returns the mean cost per entry.

    Args:
        model: the GloVe parameters.
        optimizer: AdaGrad over ``model.parameters()`` (anything with ``zero_grad``/``step``).
        entries: from :func:`glove_entries`.
        batch_size: entries per update.
        generator: the shuffle's random generator.
        backward: how to back-propagate (Lightning's ``manual_backward``); default
            ``loss.backward()``.
    """
    n = len(entries["rows"])
    order = torch.randperm(n, generator=generator)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad()
        loss = model.loss(
            entries["rows"][idx], entries["cols"][idx], entries["log_x"][idx], entries["f_x"][idx]
        )
        if backward is None:
            loss.backward()
        else:
            backward(loss)
        optimizer.step()
        total += float(loss.detach())
    return total / max(n, 1)


def glove_optimizer(model: GloVe, lr: float = 0.05, initial_accumulator_value: float = 1.0):
    """AdaGrad as the reference code sets it up (learning rate 0.05, accumulators start at 1)."""
    return torch.optim.Adagrad(
        model.parameters(), lr=lr, initial_accumulator_value=initial_accumulator_value
    )


def train_glove(
    sentences: Sequence[Sequence[str]],
    dim: int = 100,
    window: int = 10,
    x_max: float = 100.0,
    alpha: float = 0.75,
    epochs: int = 25,
    lr: float = 0.05,
    batch_size: int = 512,
    min_count: int = 1,
    seed: int = 0,
    distance_weighting: bool = True,
    symmetric: bool = True,
):
    """GloVe vectors for word-list sentences (used when a task adds its own texts).

    Returns gensim ``KeyedVectors`` over the words seen at least ``min_count`` times.
    """
    from collections import Counter

    counts = Counter(w for s in sentences for w in s)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(words)}
    boundary = len(words)
    stream: list[int] = []
    for s in sentences:
        stream.extend(index[w] for w in s if w in index)
        stream.append(boundary)
    X = cooccurrence(
        np.array(stream), boundary + 1, window, boundary, distance_weighting, symmetric
    )[:boundary, :boundary]
    torch.manual_seed(seed)
    model = GloVe(len(words), dim, x_max, alpha)
    optimizer = glove_optimizer(model, lr)
    entries = glove_entries(X, model)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        glove_epoch(model, optimizer, entries, batch_size, generator)
    return keyed_vectors(words, model.vectors())


class VectorBag(nn.Module):
    """A text as its word vectors, trainable: the body of the averaged-vector classifier.

    Under :class:`lineage.tasks.finetune.TextClassifier` (mean over the text's positions, then a
    linear head) this is VecAvg of Socher et al. 2013 (Table 1): word vectors averaged, word order
    ignored, vectors and head trained on the labels. ``finetune`` starts it from the family's
    vectors, ``scratch`` from random ones.

    Args:
        vectors: (V, D) initial rows, one per id.
    """

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(vectors.float(), freeze=False)

    def hidden(self, tokens: torch.Tensor, state=None):
        """(B, T) ids -> ((B, T, D) the words' vectors, ``state`` unchanged)."""
        return self.embedding(tokens), state

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def set_input_embeddings(self, embedding: nn.Embedding) -> None:
        self.embedding = embedding
