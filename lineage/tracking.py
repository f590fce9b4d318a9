"""MLflow tracking: one run per Hydra job, named and tagged as in design.md §4.

The runner owns the run's life: it is created before the data is prepared and always ends, as
FINISHED on success and FAILED on any exception, KeyboardInterrupt included, so nothing is left
RUNNING in the store. Lightning's ``MLFlowLogger`` writes the per-epoch metrics into the same run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Experiments created by lineage open on the runs table in the MLflow 3 UI, not the GenAI page.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
# Config keys that say where things are, not what was computed: left out of the config hash.
UNHASHED_KEYS = ("paths", "tracking", "hydra", "force")
UNHASHED_CORPUS_KEYS = ("data_dir", "cache_dir", "offline")
MAX_PARAM_LENGTH = 500


def resolved(cfg: DictConfig) -> dict:
    """The config as plain data with interpolations resolved (``hydra`` node left out)."""
    keys = [k for k in cfg.keys() if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def config_hash(cfg: DictConfig) -> str:
    """sha256 (16 hex digits) of what a run computes: the resolved config minus locations."""
    data = resolved(cfg)
    for key in UNHASHED_KEYS:
        data.pop(key, None)
    corpus = data.get("corpus")
    if isinstance(corpus, dict):
        for key in UNHASHED_CORPUS_KEYS:
            corpus.pop(key, None)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"model.lm.order": "5", ...}`` with values cut to MLflow's limits."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
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


def ensure_experiment(client, name: str, artifact_location: str | None) -> str:
    """Get or create the study's experiment (safe when parallel jobs race to create it)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_location).resolve().as_uri() if artifact_location else None
    try:
        return client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG[0]: EXPERIMENT_KIND_TAG[1]}
        )
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


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

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_datasets(self, corpus: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """Each split as an MLflow dataset input ``{corpus}-{split}``: source URI, sha256 digest
        of the raw file, context = split."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        inputs = []
        for split, info in datasets.items():
            source = info.get("uri", "")
            if str(source).startswith(("http://", "https://")):
                from mlflow.data.http_dataset_source import HTTPDatasetSource

                src = HTTPDatasetSource(url=str(source))
            else:
                src = LocalArtifactDatasetSource(str(source))
            # MLflow caps digests at 36 characters; the full sha256 is in results.json
            dataset = MetaDataset(src, name=f"{corpus}-{split}", digest=str(info["digest"])[:36])
            inputs.append(
                DatasetInput(
                    dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)]
                )
            )
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)


def find_finished(tracking: DictConfig, config_hash: str) -> dict | None:
    """The latest FINISHED run of the study with this config hash: ``{run_id, metrics}``."""
    if not tracking.get("enabled", True):
        return None
    from mlflow.tracking import MlflowClient

    uri = str(tracking.uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(str(tracking.experiment))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.config_hash = '{config_hash}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    return {"run_id": runs[0].info.run_id, "metrics": dict(runs[0].data.metrics)}


@contextmanager
def mlflow_run(
    tracking: DictConfig, run_name: str, tags: Mapping[str, str]
) -> Iterator[Run | None]:
    """Open a run for the block; FAILED if the block raises anything, FINISHED otherwise.

    Yields ``None`` when tracking is disabled (``tracking=none``).
    """
    if not tracking.get("enabled", True):
        yield None
        return
    from mlflow.tracking import MlflowClient

    uri = str(tracking.uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = ensure_experiment(
        client, tracking.experiment, tracking.get("artifact_location")
    )
    created = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    run = Run(client, created.info.run_id, experiment_id, uri)
    try:
        yield run
    except BaseException:
        client.set_terminated(run.run_id, "FAILED")
        raise
    client.set_terminated(run.run_id, "FINISHED")
