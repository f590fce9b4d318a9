"""Benchmark NgramLM (interpolated modified Kneser-Ney) on PTB, and compare it with nltk.lm.

Usage::

    python benchmarks/ngram_ptb.py --data-dir ../shared/data/ptb

Splits are streams as in ``lineage.interface``: each line's words followed by ``<eos>``, one leading
``<eos>`` as context, so every token of a split (each ``<eos>`` included) is a target. Perplexity is
exp of the mean negative log-probability over all targets. Scoring runs across sentence
boundaries, so the numbers differ slightly from KenLM's per-sentence scoring (measured on this
machine: KN3 valid/test 157.77/148.28, KN5 148.01/141.19; Mikolov et al. 2011 report KN5 141.2).

The nltk comparison fits ``nltk.lm.KneserNeyInterpolated(order=3)`` and ``NgramLM(order=3)`` on the
same slice of train and scores the same first test targets (nltk scores ~50 tokens/s, so the slice
is small). nltk gives probability 0 to words outside its vocabulary, so its perplexity is computed
only over targets in its vocabulary, and ours over the same targets. nltk's KN uses one fixed
discount (0.1 by default) at every order and ends its interpolation at the continuation unigram
(no uniform floor), and it recomputes continuation counts by scanning the n-gram table at every
query, hence its speed.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

from lineage.data.vocab import EOS, Vocabulary
from lineage.models.ngram import NgramLM

PTB_TYPES = 10_000
PTB_TEST_TARGETS = 82_430


def read_sentences(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f]


def to_words(sentences: list[list[str]]) -> list[str]:
    """The split as a word stream: leading ``<eos>``, then each sentence followed by ``<eos>``."""
    return [EOS] + [w for s in sentences for w in [*s, EOS]]


def perplexity(log_probs: np.ndarray) -> float:
    return math.exp(-float(np.mean(log_probs)))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_ours(vocab: Vocabulary, streams: dict[str, np.ndarray], order: int) -> dict:
    """Fit on train, score valid and test; wall-clock seconds, perplexities, tokens/s."""
    start = time.perf_counter()
    lm = NgramLM(vocab, order=order)
    lm.accumulate(streams["train"])
    lm.finalize()
    fit_s = time.perf_counter() - start
    row = {"order": order, "fit_s": fit_s, "ngrams": sum(lm.num_ngrams().values())}
    score_s, scored = 0.0, 0
    for split in ("valid", "test"):
        start = time.perf_counter()
        log_probs = lm.log_probs(streams[split])[1:]  # (N,) every target of the split
        score_s += time.perf_counter() - start
        scored += log_probs.size
        row[f"{split}_ppl"] = perplexity(log_probs)
    row["score_s"] = score_s
    row["score_tok_s"] = scored / score_s
    row["fit_tok_s"] = (streams["train"].size - 1) / fit_s
    row["table_mb"] = lm.cost()["bytes"] / 2**20
    row["discounts"] = lm.discounts
    return row


def traced_peak_mb(vocab: Vocabulary, streams: dict[str, np.ndarray], order: int) -> float:
    """Peak numpy/Python allocation of one fit + score (a separate, untimed run)."""
    tracemalloc.start()
    lm = NgramLM(vocab, order=order)
    lm.accumulate(streams["train"])
    for split in ("valid", "test"):
        lm.log_probs(streams[split])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def compare_nltk(train_words: list[str], test_words: list[str], n_train: int, n_test: int) -> dict:
    """KN3 of nltk.lm vs NgramLM on the first ``n_train`` train targets and ``n_test`` test ones."""
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    slice_words = train_words[: n_train + 1]
    test_slice = test_words[: n_test + 1]

    start = time.perf_counter()
    nltk_lm = KneserNeyInterpolated(order=3)
    # One long "sentence": the same stream convention as ours (n-grams cross <eos>).
    nltk_lm.fit([list(everygrams(slice_words, max_len=3))], vocabulary_text=slice_words)
    nltk_fit_s = time.perf_counter() - start
    start = time.perf_counter()
    nltk_probs = np.array(
        [nltk_lm.score(test_slice[t], test_slice[max(0, t - 2) : t]) for t in range(1, n_test + 1)]
    )  # (n_test,)
    nltk_score_s = time.perf_counter() - start

    # Our model with a vocabulary from the same slice, so both spread mass over ~the same types.
    vocab = Vocabulary.build([slice_words])
    start = time.perf_counter()
    ours = NgramLM(vocab, order=3)
    ours.accumulate(vocab.encode(slice_words))
    ours.finalize()
    our_fit_s = time.perf_counter() - start
    start = time.perf_counter()
    our_log_probs = ours.log_probs(vocab.encode(test_slice))[1:]  # (n_test,)
    our_score_s = time.perf_counter() - start

    finite = nltk_probs > 0  # (n_test,) nltk gives 0 to words outside its vocabulary
    in_vocab = np.array([w in nltk_lm.vocab for w in test_slice[1:]])
    nltk_total = nltk_fit_s + nltk_score_s
    our_total = our_fit_s + our_score_s
    work = n_train + n_test  # tokens counted + tokens scored, the same for both
    return {
        "n_train": n_train,
        "n_test": n_test,
        "n_finite": int(finite.sum()),
        "n_in_vocab": int(in_vocab.sum()),
        "nltk_V": len(nltk_lm.vocab),
        "our_V": len(vocab),
        "nltk": {
            "fit_s": nltk_fit_s,
            "score_s": nltk_score_s,
            "score_tok_s": n_test / nltk_score_s,
            "tok_s": work / nltk_total,
            "ppl": math.exp(-float(np.mean(np.log(nltk_probs[finite])))),
        },
        "ours": {
            "fit_s": our_fit_s,
            "score_s": our_score_s,
            "score_tok_s": n_test / our_score_s,
            "tok_s": work / our_total,
            "ppl": perplexity(our_log_probs[finite]),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="holds ptb.{train,valid,test}.txt"
    )
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--nltk-train-tokens", type=int, default=50_000)
    parser.add_argument("--nltk-test-targets", type=int, default=1_500)
    parser.add_argument("--skip-nltk", action="store_true")
    args = parser.parse_args(argv)

    sentences = {
        s: read_sentences(args.data_dir / f"ptb.{s}.txt") for s in ("train", "valid", "test")
    }
    vocab = Vocabulary.build(sentences["train"])
    assert len(vocab) == PTB_TYPES, f"PTB vocabulary has {len(vocab)} types, expected {PTB_TYPES}"
    words = {s: to_words(ss) for s, ss in sentences.items()}
    streams = {s: vocab.encode(w) for s, w in words.items()}
    assert streams["test"].size - 1 == PTB_TEST_TARGETS, streams["test"].size - 1
    print(
        f"PTB: V={len(vocab):,}; targets train {streams['train'].size - 1:,}, "
        f"valid {streams['valid'].size - 1:,}, test {streams['test'].size - 1:,}; "
        f"RSS after loading {peak_rss_mb():.0f} MB"
    )

    rows = [bench_ours(vocab, streams, order) for order in args.orders]
    for row in rows:
        row["traced_mb"] = traced_peak_mb(vocab, streams, row["order"])
    print()
    header = (
        f"{'model':<6} {'valid ppl':>10} {'test ppl':>10} {'fit s':>7} {'score s':>8} "
        f"{'fit tok/s':>10} {'score tok/s':>12} {'n-grams':>10} {'table MB':>9} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"KN{r['order']:<4} {r['valid_ppl']:>10.4f} {r['test_ppl']:>10.4f} {r['fit_s']:>7.2f} "
            f"{r['score_s']:>8.2f} {r['fit_tok_s']:>10,.0f} {r['score_tok_s']:>12,.0f} "
            f"{r['ngrams']:>10,} {r['table_mb']:>9.1f} {r['traced_mb']:>8.0f}"
        )
    print("(peak MB: traced numpy/Python allocations of one fit + score, in a separate run)")
    print("Reference, KenLM per-sentence: KN3 157.77 / 148.28, KN5 148.01 / 141.19 (valid / test)")
    for r in rows:
        total = r["fit_s"] + r["score_s"]
        print(f"KN{r['order']} fit + score valid + test: {total:.2f} s")
        for k, d in enumerate(r["discounts"], start=1):
            print(f"  order {k} discounts D1, D2, D3+ = {d[0]:.4f}, {d[1]:.4f}, {d[2]:.4f}")

    if not args.skip_nltk:
        c = compare_nltk(
            words["train"], words["test"], args.nltk_train_tokens, args.nltk_test_targets
        )
        print()
        print(
            f"nltk.lm KneserNeyInterpolated(order=3) vs NgramLM(order=3): fit on the first "
            f"{c['n_train']:,} train targets, score the first {c['n_test']:,} test targets "
            f"({c['n_in_vocab']:,} in nltk's vocabulary, {c['n_finite']:,} with finite nltk "
            f"log-probability); V nltk {c['nltk_V']:,}, ours {c['our_V']:,}"
        )
        header = (
            f"{'model':<7} {'fit s':>8} {'score s':>9} {'score tok/s':>12} "
            f"{'fit+score tok/s':>16} {'ppl (finite)':>13}"
        )
        print(header)
        print("-" * len(header))
        for name in ("nltk", "ours"):
            m = c[name]
            print(
                f"{name:<7} {m['fit_s']:>8.3f} {m['score_s']:>9.3f} {m['score_tok_s']:>12,.0f} "
                f"{m['tok_s']:>16,.0f} {m['ppl']:>13.2f}"
            )
        print(
            f"ratio ours / nltk: fit+score {c['ours']['tok_s'] / c['nltk']['tok_s']:,.0f}x, "
            f"scoring alone {c['ours']['score_tok_s'] / c['nltk']['score_tok_s']:,.0f}x"
        )
    print(f"\nprocess peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
