"""Benchmark our GloVe on PTB train, and gensim's Word2Vec on the same text.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/glove_speed.py --data-dir ../shared/data/ptb
    python benchmarks/glove_speed.py --data-dir ../shared/data/ptb --epochs 15 --evaluate

Prints, for GloVe (``lineage.models.embeddings``, the code the ``glove`` family runs): the seconds
to build the co-occurrence matrix (window 10, 1/distance weighting, symmetric, sentences from
PTB's lines), its non-zero count, and the training seconds per epoch (AdaGrad on mini-batches
of non-zero entries); for gensim Word2Vec (skip-gram, negative 5, window 5, the ``word2vec``
family's defaults): training words per second as gensim counts them (raw corpus words × epochs
/ wall seconds). ``--evaluate`` adds the intrinsic scores of both (``intrinsic/*``).

Reference points measured on this machine kind (2 CPU cores): the Stanford GloVe C code takes
51 s for 15 iterations with 2 threads (≈ 3.4 s per iteration, co-occurrence included); gensim
skip-gram ≈ 290k words/s with 2 workers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

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
)


def read_sentences(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with ptb.train.txt")
    parser.add_argument("--epochs", type=int, default=3, help="GloVe epochs to time")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--x-max", type=float, default=100.0)
    parser.add_argument("--w2v-epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--evaluate", action="store_true", help="also print intrinsic scores")
    args = parser.parse_args()

    sentences = read_sentences(args.data_dir / "ptb.train.txt")
    vocab = Vocabulary.build(sentences)
    ids = [vocab.eos_id]
    for s in sentences:
        ids.extend(vocab.encode(s).tolist())
        ids.append(vocab.eos_id)
    stream = np.array(ids)
    words = sum(len(s) for s in sentences)
    print(f"PTB train: {len(sentences):,} sentences, {words:,} words, vocabulary {len(vocab):,}")
    print(f"torch threads: {torch.get_num_threads()}")

    start = time.perf_counter()
    X = cooccurrence(stream, len(vocab), args.window, vocab.eos_id)
    build = time.perf_counter() - start
    print(f"GloVe co-occurrence: {build:.2f} s, {X.nnz:,} non-zero entries (window {args.window})")

    torch.manual_seed(0)
    model = GloVe(len(vocab), args.dim, x_max=args.x_max)
    optimizer = glove_optimizer(model)
    entries = glove_entries(X, model)
    generator = torch.Generator().manual_seed(0)
    times = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss = glove_epoch(model, optimizer, entries, args.batch_size, generator)
        times.append(time.perf_counter() - start)
        print(f"GloVe epoch {epoch + 1}: {times[-1]:.2f} s, mean cost {loss:.4f}")
    print(
        f"GloVe training: {np.mean(times):.2f} s per epoch "
        f"(batch {args.batch_size}, dim {args.dim}, {len(entries['rows']) / np.mean(times):,.0f} "
        f"entries/s)"
    )
    if args.evaluate:
        print("GloVe intrinsic:", intrinsic(keyed_vectors(vocab.itos, model.vectors())))

    w2v = Word2Vec(vocab, vector_size=args.dim, epochs=args.w2v_epochs, workers=args.workers)
    start = time.perf_counter()
    w2v.fit(sentences)
    seconds = time.perf_counter() - start
    print(
        f"gensim Word2Vec (skip-gram, {args.workers} workers, {args.w2v_epochs} epochs): "
        f"{seconds:.2f} s, {words * args.w2v_epochs / seconds:,.0f} words/s"
    )
    if args.evaluate:
        print("Word2Vec intrinsic:", intrinsic(w2v.kv))


if __name__ == "__main__":
    main()
