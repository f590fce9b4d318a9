"""End to end through the runner: a real Lightning Trainer, a real MLflow store in a temporary
directory, real Hydra composition and a real multirun."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import ROOT, TINY, compose_train, tiny_corpus_overrides
from mlflow.tracking import MlflowClient

from lineage.train import run, variant_overrides

SPLIT_METRICS = ("nll", "ppl", "bits_per_token", "tokens")
RUN_TAGS = ("family", "era", "corpus", "tasks", "seed", "git_sha", "config_hash", "lineage_version")


def _runs(cfg):
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is not None
    return client, experiment, client.search_runs([experiment.experiment_id])


def test_run_logs_one_finished_run_with_the_documented_names(tiny_cfg):
    cfg = tiny_cfg("model=ngram_kn3", "study=names", tracking="mlflow")
    results = run(cfg)
    client, experiment, runs = _runs(cfg)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert len(runs) == 1
    mlrun = runs[0]
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.run_name == "ngram_kn3-text_files-s0"
    metrics = mlrun.data.metrics
    for split in ("val", "test"):
        for name in SPLIT_METRICS:
            assert f"{split}/{name}" in metrics
        assert metrics[f"{split}/ppl"] == pytest.approx(math.exp(metrics[f"{split}/nll"]))
        assert metrics[f"{split}/bits_per_token"] == pytest.approx(
            metrics[f"{split}/nll"] / math.log(2)
        )
    for name in ("params", "train_seconds", "train_tokens_per_sec", "peak_rss_mb"):
        assert f"cost/{name}" in metrics
    assert "test/oov_rate" in metrics
    assert metrics["test/ppl"] == pytest.approx(results["test/ppl"])
    for tag in RUN_TAGS:
        assert mlrun.data.tags.get(tag), tag
    assert mlrun.data.tags["family"] == "ngram"
    assert mlrun.data.params["model.lm.order"] == "3"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"config.yaml", "results.json", "samples.txt", "model"} <= artifacts
    contexts = {
        tag.value
        for ds in mlrun.inputs.dataset_inputs
        for tag in ds.tags
        if tag.key == "mlflow.data.context"
    }
    assert contexts == {"train", "val", "test"}
    assert all(ds.dataset.digest for ds in mlrun.inputs.dataset_inputs)


def test_uniform_perplexity_is_the_vocabulary_size(tiny_cfg):
    cfg = tiny_cfg("model=uniform")
    results = run(cfg)
    from hydra.utils import instantiate

    dm = instantiate(cfg.corpus)
    dm.prepare_data()
    dm.setup()
    V = dm.vocab_size
    assert results["test/ppl"] == pytest.approx(V, rel=1e-12)
    assert results["val/bits_per_token"] == pytest.approx(math.log2(V), rel=1e-12)
    # the targets scored, not the data statistic (which has its own name)
    assert results["test/tokens"] == dm.stream("test").numel() - 1
    assert results["test/data_tokens"] == dm.stats()["test/tokens"] == results["test/tokens"]


class _InterruptTraining(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        raise KeyboardInterrupt


def test_interrupted_fit_ends_failed_and_leaves_nothing_half_written(tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg("model=ngram", "study=interrupted", tracking="mlflow")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run(cfg, callbacks=[_InterruptTraining()])
    client, _, runs = _runs(cfg)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert (  # Lightning exits quietly on Ctrl-C: the run says what it left
        f"ngram-text_files-s0: training interrupted, MLflow run {runs[0].info.run_id} marked "
        "FAILED; no checkpoint to continue from: the same command starts it again"
    ) in caplog.messages
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert "model" not in artifacts and "results.json" not in artifacts
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    # the prepared cache that was written is complete: the next run uses it and finishes
    assert run(tiny_cfg("model=ngram", "study=interrupted"))["test/tokens"] > 0


class _Boom(L.Callback):
    def on_validation_start(self, trainer, pl_module):
        raise RuntimeError("boom")


def test_sigterm_outside_a_fit_ends_the_run_failed(tmp_path):
    """Killed while it scores tasks or logs artifacts (``kill``, ``timeout``), a run is FAILED,
    not left RUNNING; the handler it had before is restored."""
    import os
    import signal

    from omegaconf import OmegaConf

    from lineage.tracking import mlflow_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = OmegaConf.create({"enabled": True, "uri": uri, "experiment": "killed"})
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_, mlflow_run(tracking, "r", {}):
        os.kill(os.getpid(), signal.SIGTERM)
    assert exit_.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    client = MlflowClient(tracking_uri=uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert killed.info.status == "FAILED"


def test_a_deleted_study_is_named_with_the_way_back(tiny_cfg):
    from lineage.data.sources import DataError

    cfg = tiny_cfg("model=rule", "study=gone", tracking="mlflow")
    run(cfg)
    client, experiment, _ = _runs(cfg)
    client.delete_experiment(experiment.experiment_id)
    with pytest.raises(DataError, match=r"study 'gone' is experiment .*, deleted .* restore it"):
        run(cfg)  # not skipped by the deleted study's finished run


def test_a_run_that_raises_ends_failed(tiny_cfg):
    cfg = tiny_cfg("model=rule", "study=raises", tracking="mlflow")
    with pytest.raises(RuntimeError, match="boom"):
        run(cfg, callbacks=[_Boom()])
    _, _, runs = _runs(cfg)
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_refused_setting_opens_no_run(tiny_cfg):
    cfg = tiny_cfg("model=lstm_tiny", "model.optimizer.lr=abc", "study=refused", tracking="mlflow")
    with pytest.raises(Exception, match=r"model.optimizer .*lr='abc'"):
        run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("refused")
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []
    # the same config with a good value runs and is recorded
    cfg = tiny_cfg("model=lstm_tiny", "model.max_epochs=1", "study=refused", tracking="mlflow")
    run(cfg)
    assert [r.info.status for r in _runs(cfg)[2]] == ["FINISHED"]


def test_multirun_from_the_command_line(tmp_path):
    """`lineage-train -m model=rule,ngram seed=1,2`: a real Hydra multirun into a temp store."""
    env = {
        **os.environ,
        "LINEAGE_CACHE_DIR": str(tmp_path / "cache"),
        "LINEAGE_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "lineage.train",
        "-m",
        "model=rule,ngram",
        "seed=1,2",
        "study=sweep-test",
        f"paths.root_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "corpus.lowercase=false",  # the default: names no variant
        *tiny_corpus_overrides(),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [
        "ngram-text_files-s1",
        "ngram-text_files-s2",
        "rule-text_files-s1",
        "rule-text_files-s2",
    ]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    # the tiny corpus's files are what the runs read: the same for all four, one row per model
    assert {r.data.tags["overrides"] for r in runs} == {variant_overrides(tiny_corpus_overrides())}
    for r in runs:
        for split in ("val", "test"):
            for name in SPLIT_METRICS:
                assert f"{split}/{name}" in r.data.metrics
    # every family scored the same targets
    assert len({r.data.metrics["test/tokens"] for r in runs}) == 1
    assert Path(tmp_path / "mlruns" / "artifacts").is_dir()


def test_the_overrides_tag_keeps_what_changes_the_computation():
    given = [
        "model=ngram", "seed=1", "corpus=ptb", "corpus.data_dir=/data/ptb", "task=[sst2]",
        "task.sst2.data_dir=/data/sst2", "experiment=lineage_ptb", "paths.root_dir=/x",
        "corpus.files.train=a.txt", "task.mine.csv.files.all=b.csv",
        "tracking=server", "tracking.uri=http://h:5000", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "trainer.enable_progress_bar=false", "+tags.note=x",
        "model.lm.order=2", "task.sst2.probe.C=[1]", "corpus.lowercase=true", "trainer=fast",
        "++trainer.limit_train_batches=5", "corpus.name=mine", "samples.count=0",
    ]  # fmt: skip
    assert variant_overrides(given) == (
        "corpus.files.train=a.txt corpus.lowercase=true model.lm.order=2 task.mine.csv.files.all="
        "b.csv task.sst2.probe.C=[1] trainer.limit_train_batches=5 trainer=fast"
    )


@pytest.mark.parametrize("model", ["lstm_tiny", "transformer_tiny"])
def test_debug_fast_smoke_tests_a_neural_family(tiny_cfg, model):
    """fast_dev_run keeps no checkpoint: valid and test score the weights it has."""
    results = run(tiny_cfg(f"model={model}", "debug=fast"))
    assert math.isfinite(results["val/ppl"]) and math.isfinite(results["test/ppl"])


def test_a_transformer_run_logs_its_flops_rate_and_evaluation_windows(tiny_cfg):
    """The achieved training FLOP/s is FLOPs per token × tokens per second; the sliding-window
    evaluation's window and stride are params (design.md §3.2, §4)."""
    cfg = tiny_cfg(
        "model=transformer_tiny",
        "samples.count=0",
        "trainer.enable_progress_bar=false",
        "tracking.log_model=false",
        "study=transformer_cost",
        tracking="mlflow",
    )
    results = run(cfg)
    _, _, (mlrun,) = _runs(cfg)
    metrics, params = mlrun.data.metrics, mlrun.data.params
    for values in (results, metrics):
        flops = values["cost/train_flops_per_token"] * values["cost/train_tokens_per_sec"]
        assert flops > 0
        assert values["cost/train_flops_per_sec"] == pytest.approx(flops, rel=1e-9)
    batching = cfg.model.batching
    assert params["eval.window"] == str(batching.seq_len) == "16"
    assert params["eval.stride"] == str(batching.seq_len - batching.min_context) == "8"
    assert params["trainer.precision"] == "32-true"


def test_trainer_precision_is_a_plain_setting_hashed_as_absent_at_its_default(tmp_path):
    """``trainer.precision=bf16-mixed`` as written (no ``+``), under every trainer config; at
    Lightning's default it hashes as the runs from before the key existed."""
    from omegaconf import OmegaConf

    from lineage.tracking import config_hash, resolved

    base = [*tiny_corpus_overrides(), "model=transformer_tiny"]
    for extra in ([], ["debug=fast"], ["trainer=ddp"], ["trainer=fast"]):
        assert compose_train([*base, *extra], tmp_path).trainer.precision == "32-true", extra
        bf16 = compose_train([*base, *extra, "trainer.precision=bf16-mixed"], tmp_path)
        assert bf16.trainer.precision == "bf16-mixed", extra
    h = config_hash(compose_train(base, tmp_path))
    older = resolved(compose_train(base, tmp_path))
    del older["trainer"]["precision"]  # the config as the runs before the key had it
    assert config_hash(OmegaConf.create(older)) == h
    assert config_hash(compose_train([*base, "trainer.precision=32-true"], tmp_path)) == h
    assert config_hash(compose_train([*base, "trainer.precision=bf16-mixed"], tmp_path)) != h


def test_a_finished_config_is_skipped_unless_forced(tiny_cfg):
    first = run(tiny_cfg("model=rule", "study=skip", tracking="mlflow"))
    again = run(tiny_cfg("model=rule", "study=skip", tracking="mlflow"))
    cfg = tiny_cfg("model=rule", "study=skip", "force=true", tracking="mlflow")
    forced = run(cfg)
    _, _, runs = _runs(cfg)
    assert len(runs) == 2  # the second call found the FINISHED run and did nothing
    assert again["test/ppl"] == pytest.approx(first["test/ppl"])
    assert forced["test/ppl"] == pytest.approx(first["test/ppl"])


def test_a_run_under_an_earlier_hash_definition_is_found_by_its_stored_config(tiny_cfg):
    """A run whose config_hash tag an earlier lineage computed differently is still skipped
    when the config in its results.json hashes, today, as the new run's config; a different
    config with the same model and seed is not."""
    cfg = tiny_cfg("model=ngram", "study=rehash", tracking="mlflow")
    run(cfg)
    client, experiment, runs = _runs(cfg)
    client.set_tag(runs[0].info.run_id, "config_hash", "0123456789abcdef")  # an old definition
    run(tiny_cfg("model=ngram", "study=rehash", tracking="mlflow"))
    assert len(client.search_runs([experiment.experiment_id])) == 1  # found, skipped
    run(tiny_cfg("model=ngram", "study=rehash", "model.lm.order=2", tracking="mlflow"))
    assert len(client.search_runs([experiment.experiment_id])) == 2  # another config: ran


def test_a_corpus_file_edited_after_a_finished_run_makes_it_run_again(tmp_path):
    """The config hash names a text_files corpus by its paths: the skip also checks that the
    files still have the sha256 the finished run logged (with each split's path as the dataset
    source)."""
    corpus = tmp_path / "corpus"
    shutil.copytree(TINY, corpus)
    overrides = [
        "corpus=text_files",
        *(f"corpus.files.{s}={corpus / f'{s}.txt'}" for s in ("train", "valid", "test")),
        "tracking=mlflow",
        "model=ngram",
        "study=edited",
    ]
    root = tmp_path / "root"
    cfg = compose_train(overrides, root)
    first = run(cfg)
    client, experiment, runs = _runs(cfg)
    sources = {json.loads(d.dataset.source)["uri"] for d in runs[0].inputs.dataset_inputs}
    assert sources == {str(corpus / f"{s}.txt") for s in ("train", "valid", "test")}
    run(compose_train(overrides, root))
    assert len(client.search_runs([experiment.experiment_id])) == 1  # unchanged: skipped
    with open(corpus / "test.txt", "a") as f:
        f.write("the cat sat on the mat .\n")
    again = run(compose_train(overrides, root))
    assert len(client.search_runs([experiment.experiment_id])) == 2  # edited: ran again
    assert again["test/tokens"] > first["test/tokens"]


def test_a_copy_of_a_corpus_is_checked_by_its_own_files(tmp_path):
    """MLflow keeps one dataset row per (name, digest), whose source is the first run's file: a
    second corpus with the same contents elsewhere is checked by its own files (input tag)."""

    def overrides(corpus):
        files = (f"corpus.files.{s}={corpus / f'{s}.txt'}" for s in ("train", "valid", "test"))
        return ["corpus=text_files", *files, "tracking=mlflow", "model=ngram", "study=copies"]

    root = tmp_path / "root"
    for name in ("a", "b"):
        shutil.copytree(TINY, tmp_path / name)
        first = run(compose_train(overrides(tmp_path / name), root))
    client, experiment, runs = _runs(compose_train(overrides(tmp_path / "b"), root))
    assert len(runs) == 2
    with open(tmp_path / "b" / "test.txt", "a") as f:
        f.write("the cat sat on the mat .\n")
    again = run(compose_train(overrides(tmp_path / "b"), root))
    assert len(client.search_runs([experiment.experiment_id])) == 3  # b edited: ran again
    assert again["test/tokens"] > first["test/tokens"]


def test_train_rate_counts_the_tokens_actually_trained(tiny_cfg):
    # 2 batches of 4 rows x 5 targets: a partial epoch must not count the whole split
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.max_epochs=1",
        "model.batching.batch_size=4",
        "model.batching.seq_len=5",
        "+trainer.limit_train_batches=2",
        "stages=[fit]",
    )
    results = run(cfg)
    trained = results["cost/train_tokens_per_sec"] * results["cost/train_seconds"]
    assert trained == pytest.approx(2 * 4 * 5)


class _ProgressBar(L.Callback):
    """What the progress bar shows after each training batch."""

    def __init__(self):
        self.shown: list[set[str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.shown.append(set(trainer.progress_bar_metrics))


def test_train_loss_is_logged_once_per_epoch_under_its_documented_name(tiny_cfg):
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.net.hidden_size=16",
        "model.batching.batch_size=4",
        "model.batching.seq_len=10",
        "model.batching.eval_seq_len=50",
        "model.max_epochs=3",
        "model.optimizer.lr=0.3",
        "trainer.enable_progress_bar=false",
        "samples.count=0",
        "study=train_loss",
        tracking="mlflow",
    )
    bar = _ProgressBar()
    run(cfg, callbacks=[bar])
    client, _, (mlrun,) = _runs(cfg)
    assert "train/loss_epoch" not in mlrun.data.metrics
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert len(history) == 3, "design.md §4: one train/loss (the epoch's mean) per epoch"
    assert len({m.step for m in history}) == 3
    assert all(0 < m.value < 20 for m in history)
    # the progress bar shows a live loss and the token rate while training
    assert bar.shown and all({"train/loss_step", "tok/s"} <= shown for shown in bar.shown[1:])


def test_tokens_is_the_count_scored_and_the_split_size_has_its_own_name(tiny_cfg):
    # one test batch of one row x 10 targets: the scoring sees 10 of the split's targets, and
    # `test/tokens` must say so (not the split's size, `test/data_tokens`)
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.net.hidden_size=16",
        "model.batching.eval_seq_len=10",
        "+trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "samples.count=0",
        "model.max_epochs=1",
        "+trainer.limit_train_batches=1",
        "+trainer.limit_val_batches=1",
        "stages=[fit,test]",
        "study=tokens",
        tracking="mlflow",
    )
    results = run(cfg)
    from hydra.utils import instantiate

    dm = instantiate(cfg.corpus)
    dm.setup()
    assert results["test/tokens"] == 10
    assert results["test/data_tokens"] == dm.stream("test").numel() - 1 > 10
    assert results["test/nll"] == pytest.approx(math.log(results["test/ppl"]))
    client, _, (mlrun,) = _runs(cfg)
    scored = client.get_metric_history(mlrun.info.run_id, "test/tokens")
    assert [m.value for m in scored] == [10], "the data statistic is not logged under this name"
    assert mlrun.data.metrics["test/data_tokens"] == results["test/data_tokens"]
    assert mlrun.data.metrics["val/data_tokens"] == dm.stream("val").numel() - 1
    assert mlrun.data.metrics["train/tokens"] == dm.stream("train").numel() - 1
