"""How much of the frozen mean-vector probe on SST-2 is the vectors, and how much is their width?

The mean of D-dimensional word vectors is a linear map of the bag of words; as D grows, logistic
regression on it can recover a bag-of-words classifier whatever the vectors are. This study
trains skip-gram vectors (gensim) of several widths on the SST-2 train texts and, as the
control, gives every word of the same texts a random Gaussian vector of the same width. Both go
through the product's pooling (``lineage.models.embeddings.pool``) and probe
(``lineage.tasks.probe.fit_probe``: C chosen on dev, test scored once).

    python experiments/downstream/width_control.py --data-dir ../shared/data/sst2 \
        --dims 300 1000 3000 --window 15

Not a product command: ``lineage-train model=word2vec task.sst2.probe.task_texts=true`` is the
product's form (vectors on the corpus train split plus the task texts); this study leaves the
corpus out so that the control and the vectors see exactly the same words.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gensim.models import KeyedVectors, Word2Vec

from lineage.models.embeddings import pool
from lineage.tasks.data import load_sst2
from lineage.tasks.features import TextEncoder
from lineage.tasks.probe import fit_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True, help="directory with glue/ and sentence/")
    ap.add_argument("--dims", type=int, nargs="+", default=[300, 1000, 3000])
    ap.add_argument("--window", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1, help="1: identical vectors per seed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    data = load_sst2("sst2", args.data_dir, offline=True)
    encoder = TextEncoder()  # whitespace, as a PTB run tokenises task texts
    words = {s: encoder.words(data.texts[s]) for s in ("train", "val", "test")}
    y = {s: data.y(s) for s in words}
    vocab = sorted({w for ws in words["train"] for w in ws})

    print("| width | vectors | train s | C | dev acc | test acc | test MCC |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for dim in args.dims:
        for kind in ("random", "word2vec"):
            t = time.perf_counter()
            if kind == "random":
                rng = np.random.default_rng(args.seed)
                kv = KeyedVectors(dim)
                kv.add_vectors(vocab, rng.standard_normal((len(vocab), dim)).astype(np.float32))
            else:
                kv = Word2Vec(
                    words["train"],
                    vector_size=dim,
                    window=args.window,
                    sg=1,
                    negative=5,
                    min_count=1,
                    epochs=args.epochs,
                    workers=args.workers,
                    seed=args.seed,
                ).wv
            seconds = time.perf_counter() - t
            X = {s: pool(kv, words[s]) for s in words}
            r = fit_probe(X["train"], y["train"], X["val"], y["val"], X["test"], y["test"], 2)
            print(
                f"| {dim} | {kind} | {seconds:.0f} | {r.C:g} | {100 * r.val['accuracy']:.2f} "
                f"| {100 * r.test['accuracy']:.2f} | {r.test['mcc']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
