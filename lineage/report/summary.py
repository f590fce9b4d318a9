"""``lineage-report``: a study's paper-style table, plots and ``runs.csv``, in one command.

    lineage-report experiment=lineage_ptb             # the study file conf/experiment/<name>.yaml
    lineage-report study=lineage-lee                  # or the study (MLflow experiment) by name
    lineage-report experiment=lineage_ptb source=csv  # re-render from the committed runs.csv
    lineage-report experiment=lineage_lee action=url  # the dashboard URL of the study's runs

It reads the study's FINISHED runs from the MLflow store (the latest per config hash), merges them
into ``experiments/<study>/runs.csv`` by config hash, then renders everything from that file into
``experiments/<study>/tables/``: ``table.md``, ``table.tex`` (booktabs), ``table.csv``,
``table.txt``, four PNG figures and ``provenance.json``; the same files are logged as artifacts
of a ``report`` run in the study's MLflow experiment (an existing one: the report never creates
an experiment). A study with no runs at all, in the store or in ``runs.csv``, is an error that
lists the studies there are (exit status 2). Nothing in the output depends on the clock:
the date printed is the end of the latest run (or ``SOURCE_DATE_EPOCH``), so regenerating from an
unchanged store rewrites the same bytes.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import lineage.config  # noqa: F401  (registers the ${lineage.cwd:} resolver)
from lineage.report.collect import (
    REPORT_KIND,
    merge_runs,
    read_runs_csv,
    read_store,
    write_runs_csv,
)

if TYPE_CHECKING:  # pandas and matplotlib load only when a report is rendered (not for action=url)
    from lineage.report.table import StudyTable

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = str(ROOT / "conf")
TABLE_FILES = ("table.md", "table.tex", "table.csv", "table.txt", "provenance.json")
README_MARKERS = ("<!-- lineage-report:{name}:begin -->", "<!-- lineage-report:{name}:end -->")

log = logging.getLogger("lineage.report")


class ReportError(Exception):
    """A report that cannot be made as asked (a study with no runs, another study's folder):
    ``lineage-report`` prints the message and exits with status 2."""


# ----- the study ----------------------------------------------------------------------------


def study_file_name(study: str, experiment_choice: str | None, conf_dir: Path) -> str:
    """The name of the study's folder under ``experiments/``: the study file's name.

    Given only ``study=``, the study file whose ``study`` matches it, else the study name.
    """
    if experiment_choice:
        return experiment_choice
    return next((stem for stem, name in study_files(conf_dir) if name == study), study)


class PlannedRun(NamedTuple):
    """One job of a study's sweep: its model, seed and the other swept settings, each as
    ``(key, value as the run's params record it)``."""

    model: str
    seed: str
    settings: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.settings)
        return f"{self.model} s{self.seed}" + (f" [{extra}]" if extra else "")


def planned_runs(
    sweep_params: Mapping[str, str] | None, only_seeds: Mapping | None
) -> list[PlannedRun]:
    """The jobs the study's sweep asks for, minus ``tracking.only_seeds`` cuts: every model ×
    seed × corpus × value of each other swept setting that changes what a run computes
    (:func:`lineage.train.variant_overrides`; tasks and locations are not points)."""
    if not sweep_params or "model" not in sweep_params:
        return []
    from itertools import product

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lineage.tracking import param_text
    from lineage.train import variant_overrides

    parser = OverridesParser.create()

    def values(key: str, text: str) -> list[Any]:
        override = parser.parse_override(f"{key}={text}")
        if override.is_sweep_override():
            return list(override.sweep_iterator())
        return [override.value()]

    models = [str(m) for m in values("model", sweep_params["model"])]
    seeds = [str(s) for s in values("seed", sweep_params.get("seed", "0"))]
    others = sorted(
        k
        for k in sweep_params
        if k == "corpus" or (k not in ("model", "seed") and variant_overrides([f"{k}=0"]))
    )
    points = list(
        product(*[[(k, param_text(v)) for v in values(k, sweep_params[k])] for k in others])
    )
    only = {str(k): [str(s) for s in v] for k, v in (only_seeds or {}).items()}
    return [
        PlannedRun(model, seed, tuple(point))
        for model in models
        for seed in seeds
        for point in points
        if model not in only or seed in only[model]
    ]


def _standing_for(plan: PlannedRun, jobs: Sequence[Mapping[str, str]]) -> list:
    """The job rows that are ``plan``'s run: same model and seed, each swept setting as the
    run's params record it (or, for a key the params leave out, as its ``overrides`` tag has it),
    and no override beyond the swept ones (``model.lm.order=2`` is another row, not the plan's)."""
    swept = {k for k, _ in plan.settings}
    return [
        r
        for r in jobs
        if r.get("tags.model", "") == plan.model
        and str(r.get("tags.seed", "")) == plan.seed
        and all(_recorded(r, k) == v for k, v in plan.settings)
        and _override_keys(r) <= swept
    ]


def missing_runs(planned: Sequence[PlannedRun], rows: Sequence[Mapping[str, str]]) -> list:
    """The planned jobs with no finished job run in ``rows`` (:func:`_standing_for`)."""
    jobs = [r for r in rows if not r.get("parent_run_id")]
    return [p for p in planned if not _standing_for(p, jobs)]


def stale_runs(
    planned: Sequence[PlannedRun],
    rows: Sequence[Mapping[str, str]],
    hashes: Mapping[PlannedRun, Sequence[str]],
) -> list[PlannedRun]:
    """The planned jobs done in ``rows`` under an earlier config: none of their rows carries one
    of the hashes the job's config has today (``hashes``: :func:`lineage.tracking.config_hashes`),
    so ``lineage-train experiment=<study>`` would run them again."""
    jobs = [r for r in rows if not r.get("parent_run_id")]
    stale = []
    for plan in planned:
        found = _standing_for(plan, jobs)
        if found and not {r.get("tags.config_hash", "") for r in found} & set(hashes[plan]):
            stale.append(plan)
    return stale


# The report's own settings (and the study file, given anyway): not forwarded to the train
# config composed for the stale check.
REPORT_KEYS = ("source", "out_dir", "log_to_mlflow", "action", "ui", "runs_csv", "table", "hydra",
               "experiment")  # fmt: skip


def _job_values(sweep_params: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{key: {value as PlannedRun records it: value as the sweeper writes the job's
    override}}`` for every swept key (Hydra's BasicSweeper writes ``str`` of each element)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer

    from lineage.tracking import param_text

    parser = OverridesParser.create()
    texts: dict[str, dict[str, str]] = {}
    for key, text in sweep_params.items():
        override = parser.parse_override(f"{key}={text}")
        if override.is_sweep_override():
            pairs = [(v, Transformer.str(v)) for v in override.sweep_iterator()]
        else:
            pairs = [(override.value(), override.get_value_element_as_str())]
        texts[str(key)] = {param_text(v): s for v, s in pairs}
    return texts


def todays_hashes(
    name: str,
    sweep_params: Mapping[str, str],
    planned: Sequence[PlannedRun],
    overrides: Sequence[str] = (),
) -> dict[PlannedRun, list[str]]:
    """Each planned job's config hashes today, both forms the skip accepts
    (:func:`lineage.tracking.config_hashes`): ``conf/train.yaml`` composed as
    ``lineage-train experiment=<name>`` composes the job, with ``overrides`` (the report's
    command line, minus its own keys) as the study command's.

    One composition per model and swept setting, the seed set on it (configs read it only as
    ``${seed}``, resolved when hashed): lineage_ptb's 31 jobs are 13 compositions, half the time.
    Raises ReportError naming the job whose config does not compose or hash.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lineage.tracking import config_hashes

    parser = OverridesParser.create()
    values = _job_values(sweep_params)
    planned_keys = {"model", "seed", *values}
    forwarded = []
    for text in overrides:
        key = parser.parse_override(text).key_or_group
        if key not in planned_keys and re.split(r"[./]", key)[0] not in REPORT_KEYS:
            # the report's config lacks the train defaults (trainer: null), so a setting it
            # needs `+` for may already be in the train config: there it is set, `++`
            plain_add = text.startswith("+") and not text.startswith("++")
            forwarded.append(f"+{text}" if plain_add else text)
    groups: dict[tuple, list[PlannedRun]] = {}
    for plan in planned:
        groups.setdefault((plan.model, plan.settings), []).append(plan)

    def hashes() -> dict[PlannedRun, list[str]]:
        found = {}
        for (model, settings), plans in groups.items():
            plan = plans[0]
            try:
                job = [f"experiment={name}", f"model={model}", f"seed={plan.seed}"]
                job += [f"{k}={values[k][v]}" for k, v in settings]
                cfg = compose("train", overrides=[*forwarded, *job])
                for plan in plans:
                    cfg.seed = parser.parse_override(f"seed={plan.seed}").value()
                    found[plan] = config_hashes(cfg)
            except Exception as err:
                raise ReportError(f"composing {plan}'s config failed: {_one_line(err)}") from err
        return found

    if GlobalHydra.instance().is_initialized():  # inside lineage-report: its search path
        return hashes()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hashes()


def check_stale(
    name: str,
    sweep_params: Mapping[str, str] | None,
    planned: Sequence[PlannedRun],
    missing: Sequence[PlannedRun],
    rows: Sequence[Mapping[str, str]],
    overrides: Sequence[str] = (),
) -> tuple[list[PlannedRun], str | None]:
    """(the planned jobs done under an earlier config, why that was not checked or ``None``).

    Only the hashes a config gives by itself are compared: a run whose tag was computed with
    other locations (the earlier form hashes a task's ``data_dir``) counts as stale unless the
    report is given them too, and the skip's last resort (the config in the run's
    ``results.json``) is not read.
    """
    not_done = set(missing)
    done = [p for p in planned if p not in not_done]
    if not done or not sweep_params:
        return [], None
    try:
        hashes = todays_hashes(name, sweep_params, done, overrides)
    except Exception as err:  # whatever fails here, the report is still made, unchecked
        return [], _one_line(err)
    return stale_runs(done, rows, hashes), None


def _one_line(err: Exception) -> str:
    """An error's message on one line: Hydra's and OmegaConf's unindented lines (their
    indented ``full_key``/``object_type`` lines left out)."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip() and not x[0].isspace()]
    return " ".join(lines) or type(err).__name__


def _parsed_overrides(row: Mapping[str, str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = str(row.get("tags.overrides", "") or "").split()
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return []


def _override_keys(row: Mapping[str, str]) -> set[str]:
    """The keys of a run's ``overrides`` tag."""
    return {o.key_or_group for o in _parsed_overrides(row)}


def _recorded(row: Mapping[str, str], key: str) -> str | None:
    """The value a run had for ``key``: its corpus tag for ``corpus`` (a registered corpus is
    named as its config), else its param, else its overrides tag's entry."""
    if key == "corpus":
        return row.get("tags.corpus")
    if row.get(f"params.{key}") not in (None, ""):
        return str(row[f"params.{key}"])
    from lineage.tracking import param_text

    parsed = _parsed_overrides(row)
    return next((param_text(o.value()) for o in parsed if o.key_or_group == key), None)


# ----- provenance ---------------------------------------------------------------------------


def generation_date(rows: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """(date, what it is): ``SOURCE_DATE_EPOCH`` if set, else the latest run's end (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        stamp = datetime.fromtimestamp(int(epoch), tz=UTC)
        return stamp.strftime("%Y-%m-%d %H:%M UTC"), "SOURCE_DATE_EPOCH"
    ends = [r.get("end_time", "") for r in rows if r.get("end_time")]
    if not ends:
        return "unknown", "no run end time"
    latest = max(ends)
    return f"{latest[:10]} {latest[11:16]} UTC", "latest run end"


def provenance(
    table: StudyTable,
    rows: Sequence[Mapping[str, str]],
    *,
    study: str,
    name: str,
    planned: Sequence[PlannedRun],
    missing: Sequence[PlannedRun],
    stale: Sequence[PlannedRun] = (),
    stale_not_checked: str | None = None,
) -> dict[str, Any]:
    """What the table was made from: code, configs, data, runs, date (all from ``runs.csv``)."""
    runs = table.runs
    shas = Counter(runs["tags.git_sha"].fillna("unknown")) if "tags.git_sha" in runs else Counter()
    dirty = int(runs["tags.git_dirty"].eq("true").sum()) if "tags.git_dirty" in runs else 0
    datasets: dict[str, list[str]] = {}
    for column in sorted(c for c in runs.columns if c.startswith("data.")):
        datasets[column.removeprefix("data.")] = sorted(set(runs[column].dropna()))
    versions = (
        sorted(set(runs["tags.lineage_version"].dropna())) if "tags.lineage_version" in runs else []
    )
    from lineage.report.table import row_label

    date, date_source = generation_date(rows)
    config_hashes: dict[str, list[str]] = {}
    for _, row in table.frame.iterrows():
        # the row's name (a sweep point's overrides included), its corpus when there are
        # several, its adaptation: one label per row
        qualifiers = [row["corpus"]] if table.show_corpus and row["corpus"] else []
        qualifiers += [row["adaptation"]] if row["adaptation"] else []
        label = row_label(row["model"], row["overrides"])
        label += f" ({', '.join(qualifiers)})" if qualifiers else ""
        hashes = config_hashes.get(label, []) + row["config_hashes"].split()
        config_hashes[label] = list(dict.fromkeys(hashes))
    return {
        "study": study,
        "study_file": f"conf/experiment/{name}.yaml" if name != study else None,
        "command": f"lineage-report experiment={name}"
        if name != study
        else f"lineage-report study={study}",
        "generated": date,
        "generated_from": date_source,
        "runs_in_table": int(len(runs)),
        "runs_in_csv": len(rows),
        "superseded": int(table.superseded),
        "folded": int(table.folded),
        "notes": list(table.notes),
        "planned_runs": len(planned),
        "missing_runs": [str(p) for p in missing],
        "stale_runs": [str(p) for p in stale],
        "stale_not_checked": stale_not_checked,
        "git_shas": dict(sorted(shas.items())),
        "git_dirty_runs": dirty,
        "lineage_versions": versions,
        "config_hashes": config_hashes,
        "datasets": datasets,
    }


def _legend(table: StudyTable, best: str = "bold") -> str:
    best_rule = f"{best}: best in column (lower perplexity, higher accuracy)"
    if table.show_corpus:  # see lineage.report.table.compared_across_corpora
        best_rule += (
            ", within each corpus for what is measured on the corpus (perplexity, tokens, cost), "
            "over all rows for downstream tasks (the same test sets whatever the LM's corpus)"
        )
    parts = [
        "n: seeds per row; a cell is the mean ± sd (sample sd, divisor n - 1) over the seeds, "
        "one value when n = 1, (n=k) when only k seeds report it",
        best_rule,
        "—: the family cannot do it or did not report it",
    ]
    if table.show_overrides:
        parts.insert(
            1,
            "[…]: the command-line settings a row's runs were trained with (a sweep's point), "
            "beyond its model config, corpus and seed",
        )
    names = {c.metric for c in table.columns}
    if "cost/params" in names:
        parts.append("Params: trainable parameters, or stored n-grams for count models")
    if "cost/train_seconds" in names:
        parts.append("Train time: wall-clock fit on the machine that ran it")
    return "; ".join(parts) + "."


def _short(digest: str, n: int = 12) -> str:
    return digest[:n]


def footer_lines(prov: Mapping[str, Any]) -> list[str]:
    """The provenance footer as plain lines (Markdown renders them as a list)."""
    shas = ", ".join(
        f"{_short(s)} ({n} run{'' if n == 1 else 's'})" for s, n in prov["git_shas"].items()
    )
    dirty = f"; {prov['git_dirty_runs']} with uncommitted changes" if prov["git_dirty_runs"] else ""
    data = ", ".join(
        f"{name} {'/'.join(_short(d) for d in digests)}"
        for name, digests in prov["datasets"].items()
    )
    hashes = "; ".join(
        f"{label}: {' '.join(_short(h, 8) for h in hs)}"
        for label, hs in prov["config_hashes"].items()
    )
    runs = (
        f"{prov['runs_in_table']} runs in the table ({prov['runs_in_csv']} in runs.csv, "
        f"{prov['superseded']} superseded"
        + (
            f", {prov['folded']} folded into a later run of the same training"
            if prov.get("folded")
            else ""
        )
        + ")"
    )
    if prov["planned_runs"]:
        done = prov["planned_runs"] - len(prov["missing_runs"])
        runs += f"; {done} of the {prov['planned_runs']} runs the study plans"
        if prov.get("stale_runs"):
            study_file = Path(prov["study_file"]).stem if prov["study_file"] else prov["study"]
            runs += (
                f"; {len(prov['stale_runs'])} of them under an earlier config (their config hash "
                f"is not today's: `lineage-train experiment={study_file}` reruns them)"
            )
        elif prov.get("stale_not_checked"):
            runs += f" (not checked against today's config: {prov['stale_not_checked']})"
    lines = [
        f"Runs: {runs}.",
        f"Code: git {shas or 'unknown'}{dirty}; lineage {', '.join(prov['lineage_versions'])}.",
        f"Data (sha256): {data or 'not logged'}.",
        f"Config hashes: {hashes}.",
        f"Generated: {prov['generated']} ({prov['generated_from']}) by `{prov['command']}`.",
    ]
    lines += [f"Note: {note}." for note in prov.get("notes", [])]
    return lines


# ----- rendering ----------------------------------------------------------------------------


def render_files(
    table: StudyTable, prov: Mapping[str, Any], name: str, title: str
) -> dict[str, str]:
    """Every text file of ``tables/`` as ``{file name: content}``."""
    from lineage.report.table import (
        latex_escape,
        render_csv,
        render_latex,
        render_markdown,
        render_text,
    )

    legend = _legend(table)
    footer = footer_lines(prov)
    markdown = (
        f"### {title}\n\n"
        + render_markdown(table)
        + f"\n{legend}\n\n"
        + "".join(f"- {line}\n" for line in footer)
    )
    notes = [latex_escape(legend)] + [latex_escape(line.replace("`", "")) for line in footer]
    latex = (
        "% Generated by lineage-report from runs.csv: regenerate, do not edit.\n"
        + render_latex(table, title, f"tab:{name}", notes)
    )
    text = render_text(table) + "\n" + _legend(table, "*") + "\n"
    return {
        "table.md": markdown,
        "table.tex": latex,
        "table.csv": render_csv(table),
        "table.txt": text,
        "provenance.json": json.dumps(prov, indent=2, ensure_ascii=False) + "\n",
    }


def write_if_changed(path: Path, content: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != content:
        path.write_text(content, encoding="utf-8")


def update_readme(readme: Path, name: str, markdown_table: str) -> bool:
    """Replace the block between ``<!-- lineage-report:<name>:begin/end -->`` in ``readme``."""
    if not readme.is_file():
        return False
    begin, end = (m.format(name=name) for m in README_MARKERS)
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda _: f"{begin}\n{markdown_table}{end}", text)
    write_if_changed(readme, new)
    return True


def files_digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def log_report_run(tracking: DictConfig, study: str, runs_csv: Path, tables: Path) -> str | None:
    """Log ``runs.csv`` and ``tables/`` to a ``report`` run of the study; returns its id.

    A FINISHED report run with the same files (same digest) is reused, not duplicated. Only into
    the study's existing experiment (``lineage-train`` creates it): ``None`` if there is none, so
    that a report never leaves an experiment behind for a study that has no runs (a typo'd name).
    """
    from lineage.tracking import git_info, open_client

    files = [runs_csv, *sorted(p for p in tables.iterdir() if p.is_file())]
    digest = files_digest(files)
    client = open_client(str(tracking.uri))
    experiment = client.get_experiment_by_name(study)
    if experiment is None or experiment.lifecycle_stage != "active":
        return None
    experiment_id = experiment.experiment_id
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"attributes.status = 'FINISHED' and tags.kind = '{REPORT_KIND}' "
            f"and tags.report_digest = '{digest}'"
        ),
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {"kind": REPORT_KIND, "study": study, "report_digest": digest, **git_info()}
    run = client.create_run(experiment_id, run_name="report", tags=tags)
    try:
        client.log_artifact(run.info.run_id, str(runs_csv))
        client.log_artifacts(run.info.run_id, str(tables), "tables")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


# ----- the app ------------------------------------------------------------------------------


def _store_exists(uri: str) -> bool:
    from lineage.tracking import sqlite_path

    path = sqlite_path(uri)
    return path is None or path.exists()


def dashboard_url(tracking: DictConfig, study: str, host: str, port: int) -> str:
    """``http://host:port/#/experiments/<id>/runs`` (the base URL if the study has no runs)."""
    base = f"http://{host}:{port}"
    if not tracking.get("enabled", True) or not _store_exists(str(tracking.uri)):
        return base
    from lineage.tracking import open_client

    experiment = open_client(str(tracking.uri)).get_experiment_by_name(study)
    return base if experiment is None else f"{base}/#/experiments/{experiment.experiment_id}/runs"


def study_files(conf_dir: Path) -> list[tuple[str, str]]:
    """``(file name, study)`` of every study file in ``conf_dir/experiment/``."""
    files = []
    for path in sorted((conf_dir / "experiment").glob("*.yaml")):
        try:
            study = str(OmegaConf.load(path).get("study", "") or "")
        except Exception:  # a study file that does not parse alone: its name is still a choice
            study = ""
        files.append((path.stem, study))
    return files


def store_studies(client) -> list[str]:
    """The names of the store's active experiments (MLflow's own empty ``Default`` left out)."""
    names = []
    for experiment in client.search_experiments():
        if experiment.experiment_id == "0" and experiment.name == "Default":
            if not client.search_runs([experiment.experiment_id], max_results=1):
                continue
        names.append(experiment.name)
    return sorted(names)


def _studies_hint(
    study: str, experiment_choice: str | None, in_store: Sequence[str] | None, store_note: str
) -> list[str]:
    """Lines naming the studies there are, and the likely one when ``study`` is a typo."""
    files = study_files(Path(CONF_DIR))
    lines = []
    if in_store is not None:
        listed = ", ".join(in_store) if in_store else "none"
        lines.append(f"Studies in the store: {listed} (lineage-report study=<study>).")
    else:
        lines.append(f"Studies in the store: not read ({store_note}).")
    listed = ", ".join(f"{stem} (study {name or '?'})" for stem, name in files) or "none"
    lines.append(f"Study files in conf/experiment/: {listed} (lineage-report experiment=<file>).")
    if experiment_choice is None:
        stems = {stem: name for stem, name in files}
        if study in stems and stems[study] != study:
            lines.append(f"Did you mean experiment={study} (study {stems[study]})?")
        else:
            known = [*(in_store or []), *(name for _, name in files if name)]
            close = difflib.get_close_matches(study, list(dict.fromkeys(known)), n=1)
            if close:
                lines.append(f"Did you mean study={close[0]}?")
    return lines


def _store_note(cfg: DictConfig) -> str:
    """Why the store is not read ("" when it is)."""
    tracking = cfg.tracking
    if cfg.source != "mlflow":
        return f"source={cfg.source}"
    if not tracking.get("enabled", True):
        return "tracking.enabled=false"
    if not _store_exists(str(tracking.uri)):
        return f"no store at {tracking.uri}"
    return ""


def report(cfg: DictConfig, experiment_choice: str | None = None) -> dict[str, Any]:
    """Collect, merge, render and log one study's report; returns what was written.

    Args:
        cfg: the composed ``report`` config.
        experiment_choice: the study file's name (``experiment=<name>``), if one was given.

    Returns:
        ``{"name", "out_dir", "runs_csv", "source", "store_note", "store_runs", "csv_runs",
        "table", "text", "files", "provenance", "report_run_id", "missing", "stale",
        "stale_not_checked"}``: ``source`` is where the runs came from (the store URI, or
        ``runs.csv`` alone when ``source=csv`` or there is no store); ``store_note`` why the
        store was not read ("" when it was);
        ``store_runs`` the finished runs read from the store (``None`` when it was not read);
        ``csv_runs`` the rows ``runs.csv`` held before the store's runs were merged in;
        ``missing`` the planned runs not finished, ``stale`` those finished under an earlier
        config (:func:`check_stale`), ``stale_not_checked`` why that was not checked, or None.

    Raises:
        ReportError: an unknown ``source``; the study has no runs, neither in the store nor
            in ``runs.csv``; or ``study=`` names a study whose folder
            (``experiments/<study>/``) holds another study's ``runs.csv``. Nothing is written
            and no experiment is created.
    """
    study = str(cfg.study)
    name = study_file_name(study, experiment_choice, Path(CONF_DIR))
    out_dir = (
        Path(cfg.out_dir)
        if cfg.get("out_dir")
        else (Path(cfg.paths.root_dir) / "experiments" / name)
    )
    runs_csv, tables = out_dir / "runs.csv", out_dir / "tables"
    if cfg.source not in ("mlflow", "csv"):
        raise ReportError(f"source={cfg.source!r}: use mlflow (the store) or csv (runs.csv only)")
    tracking = cfg.tracking
    store_note = _store_note(cfg)
    use_store = not store_note
    client = None
    if use_store:
        from lineage.tracking import open_client

        client = open_client(str(tracking.uri))
    rows = read_runs_csv(runs_csv)
    csv_runs = len(rows)
    # `study=lineage_lee` for `lineage-lee`: the folder named after the typo is the study file
    # lineage_lee's, whose runs.csv is another study's; rendering it would relabel that study
    others = sorted({r.get("tags.study", "") for r in rows} - {""})
    if experiment_choice is None and not cfg.get("out_dir") and others and study not in others:
        hint = _studies_hint(study, None, store_studies(client) if client else None, store_note)
        raise ReportError(
            "\n".join(
                [
                    f"study {study!r}: {_relative(runs_csv)} holds the runs of study "
                    f"{', '.join(others)}, not of {study!r}; nothing written (out_dir=<folder> "
                    "reports this study elsewhere).",
                    *hint,
                ]
            )
        )
    store_runs = None
    if client is not None:
        spec = cfg.runs_csv
        new = read_store(
            client,
            study,
            params=list(spec.params),
            exclude_params=list(spec.exclude_params),
            histories=list(spec.histories),
        )
        store_runs = len(new)
        rows = merge_runs(rows, new)
    sweep, overrides = None, []
    if experiment_choice and HydraConfig.initialized():
        sweep = HydraConfig.get().sweeper.get("params")
        overrides = list(HydraConfig.get().overrides.task)
    planned = planned_runs(sweep, tracking.get("only_seeds"))
    if not rows:
        where = (
            f"no finished run in the store {tracking.uri}"
            if use_store
            else f"the store not read ({store_note})"
        )
        lines = [f"study {study!r} has no runs: {where}, and no {_relative(runs_csv)}."]
        if experiment_choice:
            plans = f"its {len(planned)} planned runs" if planned else "its runs"
            lines.append(
                f"conf/experiment/{name}.yaml is the study: `lineage-train experiment={name}` "
                f"trains {plans}."
            )
        lines += _studies_hint(
            study, experiment_choice, store_studies(client) if client else None, store_note
        )
        raise ReportError("\n".join(lines))
    result: dict[str, Any] = {
        "name": name,
        "out_dir": out_dir,
        "runs_csv": runs_csv,
        "source": str(tracking.uri) if use_store else str(runs_csv),
        "store_note": store_note,
        "store_runs": store_runs,
        "csv_runs": csv_runs,
        "table": None,
        "text": "",
        "files": [],
        "provenance": None,
        "report_run_id": None,
        "missing": [],
        "stale": [],
        "stale_not_checked": None,
    }
    from lineage.report.plots import write_figures
    from lineage.report.table import build_table, render_markdown

    write_runs_csv(runs_csv, rows)
    rows = read_runs_csv(runs_csv)  # the tables are rendered from the file, as anyone would
    table = build_table(rows, list(cfg.table.columns), dict(cfg.table.task_names))
    missing = missing_runs(planned, rows)
    stale, not_checked = check_stale(name, sweep, planned, missing, rows, overrides)
    prov = provenance(
        table,
        rows,
        study=study,
        name=name,
        planned=planned,
        missing=missing,
        stale=stale,
        stale_not_checked=not_checked,
    )
    title = f"Study {study} ({', '.join(sorted(set(table.frame['corpus'])))})"
    tables.mkdir(parents=True, exist_ok=True)
    contents = render_files(table, prov, name, title)
    for file_name, content in contents.items():
        write_if_changed(tables / file_name, content)
    figures = write_figures(table, tables)
    # the studies' index (experiments/README.md) and the project's front page, where they hold
    # the study's markers
    markdown = render_markdown(table)
    # (not when the output goes elsewhere: `make demo` leaves the checked-in pages alone)
    if not cfg.get("out_dir"):
        for readme in dict.fromkeys(
            [out_dir.parent / "README.md", Path(cfg.paths.root_dir) / "README.md"]
        ):
            update_readme(readme, name, markdown)
    run_id = None
    if use_store and cfg.log_to_mlflow:
        run_id = log_report_run(tracking, study, runs_csv, tables)
    result.update(
        table=table,
        text=contents["table.txt"],
        files=[runs_csv, *(tables / f for f in contents), *figures],
        provenance=prov,
        report_run_id=run_id,
        missing=missing,
        stale=stale,
        stale_not_checked=not_checked,
    )
    return result


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def runs_summary(study: str, result: Mapping[str, Any]) -> str:
    """Where the table's runs came from: the store, ``runs.csv``, and how many are in it."""
    prov = result["provenance"]
    in_table = prov["runs_in_table"]
    superseded = f", {prov['superseded']} superseded" if prov["superseded"] else ""
    if prov.get("folded"):
        superseded += f", {prov['folded']} folded into a later run of the same training"
    if result["store_runs"] is None:
        store = f"not read from the store ({result['store_note']})"
    else:
        n = result["store_runs"]
        store = f"{n} finished run{'' if n == 1 else 's'} from the store {result['source']}"
    csv_path = _relative(result["runs_csv"])
    before, after = result["csv_runs"], prov["runs_in_csv"]
    merged = f", {after} after the merge" if after != before else ""
    return (
        f"Study {study!r}: {in_table} run{'' if in_table == 1 else 's'} in the table"
        f"{superseded}; {store}; {before} row{'' if before == 1 else 's'} from {csv_path}"
        f"{merged}."
    )


def _listed(runs: Sequence[PlannedRun], n: int = 12) -> str:
    more = len(runs) - n
    return ", ".join(str(p) for p in runs[:n]) + (f", … {more} more" if more > 0 else "")


@hydra.main(config_path=CONF_DIR, config_name="report", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from lineage.data.sources import DataError

    choice = HydraConfig.get().runtime.choices.get("experiment")
    if cfg.action not in ("report", "url"):
        print(f"lineage-report: action={cfg.action!r}: use report or url", file=sys.stderr)
        raise SystemExit(2)
    try:
        if cfg.action == "url":
            print(dashboard_url(cfg.tracking, str(cfg.study), cfg.ui.host, int(cfg.ui.port)))
            return
        result = report(cfg, choice)
    except (ReportError, DataError) as err:  # e.g. a tracking server that does not answer
        print(f"lineage-report: {err}", file=sys.stderr)  # what to fix, no traceback
        raise SystemExit(2) from None
    print(f"\n{runs_summary(str(cfg.study), result)}\n")
    prov = result["provenance"]
    print(result["text"])
    if result["missing"]:
        print(
            f"Not finished yet: {len(result['missing'])} of {prov['planned_runs']} planned runs "
            f"({_listed(result['missing'])})."
        )
    if result["stale"]:
        done = prov["planned_runs"] - len(result["missing"])
        print(
            "Under an earlier config (their config hash is not today's: "
            f"`lineage-train experiment={result['name']}` reruns them): {len(result['stale'])} "
            f"of the {done} finished planned runs ({_listed(result['stale'])})."
        )
    elif result["stale_not_checked"]:
        print(f"Not checked against today's config: {result['stale_not_checked']}.")
    from lineage.report.plots import FIGURES

    n_fig = len(FIGURES)
    if result["report_run_id"]:
        logged = f"; MLflow report run {result['report_run_id']}"
    elif result["store_runs"] is not None and cfg.log_to_mlflow:
        logged = f"; no MLflow report run (the store has no experiment {cfg.study!r})"
    else:
        logged = ""
    print(
        f"Written: {_relative(result['runs_csv'])} and {_relative(result['out_dir'] / 'tables')}/"
        f" ({', '.join(TABLE_FILES[:3])}, {n_fig} PNG){logged}"
    )


def main() -> None:
    """Console entry point ``lineage-report`` (never a sweep: runs with ``hydra.mode=RUN``)."""
    # A study file sets hydra.mode=MULTIRUN for lineage-train; the report reads the same file
    # but must run once, so the mode is overridden on the command line, where it wins.
    message = lineage.config.unknown_group_options(sys.argv[1:], CONF_DIR)
    if message is not None:  # experiment=lineage_le: one line, not Hydra's search path
        print(f"lineage-report: {message}", file=sys.stderr)
        raise SystemExit(2)
    if "hydra.mode=RUN" not in sys.argv:
        sys.argv.append("hydra.mode=RUN")
    _hydra_main()


if __name__ == "__main__":
    main()
