"""Task configuration, the metrics every task reports, and the confusion-matrix artifact.

A task config (``conf/task/<name>.yaml``, package ``task.<name>``) is parsed into
:class:`TaskConfig`; an unknown key, a wrong type or an impossible value is a
:class:`~lineage.data.sources.DataError` naming ``task.<name>.<key>`` and the value.

Metrics (design.md §4): ``{task}/{split}/{accuracy|f1_macro|mcc|roc_auc}`` — ROC-AUC only for
binary tasks and only when the answer has a score (the probe's probability, VADER's compound score,
the spam rules' weighted hits). Cross-validated tasks report the mean over folds under the same
names and the standard deviation as ``{metric}_std``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineage.data.sources import DataError
from lineage.tasks.data import CsvConfig, SplitConfig, as_mapping

METRICS = ("accuracy", "f1_macro", "mcc", "roc_auc")
SOURCES = ("polarity", "sst2", "sms_spam", "ag_news", "imdb", "csv")


@dataclass
class ProbeConfig:
    """The one probe: logistic regression on frozen features (design.md §3.5).

    Attributes:
        C: inverse regularisation strengths tried; the best on dev (accuracy, ties to the
            stronger regularisation) is scored once on test.
        max_iter: solver iterations.
        scale: standardise dense features (mean 0, variance 1 on train) before the probe.
        ngram_range: ``ngram`` family: word n-gram orders of the TF-IDF bag (Wang & Manning 2012).
        min_df: ``ngram`` family: drop n-grams seen in fewer train texts.
        sublinear_tf: ``ngram`` family: 1 + log(tf).
        pooling: ``word2vec``/``glove``: ``mean`` word vector or ``tfidf``-weighted mean.
        task_texts: ``word2vec``/``glove``: also train the vectors on the task's (unlabelled)
            train texts; the task then uses these vectors (the intrinsic scores stay corpus-only).
        batch_size: texts per forward pass for LM features.
    """

    C: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])
    max_iter: int = 2000
    scale: bool = True
    ngram_range: list[int] = field(default_factory=lambda: [1, 2])
    min_df: int = 1
    sublinear_tf: bool = True
    pooling: str = "mean"
    task_texts: bool = False
    batch_size: int = 64


@dataclass
class FinetuneConfig:
    """End-to-end training of a neural LM or word vectors with a classification head
    (``lineage.tasks.finetune``).

    Attributes:
        enabled: run fine-tuning for neural and word-vector families (``finetune`` row; MLflow
            child run).
        scratch: also train the same architecture from random weights (``scratch`` row).
        pretrained: false trains only the ``scratch`` row (no ``finetune`` row), for studies
            of the architecture alone; ``enabled`` must still be true.
        epochs: maximum epochs; the checkpoint with the best dev accuracy is scored on test.
        lr: AdamW learning rate of the head.
        body_lr_scale: the body learns at ``lr * body_lr_scale``; below 1 it is
            discriminative fine-tuning (Howard & Ruder 2018), which keeps more of what
            pretraining bought. ``scratch`` uses the same rates, so the pair differs only in the
            initial weights.
        weight_decay: AdamW weight decay.
        batch_size: texts per step.
        max_len: tokens kept per text (the first ``max_len``).
        dropout: on the pooled state, before the head.
        pooling: how the body's states over the text become one vector: ``mean`` (the probe's
            pooling), ``max`` (element-wise maximum, Collobert et al. 2011; Conneau et al.
            2017), or ``last`` (the state after the text's last token, Dai & Le 2015: for a
            left-to-right LM the one that has read the whole text).
        body_dropout: the body's own dropout during task training (the family's ``dropout``
            key, e.g. non-recurrent connections of an RNN); null keeps the LM's.
        val_check_interval: dev accuracy is checked every this fraction of an epoch (1.0: once
            per epoch); the best check is kept and ``patience`` counts checks.
        patience: stop after this many dev checks without a better dev accuracy.
        gradient_clip_val: clip the global gradient norm (recurrent bodies).
        task_vocab: give the body input rows for the task's own train words that the corpus
            vocabulary lacks (seen at least ``task_vocab_min_count`` times). ``finetune`` draws
            each new row from the mean and covariance of the pretrained rows (a typical corpus
            word, distinct from the other new ones); ``scratch`` initialises them as the family
            does. Off by default: the protocol's rows read tasks through the corpus vocabulary
            (design.md §3).
        task_vocab_min_count: the rarer train words stay ``<unk>``.
        lm_epochs: before the classifier, train the body as a next-word LM on the task's
            train texts for up to this many epochs, keeping the one with the lowest dev
            perplexity (Dai & Le 2015; 0: off): ``finetune`` continues the corpus LM,
            ``scratch`` starts from random weights. Early stopping uses ``patience``; dropout
            is the body's (``body_dropout``).
        lm_lr: AdamW learning rate of that LM stage.
        task_texts: word-vector families: ``finetune`` starts from vectors trained on the corpus
            train split plus the task's train texts (as ``probe.task_texts``), so that the task's
            own words (``task_vocab``) start from vectors rather than typical rows; their
            analogue of ``lm_epochs``.
    """

    enabled: bool = False
    scratch: bool = False
    pretrained: bool = True
    epochs: int = 4
    lr: float = 1e-3
    body_lr_scale: float = 1.0
    weight_decay: float = 0.0
    batch_size: int = 32
    max_len: int = 64
    dropout: float = 0.1
    pooling: str = "mean"
    body_dropout: float | None = None
    val_check_interval: float = 1.0
    patience: int = 2
    gradient_clip_val: float | None = 5.0
    task_vocab: bool = False
    task_vocab_min_count: int = 2
    lm_epochs: int = 0
    lm_lr: float = 1e-3
    task_texts: bool = False


@dataclass
class TaskConfig:
    """One task, as ``conf/task/<name>.yaml`` writes it.

    Attributes:
        source: ``polarity``, ``sst2``, ``sms_spam``, ``ag_news``, ``imdb`` or ``csv``.
        data_dir: directory with the source's files (default: the user cache).
        offline: never download (``LINEAGE_OFFLINE=1`` also does).
        path: ``polarity`` only: another file in the same format.
        classes: the label order (index = class id); default: as the source defines it.
        split: one labelled pool -> stratified train/val/test ratios and seed.
        dedupe: drop repeated texts before splitting a pool (``sms_spam``, ``csv`` with
            ``files.all``); a text with two labels is an error.
        cv_folds: > 1: stratified k-fold cross-validation over the pool (``polarity``).
        cv_seed: seed of the folds.
        dev_fraction: tasks without a dev split: share of train held out for model selection.
        dev_seed: seed of that hold-out.
        max_train: keep a stratified subset of train this large (quick runs; default all).
        csv: ``csv`` only: files, columns, delimiter, header.
        rules: the ``rule`` family's classifier (``lineage.tasks.rules``); null = unsupported.
        probe: the probe's settings.
        finetune: fine-tuning settings (neural and word-vector families).
        version: how the loader reads the source: raised with a change to it that changes the
            texts or splits (2: ``sms_spam`` and ``csv`` deduplicate texts that differ only in
            whitespace), so that runs made before are not taken for the same config.
    """

    source: str
    data_dir: str | None = None
    offline: bool = False
    path: str | None = None
    classes: list[str] | None = None
    split: SplitConfig | None = None
    dedupe: bool = True
    cv_folds: int = 0
    cv_seed: int = 1234
    dev_fraction: float = 0.1
    dev_seed: int = 1234
    max_train: int | None = None
    csv: CsvConfig = field(default_factory=CsvConfig)
    rules: dict[str, Any] | None = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    version: int = 1


POOLINGS = ("mean", "max", "last")  # finetune.pooling
_NESTED = {"split": SplitConfig, "csv": CsvConfig, "probe": ProbeConfig, "finetune": FinetuneConfig}


def _typed(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the field's type (``int``, ``float``, ``bool``, ``str``, ``list[...]``,
    ``X | None``), or a DataError naming ``key``: a command line gives strings and numbers
    as the user typed them, and a wrong one would fail later, deep in scikit-learn or torch."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise DataError(f"{key}={value!r}: expected a list, e.g. {key}=[...]")
        return [_typed(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}
    if hint not in wanted:
        return value
    ok = (
        isinstance(value, bool)
        if hint is bool
        else isinstance(value, int | float) and not isinstance(value, bool)
        if hint is float
        else isinstance(value, int) and not isinstance(value, bool)
        if hint is int
        else isinstance(value, str | int | float) and not isinstance(value, bool)
    )
    if not ok:
        raise DataError(f"{key}={value!r}: expected {wanted[hint]}")
    return str(value) if hint is str else value  # classes=[0,1] are the labels "0" and "1"


def _build(cls, values: Mapping[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key in _NESTED and value is not None and not isinstance(value, _NESTED[key]):
            if isinstance(value, bool) and key == "finetune":  # `finetune: true` shorthand
                value = {"enabled": value}
            if not isinstance(value, Mapping):
                raise DataError(f"{where}.{key}: expected a mapping, got {value!r}")
            value = _build(_NESTED[key], value, f"{where}.{key}")
        elif key not in _NESTED:
            value = _typed(value, hints[key], f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def parse_task_config(name: str, cfg: Any) -> TaskConfig:
    """``task.<name>`` (OmegaConf node or dict) -> :class:`TaskConfig`, checked.

    Raises:
        DataError: unknown key, unknown source, or an impossible value, naming the key.
    """
    where = f"task.{name}"
    values = as_mapping(cfg)
    if "source" not in values:
        raise DataError(f"{where}: no 'source'; one of {', '.join(SOURCES)}")
    tc = _build(TaskConfig, values, where)
    if tc.source not in SOURCES:
        raise DataError(f"{where}.source={tc.source!r} is unknown; one of {', '.join(SOURCES)}")
    if tc.cv_folds == 1 or tc.cv_folds < 0:
        raise DataError(f"{where}.cv_folds={tc.cv_folds}: use 0 (no CV) or >= 2 folds")
    if not 0 < tc.dev_fraction < 1:
        raise DataError(f"{where}.dev_fraction={tc.dev_fraction} must be in (0, 1)")
    if not tc.probe.C or any(float(c) <= 0 for c in tc.probe.C):
        raise DataError(f"{where}.probe.C={tc.probe.C} must be a non-empty list of positive values")
    if tc.probe.pooling not in ("mean", "tfidf"):
        raise DataError(f"{where}.probe.pooling={tc.probe.pooling!r}: use mean or tfidf")
    if (
        len(tc.probe.ngram_range) != 2
        or not 1 <= tc.probe.ngram_range[0] <= tc.probe.ngram_range[1]
    ):
        raise DataError(
            f"{where}.probe.ngram_range={tc.probe.ngram_range}: use [min, max], 1 <= min"
        )
    ft = tc.finetune
    if ft.pooling not in POOLINGS:
        raise DataError(f"{where}.finetune.pooling={ft.pooling!r}: use {' | '.join(POOLINGS)}")
    for key in ("dropout", "body_dropout"):
        value = getattr(ft, key)
        if value is not None and not 0 <= value < 1:
            raise DataError(f"{where}.finetune.{key}={value} must be in [0, 1)")
    if not 0 < ft.val_check_interval <= 1:
        raise DataError(
            f"{where}.finetune.val_check_interval={ft.val_check_interval} must be in (0, 1]"
        )
    if ft.lm_epochs < 0 or ft.lm_lr <= 0:
        raise DataError(
            f"{where}.finetune: lm_epochs={ft.lm_epochs} must be >= 0 (0: no LM adaptation) "
            f"and lm_lr={ft.lm_lr} > 0"
        )
    if tc.max_train is not None and tc.max_train < 2:
        raise DataError(f"{where}.max_train={tc.max_train} must be >= 2 (or null)")
    return tc


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, scores: np.ndarray | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1, MCC, and ROC-AUC (binary tasks with scores).

    Macro-F1 averages over the classes that occur in ``y_true`` or ``y_pred`` (scikit-learn's
    convention): a class absent from both has no F1, rather than one of 0.

    Args:
        y_true: (N,) class ids.
        y_pred: (N,) predicted class ids.
        n_classes: size of the label set.
        scores: (N,) score of class 1 (binary only); higher means more likely class 1.
    """
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, roc_auc_score

    labels = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
    }
    if n_classes == 2 and scores is not None and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(roc_auc_score(y_true, scores))
    return out


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def write_confusion(path: Path, matrix: np.ndarray, classes: Sequence[str]) -> Path:
    """The confusion matrix as CSV: header ``true\\predicted,<classes>``, one row per true class."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted", *classes])
        for name, row in zip(classes, matrix, strict=True):
            writer.writerow([name, *(int(v) for v in row)])
    return path


def prefixed(task: str, split: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``{accuracy: .9}`` -> ``{"<task>/<split>/accuracy": .9}``."""
    return {f"{task}/{split}/{k}": float(v) for k, v in metrics.items()}


def mean_std(folds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per metric the mean over folds, and ``{metric}_std`` the sample standard deviation."""
    out: dict[str, float] = {}
    for key in folds[0]:
        values = np.array([f[key] for f in folds if key in f], dtype=np.float64)
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out
