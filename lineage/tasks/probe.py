"""The one probe: scikit-learn logistic regression on frozen features (design.md §3.5).

Every family with features answers every task through :func:`fit_probe`: for each inverse
regularisation strength ``C`` of a small grid, fit on train; keep the ``C`` with the best dev
accuracy (ties go to the smaller ``C``, the stronger regularisation); score that model once on
test. Dense features are standardised on train first (``probe.scale``); sparse TF-IDF features
are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lineage.tasks.base import classification_metrics, confusion


@dataclass
class ProbeResult:
    """What the probe chose and how it scored.

    Attributes:
        C: the selected inverse regularisation strength.
        val: dev metrics of the selected model.
        test: test metrics of the selected model (scored once).
        dev_accuracy: C -> dev accuracy, for the whole grid.
        confusion: (C, C) test confusion matrix.
        predictions: (N_test,) predicted class ids.
        unconverged: the C values whose solver stopped at ``max_iter`` before converging.
    """

    C: float
    val: dict[str, float]
    test: dict[str, float]
    dev_accuracy: dict[float, float]
    confusion: np.ndarray
    predictions: np.ndarray
    unconverged: list[float]


def _classifier(C: float, n_classes: int, sparse: bool, scale: bool, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # liblinear is the classic solver for binary bag-of-n-gram (sparse) problems; lbfgs is
    # much faster on dense features and gives the multinomial model for more classes.
    solver = "liblinear" if n_classes == 2 and sparse else "lbfgs"
    clf = LogisticRegression(C=C, solver=solver, max_iter=max_iter, random_state=seed)
    if scale and not sparse:
        return make_pipeline(StandardScaler(), clf)
    return clf


def _logistic(model):
    """The LogisticRegression itself, inside or outside a scaling pipeline."""
    return model[-1] if hasattr(model, "steps") else model


def _scores(model, X, n_classes: int) -> np.ndarray | None:
    if n_classes != 2:
        return None
    return model.predict_proba(X)[:, 1]  # (N,) probability of class 1


def fit_probe(
    X_train,
    y_train: np.ndarray,
    X_val,
    y_val: np.ndarray,
    X_test,
    y_test: np.ndarray,
    n_classes: int,
    Cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0),
    scale: bool = True,
    max_iter: int = 2000,
    seed: int = 0,
) -> ProbeResult:
    """Choose C on dev, score once on test.

    Args:
        X_train, X_val, X_test: (N, D) features, dense arrays or scipy sparse matrices.
        y_train, y_val, y_test: (N,) class ids in ``[0, n_classes)``.
        n_classes: size of the label set.
        Cs: the grid of inverse regularisation strengths.
        scale: standardise dense features on train.
        max_iter: solver iterations.
        seed: the solver's random state.
    """
    import scipy.sparse as sp
    from sklearn.exceptions import ConvergenceWarning

    if len(np.unique(y_train)) < 2:
        raise ValueError("the probe needs at least two classes in train")
    sparse = sp.issparse(X_train)
    best = None
    dev_accuracy: dict[float, float] = {}
    unconverged: list[float] = []
    import warnings

    for C in sorted(float(c) for c in Cs):
        model = _classifier(C, n_classes, sparse, scale, max_iter, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_train)
        # sklearn's warning is silenced for the grid; the caller reports what did not converge
        if int(np.max(_logistic(model).n_iter_)) >= max_iter:
            unconverged.append(C)
        acc = float((model.predict(X_val) == y_val).mean())
        dev_accuracy[C] = acc
        if best is None or acc > best[0]:  # strict: ties keep the smaller C
            best = (acc, C, model)
    assert best is not None
    _, C, model = best
    val_pred = model.predict(X_val)
    test_pred = model.predict(X_test)
    return ProbeResult(
        C=C,
        val=classification_metrics(y_val, val_pred, n_classes, _scores(model, X_val, n_classes)),
        test=classification_metrics(
            y_test, test_pred, n_classes, _scores(model, X_test, n_classes)
        ),
        dev_accuracy=dev_accuracy,
        confusion=confusion(y_test, test_pred, n_classes),
        predictions=test_pred,
        unconverged=unconverged,
    )
