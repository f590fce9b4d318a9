"""Downstream tasks through the runner: real Hydra composition and multirun, a real Lightning
Trainer, a real MLflow store in a temporary directory."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_corpus_overrides
from mlflow.tracking import MlflowClient

from lineage.data.sources import DataError
from lineage.train import run

METRICS = ("accuracy", "f1_macro", "mcc", "roc_auc")


def _only_run(cfg):
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_ngram_probe_on_polarity_is_logged_with_the_documented_names(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "model=ngram_kn3",
        "task=[polarity]",
        "task.polarity.finetune.enabled=true",  # not for a count family: tagged unsupported
        "study=tasks",
        tracking="mlflow",
    )
    results = run(cfg)
    client, mlrun = _only_run(cfg)
    metrics, tags = mlrun.data.metrics, mlrun.data.tags
    for split in ("val", "test"):
        for name in METRICS:
            assert 0.0 <= metrics[f"polarity/{split}/{name}"] <= 1.0 or name == "mcc"
    assert metrics["polarity/test/folds"] == 5
    assert "polarity/test/accuracy_std" in metrics
    assert metrics["polarity/all/examples"] == 200
    assert results["polarity/test/accuracy"] == pytest.approx(metrics["polarity/test/accuracy"])
    assert tags["task.polarity.status"] == "ok" and tags["task.polarity.answer"] == "probe"
    assert tags["task.polarity.features"] == "tfidf" and tags["adaptation"] == "probe"
    assert len(tags["task.polarity.probe_C"].split(",")) == 5  # one C per fold
    assert tags["tasks"] == "perplexity,polarity"
    assert tags["task.polarity.finetune"] == "unsupported"
    assert "test/ppl" in metrics  # the LM scores are still there
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id, "confusion")}
    assert artifacts == {"confusion/polarity.csv"}
    rows = list(csv.reader((tmp_path / "run" / "confusion" / "polarity.csv").open()))
    assert rows[0] == ["true\\predicted", "neg", "pos"]
    assert sum(int(v) for r in rows[1:] for v in r[1:]) == 200  # every sentence tested once
    contexts = {ds.dataset.name for ds in mlrun.inputs.dataset_inputs}
    assert "task-polarity-all" in contexts


def test_rules_answer_and_a_task_without_rules_is_unsupported(tiny_cfg, tmp_path):
    path = tmp_path / "mine.csv"
    rows = [f"great fun {i},yes\n" for i in range(20)] + [f"dull {i},no\n" for i in range(20)]
    path.write_text("text,label\n" + "".join(rows))
    cfg = tiny_cfg(
        "model=rule",
        "task=[polarity,csv]",
        f"task.csv.csv.files.all={path}",
        "study=rules",
        tracking="mlflow",
    )
    results = run(cfg)
    _, mlrun = _only_run(cfg)
    tags = mlrun.data.tags
    assert tags["task.polarity.status"] == "ok" and tags["task.polarity.answer"] == "rules"
    assert tags["task.csv.status"] == "unsupported"
    assert tags["adaptation"] == "rules"
    assert not any(k.startswith("csv/") for k in results)  # "—", never a made-up number
    assert results["polarity/test/accuracy"] > 0.55  # VADER on movie sentences: better than chance


def test_a_wrong_task_column_fails_before_the_language_model_trains(tiny_cfg, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("message,category\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    cfg = tiny_cfg(
        "model=lstm_tiny",
        "task=[csv]",
        f"task.csv.csv.files.all={path}",
        "study=early",
        tracking="mlflow",
    )
    with pytest.raises(DataError) as err:
        run(cfg)
    assert str(err.value) == (
        f"{path}: task.csv.csv.text_columns='text' is not a column; the header has "
        "['message', 'category']"
    )
    # checked before the MLflow run opens: no FAILED run left in the study
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_uniform_answers_nothing(tiny_cfg):
    results = run(tiny_cfg("model=uniform", "task=[polarity]"))
    assert not any(k.startswith("polarity/") for k in results)


def test_a_bad_task_setting_is_a_data_error(tiny_cfg):
    with pytest.raises(DataError, match="task.polarity.probe.pooling='max'"):
        run(tiny_cfg("model=ngram_kn3", "task=[polarity]", "task.polarity.probe.pooling=max"))


def test_multirun_ngram_and_word2vec_write_downstream_metrics(tmp_path):
    """`lineage-train -m model=ngram,word2vec task=[polarity]` into a temporary store."""
    env = {**os.environ, "LINEAGE_CACHE_DIR": str(tmp_path / "cache"), "LINEAGE_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "lineage.train",
        "-m",
        "model=ngram,word2vec",
        "task=[polarity]",
        "study=tasks-sweep",
        f"paths.root_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        *tiny_corpus_overrides(),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("tasks-sweep")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"ngram-text_files-s0", "word2vec-text_files-s0"}
    for r in runs.values():
        assert r.info.status == "FINISHED"
        for name in METRICS:
            assert f"polarity/test/{name}" in r.data.metrics
        assert r.data.tags["task.polarity.status"] == "ok"
    w2v = runs["word2vec-text_files-s0"]
    assert (
        w2v.data.tags["family"] == "word2vec"
        and w2v.data.tags["task.polarity.features"] == "vectors"
    )
    assert "test/ppl" not in w2v.data.metrics  # not a left-to-right LM: "—"
    assert w2v.data.metrics["intrinsic/analogy_oov"] <= 1.0
    assert "intrinsic/wordsim353_oov" in w2v.data.metrics
    vectors = {a.path for a in client.list_artifacts(w2v.info.run_id, "vectors")}
    assert vectors == {"vectors/word2vec.kv"}
    assert "test/ppl" in runs["ngram-text_files-s0"].data.metrics
