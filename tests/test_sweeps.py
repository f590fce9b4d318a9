"""Studies as sweeps: parallel jobs on one SQLite store, skip-if-done and resume, the study plan,
reproducibility, and the cluster launcher configs. Real Hydra multiruns in subprocesses, real
MLflow stores in temporary directories."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from conftest import CONF, ROOT, compose_train, free_port, tiny_corpus_overrides
from mlflow.tracking import MlflowClient

import lineage.config
from lineage.tracking import EXPERIMENT_KIND_TAG, PrepareStore, config_hash, open_client
from lineage.train import run

STUDIES = Path(__file__).resolve().parent / "fixtures" / "report"  # experiment/tiny_study.yaml
COMPLETE = ("val/ppl", "test/ppl", "val/tokens", "test/tokens", "cost/params", "cost/peak_rss_mb")
# Tiny models on a shared machine: intra-op threads fighting other processes make a 16-unit LSTM
# step ~30x slower; one thread keeps these tests fast (and changes no result).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LINEAGE_CACHE_DIR": str(tmp_path / "cache"), "LINEAGE_OFFLINE": "1"}
    env.update(ONE_THREAD)
    cmd = [
        sys.executable,
        "-m",
        "lineage.train",
        "--config-dir",
        str(STUDIES),
        "experiment=tiny_study",
        f"paths.root_dir={tmp_path}",
        *tiny_corpus_overrides(),
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def _study_runs(tmp_path: Path):
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("tiny-study")
    assert experiment is not None
    return experiment, client.search_runs([experiment.experiment_id])


def test_parallel_sweep_on_one_sqlite_store(tmp_path):
    """A study of 4 jobs, 2 at a time (joblib), into one new SQLite store: 4 distinct FINISHED
    runs with complete metrics, an intact database, the experiment made before the jobs."""
    done = _train(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in log  # really two processes
    assert "Store sqlite:///" in log  # the experiment was created before the jobs started
    experiment, runs = _study_runs(tmp_path)
    assert experiment.tags[EXPERIMENT_KIND_TAG[0]] == EXPERIMENT_KIND_TAG[1]
    assert len(runs) == 4 and len({r.info.run_id for r in runs}) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.info.run_name for r in runs) == [
        "rule-text_files-s0",
        "rule-text_files-s1",
        "uniform-text_files-s0",
        "uniform-text_files-s1",
    ]
    assert sorted(r.data.tags["sweep_job"] for r in runs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    for r in runs:
        missing = [m for m in COMPLETE if m not in r.data.metrics]
        assert not missing, (r.info.run_name, missing)
        assert r.data.tags["study_kind"] == "test" and r.data.tags["config_hash"]
    hydra_files = {a.path for a in _client(tmp_path).list_artifacts(runs[0].info.run_id, ".hydra")}
    assert hydra_files == {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    """Ctrl-C in the middle of a study's sweep, then the same command again: the jobs that had
    FINISHED are skipped (not rerun), the interrupted one is FAILED (not left RUNNING), and the
    rest run, so every planned job has exactly one FINISHED run."""
    import signal
    import time

    env = {**os.environ, "LINEAGE_CACHE_DIR": str(tmp_path / "cache"), "LINEAGE_OFFLINE": "1"}
    env.update(ONE_THREAD)
    cmd = [sys.executable, "-m", "lineage.train", "--config-dir", str(STUDIES)]
    cmd += ["experiment=tiny_study", f"paths.root_dir={tmp_path}", *tiny_corpus_overrides()]
    db = tmp_path / "mlruns" / "mlflow.db"
    sweep = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    finished: list[str] = []
    deadline = time.monotonic() + 300
    while not finished and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if db.exists():
            with sqlite3.connect(db, timeout=20) as con:
                try:
                    finished = [
                        r
                        for (r,) in con.execute(
                            "SELECT run_uuid FROM runs WHERE status = 'FINISHED'"
                        )
                    ]
                except sqlite3.OperationalError:  # the schema is being created
                    pass
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
    log = sweep.communicate(timeout=120)[0]
    assert sweep.returncode != 0, log[-3000:]  # stopped, not completed
    _, runs = _study_runs(tmp_path)
    before = {r.info.run_id: r.info.status for r in runs}
    done_before = {k for k, status in before.items() if status == "FINISHED"}
    assert 1 <= len(done_before) < 4, (before, log[-3000:])  # interrupted mid-sweep
    assert "RUNNING" not in before.values()

    again = _train(tmp_path)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-3000:]
    assert log.count("already FINISHED this config") == len(done_before)
    _, runs = _study_runs(tmp_path)
    finished_runs = [r for r in runs if r.info.status == "FINISHED"]
    assert {r.info.run_id for r in finished_runs} >= done_before  # kept, not rerun
    jobs = sorted((r.data.tags["model"], r.data.tags["seed"]) for r in finished_runs)
    assert jobs == [("rule", "0"), ("rule", "1"), ("uniform", "0"), ("uniform", "1")]
    assert {r.info.status for r in runs} <= {"FINISHED", "FAILED"}


def test_a_study_plan_cuts_seeds_unless_forced(tiny_cfg, caplog):
    """tracking.only_seeds: {model: [seeds]} — other seeds of that model are skipped before any
    work (and run with force=true); other models are not affected."""
    caplog.set_level(logging.INFO, logger="lineage")
    plan = "+tracking.only_seeds={uniform:[0]}"
    assert run(tiny_cfg("model=uniform", "seed=1", plan)) == {}
    assert (
        "uniform-text_files-s1: skipped, the study runs uniform with seeds [0] only" in caplog.text
    )
    assert run(tiny_cfg("model=uniform", "seed=0", plan))["test/ppl"] > 0
    assert run(tiny_cfg("model=rule", "seed=1", plan))["test/ppl"] > 0
    assert run(tiny_cfg("model=uniform", "seed=1", plan, "force=true"))["test/ppl"] > 0


def test_jobs_logging_the_same_dataset_at_once_do_not_collide(tmp_path):
    """Every run of a study logs the same dataset rows; MLflow looks a row up and inserts it if
    missing, so two jobs starting together race (a UNIQUE constraint error without the lock:
    ~8 rounds in 10 here). Two threads with a barrier, three fresh experiments."""
    import threading

    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput

    from lineage.tracking import ensure_experiment, log_inputs

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = open_client(uri)
    dataset = MetaDataset(LocalArtifactDatasetSource("ptb.train.txt"), name="ptb-train", digest="d")
    for round_ in range(3):
        experiment_id = ensure_experiment(client, f"race-{round_}", str(tmp_path / "artifacts"))
        run_ids = [client.create_run(experiment_id).info.run_id for _ in range(2)]
        barrier, errors = threading.Barrier(2), []

        def job(run_id: str, barrier=barrier, errors=errors) -> None:
            barrier.wait()
            try:
                log_inputs(client, uri, run_id, [DatasetInput(dataset._to_mlflow_entity())])
            except Exception as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=job, args=(r,)) for r in run_ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for run_id in run_ids:
            assert [d.dataset.name for d in client.get_run(run_id).inputs.dataset_inputs] == [
                "ptb-train"
            ]


class _Interrupt(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        raise KeyboardInterrupt


def test_an_interrupted_job_is_rerun_and_a_finished_one_skipped(tiny_cfg):
    overrides = ("model=ngram_kn3", "study=resume", "tracking.log_model=false")
    cfg = tiny_cfg(*overrides, tracking="mlflow")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run(cfg, callbacks=[_Interrupt()])
    rerun = run(tiny_cfg(*overrides, tracking="mlflow"))
    again = run(tiny_cfg(*overrides, tracking="mlflow"))
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("resume")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]  # the third call ran nothing
    assert again["test/ppl"] == rerun["test/ppl"]


def test_a_sweep_point_equal_to_another_model_config_is_its_own_run(tiny_cfg):
    """``model=ngram model.lm.order=3`` computes what ``model=ngram_kn3`` does (one config
    hash) but is another row of the table: it runs, and then is skipped as itself."""
    common = ("study=same_hash", "tracking.log_model=false")
    kn3 = run(tiny_cfg("model=ngram_kn3", *common, tracking="mlflow"))
    point = tiny_cfg("model=ngram", "model.lm.order=3", *common, tracking="mlflow")
    assert run(point)["test/ppl"] == kn3["test/ppl"]
    run(point)
    client = MlflowClient(tracking_uri=point.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("same_hash").experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == ["ngram", "ngram_kn3"]
    assert len({r.data.tags["config_hash"] for r in runs}) == 1


def test_a_run_recorded_under_the_earlier_hash_is_still_skipped(tiny_cfg):
    """Runs recorded before HASHED_AS_DEFAULT carry the earlier form of the same config's hash."""
    from lineage.tracking import config_hashes

    overrides = ("model=ngram_kn3", "study=earlier", "tracking.log_model=false")
    overrides += ("trainer.enable_progress_bar=false",)  # as the studies ran
    cfg = tiny_cfg(*overrides, tracking="mlflow")
    current, earlier = config_hashes(cfg)  # they differ: the earlier form hashed the bar
    first = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("earlier")
    (recorded,) = client.search_runs([experiment.experiment_id])
    assert recorded.data.tags["config_hash"] == current
    client.set_tag(recorded.info.run_id, "config_hash", earlier)  # as the earlier version wrote
    again = run(tiny_cfg(*overrides, tracking="mlflow"))
    assert len(client.search_runs([experiment.experiment_id])) == 1  # skipped, nothing ran
    assert again["test/ppl"] == first["test/ppl"]


def test_relative_corpus_and_task_files_are_hashed_as_the_files_they_name(tmp_path, monkeypatch):
    relative = [
        "corpus=text_files",
        *(f"corpus.files.{s}={s}.txt" for s in ("train", "valid", "test")),
        "model=rule",
        "task=[csv]",
        "task.csv.csv.files.all=data.csv",
    ]
    hashes = {}
    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        monkeypatch.chdir(tmp_path / where)
        hashes[where] = config_hash(compose_train(relative, tmp_path))
    assert hashes["a"] != hashes["b"]  # same words, other files
    absolute = [o.replace("=", f"={tmp_path / 'a'}/") if ".files." in o else o for o in relative]
    assert config_hash(compose_train(absolute, tmp_path)) == hashes["a"]  # the same files


def test_the_hash_of_a_study_job_is_pinned_and_its_earlier_form_matches_the_study(tmp_path):
    """If this fails, a change moved the hash of every finished run, and rerunning a study would
    redo all of it: register a new option in LATER_DEFAULTS instead, or keep the earlier form
    in config_hashes."""
    import csv

    from lineage.tracking import config_hashes

    cfg = compose_train(["experiment=lineage_lee", "model=ngram", "seed=0"], tmp_path)
    current, earlier = config_hashes(cfg)
    assert current == "2ab463227ee1fe8d"
    with open(ROOT / "experiments" / "lineage_lee" / "runs.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["tags.model"] == "ngram"]
    latest = max(rows, key=lambda r: r["start_time"])  # the study's ngram row, an earlier version
    assert earlier == latest["tags.config_hash"]


TINY_NEURAL = {
    "lstm_small": [
        "model.net.hidden_size=16",
        "model.max_epochs=2",
        "model.batching.batch_size=4",
        "model.batching.seq_len=8",
    ],
    "transformer_tiny": ["model.max_epochs=2"],
}


@pytest.mark.parametrize(
    "model,extra",
    [("ngram", []), *((m, ["trainer.deterministic=true", *o]) for m, o in TINY_NEURAL.items())],
)
def test_the_same_command_and_seed_give_identical_metrics(tmp_path, model, extra):
    """Count models always; neural ones with trainer.deterministic=true. Every run carries the
    git sha, the config hash and the data digests (checked on the tracked count model)."""
    tracked = model == "ngram"
    overrides = [*tiny_corpus_overrides(), f"model={model}", "seed=3", "samples.count=0", *extra]
    overrides += ["study=repro", "tracking=mlflow" if tracked else "tracking=none"]
    overrides += ["tracking.log_model=false"]
    first = run(compose_train(overrides, tmp_path))
    cfg = compose_train([*overrides, "force=true"], tmp_path)  # force: the hash is the same
    second = run(cfg)
    timing = ("cost/train_seconds", "cost/train_tokens_per_sec", "cost/eval_tokens_per_sec")
    timing += ("cost/peak_rss_mb", "cost/train_flops_per_sec")
    keys = sorted(k for k in first if k not in timing)
    assert "test/ppl" in keys and "val/ppl" in keys
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}  # exactly
    if not tracked:
        return
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("repro")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert len({r.data.tags["config_hash"] for r in runs}) == 1
    for r in runs:
        assert len(r.data.tags["git_sha"]) == 40 or r.data.tags["git_sha"] == "unknown"
        digests = {d.dataset.name: d.dataset.digest for d in r.inputs.dataset_inputs}
        assert set(digests) == {"text_files-train", "text_files-val", "text_files-test"}
        assert all(len(d) >= 16 for d in digests.values())


def test_config_hash_ignores_tags_and_locations_only(tmp_path):
    base = compose_train([*tiny_corpus_overrides(), "model=rule"], tmp_path)
    h = config_hash(base)
    assert (
        config_hash(compose_train([*tiny_corpus_overrides(), "model=rule", "+tags.x=1"], tmp_path))
        == h
    )
    moved = compose_train([*tiny_corpus_overrides(), "model=rule"], tmp_path / "elsewhere")
    assert config_hash(moved) == h
    resumed = [*tiny_corpus_overrides(), "model=rule", "ckpt_path=/runs/x/last.ckpt"]
    assert config_hash(compose_train(resumed, tmp_path)) == h  # resuming is the same run
    scored = [*tiny_corpus_overrides(), "model=rule", "stages=[validate,test]"]
    scored_hashes = {
        config_hash(compose_train([*scored, f"ckpt_path=/runs/{x}/best.ckpt"], tmp_path))
        for x in ("a", "b")
    }
    assert len(scored_hashes) == 2  # without fit, the checkpoint scored is the model
    # what a fit computes: not the tasks scored after it, the samples or the stages
    from lineage.tracking import fit_hash

    fh = fit_hash(base)
    for other in ("task=[polarity]", "samples.count=0", "stages=[fit]"):
        assert (
            fit_hash(compose_train([*tiny_corpus_overrides(), "model=rule", other], tmp_path)) == fh
        )
    assert (
        fit_hash(compose_train([*tiny_corpus_overrides(), "model=rule", "seed=1"], tmp_path)) != fh
    )
    assert (
        config_hash(compose_train([*tiny_corpus_overrides(), "model=rule", "seed=1"], tmp_path))
        != h
    )
    # a task's data directory and the screen are locations too; its settings are not
    task = [*tiny_corpus_overrides(), "model=rule", "task=[polarity]"]
    th = config_hash(compose_train(task, tmp_path))
    assert th != h
    for where in (
        "task.polarity.data_dir=/elsewhere",
        "task.polarity.offline=true",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=true",
        "trainer.log_every_n_steps=5",
    ):
        assert config_hash(compose_train([*task, where], tmp_path)) == th, where
    assert config_hash(compose_train([*task, "task.polarity.max_train=50"], tmp_path)) != th
    # a task's loader version: 1 (every task until a loader changes) is hashed as absent
    assert config_hash(compose_train([*task, "task.polarity.version=1"], tmp_path)) == th
    assert config_hash(compose_train([*task, "task.polarity.version=2"], tmp_path)) != th


# task.*.finetune as the studies' first runs had it (commit 9bb90aa): every key added since must be
# in LATER_DEFAULTS at its default, or a rerun of a study would redo every job with a task.
STUDY_FINETUNE_KEYS = {
    "enabled", "scratch", "epochs", "lr", "body_lr_scale", "weight_decay", "batch_size",
    "max_len", "dropout", "patience", "gradient_clip_val",
}  # fmt: skip


def test_every_finetune_option_added_since_the_studies_ran_is_a_later_default(tmp_path):
    from lineage.tracking import LATER_DEFAULTS

    cfg = compose_train([*tiny_corpus_overrides(), "model=lstm_small", "task=[sst2]"], tmp_path)
    finetune = cfg.task.sst2.finetune
    later = {p[-1]: default for p, default in LATER_DEFAULTS.items() if p[2:3] == ("finetune",)}
    added = set(finetune) - STUDY_FINETUNE_KEYS
    assert added == set(later), "add each new task.*.finetune option to LATER_DEFAULTS"
    for key in added:
        assert finetune[key] == later[key], f"LATER_DEFAULTS has {later[key]!r} for {key}"


def test_an_option_added_later_keeps_the_hash_at_its_default(tmp_path):
    from omegaconf import OmegaConf

    from lineage.tracking import resolved

    base = [*tiny_corpus_overrides(), "model=lstm_small", "task=[sst2]"]
    h = config_hash(compose_train(base, tmp_path))
    # the config as the runs before the option had it: the keys absent
    older = resolved(compose_train(base, tmp_path))
    for key in set(older["task"]["sst2"]["finetune"]) - STUDY_FINETUNE_KEYS:
        del older["task"]["sst2"]["finetune"][key]
    assert config_hash(OmegaConf.create(older)) == h
    changed = [*base, "task.sst2.finetune.task_vocab=true"]
    assert config_hash(compose_train(changed, tmp_path)) != h
    counted = [*changed, "task.sst2.finetune.task_vocab_min_count=1"]
    assert config_hash(compose_train(counted, tmp_path)) not in {
        h,
        config_hash(compose_train(changed, tmp_path)),
    }


def test_prepare_store_creates_the_store_and_the_tagged_experiment(tmp_path):
    cfg = compose_train([*tiny_corpus_overrides(), "study=prepared"], tmp_path)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
    PrepareStore().on_multirun_start(config=cfg)
    client = open_client(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("prepared")
    assert experiment.tags[EXPERIMENT_KIND_TAG[0]] == EXPERIMENT_KIND_TAG[1]
    # an experiment made elsewhere, without the tag, gets it
    bare = client.create_experiment("made-by-hand")
    cfg = compose_train([*tiny_corpus_overrides(), "study=made-by-hand"], tmp_path)
    PrepareStore().on_multirun_start(config=cfg)
    assert client.get_experiment(bare).tags[EXPERIMENT_KIND_TAG[0]] == EXPERIMENT_KIND_TAG[1]


def test_a_sweep_to_an_unreachable_server_stops_before_any_job(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = compose_train(
        [*tiny_corpus_overrides(), "tracking=server", f"tracking.uri={uri}"], tmp_path
    )
    with pytest.raises(SystemExit) as stop:
        PrepareStore().on_multirun_start(config=cfg)
    assert stop.value.code == 2
    assert f"lineage-train: tracking.uri={uri}: the MLflow server does not answer" in (
        capsys.readouterr().err
    )


def test_server_uri_is_the_users_not_one_mlflow_set_in_process(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri (an earlier job of the same process) writes MLFLOW_TRACKING_URI;
    # tracking=server must still point where the user's environment said when lineage started.
    monkeypatch.delitem(lineage.config._START_ENV, "MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/local.db")
    cfg = compose_train([*tiny_corpus_overrides(), "tracking=server"], tmp_path)
    assert cfg.tracking.uri == "http://127.0.0.1:5000"
    monkeypatch.setitem(lineage.config._START_ENV, "MLFLOW_TRACKING_URI", "http://mlflow:5000")
    cfg = compose_train([*tiny_corpus_overrides(), "tracking=server"], tmp_path)
    assert cfg.tracking.uri == "http://mlflow:5000"


@pytest.mark.parametrize("launcher", ["submitit_slurm", "slurm", "joblib"])
def test_cluster_and_parallel_launcher_configs_compose(launcher, tmp_path, monkeypatch):
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    monkeypatch.delitem(lineage.config._START_ENV, "MLFLOW_TRACKING_URI", raising=False)
    overrides = ["experiment=lineage_ptb", f"hydra/launcher={launcher}", "tracking=server"]
    cfg = compose_train(overrides, tmp_path)
    target = get_class(cfg.hydra.launcher._target_)
    assert issubclass(target, Launcher)
    if launcher != "joblib":
        assert target.__name__ == "SlurmLauncher"
        assert cfg.hydra.launcher.submitit_folder.endswith("/.submitit/%j")
    if launcher == "slurm":
        assert cfg.hydra.launcher.timeout_min == 720 and cfg.hydra.launcher.array_parallelism == 16
    assert cfg.tracking.uri.startswith("http")
    assert (CONF / "hydra" / "launcher" / "slurm.yaml").is_file()
