"""A study's finished runs: read from MLflow, kept in ``runs.csv``, merged by config hash.

``runs.csv`` has one row per finished run and one column per field, named as MLflow names them
in ``search_runs`` frames: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time``, then
``tags.*`` (MLflow's own ``mlflow.*`` tags left out), ``params.*`` (the main ones, chosen by
glob patterns), ``metrics.*`` (final values), ``history.*`` (a metric's value per logged step,
space-separated, e.g. ``history.val/ppl`` per epoch; when a step was logged twice — the runner
validates the best checkpoint again at the last step — the first value is the step's) and
``data.*`` (the digest of each dataset the run logged as an input). Every value is kept as text
exactly as written — floats as Python's shortest round-trip ``repr`` — so reading and rewriting
the file changes no byte.

The file is the source of the tables: committed next to them, it lets anyone regenerate and check
the tables without the store, and :func:`merge_runs` folds new runs into it by config hash, so a
study spread over several sessions (or machines) accumulates in one place.
"""

from __future__ import annotations

import csv
import fnmatch
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

LEAD_COLUMNS = ("run_id", "run_name", "status", "start_time", "end_time")
GROUP_ORDER = ("tags.", "params.", "metrics.", "history.", "data.")
REPORT_KIND = "report"  # tags.kind of the runs lineage-report itself logs (never table rows)
# A child run (fine-tuning logged under the job's run) inherits these from its parent if unset.
INHERITED_TAGS = (
    "study",
    "model",
    "overrides",
    "family",
    "era",
    "year",
    "corpus",
    "seed",
    "tasks",
    "config_hash",
    "git_sha",
    "git_dirty",
    "lineage_version",
    "sweep_id",
)

Row = dict[str, str]


def iso_ms(millis: int | None) -> str:
    """MLflow's epoch milliseconds as ISO 8601 UTC with milliseconds ("" for None)."""
    if millis is None:
        return ""
    stamp = datetime.fromtimestamp(millis / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def number(value: float) -> str:
    """A float as the shortest text that reads back as the same float."""
    return repr(float(value))


def run_key(row: Mapping[str, str]) -> str:
    """What makes two rows the same experiment: the config hash (+ adaptation and task for child
    runs: a job that fine-tunes two tasks has a child run per task and adaptation); a row
    without a hash (a run made by hand) is its own experiment."""
    key = row.get("tags.config_hash", "") or f"run:{row.get('run_id', '')}"
    if row.get("parent_run_id"):
        key += "/" + row.get("tags.adaptation", "")
        if row.get("tags.task"):
            key += "/" + row["tags.task"]
    return key


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def run_row(
    client,
    run,
    *,
    params: Sequence[str] = ("*",),
    exclude_params: Sequence[str] = (),
    histories: Sequence[str] = (),
) -> Row:
    """One MLflow run as a ``runs.csv`` row (all values text)."""
    info, data = run.info, run.data
    row: Row = {
        "run_id": info.run_id,
        "run_name": info.run_name or "",
        "status": info.status,
        "start_time": iso_ms(info.start_time),
        "end_time": iso_ms(info.end_time),
    }
    for key, value in data.tags.items():
        if not key.startswith("mlflow."):
            row[f"tags.{key}"] = str(value)
    parent = data.tags.get("mlflow.parentRunId")
    if parent:
        row["parent_run_id"] = parent
    for key, value in data.params.items():
        if _selected(key, params, exclude_params):
            row[f"params.{key}"] = str(value)
    for key, value in data.metrics.items():
        row[f"metrics.{key}"] = number(value)
    for key in histories:
        if key in data.metrics:
            points = client.get_metric_history(info.run_id, key)
            per_step: dict[int, float] = {}
            for m in sorted(points, key=lambda m: (m.step, m.timestamp)):
                per_step.setdefault(m.step, m.value)  # the epoch's own value, not a re-check
            row[f"history.{key}"] = " ".join(number(v) for _, v in sorted(per_step.items()))
    inputs = getattr(run, "inputs", None)
    for dataset_input in getattr(inputs, "dataset_inputs", None) or []:
        dataset = dataset_input.dataset
        row[f"data.{dataset.name}"] = str(dataset.digest)
    return row


def read_store(
    client,
    study: str,
    *,
    params: Sequence[str] = ("*",),
    exclude_params: Sequence[str] = (),
    histories: Sequence[str] = (),
) -> list[Row]:
    """The FINISHED runs of ``study`` in the store, the latest per :func:`run_key`.

    Runs logged by ``lineage-report`` (``tags.kind = report``) and runs with no config hash
    (not made by ``lineage-train``) are left out. A child run (fine-tuning) takes the identity
    tags it lacks from its parent. An unknown study gives no rows.
    """
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC", "attributes.run_id ASC"],
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            break
    by_id = {run.info.run_id: run for run in runs}
    rows: list[Row] = []
    seen: set[str] = set()
    for run in runs:
        tags = run.data.tags
        if tags.get("kind") == REPORT_KIND:
            continue
        row = run_row(
            client, run, params=params, exclude_params=exclude_params, histories=histories
        )
        parent = by_id.get(row.get("parent_run_id", ""))
        if parent is not None:
            for name in INHERITED_TAGS:
                if f"tags.{name}" not in row and name in parent.data.tags:
                    row[f"tags.{name}"] = parent.data.tags[name]
        if not row.get("tags.config_hash"):
            continue
        key = run_key(row)
        if key in seen:  # newest first: an older run of the same config is superseded
            continue
        seen.add(key)
        rows.append(row)
    return rows


def merge_runs(old: Iterable[Row], new: Iterable[Row]) -> list[Row]:
    """Fold ``new`` rows into ``old`` by :func:`run_key`: the later start time wins (``new`` on
    a tie), rows only in ``old`` are kept (runs from another store or session)."""
    merged: dict[str, Row] = {}
    for source in (old, new):
        for row in source:
            key = run_key(row)
            current = merged.get(key)
            if current is None or row.get("start_time", "") >= current.get("start_time", ""):
                merged[key] = dict(row)
    return list(merged.values())


def _float_or(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Lineage order (year), then model, overrides, adaptation, seed, start time, run id."""

    def key(row: Row):
        return (
            _float_or(row.get("tags.year"), float("inf")),
            row.get("tags.model", ""),
            row.get("tags.overrides", ""),
            row.get("parent_run_id", "") != "",
            row.get("tags.adaptation", ""),
            _float_or(row.get("tags.seed"), float("inf")),
            row.get("start_time", ""),
            row.get("run_id", ""),
        )

    return sorted(rows, key=key)


def columns_of(rows: Iterable[Row]) -> list[str]:
    """The lead columns, ``parent_run_id``, then each group's columns sorted by name."""
    names: set[str] = set()
    for row in rows:
        names.update(row)
    ordered = [c for c in LEAD_COLUMNS]
    if "parent_run_id" in names:
        ordered.append("parent_run_id")
    for prefix in GROUP_ORDER:
        ordered.extend(sorted(n for n in names if n.startswith(prefix)))
    rest = sorted(names - set(ordered))
    return ordered + rest


def write_runs_csv(path: str | Path, rows: Iterable[Row]) -> Path:
    """Write ``rows`` (sorted, columns as :func:`columns_of`) to ``path``, atomically."""
    rows = sort_rows(rows)
    columns = columns_of(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(path)
    return path


def read_runs_csv(path: str | Path) -> list[Row]:
    """The rows of a ``runs.csv`` (empty cells left out of each row); [] if there is no file."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
