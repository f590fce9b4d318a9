"""Downstream tasks: every family answers every task it can, and the table prints "—" for the rest.

``lineage-train model=lstm task=[sst2,sms_spam] task.sst2.data_dir=…`` runs the LM job, then
:func:`evaluate_tasks` (called by the runner) answers each task in ``task`` (``conf/task/``):

* families with features (``ngram``: TF-IDF n-grams; ``word2vec``/``glove``: mean word vectors;
  ``rnn``/``lstm``/``gru``/``transformer``: pooled hidden states; see :mod:`.features`) ->
  the one logistic-regression probe, C chosen on dev, scored once on test (:mod:`.probe`);
* the ``rule`` family (``RuleLM``) -> the task's hand-written rules (:mod:`.rules`), if the task
  config has ``rules``; else the task is ``unsupported``;
* everything else (``uniform``) -> ``unsupported``.

Logged into the job's MLflow run (design.md §4): metrics ``{task}/{val|test}/{accuracy|f1_macro|
mcc|roc_auc}`` (cross-validated tasks: the mean over folds, ``{metric}_std`` the sd, and
``{task}/test/folds``), ``{task}/{split}/examples``, the confusion matrix ``confusion/{task}.csv``
(summed over folds), the task splits as MLflow dataset inputs ``task-{task}-{split}``, and tags
``task.{task}.status`` = ``ok`` | ``unsupported``, ``task.{task}.answer`` (``probe`` or ``rules``),
``task.{task}.probe_C`` and ``adaptation`` (``probe`` for a feature family, ``rules`` for the rule
family). Fine-tuning (``task.<name>.finetune.enabled``, neural and word-vector families) logs
each of ``finetune`` and ``scratch`` as an MLflow child run of the job's run, tagged
``adaptation`` (see :mod:`.finetune`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lineage.data.sources import DataError
from lineage.tasks.base import (
    TaskConfig,
    classification_metrics,
    confusion,
    mean_std,
    parse_task_config,
    prefixed,
    write_confusion,
)
from lineage.tasks.data import (
    TaskData,
    as_mapping,
    classes_from,
    load_ag_news,
    load_csv,
    load_imdb,
    load_polarity,
    load_sms_spam,
    load_sst2,
    stratified_split,
    subsample,
)

log = logging.getLogger("lineage")

__all__ = [
    "evaluate_tasks",
    "check_task_settings",
    "load_task",
    "answer_task",
    "TaskConfig",
    "TaskData",
]


def load_task(name: str, cfg: TaskConfig) -> TaskData:
    """Read task ``name``'s data as ``cfg`` says (downloads verified by sha256)."""
    split = cfg.split
    if cfg.source == "polarity":
        data = load_polarity(name, cfg.path)
        if not cfg.cv_folds:
            if split is None:
                raise DataError(
                    f"task {name!r}: polarity has no splits; set task.{name}.cv_folds (e.g. 5) "
                    f"or task.{name}.split.ratios"
                )
            from lineage.tasks.data import _split_pool

            pool_t, pool_l, info = data.texts.pop("all"), data.labels.pop("all"), data.files["all"]
            data = _split_pool(data, pool_t, pool_l, split, info)
    elif cfg.source == "sst2":
        data = load_sst2(name, cfg.data_dir, cfg.offline or None)
    elif cfg.source == "sms_spam":
        from lineage.tasks.data import SplitConfig

        data = load_sms_spam(
            name, cfg.data_dir, cfg.offline or None, split or SplitConfig(), cfg.dedupe
        )
    elif cfg.source == "ag_news":
        data = load_ag_news(name, cfg.data_dir, cfg.offline or None, cfg.dev_fraction, cfg.dev_seed)
    elif cfg.source == "imdb":
        data = load_imdb(name, cfg.data_dir, cfg.offline or None, cfg.dev_fraction, cfg.dev_seed)
    else:
        data = load_csv(name, cfg.csv, split, cfg.dev_fraction, cfg.dev_seed, cfg.dedupe)
    classes_from(data, cfg.classes)
    if "train" in data.texts:
        subsample(data, "train", cfg.max_train, cfg.dev_seed)
        if len(set(data.labels["train"])) < 2:
            raise DataError(f"task {name!r}: train has fewer than two classes")
    elif cfg.max_train is not None:  # cross-validated: no train split to cut
        raise DataError(
            f"task.{name}.max_train={cfg.max_train}: the task is cross-validated over all its "
            f"{len(data.texts['all'])} texts, it has no train split to cut; leave it unset"
        )
    if cfg.cv_folds and "all" not in data.texts:
        raise DataError(f"task {name!r}: cv_folds needs a task without given splits")
    return data


def _uses_rules(model) -> bool:
    from lineage.models.rule import RuleLM

    return isinstance(getattr(model, "lm", None), RuleLM)


def _folds(data: TaskData, cfg: TaskConfig):
    """(train, val, test) index triples: one for given splits, k for cross-validation."""
    if "all" not in data.texts:
        yield None
        return
    from sklearn.model_selection import StratifiedKFold

    y = data.y("all")
    skf = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.cv_seed)
    for train_idx, test_idx in skf.split(np.zeros(len(y)), y):
        inner_train, inner_val = stratified_split(
            [data.labels["all"][i] for i in train_idx],
            [1 - cfg.dev_fraction, cfg.dev_fraction],
            cfg.dev_seed,
        )
        yield train_idx[inner_train], train_idx[inner_val], test_idx


def _split_view(data: TaskData, fold) -> dict[str, tuple[list[str], np.ndarray]]:
    if fold is None:
        return {s: (data.texts[s], data.y(s)) for s in ("train", "val", "test")}
    texts, y = data.texts["all"], data.y("all")
    parts = zip(("train", "val", "test"), fold, strict=True)
    return {s: ([texts[i] for i in idx], y[idx]) for s, idx in parts}


def answer_task(
    name: str, cfg: TaskConfig, data: TaskData, model, encoder, seed: int = 0
) -> dict[str, Any] | None:
    """The family's answer to one task, or None when it cannot answer (``unsupported``).

    Returns:
        ``{"answer": "probe"|"rules", "metrics": {name: value}, "confusion": (C, C) array,
        "C": [chosen C per fold]}``, metrics already named ``{task}/{split}/{metric}``.
    """
    from lineage.tasks.features import feature_extractor
    from lineage.tasks.probe import fit_probe
    from lineage.tasks.rules import build_rules

    n_classes = len(data.classes)
    rules = build_rules(cfg.rules, data.classes, name) if _uses_rules(model) else None
    extractor = None if _uses_rules(model) else feature_extractor(model, encoder, cfg.probe)
    if rules is None and extractor is None:
        return None
    folds_val, folds_test, chosen = [], [], []
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    for fold in _folds(data, cfg):
        view = _split_view(data, fold)
        if rules is not None:
            scored = {}
            for split in ("val", "test"):
                texts, y = view[split]
                out = rules(texts)
                scored[split] = classification_metrics(y, out.predictions, n_classes, out.scores)
            folds_val.append(scored["val"])
            folds_test.append(scored["test"])
            matrix += confusion(view["test"][1], out.predictions, n_classes)  # out: test's
            continue
        extractor.fit(view["train"][0])
        X = {s: extractor.transform(view[s][0]) for s in ("train", "val", "test")}
        result = fit_probe(
            X["train"],
            view["train"][1],
            X["val"],
            view["val"][1],
            X["test"],
            view["test"][1],
            n_classes,
            cfg.probe.C,
            cfg.probe.scale,
            cfg.probe.max_iter,
            seed,
        )
        if result.unconverged:
            log.warning(
                "task %s: the probe's logistic regression stopped at max_iter=%d before "
                "converging for C = %s (chosen: %g); raise task.%s.probe.max_iter",
                name,
                cfg.probe.max_iter,
                ", ".join(f"{c:g}" for c in result.unconverged),
                result.C,
                name,
            )
        folds_val.append(result.val)
        folds_test.append(result.test)
        chosen.append(result.C)
        matrix += result.confusion
    metrics: dict[str, float] = {}
    if len(folds_test) > 1:
        metrics.update(prefixed(name, "val", mean_std(folds_val)))
        metrics.update(prefixed(name, "test", mean_std(folds_test)))
        metrics[f"{name}/test/folds"] = float(len(folds_test))
    else:
        metrics.update(prefixed(name, "val", folds_val[0]))
        metrics.update(prefixed(name, "test", folds_test[0]))
    for split, texts in data.texts.items():
        metrics[f"{name}/{split}/examples"] = float(len(texts))
    if extractor is not None:
        for key, value in extractor.describe().items():
            metrics[f"{name}/features/{key}"] = value
    return {
        "answer": "rules" if rules is not None else "probe",
        "features": None if extractor is None else extractor.kind,
        "metrics": metrics,
        "confusion": matrix,
        "C": chosen,
    }


def check_task_settings(task_cfg: Any, model) -> dict[str, TaskData]:
    """Before any training: parse every task config, check its fine-tuning settings against
    ``model``'s family, and load its data (files verified, columns found), so that a wrong
    setting or file fails now, not after an hour of training (raises ``DataError`` /
    ``ValueError`` naming the key or file). Returns the loaded tasks for
    :func:`evaluate_tasks`."""
    from lineage.tasks.finetune import can_finetune, check_finetune_settings

    loaded = {}
    for name, cfg in as_mapping(task_cfg).items():
        parsed = parse_task_config(name, cfg)
        if parsed.finetune.enabled and can_finetune(model):
            check_finetune_settings(name, parsed.finetune, model)
        loaded[name] = load_task(name, parsed)
    return loaded


def evaluate_tasks(
    task_cfg: Any,
    model,
    datamodule,
    tracker,
    out_dir,
    seed: int,
    loaded: Mapping[str, TaskData] | None = None,
    trainer_cfg: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Answer every task of ``task_cfg`` with ``model``; log to ``tracker`` (may be None).

    Args:
        task_cfg: the ``task`` node: task name -> task config (``conf/task/<name>.yaml``).
        model: the trained family (a LightningModule of this project).
        datamodule: the run's corpus (tokenisation settings and vocabulary).
        tracker: the job's :class:`lineage.tracking.Run`, or None when tracking is off.
        out_dir: the job's output directory (confusion matrices are written under it).
        seed: the run's seed: the probe's and the classifiers' initialisation and data order
            (the task's splits have their own fixed seeds in the task config).
        loaded: tasks already loaded by :func:`check_task_settings` (the others are loaded).
        trainer_cfg: the run's ``trainer`` config; fine-tuning shares its accelerator, precision
            and determinism (``lineage.tasks.finetune.RUN_TRAINER_KEYS``).

    Returns:
        Every downstream metric, named as design.md §4 says.

    Raises:
        DataError: a bad task config or missing/corrupted task data (the message names the key or
            the file and the fix).
    """
    from lineage.tasks.features import TextEncoder

    tasks: Mapping[str, Any] = as_mapping(task_cfg)
    configs = {name: parse_task_config(name, cfg) for name, cfg in tasks.items()}  # fail early
    encoder = TextEncoder.from_datamodule(datamodule)
    results: dict[str, float] = {}
    tags: dict[str, str] = {}
    adaptations = set()
    for name, cfg in configs.items():
        data = (loaded or {}).get(name) or load_task(name, cfg)
        for note in data.notes:
            log.info("task %s: %s", name, note)
        if tracker is not None:
            tracker.log_datasets(f"task-{name}", data.describe())
        answer = answer_task(name, cfg, data, model, encoder, seed)
        if answer is None:
            tags[f"task.{name}.status"] = "unsupported"
            log.info("task %s: unsupported by %s (shown as —)", name, model.family)
        else:
            tags[f"task.{name}.status"] = "ok"
            tags[f"task.{name}.answer"] = answer["answer"]
            if answer["features"]:
                tags[f"task.{name}.features"] = answer["features"]
            if answer["C"]:
                tags[f"task.{name}.probe_C"] = ",".join(f"{c:g}" for c in answer["C"])
            adaptations.add(answer["answer"])
            results.update(answer["metrics"])
            path = write_confusion(
                Path(out_dir) / "confusion" / f"{name}.csv", answer["confusion"], data.classes
            )
            if tracker is not None:
                tracker.log_artifact(path, "confusion")
            m = answer["metrics"]
            log.info(
                "task %s (%s): test accuracy %.4f, macro-F1 %.4f, MCC %.4f",
                name,
                answer["answer"],
                m[f"{name}/test/accuracy"],
                m[f"{name}/test/f1_macro"],
                m[f"{name}/test/mcc"],
            )
        if cfg.finetune.enabled:
            from lineage.tasks.finetune import finetune_task, run_trainer_settings

            settings = run_trainer_settings(trainer_cfg)
            finetune_task(name, cfg, data, model, encoder, tracker, out_dir, seed, settings)
    if adaptations:
        tags["adaptation"] = ",".join(sorted(adaptations))
    if tracker is not None:
        if results:
            tracker.log_metrics(results)
        tracker.set_tags(tags)
    return results
