"""The one probe and the metrics: a separable task is solved, shuffled labels stay at chance,
C is chosen on dev, and the metrics agree with hand-computed values."""

from __future__ import annotations

import csv
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from lineage.tasks import answer_task, load_task
from lineage.tasks.base import (
    ProbeConfig,
    classification_metrics,
    mean_std,
    parse_task_config,
    write_confusion,
)
from lineage.tasks.features import TextEncoder, TfidfFeatures
from lineage.tasks.probe import fit_probe


def _blobs(n: int, rng: np.random.Generator, dim: int = 20):
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    X[:, 0] += np.where(y == 1, 4.0, -4.0)  # margin of 8 sd along one axis
    return X, y


def test_probe_solves_a_separable_task():
    rng = np.random.default_rng(0)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (_blobs(n, rng) for n in (300, 100, 300))
    result = fit_probe(Xtr, ytr, Xva, yva, Xte, yte, n_classes=2)
    assert result.test["accuracy"] == 1.0
    assert result.test["mcc"] == 1.0 and result.test["roc_auc"] == 1.0
    assert result.confusion.tolist() == [[int((yte == 0).sum()), 0], [0, int((yte == 1).sum())]]
    assert set(result.dev_accuracy) == {0.01, 0.1, 1.0, 10.0, 100.0}


def test_probe_on_shuffled_labels_stays_near_chance():
    rng = np.random.default_rng(1)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (_blobs(n, rng) for n in (1000, 300, 2000))
    result = fit_probe(
        Xtr, rng.permutation(ytr), Xva, rng.permutation(yva), Xte, rng.permutation(yte), n_classes=2
    )
    assert abs(result.test["accuracy"] - 0.5) < 0.05  # sd of chance accuracy on 2,000: 0.011
    assert abs(result.test["mcc"]) < 0.1


def test_probe_chooses_c_on_dev_and_ties_go_to_stronger_regularisation():
    rng = np.random.default_rng(2)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (_blobs(n, rng) for n in (200, 100, 100))
    result = fit_probe(Xtr, ytr, Xva, yva, Xte, yte, n_classes=2, Cs=[100.0, 1.0, 10.0])
    assert result.dev_accuracy == {1.0: 1.0, 10.0: 1.0, 100.0: 1.0}
    assert result.C == 1.0


def test_probe_choice_follows_dev_not_test():
    """Noisy data where dev and test prefer different C: the choice moves with dev only."""
    rng = np.random.default_rng(0)

    def noisy(n):
        X = rng.normal(size=(n, 50))
        y = (X[:, :5].sum(axis=1) + rng.normal(scale=2, size=n) > 0).astype(int)
        return X, y

    (Xtr, ytr), (Xa, ya), (Xb, yb) = noisy(60), noisy(40), noisy(40)
    chosen = fit_probe(Xtr, ytr, Xa, ya, Xb, yb, n_classes=2)
    best = max(chosen.dev_accuracy.values())
    assert chosen.C == min(c for c, acc in chosen.dev_accuracy.items() if acc == best)
    swapped = fit_probe(Xtr, ytr, Xb, yb, Xa, ya, n_classes=2)  # the other half as dev
    assert swapped.C != chosen.C
    shuffled = fit_probe(Xtr, ytr, Xa, ya, Xb, rng.permutation(yb), n_classes=2)
    assert shuffled.C == chosen.C and shuffled.dev_accuracy == chosen.dev_accuracy


def test_probe_reports_the_c_values_whose_solver_did_not_converge():
    rng = np.random.default_rng(4)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (_blobs(n, rng) for n in (200, 100, 100))
    assert fit_probe(Xtr, ytr, Xva, yva, Xte, yte, n_classes=2).unconverged == []
    cut = fit_probe(Xtr, ytr, Xva, yva, Xte, yte, n_classes=2, Cs=[1.0, 100.0], max_iter=1)
    assert cut.unconverged == [1.0, 100.0]


def test_an_unconverged_probe_is_a_warning_that_names_the_setting(caplog):
    cfg = parse_task_config(
        "polarity", {"source": "polarity", "cv_folds": 2, "probe": {"max_iter": 1}}
    )
    data = load_task("polarity", cfg)
    ngram = SimpleNamespace(family="ngram")  # the TF-IDF features read no model state
    with caplog.at_level(logging.WARNING, logger="lineage"):
        answer = answer_task("polarity", cfg, data, ngram, TextEncoder())
    assert answer["answer"] == "probe"
    warned = [r.getMessage() for r in caplog.records if "max_iter=1" in r.getMessage()]
    assert len(warned) == 2  # one per fold
    assert "raise task.polarity.probe.max_iter" in warned[0]


def test_probe_multiclass_on_tfidf_text():
    words = {0: "goal match team", 1: "stock market shares", 2: "chip software web"}
    rng = np.random.default_rng(3)

    def texts(n):
        y = rng.integers(0, 3, n)
        return [f"{words[k]} filler {rng.integers(100)}" for k in y], y

    (ttr, ytr), (tva, yva), (tte, yte) = texts(60), texts(30), texts(30)
    feats = TfidfFeatures(TextEncoder(), ProbeConfig()).fit(ttr)
    result = fit_probe(
        feats.transform(ttr), ytr, feats.transform(tva), yva, feats.transform(tte), yte, n_classes=3
    )
    assert result.test["accuracy"] == 1.0
    assert "roc_auc" not in result.test  # binary only
    assert feats.describe()["dim"] > 9  # unigrams and bigrams


def test_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0, 0, 1, 1, 1, 1, 1, 0])
    m = classification_metrics(y, p, 2, scores=np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.9, 0.95, 0.3]))
    assert m["accuracy"] == pytest.approx(6 / 8)
    # class 0: P 2/3, R 2/3, F1 2/3; class 1: P 4/5, R 4/5, F1 4/5
    assert m["f1_macro"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    tp, tn, fp, fn = 4, 2, 1, 1
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert m["mcc"] == pytest.approx(mcc)
    assert m["roc_auc"] == pytest.approx(14 / 15)  # one (pos, neg) pair out of 15 misordered
    assert "roc_auc" not in classification_metrics(y, p, 2)  # no scores
    # 4 classes, class 3 neither true nor predicted: the mean F1 of classes 0 (1), 1 (P 1/3,
    # R 1: 1/2) and 2 (0) only
    four = classification_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 1]), 4)
    assert four["f1_macro"] == pytest.approx((1 + 1 / 2 + 0) / 3)


def test_fold_aggregation_and_confusion_csv(tmp_path):
    agg = mean_std([{"accuracy": 0.5}, {"accuracy": 0.7}])
    assert agg["accuracy"] == pytest.approx(0.6)
    assert agg["accuracy_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    path = write_confusion(tmp_path / "c" / "t.csv", np.array([[3, 1], [0, 4]]), ["ham", "spam"])
    rows = list(csv.reader(path.open()))
    assert rows == [["true\\predicted", "ham", "spam"], ["ham", "3", "1"], ["spam", "0", "4"]]
