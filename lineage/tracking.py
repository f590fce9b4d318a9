"""MLflow tracking: one run per Hydra job, named and tagged as in design.md §4.

The runner owns the run's life: it is created before the data is prepared and always ends, as
FINISHED on success and FAILED on any exception, KeyboardInterrupt included, so nothing is left
RUNNING in the store. Lightning's ``MLFlowLogger`` writes the per-epoch metrics into the same run.

Parallel sweeps (``hydra/launcher=joblib``) write to one SQLite store from several processes.
SQLite serialises writers, and MLflow's sessions wait up to 20 s on a locked database
(``PRAGMA busy_timeout``); what is not safe is two processes creating the same shared row at once:
the schema (MLflow migrates an empty database when a client opens it), the study's experiment, and
the dataset rows that every run of the study logs as inputs. These happen under an exclusive file
lock (``<store>.lock``: :func:`open_client`, :func:`ensure_experiment`, :func:`log_inputs`), and
the :class:`PrepareStore` Hydra callback creates the store and the experiment in the launching
process before any job starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("lineage")

# Experiments created by lineage open on the runs table in the MLflow 3 UI, not the GenAI page.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
# Config keys that say where things are, not what was computed: left out of the config hash.
UNHASHED_KEYS = ("paths", "tracking", "hydra", "force")
# Labels, not computation: hashed as if empty, so a study's tags do not split a config from the
# same config run by hand (and the hash of a config without tags is unchanged).
BLANKED_KEYS = ("tags",)
UNHASHED_CORPUS_KEYS = ("data_dir", "cache_dir", "offline")
# Where a task's files are and how the run looks on screen: hashed as if at their default ("*":
# any task), so moving the data or hiding the progress bar does not make a finished config new
# (the files themselves are checked by sha256 and logged as dataset inputs).
HASHED_AS_DEFAULT: dict[tuple[str, ...], Any] = {
    ("task", "*", "data_dir"): None,
    ("task", "*", "offline"): False,
    ("trainer", "enable_progress_bar"): True,
    ("trainer", "enable_model_summary"): False,
    ("trainer", "log_every_n_steps"): 50,
}
# Defaults changed after studies had run, hashed as their earlier value in both forms of the
# hash (config_hashes): trainer.max_epochs was 1 and never used (every family sets its own;
# since it is null, a differing value is an error).
CHANGED_DEFAULTS: dict[tuple[str, ...], Any] = {("trainer", "max_epochs"): 1}
HASHED_AS_DEFAULT.update(CHANGED_DEFAULTS)
# Options added after studies had run, left out of the hash while at their default ("*": any
# key): a config that sets them to the default computes what the runs that never knew them did,
# so those runs keep their hash and a rerun of the study still skips them. An option added to
# a config that studies use belongs here with its default.
LATER_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("task", "*", "finetune", "task_vocab"): False,
    ("task", "*", "finetune", "task_vocab_min_count"): 2,
    ("task", "*", "finetune", "pretrained"): True,
    ("task", "*", "finetune", "body_dropout"): None,
    ("task", "*", "finetune", "val_check_interval"): 1.0,
    ("task", "*", "finetune", "lm_epochs"): 0,
    ("task", "*", "finetune", "lm_lr"): 0.001,
    ("task", "*", "finetune", "task_texts"): False,
    ("task", "*", "finetune", "pooling"): "mean",
    ("task", "*", "version"): 1,
    # before, a key only `+trainer.precision=…` could add
    ("trainer", "precision"): "32-true",
}
MAX_PARAM_LENGTH = 500
# The metrics a fit logs per epoch: a resumed fit copies them from the run it continues.
FIT_METRICS = ("train/", "val/", "epoch")
# The input tag holding the file (or URL) a run read for a dataset input.
SOURCE_TAG = "lineage.source"


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data with interpolations resolved (``hydra`` node left out)."""
    keys = [k for k in cfg.keys() if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def config_hash(
    cfg: DictConfig, hashed_as_default: Mapping[tuple[str, ...], Any] = HASHED_AS_DEFAULT
) -> str:
    """sha256 (16 hex digits) of what a run computes: the resolved config minus locations.

    ``hashed_as_default=CHANGED_DEFAULTS`` gives the hash of lineage before
    ``HASHED_AS_DEFAULT`` existed (:func:`config_hashes`).
    """
    data = resolved(cfg)
    for key in UNHASHED_KEYS:
        data.pop(key, None)
    for key in BLANKED_KEYS:
        if key in data:
            data[key] = {}
    corpus = data.get("corpus")
    if isinstance(corpus, dict):
        for key in UNHASHED_CORPUS_KEYS:
            corpus.pop(key, None)
    for files in FILE_KEYS:
        for mapping, key in _found(data, files):
            mapping[key] = _absolute(mapping[key])
    if data.get("ckpt_path") is not None and "fit" in (data.get("stages") or ["fit"]):
        data["ckpt_path"] = None  # a resumed fit continues the same computation
    # (without fit the checkpoint is the model scored: its path stays in the hash)
    for path, default in hashed_as_default.items():
        _set_present(data, path, default)
    for path, default in LATER_DEFAULTS.items():
        _drop_default(data, path, default)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The files a text_files corpus or a csv task reads: a relative path names a file by the
# directory the run started in, so it is hashed as that absolute path (an absolute one as is).
FILE_KEYS = (("corpus", "files", "*"), ("task", "*", "csv", "files", "*"))


def _absolute(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.abspath(path)


# What a fit does not read: a fit continued from a checkpoint of a config differing only here
# (tasks scored after it, samples, stages) continues the same training.
NOT_FIT_KEYS = ("hydra", "task", "samples", "stages", "ckpt_path")


def fit_hash(cfg: DictConfig) -> str:
    """The config hash of what a fit computes: the config without ``NOT_FIT_KEYS``."""
    return config_hash(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NOT_FIT_KEYS]))


def _found(data: Any, path: tuple[str, ...]) -> list[tuple[dict, str]]:
    """(mapping, key) of every key at ``path`` in nested dicts ("*" matches every key)."""
    if not isinstance(data, dict):
        return []
    head, rest = path[0], path[1:]
    keys = list(data) if head == "*" else [head] if head in data else []
    if not rest:
        return [(data, key) for key in keys]
    return [found for key in keys for found in _found(data[key], rest)]


def _set_present(data: Any, path: tuple[str, ...], value: Any) -> None:
    """Set the key at ``path`` ("*" matches every key) to ``value`` where it exists."""
    for mapping, key in _found(data, path):
        mapping[key] = value


def _drop_default(data: Any, path: tuple[str, ...], default: Any) -> None:
    """Remove the key at ``path`` ("*" matches every key) where its value is ``default``."""
    for mapping, key in _found(data, path):
        if mapping[key] == default and type(mapping[key]) is type(default):
            del mapping[key]


def param_text(value: Any) -> str:
    """A config value as a run's params record it (lists as JSON)."""
    return json.dumps(value) if isinstance(value, list | tuple) else str(value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"model.lm.order": "5", ...}`` with values cut to MLflow's limits."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = param_text(value)
            flat[name] = (
                text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 1] + "…"
            )
    return flat


def git_info() -> dict[str, str]:
    """Commit and dirtiness of the source tree lineage runs from ("unknown" outside git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"git_sha": sha, "git_dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": "unknown", "git_dirty": "unknown"}


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite store's ``<file>.lock`` (no-op for other stores).

    Serialises what SQLite's busy timeout does not cover: creating the schema (MLflow runs its
    migrations when a client first opens an empty database) and creating an experiment.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


SERVER_TIMEOUT = 10.0  # seconds to wait for a tracking server's /health before giving up


def check_server(uri: str, timeout: float = SERVER_TIMEOUT) -> None:
    """An http(s) tracking URI must answer ``/health`` now: MLflow itself retries for minutes
    with nothing but urllib3 warnings on the screen."""
    import urllib.error
    import urllib.request

    from lineage.data.sources import DataError

    if not uri.startswith(("http://", "https://")) or uri in _REACHABLE:
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError:
        pass  # it answers (an auth proxy's 401, a path it does not serve): MLflow will say more
    except (OSError, urllib.error.URLError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"tracking.uri={uri}: the MLflow server does not answer ({reason}); start it "
            f"(mlflow server --backend-store-uri ... --host 0.0.0.0 --port ...), correct "
            f"tracking.uri, or use the local store (tracking=mlflow)"
        ) from None
    _REACHABLE.add(uri)


_REACHABLE: set[str] = set()


def open_client(uri: str):
    """An ``MlflowClient`` on ``uri``, its store created (schema migrated) under the store lock;
    a tracking server must be reachable (:func:`check_server`)."""
    from mlflow.tracking import MlflowClient

    check_server(uri)
    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)


def ensure_experiment(client, name: str, artifact_location: str | None) -> str:
    """Get or create the study's experiment, tagged so the MLflow UI opens on its runs.

    Safe when parallel jobs race to create it (under the store lock for SQLite, and a lost race
    is caught for servers). An existing experiment that lacks the ``mlflow.experimentKind`` tag
    (created by an older version or by hand) gets it.
    """
    from mlflow.exceptions import MlflowException

    with store_lock(str(client.tracking_uri)):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            from lineage.data.sources import DataError

            raise DataError(
                f"study {name!r} is experiment {experiment.experiment_id} of {client.tracking_uri}"
                ", deleted (in the MLflow UI or with `mlflow experiments delete`): restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`), or "
                "name another study with study=<name>"
            )
        if experiment is not None:
            if experiment.tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
                client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND_TAG)
            return experiment.experiment_id
        location = Path(artifact_location).resolve().as_uri() if artifact_location else None
        try:
            return client.create_experiment(
                name,
                artifact_location=location,
                tags={EXPERIMENT_KIND_TAG[0]: EXPERIMENT_KIND_TAG[1]},
            )
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id


def prepare_store(tracking: DictConfig) -> str | None:
    """Create the store (schema included) and the study's experiment; returns its id.

    ``None`` when tracking is disabled.
    """
    if not tracking.get("enabled", True):
        return None
    client = open_client(str(tracking.uri))
    return ensure_experiment(client, str(tracking.experiment), tracking.get("artifact_location"))


class PrepareStore(Callback):
    """Hydra callback: create the store and the study's experiment before a sweep launches jobs.

    Registered by the studies (``hydra.callbacks.prepare_store``), so that parallel jobs
    (``hydra/launcher=joblib``) find both ready instead of racing to create them.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import sys

        from lineage.data.sources import DataError

        try:
            experiment_id = prepare_store(config.tracking)
        except DataError as err:  # e.g. a tracking server that does not answer: no traceback
            print(f"lineage-train: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if experiment_id is not None:
            log.info(
                "Store %s ready: study %r is experiment %s",
                config.tracking.uri,
                str(config.tracking.experiment),
                experiment_id,
            )


@dataclass
class Run:
    """An open MLflow run: the client, its id, and the Lightning logger writing into it."""

    client: Any
    run_id: str
    experiment_id: str
    tracking_uri: str

    def lightning_logger(self):
        from lightning.pytorch.loggers import MLFlowLogger

        class RunLogger(MLFlowLogger):
            # The runner ends the run; Lightning would mark it FINISHED after `fit`, before test.
            def finalize(self, status: str = "success") -> None:
                pass

        return RunLogger(tracking_uri=self.tracking_uri, run_id=self.run_id)

    def take_over(self, previous_run_id: str, max_step: int, fit: str = "") -> None:
        """Continue ``previous_run_id``'s record in this run: a fit resumed from its checkpoint.

        Copies the previous run's training curves (``FIT_METRICS``: train/*, val/*, epoch) up
        to ``max_step`` (the checkpoint's global step; the points after it belong to the epoch
        the checkpoint does not hold), with their steps and timestamps, so that this run's curves
        start at epoch 1; a (key, step) this run already has is kept as it is. What the previous
        run scored after its fit (test, tasks, cost, logged at that same step) is not copied:
        this run scores its own. A previous run whose ``fit_hash`` tag is not ``fit`` (this
        config's :func:`fit_hash`) trained another config: this run's hash becomes
        ``<own>+<previous>``, so that it is not taken for a run of either config alone (runs
        logged before the tag existed are not compared). Tags ``resumed_from`` here and
        ``resumed_by`` there, and a previous run still RUNNING (its process was killed, e.g.
        SIGKILL, and could not end it) is marked FAILED. A previous run missing from this store
        is only logged.
        """
        from mlflow.entities import Metric
        from mlflow.exceptions import MlflowException

        try:
            previous = self.client.get_run(previous_run_id)
        except MlflowException:
            log.warning(
                "resumed from a checkpoint of run %s, which is not in %s: its metrics before "
                "the checkpoint are not copied",
                previous_run_id,
                self.tracking_uri,
            )
            return
        own = self.client.get_run(self.run_id).data.metrics
        points = []
        for key in previous.data.metrics:
            if not key.startswith(FIT_METRICS):
                continue
            have = set()
            if key in own:
                have = {m.step for m in self.client.get_metric_history(self.run_id, key)}
            for m in self.client.get_metric_history(previous_run_id, key):
                if m.step <= max_step and m.step not in have:
                    points.append(Metric(key, m.value, m.timestamp, m.step))
        self._log_points(points)
        self.client.set_tag(self.run_id, "resumed_from", previous_run_id)
        self.client.set_tag(previous_run_id, "resumed_by", self.run_id)
        their_fit = previous.data.tags.get("fit_hash", "")
        if fit and their_fit and their_fit != fit:
            theirs = previous.data.tags.get("config_hash", "")
            mine = self.client.get_run(self.run_id).data.tags.get("config_hash", "")
            self.client.set_tag(self.run_id, "config_hash", f"{mine}+{theirs}")
            log.warning(
                "the checkpoint was written by run %s of another config (hash %s): this fit "
                "continues it, and is recorded as neither config (hash %s+%s)",
                previous_run_id,
                theirs,
                mine,
                theirs,
            )
        if previous.info.status == "RUNNING":
            self.client.set_terminated(previous_run_id, "FAILED")
        log.info(
            "resumed run %s: %d metric points up to step %d copied from it",
            previous_run_id,
            len(points),
            max_step,
        )

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_points([Metric(k, float(v), now, step) for k, v in metrics.items()])

    def _log_points(self, points: list) -> None:
        for i in range(0, len(points), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=points[i : i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a directory's contents, under ``artifact_path``."""
        if Path(path).is_dir():  # log_artifact would nest the directory itself: .hydra/.hydra
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_datasets(self, corpus: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """Each split as an MLflow dataset input ``{corpus}-{split}``: source URI (``uri``, or
        a corpus's ``source``), sha256 digest of the raw file, context = split."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for split, info in datasets.items():
            source = info.get("uri") or info.get("source") or ""
            if str(source).startswith(("http://", "https://")):
                from mlflow.data.http_dataset_source import HTTPDatasetSource

                src = HTTPDatasetSource(url=str(source))
            else:
                src = LocalArtifactDatasetSource(str(source))
            # MLflow caps digests at 36 characters; the full sha256 is in results.json
            dataset = MetaDataset(src, name=f"{corpus}-{split}", digest=str(info["digest"])[:36])
            # MLflow keeps one dataset row per (name, digest) in an experiment, with the source
            # of the first run that logged it: the file this run read is the input's own tag
            tags = [InputTag(MLFLOW_DATASET_CONTEXT, split), InputTag(SOURCE_TAG, str(source))]
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
        if inputs:
            log_inputs(self.client, self.tracking_uri, self.run_id, inputs)


def log_inputs(client, uri: str, run_id: str, inputs: list, attempts: int = 3) -> None:
    """``client.log_inputs``, safe when parallel jobs log the same dataset.

    A dataset row is shared by the runs of an experiment: MLflow looks it up, then inserts it if
    missing, so two jobs logging the same split at once race, and the loser fails with a UNIQUE
    constraint error. Under the store lock (SQLite) they cannot race; against a server, the
    insert is retried, and the retry finds the row the other job wrote.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            with store_lock(uri):
                client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as err:
            if "UNIQUE constraint" not in str(err) and "IntegrityError" not in str(err):
                raise
            if attempt == attempts - 1:
                raise


def config_hashes(cfg: DictConfig) -> list[str]:
    """The config's hash, then the hash the same config had in earlier versions of lineage
    (before ``HASHED_AS_DEFAULT``): a run recorded under either computed the same thing."""
    earlier = config_hash(cfg, hashed_as_default=CHANGED_DEFAULTS)
    return list(dict.fromkeys([config_hash(cfg), earlier]))


def find_finished(
    tracking: DictConfig,
    config_hash: str | Sequence[str],
    same_tags: Mapping[str, str] | None = None,
) -> dict | None:
    """The latest FINISHED run of the study with this config hash (or any of these hashes, in
    the order given: :func:`config_hashes`): ``{run_id, metrics, config_hash}``.

    ``same_tags`` (e.g. model, corpus, seed): when no run carries the hash, the FINISHED job
    runs with these tags are checked by the config in their ``results.json``, hashed as this
    version of lineage hashes (the first of ``config_hash``): a run recorded under an earlier
    hash definition that computed the same thing is found too.
    """
    if not tracking.get("enabled", True):
        return None
    uri = str(tracking.uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return None
    client = open_client(uri)
    experiment = client.get_experiment_by_name(str(tracking.experiment))
    if experiment is None or experiment.lifecycle_stage == "deleted":  # its runs are not kept
        return None
    wanted = [config_hash] if isinstance(config_hash, str) else list(config_hash)
    # another model config that computes the same thing (ngram with order 3 and ngram_kn3) is
    # another row of the table: its run does not stand in for this one
    model = ""
    if same_tags and "model" in same_tags:
        model = f" and tags.model = '{same_tags['model']}'"
    for one in wanted:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and tags.config_hash = '{one}'{model}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            found = runs[0]
            return {"run_id": found.info.run_id, "metrics": dict(found.data.metrics),
                    "config_hash": one}  # fmt: skip
    if same_tags:
        return _finished_by_stored_config(client, experiment.experiment_id, wanted[0], same_tags)
    return None


def changed_inputs(tracking: DictConfig, run_id: str) -> list[str]:
    """The local files that run ``run_id`` read (its dataset inputs with a local source: a
    text_files corpus, a csv task, gensim's Lee corpus) whose sha256 is no longer the digest it
    logged, or that are gone. A config hash names file paths, not contents: a file edited in
    place makes a finished config stale. Downloaded sources are verified by their registry."""
    from lineage.data.sources import sha256_file

    client = open_client(str(tracking.uri))
    changed: list[str] = []
    checked: set[str] = set()
    for item in client.get_run(run_id).inputs.dataset_inputs:
        dataset = item.dataset
        if dataset.source_type != "local":
            continue
        own = {t.key: t.value for t in item.tags}.get(SOURCE_TAG)
        try:  # runs logged before the input tag: the dataset row's (first run's) source
            uri = own if own is not None else str(json.loads(dataset.source).get("uri", ""))
        except (ValueError, AttributeError):
            continue
        path = Path(uri.split("#", 1)[0])  # a zip member: path#member, the digest is the zip's
        if not uri or str(path) in checked:
            continue
        checked.add(str(path))
        if not path.is_file():
            changed.append(f"{path} (gone)")
        elif not sha256_file(path).startswith(dataset.digest):
            changed.append(str(path))
    return changed


# How many earlier runs with the same model, corpus and seed are checked by their stored config.
MAX_CONFIG_CHECKS = 20


def _finished_by_stored_config(
    client: Any, experiment_id: str, wanted: str, same_tags: Mapping[str, str]
) -> dict | None:
    from mlflow.exceptions import MlflowException

    conditions = [f"tags.{k} = '{v}'" for k, v in same_tags.items()]
    runs = client.search_runs(
        [experiment_id],
        filter_string=" and ".join(["attributes.status = 'FINISHED'", *conditions]),
        order_by=["attributes.start_time DESC"],
        max_results=MAX_CONFIG_CHECKS,
    )
    for found in runs:
        if "mlflow.parentRunId" in found.data.tags:  # a task's fine-tuning row, not a job
            continue
        if "+" in found.data.tags.get("config_hash", ""):  # continued another config's fit
            continue
        try:
            stored = json.loads(_download_text(client, found.info.run_id, "results.json"))
            recomputed = config_hash(OmegaConf.create(stored["config"]))
        except (MlflowException, OSError, KeyError, ValueError, TypeError) as err:
            log.debug("run %s: no stored config to compare (%s)", found.info.run_id, err)
            continue
        if recomputed == wanted:
            return {"run_id": found.info.run_id, "metrics": dict(found.data.metrics),
                    "config_hash": found.data.tags.get("config_hash", "")}  # fmt: skip
    return None


def _download_text(client: Any, run_id: str, artifact_path: str) -> str:
    """A run's text artifact, without MLflow's download progress bar."""
    import os
    import tempfile

    quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(quiet)
    os.environ[quiet] = "false"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, artifact_path, tmp)).read_text()
    finally:
        if before is None:
            os.environ.pop(quiet, None)
        else:
            os.environ[quiet] = before


@contextmanager
def mlflow_run(
    tracking: DictConfig, run_name: str, tags: Mapping[str, str]
) -> Iterator[Run | None]:
    """Open a run for the block; FAILED if the block raises anything, FINISHED otherwise.

    SIGTERM (``kill``, ``timeout``, a scheduler's cancel) raises ``SystemExit`` in the block, so
    that it too ends the run FAILED, not left RUNNING (Lightning handles it during a fit).
    Yields ``None`` when tracking is disabled (``tracking=none``).
    """
    if not tracking.get("enabled", True):
        yield None
        return
    uri = str(tracking.uri)
    client = open_client(uri)
    experiment_id = ensure_experiment(
        client, tracking.experiment, tracking.get("artifact_location")
    )
    created = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run = Run(client, created.info.run_id, experiment_id, uri)
    import signal
    import threading

    def terminated(signum, frame):
        raise SystemExit(128 + signum)

    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, terminated) if main_thread else None
    try:
        yield run
    except BaseException:
        client.set_terminated(run.run_id, "FAILED")
        raise
    finally:
        if main_thread and before is not None:
            signal.signal(signal.SIGTERM, before)
    client.set_terminated(run.run_id, "FINISHED")
