"""GloVe (own implementation) against brute force and a planted solution; word2vec through gensim;
pooling; intrinsic evaluation on gensim's shipped test sets with planted answers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.test.utils import datapath

from lineage.data.vocab import Vocabulary
from lineage.models.embeddings import (
    GloVe,
    Word2Vec,
    cooccurrence,
    glove_entries,
    glove_epoch,
    glove_optimizer,
    intrinsic,
    keyed_vectors,
    pool,
    stream_sentences,
)

TOY = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "a cat and a dog".split(),
    "the cat saw the dog on the mat".split(),
]


def _stream(sentences, vocab: Vocabulary) -> np.ndarray:
    ids = [vocab.eos_id]
    for s in sentences:
        ids.extend(vocab.encode(s).tolist())
        ids.append(vocab.eos_id)
    return np.array(ids)


def _brute_force(sentences, vocab, window, weighting, symmetric):
    counts = defaultdict(float)
    for s in sentences:
        ids = vocab.encode(s).tolist()
        for i, centre in enumerate(ids):
            for j in range(max(0, i - window), min(len(ids), i + window + 1)):
                d = abs(i - j)
                if d == 0 or (not symmetric and j < i):
                    continue
                counts[centre, ids[j]] += 1.0 / d if weighting else 1.0
    return counts


@pytest.mark.parametrize("window", [1, 3, 10])
@pytest.mark.parametrize("weighting", [True, False])
@pytest.mark.parametrize("symmetric", [True, False])
def test_cooccurrence_matches_a_brute_force_count(window, weighting, symmetric):
    vocab = Vocabulary.build(TOY)
    X = cooccurrence(_stream(TOY, vocab), len(vocab), window, vocab.eos_id, weighting, symmetric)
    expected = _brute_force(TOY, vocab, window, weighting, symmetric)
    dense = X.toarray()
    assert X.shape == (len(vocab), len(vocab))
    for (i, j), value in expected.items():
        assert dense[i, j] == pytest.approx(value)
    assert X.nnz == len(expected)  # nothing else, <eos> never counted, no cross-sentence pair
    assert dense[vocab.eos_id].sum() == 0 and dense[:, vocab.eos_id].sum() == 0
    if symmetric:
        assert np.allclose(dense, dense.T)


def test_stream_sentences_split_at_eos():
    assert [s.tolist() for s in stream_sentences(np.array([1, 5, 6, 1, 1, 7, 1]), 1)] == [
        [5, 6],
        [7],
    ]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fit(X, dim, epochs, x_max=100.0, lr=0.05, batch_size=64, seed=0):
    torch.manual_seed(seed)
    model = GloVe(X.shape[0], dim, x_max=x_max)
    optimizer = glove_optimizer(model, lr=lr)
    entries = glove_entries(X, model)
    generator = torch.Generator().manual_seed(seed)
    losses = [glove_epoch(model, optimizer, entries, batch_size, generator) for _ in range(epochs)]
    return model, entries, losses


def test_glove_loss_decreases():
    vocab = Vocabulary.build(TOY * 3)
    X = cooccurrence(_stream(TOY * 3, vocab), len(vocab), 5, vocab.eos_id)
    _, _, losses = _fit(X, dim=10, epochs=15, x_max=10.0)
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a * 1.05 for a, b in zip(losses, losses[1:], strict=False))  # ~monotone


def test_glove_dot_products_approach_log_counts_on_a_planted_matrix():
    """X_ij = exp(u_i·v_j + a_i + c_j) has an exact rank-4 solution; f(X) = 1 everywhere."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    V, k = 30, 4
    u, v = rng.normal(0, 0.5, (V, k)), rng.normal(0, 0.5, (V, k))
    a, c = rng.normal(3, 0.3, V), rng.normal(3, 0.3, V)
    log_x = u @ v.T + a[:, None] + c[None, :]  # (V, V), all entries > e^1
    X = sp.csr_matrix(np.exp(log_x))
    model, entries, losses = _fit(X, dim=8, epochs=150, x_max=1.0, lr=0.5, batch_size=300)
    with torch.no_grad():
        pred = model.predict(entries["rows"], entries["cols"]).numpy()
    residual = np.sqrt(np.mean((pred - entries["log_x"].numpy()) ** 2))
    assert residual < 0.05, residual  # log counts span ~±2 around 6
    assert losses[-1] < 1e-3 * losses[0]


def test_glove_vectors_are_w_plus_w_tilde():
    model = GloVe(5, 3)
    expected = (model.w.weight + model.w_ctx.weight).detach().numpy()
    assert np.allclose(model.vectors(), expected)
    x = torch.tensor([1.0, 50.0, 100.0, 400.0])
    assert torch.allclose(model.weighting(x), torch.tensor([0.01**0.75, 0.5**0.75, 1.0, 1.0]))


def test_word2vec_trains_and_is_seeded():
    vocab = Vocabulary.build(TOY)
    sentences = TOY * 20

    def vectors(seed):
        w2v = Word2Vec(vocab, vector_size=8, window=2, epochs=3, workers=1, seed=seed)
        w2v.fit(sentences)
        return w2v

    a, b, c = vectors(1), vectors(1), vectors(2)
    assert np.array_equal(a.kv.vectors, b.kv.vectors)  # workers=1: bit-identical
    assert not np.array_equal(a.kv.vectors, c.kv.vectors)
    assert set(a.kv.index_to_key) == {w for s in TOY for w in s}
    restored = Word2Vec(vocab)
    restored.load_state_dict(a.state_dict())
    assert np.array_equal(restored.kv["cat"], a.kv["cat"])
    extra = a.train([*sentences, *[["zebra", "cat"]] * 3])
    assert "zebra" in extra.key_to_index and "zebra" not in a.kv.key_to_index


def test_word2vec_vectors_are_identical_in_every_process():
    """The default (one worker) repeats a seed's vectors bit for bit in a new process, whatever
    Python's per-process hash salt."""
    import os
    import subprocess
    import sys

    script = (
        "import hashlib; from lineage.data.vocab import Vocabulary; "
        "from lineage.models.embeddings import Word2Vec; "
        "s = [['the','cat','sat','on','the','mat'], ['a','dog','ran']] * 20; "
        "w = Word2Vec(Vocabulary.build(s), vector_size=8, window=2, epochs=2, seed=3); w.fit(s); "
        "print(hashlib.sha256(w.kv.vectors.tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    digests = set()
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_pool_mean_and_weighted_mean():
    kv = keyed_vectors(["a", "b"], np.array([[1.0, 0.0], [0.0, 2.0]]))
    out = pool(kv, [["a", "b", "zzz"], [], ["b"]])
    assert out.tolist() == [[0.5, 1.0], [0.0, 0.0], [0.0, 2.0]]
    weighted = pool(kv, [["a", "b"]], ({"a": 3.0}, 1.0))
    assert weighted.tolist() == [[0.75, 0.5]]


def test_intrinsic_on_planted_vectors():
    """capital = country + offset: every question among these pairs is answered correctly."""
    pairs = [
        ("Athens", "Greece"),
        ("Baghdad", "Iraq"),
        ("Bangkok", "Thailand"),
        ("Beijing", "China"),
        ("Berlin", "Germany"),
    ]
    rng = np.random.default_rng(0)
    offset = rng.normal(size=50)
    words, vecs = [], []
    for capital, country in pairs:
        base = rng.normal(size=50) * 3
        words += [capital.lower(), country.lower()]
        vecs += [base + offset, base]
    # WordSim-353 pairs: "tiger"/"cat" close, "love"/"sex" far apart
    words += ["tiger", "cat", "love", "sex"]
    t = rng.normal(size=50)
    vecs += [t, t + 0.1 * rng.normal(size=50), rng.normal(size=50), rng.normal(size=50)]
    metrics = intrinsic(keyed_vectors(words, np.array(vecs)))
    assert metrics["intrinsic/analogy_acc"] == 1.0
    known = {w for pair in pairs for w in pair}
    lines = Path(datapath("questions-words.txt")).read_text().splitlines()
    questions = [q.split() for q in lines if q and not q.startswith(":")]
    answerable = sum(set(q) <= known for q in questions)
    assert answerable >= 20  # 5 pairs: 20 ordered questions in capital-common-countries alone
    assert metrics["intrinsic/analogy_oov"] == pytest.approx(1 - answerable / len(questions))
    assert 0.99 < metrics["intrinsic/wordsim353_oov"] < 1.0
    assert (
        metrics["intrinsic/simlex999_oov"] == 1.0 and "intrinsic/simlex999_spearman" not in metrics
    )


def test_vectors_on_extra_texts_are_trained_once_per_distinct_texts(caplog):
    """A task's probe and its fine-tuning both ask for vectors on its train texts: one training."""
    import logging

    from lineage.modules.embedding import Word2VecModule

    vocab = Vocabulary.build(TOY)
    spec = {"_target_": "lineage.models.embeddings.Word2Vec", "_partial_": True, "vector_size": 8,
            "window": 2, "epochs": 3, "workers": 1, "seed": 0}  # fmt: skip
    module = Word2VecModule(vocab.itos, spec, evaluate=False)
    module._corpus_words = TOY * 20  # as fit leaves it
    texts = [["zebra", "cat"]] * 3
    with caplog.at_level(logging.INFO, logger="lineage"):
        first = module.train_vectors(texts)
        again = module.train_vectors([list(t) for t in texts])  # equal texts, new lists
        other = module.train_vectors([["lion", "dog"]] * 3)
    assert again is first and "zebra" in first.key_to_index
    assert other is not first and "lion" in other.key_to_index
    trained = [r for r in caplog.records if "training vectors on the corpus" in r.getMessage()]
    assert len(trained) == 2
