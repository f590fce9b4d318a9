"""NgramLM against a brute-force reference, a hand-worked example, and its own invariants.

The reference below is written from the model definition (dicts of tuples and loops), not from the
module's code: raw counts at the top order, continuation counts below it, Chen & Goodman's three
discounts per order, interpolation down to the uniform distribution.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest

from lineage.data.vocab import Vocabulary
from lineage.models.ngram import NgramLM

ENGLISH = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog met on the road",
    "colorless green ideas sleep furiously",
    "the quick brown fox jumps over the lazy dog",
    "time flies like an arrow",
    "fruit flies like a banana",
    # "sing" gets exactly four distinct left neighbours, so n4 > 0 for the continuation unigrams.
    "we sing",
    "they sing",
    "you sing",
    "i sing",
]


def _train_sentences() -> list[list[str]]:
    """~3,400 tokens: a seeded Zipf-like stream over 30 types plus repeated English sentences."""
    rng = np.random.default_rng(1995)
    p = 1.0 / np.arange(1, 31) ** 1.2
    p /= p.sum()
    sentences = [[f"w{i}" for i in rng.choice(30, rng.integers(3, 12), p=p)] for _ in range(400)]
    for i, sentence in enumerate(ENGLISH):
        for _ in range(1 + i % 4):  # repeats give higher-order n-grams counts of 2, 3 and 4
            sentences.insert(int(rng.integers(len(sentences))), sentence.split())
    return sentences


def _stream(vocab: Vocabulary, sentences: list[list[str]]) -> np.ndarray:
    return vocab.encode(["<eos>"] + [w for s in sentences for w in [*s, "<eos>"]])


@pytest.fixture(scope="module")
def corpus():
    """(vocab, train stream, held-out stream) with <unk>, a type unseen in training and new
    histories in the held-out stream."""
    train = _train_sentences()
    built = Vocabulary.build(train)
    vocab = Vocabulary([*built.itos, "zebra"])  # in the vocabulary, never in training
    held_out = [
        "the cat sat on the log".split(),
        "a zebra sat on the mat".split(),  # unseen type: unseen unigram and histories
        "the <unk> and the zebra like w3 w0 w1".split(),
        "fruit flies sing w7 w2 w2 w2 w0".split(),
        [f"w{i}" for i in np.random.default_rng(7).integers(0, 30, 60)],
        "we sing the quick brown fox".split(),
    ]
    return vocab, _stream(vocab, train), _stream(vocab, held_out)


# ----- the brute-force reference -----------------------------------------------------------------
class Reference:
    """Interpolated modified Kneser-Ney (or add-k) from the definition, one token at a time."""

    def __init__(self, stream: list[int], order: int, V: int, smoothing="kneser_ney", k=1.0):
        self.n, self.V, self.smoothing, self.k = order, V, smoothing, k
        raw = {m: Counter() for m in range(1, order + 1)}
        for t in range(1, len(stream)):  # position 0 is context only
            for m in range(1, order + 1):
                if t - m + 1 >= 0:
                    raw[m][tuple(stream[t - m + 1 : t + 1])] += 1
        self.raw = raw
        # a_k: raw counts at the top order, else the number of distinct left neighbours.
        self.a = {order: dict(raw[order])}
        for m in range(order - 1, 0, -1):
            cont = Counter()
            for gram in raw[m + 1]:
                cont[gram[1:]] += 1
            self.a[m] = dict(cont)
        self.discounts = {m: self._discounts(self.a[m]) for m in range(1, order + 1)}
        # Context statistics per order: T, N1, N2, N3+.
        self.stats = {}
        for m in range(1, order + 1):
            stats = defaultdict(lambda: [0, 0, 0, 0])
            for gram, a in self.a[m].items():
                s = stats[gram[:-1]]
                s[0] += a
                if a == 1:
                    s[1] += 1
                elif a == 2:
                    s[2] += 1
                elif a >= 3:
                    s[3] += 1
            self.stats[m] = dict(stats)
        self.raw_context = {m: Counter() for m in range(1, order + 1)}
        for m in range(1, order + 1):
            for gram, c in raw[m].items():
                self.raw_context[m][gram[:-1]] += c

    @staticmethod
    def count_of_counts(a: dict) -> list[int]:
        values = list(a.values())
        return [sum(1 for x in values if x == r) for r in (1, 2, 3, 4)]

    def _discounts(self, a: dict) -> tuple[float, float, float]:
        n1, n2, n3, n4 = self.count_of_counts(a)
        if n1 == 0 or n2 == 0 or n3 == 0 or n4 == 0:
            y = n1 / (n1 + 2 * n2) if (n1 > 0 and n2 > 0) else 0.5
            d = [y, y, y]
        else:
            y = n1 / (n1 + 2 * n2)
            d = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
        return tuple(min(max(d[r - 1], 0.01), r) for r in (1, 2, 3))

    def prob_kn(self, m: int, w: int, h: tuple) -> float:
        if m == 0:
            return 1.0 / self.V
        lower = self.prob_kn(m - 1, w, h[1:])
        T, N1, N2, N3 = self.stats[m].get(h, (0, 0, 0, 0))
        if T == 0:
            return lower
        d1, d2, d3 = self.discounts[m]
        a = self.a[m].get((*h, w), 0)
        d = 0.0 if a == 0 else d1 if a == 1 else d2 if a == 2 else d3
        gamma = (d1 * N1 + d2 * N2 + d3 * N3) / T
        return max(a - d, 0.0) / T + gamma * lower

    def prob(self, w: int, history: list[int]) -> float:
        m = min(self.n, len(history) + 1)
        h = tuple(history[len(history) - (m - 1) :]) if m > 1 else ()
        if self.smoothing == "add_k":
            c = self.raw[m].get((*h, w), 0)
            return (c + self.k) / (self.raw_context[m].get(h, 0) + self.k * self.V)
        return self.prob_kn(m, w, h)

    def log_probs(self, stream: list[int]) -> list[float]:
        return [0.0] + [math.log(self.prob(stream[t], stream[:t])) for t in range(1, len(stream))]


# ----- agreement with the reference --------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_kneser_ney_matches_brute_force_reference(corpus, order):
    vocab, train, held_out = corpus
    ref = Reference(train.tolist(), order, len(vocab))
    for m in range(1, order + 1):  # the full Chen & Goodman branch is exercised, not the fallback
        if order > 1 or m > 1:
            assert min(Reference.count_of_counts(ref.a[m])) > 0, (order, m)
    lm = NgramLM(vocab, order=order)
    assert lm.accumulate(train) == len(train) - 1
    got = lm.log_probs(held_out)
    want = np.array(ref.log_probs(held_out.tolist()))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lm.discounts, [ref.discounts[m] for m in range(1, order + 1)])
    # Scoring the training stream itself exercises seen n-grams of every count.
    np.testing.assert_allclose(lm.log_probs(train[:400]), ref.log_probs(train[:400].tolist()))
    assert lm.num_ngrams() == {m: len(ref.raw[m]) for m in range(1, order + 1)}


@pytest.mark.parametrize("order", [1, 3, 5])
def test_add_k_matches_brute_force_reference(corpus, order):
    vocab, train, held_out = corpus
    ref = Reference(train.tolist(), order, len(vocab), smoothing="add_k", k=0.3)
    lm = NgramLM(vocab, order=order, smoothing="add_k", k=0.3)
    lm.accumulate(train)
    want = np.array(ref.log_probs(held_out.tolist()))
    np.testing.assert_allclose(lm.log_probs(held_out), want, rtol=0, atol=1e-9)


# ----- a bigram model worked by hand -------------------------------------------------------------
def _toy():
    vocab = Vocabulary(["<unk>", "<eos>", "the", "cat", "sat", "dog"])  # V = 6
    # Stream: <eos> the cat sat <eos> the dog sat <eos>   (positions 0..8, targets 1..8)
    return vocab, _stream(vocab, [["the", "cat", "sat"], ["the", "dog", "sat"]])


def test_hand_worked_bigram():
    vocab, stream = _toy()
    lm = NgramLM(vocab, order=2)
    lm.accumulate(stream)
    # Order 2 (raw counts): <eos> the = 2, sat <eos> = 2; the cat, cat sat, the dog, dog sat = 1.
    #   n1 = 4, n2 = 2, n3 = n4 = 0 -> fallback Y = 4 / (4 + 2*2) = 1/2, so D1 = D2 = D3+ = 1/2.
    # Order 1 (continuation counts = distinct left neighbours):
    #   the {<eos>} 1, cat {the} 1, dog {the} 1, <eos> {sat} 1, sat {cat, dog} 2, <unk> 0.
    #   n1 = 4, n2 = 1, n3 = 0 -> fallback Y = 4 / (4 + 2) = 2/3 = D1 = D2 = D3+.
    assert lm.discounts[0] == pytest.approx((2 / 3,) * 3, abs=1e-15)
    assert lm.discounts[1] == pytest.approx((1 / 2,) * 3, abs=1e-15)
    # Unigram level: T = 6, N1 = 4, N2 = 1, gamma = (2/3 * 4 + 2/3 * 1) / 6 = 5/9.
    #   P1(sat) = (2 - 2/3)/6 + 5/9 * 1/6 = 12/54 + 5/54 = 17/54
    #   P1(cat) = P1(the) = (1 - 2/3)/6 + 5/54 = 8/54;  P1(<unk>) = 5/54.  (Sum: 4*8 + 17 + 5 = 54.)
    p1 = {"sat": Fraction(17, 54), "cat": Fraction(8, 54), "the": Fraction(8, 54)}
    # Context "the": a(the cat) = a(the dog) = 1, T = 2, N1 = 2, gamma = (1/2 * 2)/2 = 1/2.
    #   P(cat | the) = (1 - 1/2)/2 + 1/2 * 8/54 = 27/108 + 8/108 = 35/108
    #   P(sat | the) = 0 + 1/2 * 17/54 = 17/108
    # Context "<eos>": a(<eos> the) = 2, T = 2, N2 = 1, gamma = (1/2 * 1)/2 = 1/4.
    #   P(the | <eos>) = (2 - 1/2)/2 + 1/4 * 8/54 = 81/108 + 4/108 = 85/108
    # Context "cat": a(cat sat) = 1, T = 1, N1 = 1, gamma = 1/2.
    #   P(sat | cat) = (1 - 1/2)/1 + 1/2 * 17/54 = 54/108 + 17/108 = 71/108
    assert Fraction(1, 2) * p1["cat"] + Fraction(1, 4) == Fraction(35, 108)
    ids = vocab.encode(["<eos>", "the", "cat", "sat"])
    want = [0.0, math.log(85 / 108), math.log(35 / 108), math.log(71 / 108)]
    np.testing.assert_allclose(lm.log_probs(ids), want, rtol=0, atol=1e-12)
    the, sat, unk = vocab.stoi["the"], vocab.stoi["sat"], vocab.unk_id
    next_the = lm.next_token_log_probs(np.array([[the]]))[0]
    assert next_the[sat] == pytest.approx(math.log(17 / 108), abs=1e-12)
    # Context "<unk>" was never seen: T = 0, so the unigram level alone: P(sat) = 17/54.
    assert lm.next_token_log_probs(np.array([[unk]]))[0, sat] == pytest.approx(
        math.log(17 / 54), abs=1e-12
    )
    # No history at all: the unigram level, P(<unk>) = 5/54.
    assert lm.next_token_log_probs(np.zeros((1, 0), np.int64))[0, unk] == pytest.approx(
        math.log(5 / 54), abs=1e-12
    )


def test_add_k_hand_checked():
    vocab, stream = _toy()
    lm = NgramLM(vocab, order=2, smoothing="add_k", k=1.0)
    lm.accumulate(stream)
    the, cat, sat = (vocab.stoi[w] for w in ("the", "cat", "sat"))
    # c(the cat) = 1, c(the ·) = 2: (1 + 1) / (2 + 1 * 6) = 1/4.
    assert lm.log_probs(np.array([the, cat]))[1] == pytest.approx(math.log(1 / 4), abs=1e-12)
    # c(<eos> the) = 2, c(<eos> ·) = 2: (2 + 1) / (2 + 6) = 3/8.
    assert lm.log_probs(vocab.encode(["<eos>", "the"]))[1] == pytest.approx(math.log(3 / 8))
    # No history: unigrams over the 8 targets, c(sat) = 2: (2 + 1) / (8 + 6) = 3/14.
    got = lm.next_token_log_probs(np.zeros((1, 0), np.int64))[0, sat]
    assert got == pytest.approx(math.log(3 / 14), abs=1e-12)


def test_each_smoothing_is_labelled_with_its_own_paper():
    vocab, _ = _toy()
    kn, add_k = NgramLM(vocab), NgramLM(vocab, smoothing="add_k")
    assert (kn.year, add_k.year) == (1995, 1920)  # the report's year column and order
    assert "Kneser" in kn.citation and "Lidstone" in add_k.citation
    assert "Kneser & Ney" not in add_k.citation


# ----- proper distributions ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("order", "smoothing"),
    [(n, "kneser_ney") for n in range(1, 8)] + [(1, "add_k"), (3, "add_k"), (7, "add_k")],
)
def test_next_token_rows_are_distributions_and_match_log_probs(corpus, order, smoothing):
    vocab, train, held_out = corpus
    lm = NgramLM(vocab, order=order, smoothing=smoothing, k=0.5)
    lm.accumulate(train)
    rng = np.random.default_rng(order)
    zebra = vocab.stoi["zebra"]
    for length in range(0, order + 2):
        contexts = rng.choice(train, size=(6, length))  # (6, length) mostly seen histories
        if length:
            contexts[1, -1] = vocab.unk_id
            contexts[2, 0] = zebra
            contexts[3] = rng.integers(0, len(vocab), length)  # unseen histories
        log_probs = lm.next_token_log_probs(contexts)  # (6, V)
        assert log_probs.shape == (6, len(vocab))
        row_sums = np.logaddexp.reduce(log_probs, axis=1)  # (6,)
        np.testing.assert_allclose(row_sums, 0.0, atol=1e-9)
        assert np.isfinite(log_probs).all()
    # log_probs gathers the same numbers, position by position.
    stream = held_out[:80]
    got = lm.log_probs(stream)
    gathered = [
        lm.next_token_log_probs(stream[None, max(0, t - order + 1) : t])[0, stream[t]]
        for t in range(1, len(stream))
    ]
    np.testing.assert_allclose(got[1:], gathered, rtol=0, atol=1e-12)
    assert got[0] == 0.0


# ----- counting in pieces and checkpoints --------------------------------------------------------
@pytest.mark.parametrize("order", [1, 3, 5])
def test_chunked_accumulate_with_overlap_equals_one_call(corpus, order):
    vocab, train, held_out = corpus
    whole = NgramLM(vocab, order=order)
    whole.accumulate(train)
    overlap = order - 1
    for size in (50, 997):
        chunked = NgramLM(vocab, order=order)
        counted = chunked.accumulate(train[: size + 1])
        for start in range(size + 1, len(train), size):
            counted += chunked.accumulate(train[start - overlap : start + size], overlap)
        assert counted == len(train) - 1
        assert chunked.num_ngrams() == whole.num_ngrams()
        np.testing.assert_allclose(
            chunked.log_probs(held_out), whole.log_probs(held_out), rtol=0, atol=1e-12
        )
        np.testing.assert_allclose(chunked.discounts, whole.discounts, rtol=0, atol=1e-15)


@pytest.mark.parametrize("smoothing", ["kneser_ney", "add_k"])
def test_state_dict_round_trip_gives_identical_scores(corpus, smoothing):
    vocab, train, held_out = corpus
    lm = NgramLM(vocab, order=4, smoothing=smoothing)
    lm.accumulate(train)
    before = lm.log_probs(held_out)
    state = lm.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = NgramLM(vocab, order=4, smoothing=smoothing)
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.log_probs(held_out), before)
    np.testing.assert_array_equal(
        restored.next_token_log_probs(held_out[None, :5]),
        lm.next_token_log_probs(held_out[None, :5]),
    )
    # A model that counts more after the restore behaves like one that never stopped.
    restored.accumulate(held_out)
    lm.accumulate(held_out)
    np.testing.assert_array_equal(restored.log_probs(train[:200]), lm.log_probs(train[:200]))
    with pytest.raises(ValueError, match="order 4"):
        NgramLM(vocab, order=3).load_state_dict(state)


def test_empty_model_is_uniform():
    vocab, _ = _toy()
    lm = NgramLM(vocab, order=3)
    np.testing.assert_allclose(lm.log_probs(np.array([1, 2, 3]))[1:], -math.log(6))


def test_bad_arguments_raise_value_error_naming_the_value():
    vocab, stream = _toy()
    with pytest.raises(ValueError, match=r"1\.\.7.*got 0"):
        NgramLM(vocab, order=0)
    with pytest.raises(ValueError, match="got 8"):
        NgramLM(vocab, order=8)
    with pytest.raises(ValueError, match=r"kneser_ney.*add_k.*'witten_bell'"):
        NgramLM(vocab, smoothing="witten_bell")
    with pytest.raises(ValueError, match="k=0"):
        NgramLM(vocab, smoothing="add_k", k=0)
    lm = NgramLM(vocab, order=2)
    with pytest.raises(ValueError, match="token id 6"):
        lm.accumulate(np.array([1, 2, 6]))
    with pytest.raises(ValueError, match="-1"):
        lm.accumulate(stream, first_target=-1)
    with pytest.raises(ValueError, match="token id -3"):
        lm.log_probs(np.array([1, -3]))
