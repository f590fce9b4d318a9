"""The study table: one DataFrame built from ``runs.csv``, rendered as text, Markdown, LaTeX, CSV.

Rows are the models of the study (the ``model`` tag: the config name, so KN3 and KN5 are two
rows) in lineage order — the family's place in :data:`LINEAGE` (design.md §2; other families
follow), then its ``year`` tag, then size — plus one row per fine-tuning
adaptation logged as a child run. A run's ``overrides`` tag (the command-line settings that change
what it computes, e.g. ``model.lm.order=2``: a sweep's points; none on runs recorded before the
tag existed) is part of its row: each sweep point is its own row, named ``ngram
[model.lm.order=2]``, after the model's row without overrides. Each metric column holds the mean,
the sample standard deviation (n - 1) and the count over the row's seeds; a row's seed appears once
(its latest run, whose gaps older runs of the same training fill, e.g. the same LM scored on
other tasks; older runs of another training, e.g. under an earlier code version whose config hash
moved, are superseded, with their fine-tuning children). A task column counts the runs of the
row's newest task version only (``task.<name>.version``; the rest are named in
:attr:`StudyTable.notes`). Columns come from the report config (``table.columns``); a column
whose metric contains ``{task}`` repeats for every task found in the runs' metric names. A cell
with no value is "—": the family cannot do it (a word2vec perplexity) or did not report it. The
best value of a column is marked among the rows of the same corpus, except for metrics that do
not depend on the corpus (see :func:`compared_across_corpora`).

The one DataFrame (:attr:`StudyTable.frame`) holds numbers; the renderers only format it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

DASH = "—"
ID_COLUMNS = ("model", "overrides", "family", "year", "adaptation", "corpus", "n")
# Metrics measured on the LM's own corpus (its splits, its vocabulary, its training): a value on
# one corpus says nothing against a value on another, so their best is found per corpus.
# (a perplexity, NLL or bits in the metric's last part: `sst2/lm/val_ppl`, not a task `apple/…`)
CORPUS_BOUND = re.compile(r"^(train|val|valid|test|vocab|cost)/|(ppl|nll|bits)[^/]*$")
# The families in lineage order (design.md §2). By year alone the n-grams (Kneser-Ney, 1995)
# would follow the Elman RNN (1990), though counting models came first in the field.
LINEAGE = ("rule", "ngram", "rnn", "lstm", "gru", "word2vec", "glove", "transformer")


@dataclass(frozen=True)
class Column:
    """One metric column of the table.

    Attributes:
        key: machine name (CSV column prefix), e.g. ``test_ppl`` or ``sst2_acc``.
        metric: the MLflow metric, e.g. ``test/ppl``.
        header: the printed header.
        better: ``"lower"``, ``"higher"`` or ``None`` (no best marked).
        format: ``fixed``, ``percent`` (x100), ``count`` (12.3k, 4.6M), ``integer`` (82,430) or
            ``duration`` (s/min/h).
        decimals: digits after the point (``fixed`` and ``percent``).
        spread: show ``± sd`` when the row has two or more values.
        requires: count a run's value only if the run also has this metric (``test/tokens``
            only where ``test/ppl`` was scored: runs logged before the data statistic became
            ``test/data_tokens`` have it under the same name, for every family).
    """

    key: str
    metric: str
    header: str
    better: str | None = None
    format: str = "fixed"
    decimals: int = 2
    spread: bool = True
    requires: str | None = None


def resolve_columns(
    specs: Sequence[Mapping[str, Any]], metrics: Sequence[str], task_names: Mapping[str, str]
) -> list[Column]:
    """Expand ``{task}`` specs against the metric names present; keep the others as they are.

    Tasks are ordered as in ``task_names``, then alphabetically.
    """
    order = {name: i for i, name in enumerate(task_names)}
    columns: list[Column] = []
    for spec in specs:
        spec = dict(spec)
        if spec.get("better") not in (None, "lower", "higher"):
            raise ValueError(f"table.columns: better={spec['better']!r}; use lower or higher")
        if spec.get("format", "fixed") not in ("fixed", "percent", "count", "integer", "duration"):
            raise ValueError(f"table.columns: format={spec['format']!r} is unknown")
        if "{task}" not in spec["metric"]:
            columns.append(Column(**spec))
            continue
        pattern = re.compile(
            "^" + re.escape(spec["metric"]).replace(r"\{task\}", "(?P<task>[^/]+)") + "$"
        )
        tasks = sorted(
            {m.group("task") for m in map(pattern.match, metrics) if m},
            key=lambda t: (order.get(t, len(order)), t),
        )
        for task in tasks:
            name = task_names.get(task, task)
            columns.append(
                Column(
                    **{
                        **spec,
                        "key": spec["key"].format(task=task, task_name=name),
                        "metric": spec["metric"].format(task=task),
                        "header": spec["header"].format(task=task, task_name=name),
                    }
                )
            )
    return columns


@dataclass
class StudyTable:
    """The aggregated table and what it was built from.

    Attributes:
        frame: one row per table row; identity columns (``model``, ``overrides``, ``family``,
            ``year``, ``adaptation``, ``corpus``, ``n``), then per metric column ``{key}.mean``,
            ``{key}.sd``, ``{key}.n`` and ``{key}.best``, then ``config_hashes`` and
            ``git_shas`` (space-separated).
        columns: the metric columns, in order.
        runs: the runs whose values count (per row and seed the latest, then any older run of
            the same training that fills its gaps), latest first, as numbers where numeric.
        superseded: runs left out because a later run of the same row and seed exists.
        folded: runs of :attr:`runs` that only fill a later run's gaps (the same training).
        notes: what the table left out that a reader should know (older task versions).
        show_corpus: rows come from more than one corpus (a Corpus column; bests per corpus).
        show_adaptation: some row has an adaptation (an Adaptation column).
        show_overrides: some row has overrides (its Model cell names them; an ``overrides``
            column in CSV).
    """

    frame: pd.DataFrame
    columns: list[Column]
    runs: pd.DataFrame
    superseded: int = 0
    folded: int = 0
    show_corpus: bool = False
    show_adaptation: bool = False
    show_overrides: bool = False
    notes: list[str] = field(default_factory=list)


def runs_frame(rows: Sequence[Mapping[str, str]]) -> pd.DataFrame:
    """``runs.csv`` rows -> a DataFrame: ``metrics.*``, ``tags.year`` and ``tags.seed`` numeric;
    absent identity tags (``tags.overrides`` of runs recorded before it existed) are ""."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame
    for column in ("tags.year", "tags.seed"):  # rows from another tool may lack them
        if column not in frame:
            frame[column] = np.nan
    for column in frame.columns:
        if column.startswith("metrics.") or column in ("tags.year", "tags.seed"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in (
        "tags.model",
        "tags.overrides",
        "tags.corpus",
        "tags.adaptation",
        "tags.task",
        "parent_run_id",
        "tags.family",
    ):
        if column not in frame:
            frame[column] = ""
        frame[column] = frame[column].fillna("")
    return frame


def natural_key(text: str) -> tuple:
    """Sort key reading digit runs as numbers: ``order=2`` before ``order=10``."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", text)
        if part
    )


def row_label(model: str, overrides: str = "") -> str:
    """A row's name: the model config, then its overrides if any (``ngram [model.lm.order=2]``)."""
    return f"{model} [{overrides}]" if overrides else model


def _row_variant(frame: pd.DataFrame) -> pd.Series:
    """A child run (fine-tuning) is its own row, named by its adaptation; a job's run is not."""
    return frame["tags.adaptation"].where(frame["parent_run_id"] != "", "")


def build_table(
    rows: Sequence[Mapping[str, str]],
    specs: Sequence[Mapping[str, Any]],
    task_names: Mapping[str, str] | None = None,
) -> StudyTable:
    """Aggregate ``runs.csv`` rows into the study table.

    Args:
        rows: ``runs.csv`` rows (text values, as :func:`lineage.report.collect.read_runs_csv`).
        specs: the ``table.columns`` entries of the report config.
        task_names: printed names of tasks (``sst2`` -> ``SST-2``), also their column order.

    Returns:
        The table; an empty frame if there are no rows.
    """
    task_names = dict(task_names or {})
    runs = runs_frame(rows)
    if runs.empty:
        return StudyTable(pd.DataFrame(), [], runs)
    metrics = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
    columns = resolve_columns(specs, metrics, task_names)
    runs = runs.assign(_variant=_row_variant(runs))
    # a child run (fine-tuning) belongs to its job's sweep point (rows of runs.csv files written
    # before child runs carried the tag: take it from the parent)
    orphan = (runs["parent_run_id"] != "") & (runs["tags.overrides"] == "")
    if orphan.any():
        of_job = dict(zip(runs["run_id"], runs["tags.overrides"], strict=True))
        runs.loc[orphan, "tags.overrides"] = [
            of_job.get(p, "") for p in runs.loc[orphan, "parent_run_id"]
        ]
    keys = ["tags.model", "tags.overrides", "tags.corpus", "_variant"]
    runs, superseded, folded = _latest_runs(runs.assign(**_task_versions(runs)), keys)
    seed_key = runs["tags.seed"].astype("string").fillna(runs["run_id"]).rename("_seed")

    records = []
    for (model, overrides, corpus, variant), group in runs.groupby(keys, sort=False, dropna=False):
        group = group.sort_values("tags.seed", kind="stable")
        year = group["tags.year"].dropna()
        adaptation = variant or ",".join(sorted({a for a in group["tags.adaptation"] if a}))
        record: dict[str, Any] = {
            "model": model,
            "overrides": overrides,
            "family": next((f for f in group["tags.family"] if f), ""),
            "year": int(year.iloc[0]) if not year.empty else pd.NA,
            "adaptation": adaptation,
            "corpus": corpus,
            "n": int(seed_key.loc[group.index].nunique()),
        }
        record["_notes"] = notes = []
        record["_versions"] = versions = {}
        for column in columns:
            name, needed = f"metrics.{column.metric}", f"metrics.{column.requires}"
            values = group[name] if name in group else pd.Series(dtype=float)
            if column.requires:
                values = values[group[needed].notna()] if needed in group else values.iloc[:0]
            values = values.dropna()
            # one value per seed: its latest run's (the group is by seed, latest first)
            values = values[~seed_key.loc[values.index].duplicated()]
            values = _newest_task_version(values, group, column, notes, versions)
            values = values.to_numpy(float)
            record[f"{column.key}.mean"] = float(values.mean()) if values.size else np.nan
            record[f"{column.key}.sd"] = float(values.std(ddof=1)) if values.size > 1 else np.nan
            record[f"{column.key}.n"] = int(values.size)
        record["config_hashes"] = " ".join(dict.fromkeys(group["tags.config_hash"].fillna("")))
        shas = group["tags.git_sha"].fillna("") if "tags.git_sha" in group else []
        record["git_shas"] = " ".join(sorted(set(shas)))
        size = record.get("params.mean", np.nan)
        record["_size"] = size if isinstance(size, float) and not math.isnan(size) else math.inf
        record["_variant"] = variant
        records.append(record)
    # a model's sweep points stay together, placed by the size of the model's row without
    # overrides (else by the smallest of them): the row without overrides first, then by overrides
    sizes: dict[tuple, float] = {}
    for record in sorted(records, key=lambda r: (r["overrides"] != "", r["_size"])):
        sizes.setdefault((record["model"], record["corpus"], record["_variant"]), record["_size"])

    def order(record: dict[str, Any]) -> tuple:
        family, variant = record["family"], record["_variant"]
        return (
            LINEAGE.index(family) if family in LINEAGE else len(LINEAGE),
            record["year"] if record["year"] is not pd.NA else math.inf,
            variant != "",
            sizes[(record["model"], record["corpus"], variant)],
            record["model"],
            variant,
            record["corpus"],
            natural_key(record["overrides"]),
        )

    records.sort(key=order)
    notes = []
    for r in records:
        notes += [f"{_record_label(r)}, {note}" for note in r["_notes"]]
    notes += _task_versions_across_rows(records, columns)
    hidden = ("_size", "_variant", "_notes", "_versions")
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in hidden} for r in records])
    frame["year"] = frame["year"].astype("Int64")
    for column in columns:
        frame[f"{column.key}.best"] = _best(frame, column)
    ordered = list(ID_COLUMNS)
    for column in columns:
        ordered += [f"{column.key}.{s}" for s in ("mean", "sd", "n", "best")]
    frame = frame[ordered + ["config_hashes", "git_shas"]]
    return StudyTable(
        frame,
        columns,
        runs.drop(columns=["_variant", *(c for c in runs if c.startswith("_version."))]),
        superseded,
        folded,
        show_corpus=frame["corpus"].nunique() > 1,
        show_adaptation=bool((frame["adaptation"] != "").any()),
        show_overrides=bool((frame["overrides"] != "").any()),
        notes=notes,
    )


def _task_versions(runs: pd.DataFrame) -> dict[str, pd.Series]:
    """``_version.{task}``: the task's loader version of each run that configured it (a child
    run's from its job's params; a run logged before the key existed: version 1), else NaN."""
    versions = {}
    parent_of = runs["parent_run_id"]
    for column in runs.columns:
        match = re.fullmatch(r"params\.task\.([^.]+)\.source", column)
        if match is None:
            continue
        task = match.group(1)
        given = runs.get(f"params.task.{task}.version", pd.Series(np.nan, runs.index))
        version = pd.to_numeric(given, errors="coerce")
        version = version.where(runs[column].isna() | version.notna(), 1.0)
        by_id = dict(zip(runs["run_id"], version, strict=True))
        child = (parent_of != "") & version.isna()
        version[child] = [by_id.get(p, np.nan) for p in parent_of[child]]
        versions[f"_version.{task}"] = version
    return versions


def _latest_runs(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int, int]:
    """The runs that count, latest first: per (row, seed; a child run's task) the latest, and
    older runs of the same training (``fit_hash``: e.g. the same LM scored on other tasks),
    whose values fill the latest one's gaps.

    Older runs of another training are superseded, with their fine-tuning children: a child
    only counts while its job does. Runs without a ``fit_hash`` (logged before the tag) never
    fill. Returns the runs, the number superseded and the number that only fill.
    """
    runs = runs.sort_values(["start_time", "run_id"], ascending=[False, True], kind="stable")
    seed_key = runs["tags.seed"].astype("string").fillna(runs["run_id"]).rename("_seed")
    task_key = runs["tags.task"].where(runs["_variant"] != "", "").rename("_task")
    ident = pd.concat([runs[keys], seed_key, task_key], axis=1).apply(tuple, axis=1)
    fit = runs["tags.fit_hash"].fillna("") if "tags.fit_hash" in runs else pd.Series("", runs.index)
    job = runs["_variant"] == ""
    first = ~ident.duplicated()
    same_training = job & (fit != "") & fit.eq(fit.groupby(ident).transform("first"))
    kept_job = job & (first | same_training)
    dropped_jobs = set(runs.loc[job & ~kept_job, "run_id"])
    child = ~job & ~runs["parent_run_id"].isin(dropped_jobs)
    latest_child = ~ident[child].duplicated()  # the latest of the children whose job counts
    kept = runs.loc[kept_job | latest_child.reindex(runs.index, fill_value=False)]
    superseded = len(runs) - len(kept)
    return kept, superseded, int(ident.loc[kept.index].duplicated().sum())


def _newest_task_version(
    values: pd.Series,
    group: pd.DataFrame,
    column: Column,
    notes: list[str],
    versions: dict[str, int],
) -> pd.Series:
    """A task column's values from the runs of the newest task version in the row: a version
    bump changed what the task's test set is, so older runs' values are left out (noted). The
    version counted goes to ``versions[column.key]``."""
    name = f"_version.{column.metric.split('/')[0]}"
    if name not in group or values.empty:
        return values
    version = group.loc[values.index, name].fillna(1.0)
    newest = version.max()
    versions[column.key] = int(newest)
    older = version < newest
    if older.any():
        notes.append(
            f"{column.header}: {int(older.sum())} run(s) of task version "
            f"{int(version[older].max())} left out, version {int(newest)} counted"
        )
    return values[~older]


def _record_label(record: dict[str, Any]) -> str:
    """A row's name in a note: ``ngram [model.lm.order=2]``, ``lstm_small (finetune)``."""
    label = row_label(record["model"], record["overrides"])
    return label + (f" ({record['_variant']})" if record["_variant"] else "")


def _task_versions_across_rows(records: list[dict[str, Any]], columns: list[Column]) -> list:
    """A note per task column whose rows count different task versions (their test sets
    differ, so those cells do not compare): the rows of each version but the most common."""
    notes = []
    for column in columns:
        rows: dict[int, list[str]] = {}
        for r in records:
            if column.key in r["_versions"]:
                rows.setdefault(r["_versions"][column.key], []).append(_record_label(r))
        if len(rows) < 2:
            continue
        common = max(sorted(rows), key=lambda v: len(rows[v]))
        others = "; ".join(
            f"version {v} in {', '.join(rows[v])}" for v in sorted(rows) if v != common
        )
        notes.append(
            f"{column.header}: rows of different task versions, which do not compare: "
            f"{others}; version {common} in the other {len(rows[common])}"
        )
    return notes


def compared_across_corpora(column: Column) -> bool:
    """Whether a column's values on different corpora compare: a downstream task's or an
    intrinsic test's (``sst2/test/accuracy``, ``intrinsic/analogy_acc``: the same test set
    whatever corpus the LM learnt from), not a measure on the corpus itself (perplexity, bits,
    tokens, vocabulary, cost: ``val/…``, ``test/…``, ``cost/…``, any ``ppl``, ``nll``, ``bits``)."""
    return not CORPUS_BOUND.search(column.metric)


def _best(frame: pd.DataFrame, column: Column) -> pd.Series:
    """True where the row's mean is the best shown value (ties included) among the rows it is
    compared with: those of its corpus, or all rows (:func:`compared_across_corpora`); a best
    needs two such rows with a value."""
    means = frame[f"{column.key}.mean"]
    best = pd.Series(False, index=frame.index)
    if column.better is None:
        return best
    # ties are judged on the text shown (1.03 h and 1.03 h tie, whatever the seconds)
    shown = means.map(lambda v: format_value(v, float("nan"), column)).where(means.notna())
    scope = frame["corpus"] if not compared_across_corpora(column) else pd.Series("", frame.index)
    for _, part in means.groupby(scope, sort=False):
        part = part.dropna()
        if len(part) < 2:
            continue
        target = shown[part.idxmin() if column.better == "lower" else part.idxmax()]
        best[part.index[shown[part.index].eq(target)]] = True
    return best


# ----- formatting ---------------------------------------------------------------------------


def _scaled(value: float, column: Column) -> float:
    return value * 100 if column.format == "percent" else value


def format_count(value: float) -> str:
    """0, 82, 29.2k, 173k, 4.65M, 66.0M, 1.20B (three significant digits from 1,000 on)."""
    if round(value) < 1000:  # 999.6 reads 1.00k, not 1000
        return f"{value:.0f}"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size * 0.9995:
            scaled = value / size
            digits = 0 if scaled >= 99.95 else 1 if scaled >= 9.995 else 2
            return f"{scaled:.{digits}f}{unit}"
    return f"{value:.0f}"  # unreachable


def _duration_unit(seconds: float) -> tuple[str, float, int]:
    """(unit, seconds per unit, decimals): 2 decimals below 10 units, else 1, judged on the
    rounded value (59.97 s reads 1.00 min, not 60.0 s; 9.996 s reads 10.0 s)."""
    for unit, size, limit in (("s", 1.0, 60.0), ("min", 60.0, 60.0), ("h", 3600.0, math.inf)):
        scaled = seconds / size
        decimals = 2 if round(scaled, 2) < 10 else 1
        if round(scaled, decimals) < limit:
            return unit, size, decimals
    raise AssertionError("unreachable")


def _number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def format_value(mean: float, sd: float, column: Column, pm: str = "±") -> str:
    """A cell's text: ``mean`` or ``mean ± sd`` in the column's format; "" for no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    with_sd = column.spread and sd is not None and not math.isnan(sd)
    if column.format == "count":
        text = format_count(mean)
        return f"{text} {pm} {format_count(sd)}" if with_sd else text
    if column.format == "integer":
        text = _number(mean, 0)
        return f"{text} {pm} {_number(sd, 0)}" if with_sd else text
    if column.format == "duration":
        unit, size, decimals = _duration_unit(mean)
        text = _number(mean / size, decimals)
        if with_sd:
            text += f" {pm} {_number(sd / size, decimals)}"
        return f"{text} {unit}"
    mean, sd = _scaled(mean, column), _scaled(sd, column) if with_sd else sd
    text = _number(mean, column.decimals)
    return f"{text} {pm} {_number(sd, column.decimals)}" if with_sd else text


@dataclass(frozen=True)
class _Style:
    dash: str
    pm: str
    bold: str  # format string with {}
    escape: Any
    code: Any = None  # how a model (config) name is written (default: escaped)
    overrides: Any = None  # how overrides are written (default: escaped)

    def name(self, model: str, overrides: str) -> str:
        """The Model cell: ``ngram``, or ``ngram [model.lm.order=2]`` for a sweep point."""
        text = (self.code or self.escape)(model)
        if overrides:
            text += f" [{(self.overrides or self.escape)(overrides)}]"
        return text


def _cells(table: StudyTable, style: _Style) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, body cells and alignments ("l" / "r") in a renderer's style."""
    headers = ["Model", "Family", "Year"]
    align = ["l", "l", "r"]
    if table.show_adaptation:
        headers.append("Adaptation")
        align.append("l")
    if table.show_corpus:
        headers.append("Corpus")
        align.append("l")
    headers.append("n")
    align.append("r")
    for column in table.columns:
        headers.append(column.header)
        align.append("r")
    body = []
    for _, row in table.frame.iterrows():
        year = "" if pd.isna(row["year"]) else str(int(row["year"]))
        cells = [row["family"] or style.dash, year or style.dash]
        if table.show_adaptation:
            cells.append(row["adaptation"] or style.dash)
        if table.show_corpus:
            cells.append(row["corpus"] or style.dash)
        cells = [style.name(row["model"], row["overrides"])] + [style.escape(c) for c in cells]
        cells.append(str(row["n"]))
        for column in table.columns:
            mean, sd = row[f"{column.key}.mean"], row[f"{column.key}.sd"]
            text = format_value(mean, sd, column, style.pm)
            if not text:
                cells.append(style.dash)
                continue
            count = int(row[f"{column.key}.n"])
            if count != row["n"]:
                text += f" (n={count})"
            text = style.escape(text)
            cells.append(style.bold.format(text) if row[f"{column.key}.best"] else text)
        body.append(cells)
    return [style.escape(h) for h in headers], body, align


def _identity(text: str) -> str:
    return text


def _pad(cells: list[str], widths: list[int], align: list[str]) -> str:
    return "  ".join(
        c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align, strict=True)
    ).rstrip()


def render_text(table: StudyTable) -> str:
    """A plain-text table for the terminal; ``*`` marks the best value of a column."""
    headers, body, align = _cells(table, _Style(DASH, "±", "{}*", _identity))
    body = [
        [c if c.endswith("*") or a == "l" else c + " " for c, a in zip(r, align, strict=True)]
        for r in body
    ]
    headers = [h + " " if a == "r" else h for h, a in zip(headers, align, strict=True)]
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=True)]
    lines = [_pad(headers, widths, align)] + [_pad(r, widths, align) for r in body]
    return "\n".join(lines) + "\n"


MARKDOWN_SPECIALS = "\\`*_[]<|"


def markdown_escape(text: str) -> str:
    """Backslash-escape what Markdown (and a GFM table's ``|``) would read as markup."""
    return "".join("\\" + ch if ch in MARKDOWN_SPECIALS else ch for ch in str(text))


def render_markdown(table: StudyTable) -> str:
    """A GitHub-flavoured Markdown table; **bold** marks the best value of a column."""
    headers, body, align = _cells(
        table, _Style(DASH, "±", "**{}**", markdown_escape, "`{}`".format)
    )
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(r) + " |" for r in [headers, rule, *body]]
    return "\n".join(lines) + "\n"


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and write — and ± as LaTeX does)."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def render_latex(table: StudyTable, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``); \\textbf marks best.

    ``notes`` go under the table in small type (already LaTeX).
    """

    def code(text: str) -> str:
        return r"\texttt{" + latex_escape(text) + "}"

    style = _Style("---", "±", r"\textbf{{{}}}", latex_escape, code, code)
    headers, body, align = _cells(table, style)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "".join(align) + "}",
        r"\toprule",
        " & ".join(headers) + r" \\",
        r"\midrule",
        *(" & ".join(r) + r" \\" for r in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if notes:
        lines += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize"]
        lines += [note + r"\\" for note in notes[:-1]] + [notes[-1] + "}"]
    lines += [
        r"\caption{" + latex_escape(caption) + "}",
        r"\label{" + label + "}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def render_csv(table: StudyTable) -> str:
    """The numbers of the table (means, sds, counts, best flags) as CSV; an ``overrides`` column
    after ``model`` when some row has overrides."""
    frame = table.frame if table.show_overrides else table.frame.drop(columns="overrides")
    frame = frame.copy()
    frame.columns = [c.replace(".", "_") for c in frame.columns]
    return frame.to_csv(index=False, lineterminator="\n", na_rep="")
