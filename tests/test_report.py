"""lineage-report on a real MLflow store in a temporary directory, filled with synthetic runs.

The synthetic study has what a real one has: seeds to aggregate, a family with no perplexity
(word2vec), a family that cannot answer a task (uniform), a task only one seed reports, a
fine-tuning child run, a superseded run, a FAILED run and a previous report run (both ignored).
Its Markdown and LaTeX tables are compared with committed snapshots; after a deliberate change,
``LINEAGE_UPDATE_SNAPSHOTS=1 pytest tests/test_report.py`` rewrites them.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF
from mlflow.entities import Metric, Param
from omegaconf import OmegaConf

from lineage.report import collect
from lineage.report.plots import FIGURES, curves
from lineage.report.summary import (
    dashboard_url,
    footer_lines,
    missing_runs,
    planned_runs,
    provenance,
    render_files,
    report,
)
from lineage.report.table import (
    Column,
    build_table,
    compared_across_corpora,
    format_count,
    format_value,
    natural_key,
    render_csv,
    render_latex,
    render_markdown,
    render_text,
)
from lineage.tracking import Run, ensure_experiment, open_client

SNAPSHOTS = Path(__file__).resolve().parent / "fixtures" / "report"
STUDY = "synthetic"
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC, in ms
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGESTS = {"train": "a" * 36, "val": "b" * 36, "test": "c" * 36}

V, T, SST, SMS = "val/ppl", "test/ppl", "sst2/test/accuracy", "sms_spam/test/accuracy"
P, S, N = "cost/params", "cost/train_seconds", "test/tokens"
# (model, family, year, seed, config hash, metrics, val/ppl per epoch); times follow list order
RUNS = [
    ("uniform", "rule", 1948, 0, "u0", {V: 1000.0, T: 1000.0, N: 82430, P: 0}, []),
    ("uniform", "rule", 1948, 1, "u1", {V: 1000.0, T: 1000.0, N: 82430, P: 0}, []),
    # superseded: the same model and seed as the next run, under an older config
    ("ngram", "ngram", 1995, 0, "n0-old", {V: 999.0, T: 999.0}, []),
    ("ngram", "ngram", 1995, 0, "n0", {V: 150.0, T: 141.0, N: 82430, SST: 0.80, P: 173143, S: 1.5},
     []),
    ("ngram", "ngram", 1995, 1, "n1", {V: 151.0, T: 142.0, SST: 0.81, P: 173143, S: 1.7}, []),
    ("ngram", "ngram", 1995, 2, "n2", {V: 152.0, T: 143.5, SST: 0.82, P: 173143, S: 1.6}, []),
    ("lstm_small", "lstm", 1997, 0, "l0", {T: 120.0, SST: 0.85, SMS: 0.97, P: 4.65e6, S: 2700.0},
     [300.0, 200.0, 140.0]),
    ("lstm_small", "lstm", 1997, 1, "l1", {T: 124.0, SST: 0.87, P: 4.65e6, S: 2760.0},
     [310.0, 205.0, 144.0]),
    ("word2vec", "word2vec", 2013, 0, "w0", {SST: 0.78, P: 1e6, S: 30.0}, []),
]  # fmt: skip


def _log_run(client, experiment_id, i, tags, metrics, history=(), status="FINISHED", name=None):
    start = T0 + i * 60_000
    run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=name)
    run_id = run.info.run_id
    items = [Metric(k, float(v), start, 0) for k, v in metrics.items()]
    items += [Metric("val/ppl", v, start + step, step) for step, v in enumerate(history)]
    params = [Param("model.name", tags.get("model", "")), Param("seed", tags.get("seed", ""))]
    client.log_batch(run_id, metrics=items, params=params)
    client.set_terminated(run_id, status, end_time=start + 30_000)
    return run_id


def make_store(root: Path, study: str = STUDY) -> tuple[str, dict[str, str]]:
    """A real SQLite store under ``root/mlruns`` holding the synthetic study; returns its URI and
    the run ids by config hash."""
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = open_client(uri)
    experiment_id = ensure_experiment(client, study, str(root / "mlruns" / "artifacts"))
    ids = {}
    for i, (model, family, year, seed, chash, metrics, history) in enumerate(RUNS):
        tags = {
            "model": model,
            "family": family,
            "year": str(year),
            "seed": str(seed),
            "corpus": "ptb",
            "config_hash": chash,
            "git_sha": SHA,
            "git_dirty": "false",
            "lineage_version": "0.1.0",
            "study": study,
        }
        if "sst2/test/accuracy" in metrics:
            tags["adaptation"] = "probe"
        ids[chash] = _log_run(client, experiment_id, i, tags, metrics, history, name=model)
        Run(client, ids[chash], experiment_id, uri).log_datasets(
            "ptb", {s: {"uri": f"/data/ptb.{s}.txt", "digest": d} for s, d in DIGESTS.items()}
        )
    n = len(RUNS)
    # fine-tuning of lstm_small seed 0, logged as a child run (identity tags from the parent)
    child_tags = {"mlflow.parentRunId": ids["l0"], "adaptation": "finetune"}
    ids["l0/finetune"] = _log_run(
        client, experiment_id, n, child_tags, {"sst2/test/accuracy": 0.88}, name="finetune"
    )
    failed = {"model": "ngram", "seed": "3", "config_hash": "n3", "year": "1995", "family": "ngram"}
    _log_run(client, experiment_id, n + 1, failed, {"test/ppl": 1.0}, status="FAILED")
    _log_run(client, experiment_id, n + 2, {"kind": "report"}, {}, name="report")
    return uri, ids


def report_cfg(root: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    import lineage.config  # noqa: F401

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("report", overrides=[f"paths.root_dir={root}", *overrides])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The synthetic store and its report, made once for the module's read-only tests."""
    root = tmp_path_factory.mktemp("study")
    uri, ids = make_store(root)
    result = report(report_cfg(root, f"study={STUDY}"))
    return root, uri, ids, result


def copy_of(built, dest: Path) -> Path:
    """A private copy of the built store and outputs (for tests that change them)."""
    root = built[0]
    shutil.copytree(root / "mlruns", dest / "mlruns")
    shutil.copytree(root / "experiments", dest / "experiments")
    return dest


def _row(table, model, adaptation=""):
    frame = table.frame
    hit = frame[(frame["model"] == model) & (frame["adaptation"].str.contains(adaptation))]
    assert len(hit) >= 1, (model, adaptation)
    return hit.iloc[0]


# ----- the table ----------------------------------------------------------------------------


def test_table_matches_the_committed_snapshots(built):
    root, _, _, result = built
    tables = root / "experiments" / STUDY / "tables"
    for name in ("table.md", "table.tex"):
        produced = (tables / name).read_text(encoding="utf-8")
        snapshot = SNAPSHOTS / name
        if os.environ.get("LINEAGE_UPDATE_SNAPSHOTS") == "1":
            snapshot.write_text(produced, encoding="utf-8")
        assert produced == snapshot.read_text(encoding="utf-8"), f"{name} differs from snapshot"
    # rows in lineage order; the fine-tuning child run is its own row after its job's row
    assert list(result["table"].frame["model"]) == [
        "uniform",
        "ngram",
        "lstm_small",
        "lstm_small",
        "word2vec",
    ]
    assert result["provenance"]["runs_in_table"] == 9  # 2 + 3 + 2 + 1 child + 1
    assert result["provenance"]["runs_in_csv"] == 10
    assert result["provenance"]["superseded"] == 1
    assert result["provenance"]["git_shas"] == {SHA: 9}


def test_mean_and_sd_match_hand_arithmetic(built):
    root, _, _, result = built
    table = result["table"]
    ngram = _row(table, "ngram")
    # test ppl 141, 142, 143.5: mean 426.5 / 3; squared deviations sum to 19/6, over n - 1 = 2
    assert ngram["n"] == 3 and ngram["test_ppl.n"] == 3
    assert ngram["test_ppl.mean"] == pytest.approx(426.5 / 3, abs=1e-12)
    assert ngram["test_ppl.sd"] == pytest.approx(math.sqrt(19 / 12), abs=1e-12)
    assert ngram["val_ppl.mean"] == pytest.approx(151.0) and ngram["val_ppl.sd"] == pytest.approx(
        1.0
    )
    lstm = _row(table, "lstm_small", "probe")
    assert lstm["test_ppl.sd"] == pytest.approx(math.sqrt(8.0))  # 120, 124
    text = (root / "experiments" / STUDY / "tables" / "table.md").read_text()
    assert "142.17 ± 1.26" in text  # ngram test ppl
    assert "**122.00 ± 2.83**" in text  # lstm_small test ppl, the best
    assert "81.0 ± 1.0" in text  # ngram SST-2 accuracy, in percent
    assert "45.5 ± 0.7 min" in text  # lstm_small train time: 2730 s ± 42.4 s
    assert "1,000.00 ± 0.00" in text  # uniform: two seeds, identical
    assert "999" not in text  # the superseded run (test ppl 999) is in no number


def _markdown_rows(path: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Header index and cells by model name (the last row of a model wins) of a table.md."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines]
    header = {h: i for i, h in enumerate(cells[0])}
    return header, {row[0].strip("`"): row for row in cells[2:]}


def test_dash_cells_and_partial_counts(built):
    root = built[0]
    path = root / "experiments" / STUDY / "tables" / "table.md"
    col, row = _markdown_rows(path)
    assert row["word2vec"][col["Test ppl"]] == "—"  # not a left-to-right LM
    assert row["word2vec"][col["Valid ppl"]] == "—"
    assert row["uniform"][col["SST-2 acc. (%)"]] == "—"  # cannot answer the task
    assert row["uniform"][col["Train time"]] == "—"  # nothing to train
    text = path.read_text()
    # one of lstm_small's two seeds reports SMS spam, and a lone value is not marked best
    assert "97.0 (n=1)" in text and "**97.0" not in text
    assert "**88.0**" in text  # the fine-tuned row is the best on SST-2


def test_formats():
    count = Column("p", "cost/params", "P", format="count", spread=False)
    assert [format_count(v) for v in (0, 82, 29204, 173143, 4_650_000, 66e6, 1.2e9)] == [
        "0",
        "82",
        "29.2k",
        "173k",
        "4.65M",
        "66.0M",
        "1.20B",
    ]
    assert format_value(173143.0, 0.0, count) == "173k"  # spread: false shows the mean only
    pct = Column("a", "x/test/accuracy", "A", better="higher", format="percent", decimals=1)
    assert format_value(0.8386, float("nan"), pct) == "83.9"
    dur = Column("t", "cost/train_seconds", "T", format="duration")
    assert format_value(5400.0, 360.0, dur) == "1.50 ± 0.10 h"
    assert format_value(float("nan"), float("nan"), dur) == ""
    assert sorted(["o=10", "o=2", "o=3 p=1", "o=3"], key=natural_key) == [
        "o=2",
        "o=3",
        "o=3 p=1",
        "o=10",
    ]
    # the unit and the decimals follow the value as shown, after rounding
    assert format_count(999.6) == "1.00k"
    assert [format_value(v, float("nan"), dur) for v in (59.97, 9.996, 3599.0, 42.0)] == [
        "1.00 min",
        "10.0 s",
        "1.00 h",
        "42.0 s",
    ]


def test_task_columns_are_discovered_from_metric_names():
    rows = [
        {"run_id": "a", "start_time": "1", "tags.model": "m", "tags.seed": "0", "tags.year": "1",
         "tags.config_hash": "h", "metrics.zz_task/test/accuracy": "0.5",
         "metrics.sst2/test/accuracy": "0.6", "metrics.sst2/test/accuracy_std": "0.1"},
    ]  # fmt: skip
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {"sst2": "SST-2"})
    headers = [c.header for c in table.columns]
    assert headers == [
        "Valid ppl",
        "Test ppl",
        "Test tokens",
        "SST-2 acc. (%)",
        "zz_task acc. (%)",
        "Params",
        "Train time",
    ]


def test_a_job_that_fine_tunes_two_tasks_keeps_both_child_runs():
    """One child run per task and adaptation: neither hides the other, in the merge or the table."""
    job = {"tags.model": "lstm_small", "tags.family": "lstm", "tags.year": "1997",
           "tags.corpus": "ptb", "tags.config_hash": "h"}  # fmt: skip
    rows = []
    for seed in (0, 1):
        parent = f"p{seed}"
        rows += [
            {**job, "run_id": parent, "start_time": f"2026-01-0{seed + 1}", "tags.seed": str(seed),
             "tags.adaptation": "probe", "metrics.sst2/test/accuracy": "0.6",
             "metrics.sms_spam/test/accuracy": "0.9"},
            {**job, "run_id": f"{parent}-sst2", "parent_run_id": parent, "tags.seed": str(seed),
             "start_time": f"2026-01-0{seed + 1}T01", "tags.adaptation": "finetune",
             "tags.task": "sst2", "metrics.sst2/test/accuracy": str(0.80 + seed / 100)},
            {**job, "run_id": f"{parent}-sms", "parent_run_id": parent, "tags.seed": str(seed),
             "start_time": f"2026-01-0{seed + 1}T02", "tags.adaptation": "finetune",
             "tags.task": "sms_spam", "metrics.sms_spam/test/accuracy": "0.98"},
        ]  # fmt: skip
        rows[-3]["tags.config_hash"] = f"h{seed}"  # the seed is in the job's config
        rows[-2]["tags.config_hash"] = rows[-1]["tags.config_hash"] = f"h{seed}"
    assert len(collect.merge_runs([], rows)) == 6
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {"sst2": "SST-2", "sms_spam": "SMS spam"})
    assert table.superseded == 0
    finetune = _row(table, "lstm_small", "finetune")
    assert finetune["n"] == 2  # two seeds, four child runs
    assert finetune["sst2_acc.mean"] == pytest.approx(0.805)
    assert finetune["sms_spam_acc.mean"] == pytest.approx(0.98)
    assert finetune["config_hashes"] == "h0 h1"
    # rows written by another tool (no git or version tags) still get their provenance
    made = provenance(table, rows, study="s", name="s", planned=[], missing=[])
    assert made["git_dirty_runs"] == 0 and made["lineage_versions"] == []
    assert made["runs_in_table"] == 6


def _lstm_job(run_id, day, seed, fit, **metrics):
    values = {f"metrics.{k}": str(v) for k, v in metrics.items()}
    return {"run_id": run_id, "start_time": f"2026-01-{day:02d}", "tags.model": "lstm_small",
            "tags.family": "lstm", "tags.year": "1997", "tags.corpus": "ptb",
            "tags.seed": str(seed), "tags.config_hash": f"{run_id}-h", "tags.fit_hash": fit,
            "tags.adaptation": "probe", **values}  # fmt: skip


def test_a_rerun_with_other_tasks_keeps_the_earlier_tasks_of_the_same_training():
    """The same LM (``fit_hash``) scored on SST-2, then on SMS spam: the seed has both; another
    training supersedes it, and takes its fine-tuning child with it."""
    sst2, sms = "sst2/test/accuracy", "sms_spam/test/accuracy"
    rows = [
        _lstm_job("a0", 1, 0, "f0", **{"test/ppl": 120, sst2: 0.80}),
        _lstm_job("b0", 2, 0, "f0", **{"test/ppl": 121, sms: 0.95}),
        _lstm_job("a1", 3, 1, "f1", **{"test/ppl": 118, sst2: 0.82}),
        # seed 2: trained with fine-tuning, then trained again otherwise (another fit_hash)
        _lstm_job("c2", 4, 2, "old", **{"test/ppl": 999, sst2: 0.10}),
        {**_lstm_job("c2-ft", 4, 2, "old", **{sst2: 0.99}), "parent_run_id": "c2",
         "tags.adaptation": "finetune", "tags.task": "sst2"},
        _lstm_job("d2", 5, 2, "new", **{"test/ppl": 119, sst2: 0.84}),
    ]  # fmt: skip
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {"sst2": "SST-2", "sms_spam": "SMS spam"})
    assert (table.superseded, table.folded) == (2, 1)  # c2 and its child; a0 into b0
    row = _row(table, "lstm_small")
    assert row["n"] == 3
    assert row["sst2_acc.mean"] == pytest.approx(0.82) and row["sst2_acc.n"] == 3
    assert row["sms_spam_acc.n"] == 1
    assert row["test_ppl.mean"] == pytest.approx(np.mean([121, 118, 119]))  # the latest's own
    assert list(table.frame["adaptation"]) == ["probe"]  # no fine-tuning row from c2's child
    assert sorted(table.runs["run_id"]) == ["a0", "a1", "b0", "d2"]  # the runs whose values count
    made = provenance(table, rows, study="s", name="s", planned=[], missing=[])
    assert (made["runs_in_table"], made["superseded"], made["folded"]) == (4, 2, 1)
    assert made["config_hashes"]["lstm_small (probe)"] == ["b0-h", "a0-h", "a1-h", "d2-h"]
    assert footer_lines(made)[0] == (
        "Runs: 4 runs in the table (6 in runs.csv, 2 superseded, 1 folded into a later run of "
        "the same training)."
    )
    # without the tag (runs logged before it) an older run is superseded, never merged
    untagged = [{k: v for k, v in r.items() if k != "tags.fit_hash"} for r in rows[:2]]
    table = build_table(untagged, specs, {})
    assert (table.superseded, table.folded) == (1, 0)
    assert "sst2_acc.mean" not in table.frame or table.frame["sst2_acc.n"].eq(0).all()


def test_a_task_column_counts_only_the_newest_task_version_of_its_row():
    """SMS spam version 2 dropped messages that leaked from train into test: seeds scored on
    version 1 are not averaged with those on version 2 (they are named under the table)."""
    sms = "sms_spam/test/accuracy"
    rows = [
        {**_lstm_job("v1", 1, 0, "f0", **{sms: 0.90}), "params.task.sms_spam.source": "sms_spam"},
        {**_lstm_job("v2", 2, 1, "f1", **{sms: 0.96}), "params.task.sms_spam.source": "sms_spam",
         "params.task.sms_spam.version": "2"},
        {**_lstm_job("v2-ft", 3, 1, "f1", **{sms: 0.99}), "parent_run_id": "v2",
         "tags.adaptation": "finetune", "tags.task": "sms_spam"},
        {**_lstm_job("v1-ft", 3, 0, "f0", **{sms: 0.20}), "parent_run_id": "v1",
         "tags.adaptation": "finetune", "tags.task": "sms_spam"},
    ]  # fmt: skip
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {"sms_spam": "SMS spam"})
    probe, finetune = _row(table, "lstm_small", "probe"), _row(table, "lstm_small", "finetune")
    assert (probe["sms_spam_acc.mean"], probe["sms_spam_acc.n"]) == (pytest.approx(0.96), 1)
    # a child run has its job's version
    assert (finetune["sms_spam_acc.mean"], finetune["sms_spam_acc.n"]) == (pytest.approx(0.99), 1)
    assert table.notes == [
        "lstm_small, SMS spam acc. (%): 1 run(s) of task version 1 left out, version 2 counted",
        "lstm_small (finetune), SMS spam acc. (%): 1 run(s) of task version 1 left out, "
        "version 2 counted",
    ]
    made = provenance(table, rows, study="s", name="s", planned=[], missing=[])
    assert made["notes"] == table.notes
    assert footer_lines(made)[-1] == f"Note: {table.notes[-1]}."


def test_rows_counting_different_task_versions_are_named_under_the_table():
    """Two rows scored on SMS spam version 1, one on version 2: their cells do not compare, and
    the table says which row counts which version."""
    sms = "sms_spam/test/accuracy"

    def job(run_id, model, version, value):
        row = {**_lstm_job(run_id, 1, 0, f"f{run_id}", **{sms: value}), "tags.model": model}
        row["params.task.sms_spam.source"] = "sms_spam"
        if version > 1:
            row["params.task.sms_spam.version"] = str(version)
        return row

    rows = [job("a", "lstm_small", 1, 0.93), job("b", "lstm_tiny", 1, 0.90)]
    rows.append(job("c", "lstm_medium", 2, 0.95))
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {"sms_spam": "SMS spam"})
    assert table.notes == [
        "SMS spam acc. (%): rows of different task versions, which do not compare: version 2 in "
        "lstm_medium; version 1 in the other 2"
    ]
    # one version throughout: nothing to say
    assert build_table(rows[:2], specs, {"sms_spam": "SMS spam"}).notes == []


def test_rows_follow_the_lineage_then_the_year():
    def run(model, family, year):
        return {"run_id": model, "start_time": "1", "tags.model": model, "tags.family": family,
                "tags.seed": "0", "tags.year": str(year), "tags.config_hash": model,
                "metrics.test/ppl": "100"}  # fmt: skip

    rows = [
        run("transformer_small", "transformer", 2017),
        run("cnn", "cnn", 2014),  # not in the lineage: after it
        run("gru_small", "gru", 2014),
        run("glove", "glove", 2014),
        run("rnn_small", "rnn", 1990),
        run("ngram", "ngram", 1995),
        run("word2vec", "word2vec", 2013),
        run("uniform", "rule", 1948),
        run("rule", "rule", 1957),
    ]
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {})
    assert list(table.frame["model"]) == [
        "uniform", "rule", "ngram", "rnn_small", "gru_small", "word2vec", "glove",
        "transformer_small", "cnn",
    ]  # fmt: skip


def test_plot_labels_name_the_corpus_when_a_study_has_several():
    from lineage.report.plots import _labels

    def run(corpus, history):
        return {"run_id": corpus, "start_time": "1", "tags.model": "ngram", "tags.seed": "0",
                "tags.family": "ngram", "tags.year": "1995", "tags.config_hash": corpus,
                "tags.corpus": corpus, "metrics.test/ppl": "100",
                "history.val/ppl": history}  # fmt: skip

    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table([run("lee", "90 80"), run("ptb", "150 140")], specs, {})
    assert sorted(_labels(table)) == ["ngram (lee)", "ngram (ptb)"]
    assert sorted(label for _, label, _ in curves(table)) == ["ngram (lee)", "ngram (ptb)"]
    one = build_table([run("ptb", "150 140")], specs, {})
    assert _labels(one) == ["ngram"]


# a cluster of long-named rows with near-equal size, time and perplexity, the largest models
# (right edge of the size plot), two far points that set the axes' span, and one learning curve
CLUSTER = [
    ("transformer_small_long_name", 4.20e6, 3000.0, "112"),
    ("lstm_small_with_a_long_name", 4.25e6, 3050.0, "112.5"),
    ("gru_small_with_a_long_name", 4.30e6, 3100.0, "113"),
    ("rnn_small_with_a_long_name", 4.35e6, 3150.0, "113.5"),
    ("ngram_kn3_with_a_long_name", 4.40e6, 3200.0, "114"),
    ("rule", 80.0, 0.1, "2500"),
    ("ngram_add_k", 3e5, 1.0, "270"),
    ("lstm_tiny", 1e6, 600.0, "400 250 180 150"),
]


def _cluster_table():
    def run(i, model, params, seconds, history):
        last = history.split()[-1]
        return {"run_id": f"c{i}", "start_time": str(i), "tags.model": model, "tags.seed": "0",
                "tags.family": model.split("_")[0], "tags.year": "2000",
                "tags.config_hash": f"h{i}", "tags.corpus": "ptb", "metrics.test/ppl": last,
                "metrics.val/ppl": last, "metrics.cost/params": str(params),
                "metrics.cost/train_seconds": str(seconds), "history.val/ppl": history}  # fmt: skip

    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    return build_table([run(i, *row) for i, row in enumerate(CLUSTER)], specs, {})


def _label_boxes(monkeypatch, draw, labels):
    """The figure ``draw`` would save, drawn on the Agg canvas instead: its window extent, the
    plotting area's, and the extent of each text artist that reads one of ``labels``."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from lineage.report import plots

    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: kept.append(fig) or path)
    draw()
    (fig,) = kept
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_text().strip() in labels]
    assert sorted(t.get_text().strip() for t in texts) == sorted(labels)
    boxes = {t.get_text().strip(): t.get_window_extent(renderer) for t in texts}
    frame, area = fig.bbox, fig.axes[0].get_window_extent(renderer)
    plt.close(fig)
    return frame, area, boxes


def _assert_readable(frame, boxes):
    for name, box in boxes.items():
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
        assert inside and box.y1 <= frame.y1, f"{name} is cut off: {box} outside {frame}"
    names = sorted(boxes)
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            p, q = boxes[a], boxes[b]
            apart = p.x1 <= q.x0 or q.x1 <= p.x0 or p.y1 <= q.y0 or q.y1 <= p.y0
            assert apart, f"the labels {a!r} and {b!r} overlap: {p} and {q}"


@pytest.mark.parametrize(("metric", "name"), [(P, "Parameters"), (S, "Training time (s)")])
def test_scatter_labels_of_close_points_neither_overlap_nor_leave_the_figure(
    monkeypatch, tmp_path, metric, name
):
    from lineage.report.plots import scatter

    table = _cluster_table()
    labels = [row[0] for row in CLUSTER]
    frame, _, boxes = _label_boxes(
        monkeypatch, lambda: scatter(table, metric, name, "title", tmp_path / "s.png"), labels
    )
    _assert_readable(frame, boxes)


def test_reference_line_labels_neither_overlap_nor_cover_the_curves(monkeypatch, tmp_path):
    from lineage.report.plots import learning_curves

    table = _cluster_table()
    references = [row[0] for row in CLUSTER if len(row[3].split()) == 1]
    frame, area, boxes = _label_boxes(
        monkeypatch, lambda: learning_curves(table, tmp_path / "c.png"), references
    )
    _assert_readable(frame, boxes)
    for name, box in boxes.items():  # beside the plotting area, so off every curve
        assert box.x0 >= area.x1, f"{name} is drawn over the curves"


SWEEP_STUDY = "sweep"
SMALL = "model.max_epochs=1 trainer.limit_train_batches=5"
# (model, overrides, seed, config hash, metrics, val/ppl per epoch); times follow list order
SWEEP_RUNS = [
    ("ngram", "", 0, "n0", {T: 141.0, P: 2.5e6}, []),
    # an earlier code version of the order-2 point: superseded by the next run
    ("ngram", "model.lm.order=2", 0, "o2-old", {T: 999.0, P: 3e5}, []),
    ("ngram", "model.lm.order=2", 0, "o2", {T: 180.0, P: 3e5}, []),
    ("ngram", "model.lm.order=2", 1, "o2s1", {T: 182.0, P: 3e5}, []),
    ("ngram", "model.lm.order=5", 0, "o5", {T: 140.0, P: 2.5e6}, []),
    ("ngram_kn3", "", 0, "k0", {T: 148.0, P: 8.9e5}, []),
    ("lstm_small", "", 0, "l0", {T: 120.0, SST: 0.85, P: 4.65e6}, [300.0, 200.0, 140.0]),
    ("lstm_small", SMALL, 0, "l0-small", {T: 250.0, SST: 0.70, P: 4.65e6}, [300.0, 250.0]),
]
FAMILY = {"ngram": ("ngram", 1995), "ngram_kn3": ("ngram", 1995), "lstm_small": ("lstm", 1997)}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A study whose runs include a sweep (``model.lm.order=2,5``) and a quick variant of
    lstm_small with a fine-tuning child run, reported from a real store."""
    root = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = open_client(uri)
    experiment_id = ensure_experiment(client, SWEEP_STUDY, str(root / "mlruns" / "artifacts"))
    ids = {}
    for i, (model, overrides, seed, chash, metrics, history) in enumerate(SWEEP_RUNS):
        family, year = FAMILY[model]
        tags = {"model": model, "family": family, "year": str(year), "seed": str(seed),
                "corpus": "ptb", "config_hash": chash, "git_sha": SHA,
                "study": SWEEP_STUDY}  # fmt: skip
        if overrides:  # runs recorded before the tag existed have none, as runs without
            tags["overrides"] = overrides
        if SST in metrics:
            tags["adaptation"] = "probe"
        ids[chash] = _log_run(client, experiment_id, i, tags, metrics, history, name=model)
    # the quick variant's fine-tuning: a child run, its identity tags (overrides too) inherited
    child = {"mlflow.parentRunId": ids["l0-small"], "adaptation": "finetune", "task": "sst2"}
    _log_run(client, experiment_id, len(SWEEP_RUNS), child, {SST: 0.75}, name="finetune")
    result = report(report_cfg(root, f"study={SWEEP_STUDY}"))
    return root, result


def test_a_sweep_gives_one_row_per_point(swept):
    """`lineage-train -m model=ngram model.lm.order=2,5`: two runs of one model and seed, two rows
    (the run's overrides tag is in the row's identity); an older run of the same point is still
    superseded; a model's points stay together, the row without overrides first."""
    root, result = swept
    table = result["table"]
    frame = table.frame
    assert list(zip(frame["model"], frame["overrides"], frame["adaptation"], strict=True)) == [
        ("ngram_kn3", "", ""),
        ("ngram", "", ""),  # 2.5M n-grams: after ngram_kn3's 890k, its smaller point with it
        ("ngram", "model.lm.order=2", ""),
        ("ngram", "model.lm.order=5", ""),
        ("lstm_small", "", "probe"),
        ("lstm_small", SMALL, "probe"),
        ("lstm_small", SMALL, "finetune"),
    ]
    assert table.superseded == 1 and table.show_overrides
    order2 = frame.iloc[2]
    assert order2["n"] == 2 and order2["test_ppl.mean"] == pytest.approx(181.0)
    assert order2["config_hashes"] == "o2 o2s1"
    assert frame.iloc[6]["config_hashes"] == "l0-small"  # the child run is its job's point's
    # runs.csv: the child run carries its job's overrides; the sweep's points side by side
    rows = collect.read_runs_csv(root / "experiments" / SWEEP_STUDY / "runs.csv")
    assert next(r for r in rows if r.get("parent_run_id"))["tags.overrides"] == SMALL
    ngram = [r["tags.config_hash"] for r in rows if r["tags.model"] == "ngram"]
    assert ngram == ["n0", "o2-old", "o2", "o2s1", "o5"]  # runs.csv keeps every config's run
    # every rendering names the point; Markdown and LaTeX escape it
    tables = root / "experiments" / SWEEP_STUDY / "tables"
    markdown = (tables / "table.md").read_text()
    assert "| `ngram` [model.lm.order=2] | ngram | 1995 | — | 2 | — | 181.00 ± 1.41 |" in markdown
    assert "| `lstm_small` [model.max\\_epochs=1 trainer.limit\\_train\\_batches=5] |" in markdown
    assert "[…]: the command-line settings" in markdown  # the legend says what brackets mean
    latex = (tables / "table.tex").read_text()
    small = r"model.max\_epochs=1 trainer.limit\_train\_batches=5"
    assert r"\texttt{lstm\_small} [\texttt{" + small + "}] & lstm & 1997 & probe" in latex
    assert "ngram [model.lm.order=2]" in (tables / "table.txt").read_text()
    csv_lines = (tables / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,overrides,family,year,")
    assert csv_lines[3].startswith("ngram,model.lm.order=2,ngram,1995,")
    # provenance: one label per row
    assert result["provenance"]["config_hashes"] == {
        "ngram_kn3": ["k0"],
        "ngram": ["n0"],
        "ngram [model.lm.order=2]": ["o2", "o2s1"],
        "ngram [model.lm.order=5]": ["o5"],
        "lstm_small (probe)": ["l0"],
        f"lstm_small [{SMALL}] (probe)": ["l0-small"],
        f"lstm_small [{SMALL}] (finetune)": ["l0-small"],
    }
    assert f"lstm_small [{SMALL}] (finetune): l0-small" in markdown


def test_a_sweep_points_curves_are_its_own(swept):
    """The learning curves select a row's runs by model, overrides and corpus."""
    table = swept[1]["table"]
    drawn = [(i, label, [list(h) for h in hs]) for i, label, hs in curves(table)]
    assert drawn == [
        (4, "lstm_small", [[300.0, 200.0, 140.0]]),
        (5, f"lstm_small [{SMALL}]", [[300.0, 250.0]]),  # once: the fine-tuning row shares it
    ]


def test_overrides_are_escaped_in_every_format():
    overrides = "model.lm.classes=[a_b,c|d] optimizer.lr=1e-3 x=50%"
    rows = [
        {"run_id": "a", "start_time": "1", "tags.model": "lstm_small", "tags.seed": "0",
         "tags.config_hash": "h", "tags.overrides": overrides, "metrics.test/ppl": "100"},
    ]  # fmt: skip
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {})
    cell = render_markdown(table).splitlines()[2].split(" | ")[0]
    assert cell == r"| `lstm_small` [model.lm.classes=\[a\_b,c\|d\] optimizer.lr=1e-3 x=50%]"
    assert (
        r"\texttt{lstm\_small} [\texttt{model.lm.classes=[a\_b,c|d] optimizer.lr=1e-3 x=50\%}] &"
        in render_latex(table, "t", "tab:t")
    )
    assert render_text(table).splitlines()[1].startswith(f"lstm_small [{overrides}]  ")
    assert render_csv(table).splitlines()[1].startswith(f'lstm_small,"{overrides}",')


def test_a_best_is_judged_on_the_value_shown():
    def run(model, seconds):
        return {"run_id": model, "start_time": "1", "tags.model": model, "tags.family": model,
                "tags.seed": "0", "tags.config_hash": model,
                "metrics.cost/train_seconds": str(seconds)}  # fmt: skip

    specs = [{"key": "t", "metric": "cost/train_seconds", "header": "Train time",
              "better": "lower", "format": "duration"}]  # fmt: skip
    table = build_table([run("a", 3700), run("b", 3710), run("c", 3800)], specs, {})
    frame = table.frame.set_index("model")
    assert [format_value(v, float("nan"), table.columns[0]) for v in frame["t.mean"]] == [
        "1.03 h", "1.03 h", "1.06 h",
    ]  # fmt: skip
    assert dict(frame["t.best"]) == {"a": True, "b": True, "c": False}  # both read 1.03 h


def test_bests_are_found_within_each_corpus():
    """Perplexities of two corpora do not compare: each corpus has its best (a corpus with one
    row has none); a task's accuracy is the same test whatever the corpus: one best overall."""

    def run(model, corpus, ppl, acc=None):
        row = {"run_id": f"{model}-{corpus}", "start_time": "1", "tags.model": model,
               "tags.family": model, "tags.seed": "0", "tags.corpus": corpus,
               "tags.config_hash": f"{model}-{corpus}", "metrics.val/ppl": str(ppl + 5),
               "metrics.test/ppl": str(ppl)}  # fmt: skip
        if acc is not None:
            row["metrics.sst2/test/accuracy"] = str(acc)
        return row

    rows = [
        run("ngram", "ptb", 141.0, 0.80),
        run("lstm", "ptb", 120.0, 0.85),
        run("ngram", "lee", 300.0, 0.79),
        run("lstm", "lee", 300.0, 0.86),  # a tie: both bold
        run("rnn", "wikitext2", 90.0),  # alone on its corpus: not bold, though the lowest
    ]
    specs = OmegaConf.to_container(OmegaConf.load(CONF / "report.yaml").table.columns)
    table = build_table(rows, specs, {"sst2": "SST-2"})
    assert table.show_corpus
    frame = table.frame.set_index(["model", "corpus"])
    best = {k for k, v in frame["test_ppl.best"].items() if v}
    assert best == {("lstm", "ptb"), ("ngram", "lee"), ("lstm", "lee")}
    assert {k for k, v in frame["val_ppl.best"].items() if v} == best
    assert {k for k, v in frame["sst2_acc.best"].items() if v} == {("lstm", "lee")}
    prov = provenance(table, rows, study="s", name="s", planned=[], missing=[])
    assert len(prov["config_hashes"]) == len(frame)  # one label per row: "lstm (ptb)", …
    assert prov["config_hashes"]["lstm (ptb)"] == ["lstm-ptb"]
    markdown = render_files(table, prov, "s", "t")["table.md"]
    assert "within each corpus for what is measured on the corpus" in markdown
    assert "**90.00**" not in markdown and "| **300.00** |" in markdown


@pytest.mark.parametrize(
    "metric,across",
    [("apple/test/accuracy", True), ("intrinsic/simlex_spearman", True), ("val/ppl", False),
     ("test/bits_per_token", False), ("cost/params", False), ("sst2/lm/val_ppl", False)],
)  # fmt: skip
def test_what_is_compared_across_corpora(metric, across):
    # a task whose name holds "ppl" is still a task; an LM's perplexity on a task's texts is not
    assert compared_across_corpora(Column("k", metric, "h")) is across


# ----- files, regeneration, runs.csv --------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    crc = struct.unpack(">I", data[29:33])[0]
    assert zlib.crc32(data[12:29]) == crc, f"{path.name}: bad IHDR checksum"
    return width, height


def test_plots_are_written_as_valid_pngs(built):
    import matplotlib.image as mpimg

    root = built[0]
    tables = root / "experiments" / STUDY / "tables"
    for name in FIGURES:
        width, height = _png_size(tables / name)
        assert width > 300 and height > 200
        pixels = mpimg.imread(tables / name)  # decodes every chunk
        assert pixels.shape[:2] == (height, width)
        assert pixels.std() > 0.01, f"{name} is blank"


def test_regenerating_from_an_unchanged_store_gives_identical_files(built):
    root, uri, _, first = built
    out = root / "experiments" / STUDY
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    second = report(report_cfg(root, f"study={STUDY}"))
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path.name} changed"
    # the files were logged once, to a `report` run that is not a row of the table
    assert first["report_run_id"] == second["report_run_id"] is not None
    client = open_client(uri)
    run = client.get_run(first["report_run_id"])
    assert run.data.tags["kind"] == "report" and run.info.run_name == "report"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert {f"tables/{n}" for n in ("table.md", "table.tex", "table.csv", *FIGURES)} <= logged
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"runs.csv", "tables"}
    assert first["provenance"]["generated"] == "2026-01-01 00:09 UTC"  # latest run end


def test_runs_csv_alone_regenerates_the_table_and_merges_new_runs(built, tmp_path):
    root, _, ids, _ = built
    out = root / "experiments" / STUDY
    rows = collect.read_runs_csv(out / "runs.csv")
    assert {r["run_id"] for r in rows} == set(ids.values())  # every FINISHED lineage run
    assert len(rows) == 10
    lstm = next(r for r in rows if r.get("tags.config_hash") == "l0" and "parent_run_id" not in r)
    assert lstm["history.val/ppl"] == "300.0 200.0 140.0"
    assert lstm["data.ptb-test"] == DIGESTS["test"]
    child = next(r for r in rows if r.get("parent_run_id"))
    assert child["tags.model"] == "lstm_small" and child["tags.seed"] == "0"  # from its parent

    # somewhere else, with no store: the committed runs.csv alone gives the same table
    elsewhere = tmp_path / "clone"
    (elsewhere / "experiments" / STUDY).mkdir(parents=True)
    (elsewhere / "experiments" / STUDY / "runs.csv").write_bytes((out / "runs.csv").read_bytes())
    report(report_cfg(elsewhere, f"study={STUDY}", "source=csv"))
    for name in ("table.md", "table.tex", "table.csv"):
        produced = (elsewhere / "experiments" / STUDY / "tables" / name).read_bytes()
        assert produced == (out / "tables" / name).read_bytes(), name
    assert not (elsewhere / "mlruns").exists()  # reading never creates a store

    # a new session: one run more in the store, one run gone from it; runs.csv keeps both
    root = copy_of(built, tmp_path / "copy")
    out = root / "experiments" / STUDY
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = open_client(uri)
    experiment_id = client.get_experiment_by_name(STUDY).experiment_id
    tags = {"model": "word2vec", "family": "word2vec", "year": "2013", "seed": "1",
            "corpus": "ptb", "config_hash": "w1", "git_sha": SHA}  # fmt: skip
    _log_run(client, experiment_id, 50, tags, {"sst2/test/accuracy": 0.76})
    client.delete_run(ids["u1"])
    result = report(report_cfg(root, f"study={STUDY}", "log_to_mlflow=false"))
    hashes = [r["tags.config_hash"] for r in collect.read_runs_csv(out / "runs.csv")]
    assert "w1" in hashes and "u1" in hashes and len(hashes) == 11
    assert _row(result["table"], "word2vec")["n"] == 2


def test_readmes_with_the_study_markers_show_the_table(built, tmp_path):
    root = copy_of(built, tmp_path)
    name = built[3]["name"]
    begin, end = f"<!-- lineage-report:{name}:begin -->", f"<!-- lineage-report:{name}:end -->"
    (root / "README.md").write_text(f"# intro\n\n{begin}\nstale table\n{end}\n\ntail\n")
    (root / "experiments" / "README.md").write_text("no markers here\n")
    report(report_cfg(root, f"study={STUDY}"))
    table = (root / "experiments" / name / "tables" / "table.md").read_text()
    rows = "\n".join(line for line in table.splitlines() if line.startswith("|")) + "\n"
    assert (root / "README.md").read_text() == f"# intro\n\n{begin}\n{rows}{end}\n\ntail\n"
    assert (root / "experiments" / "README.md").read_text() == "no markers here\n"


def test_merge_keeps_the_latest_run_per_config_hash():
    old = [{"run_id": "a", "start_time": "2026-01-01", "tags.config_hash": "h", "x": "old"}]
    new = [
        {"run_id": "b", "start_time": "2026-02-01", "tags.config_hash": "h", "x": "new"},
        {"run_id": "c", "start_time": "2026-02-01", "tags.config_hash": "k"},
    ]
    assert sorted(r["run_id"] for r in collect.merge_runs(old, new)) == ["b", "c"]
    assert sorted(r["run_id"] for r in collect.merge_runs(new, old)) == ["b", "c"]
    # runs without a hash (made by hand) are not one experiment
    unhashed = [{"run_id": f"r{i}", "start_time": f"2026-03-0{i + 1}"} for i in range(3)]
    assert sorted(r["run_id"] for r in collect.merge_runs([], unhashed)) == ["r0", "r1", "r2"]


def test_planned_runs_follow_the_sweep_and_only_seeds():
    params = {"model": "a,b,c", "seed": "0,1,2", "corpus": "ptb"}
    plan = planned_runs(params, {"c": [0]})
    on_ptb = (("corpus", "ptb"),)
    assert plan == [(m, s, on_ptb) for m in "ab" for s in "012"] + [("c", "0", on_ptb)]
    assert planned_runs({"model": "a", "seed": "range(0,2)"}, None) == [
        ("a", "0", ()),
        ("a", "1", ()),
    ]


def test_a_swept_setting_is_part_of_each_planned_run():
    params = {"model": "ngram", "model.lm.order": "2,5", "paths.root_dir": "/x"}
    plan = planned_runs(params, None)
    assert [str(p) for p in plan] == ["ngram s0 [model.lm.order=2]", "ngram s0 [model.lm.order=5]"]
    rows = [  # order 5 is the default: its run has no overrides tag, its params say 5
        {"run_id": "a", "tags.model": "ngram", "tags.seed": "0", "params.model.lm.order": "5"},
        {"run_id": "b", "tags.model": "ngram", "tags.seed": "1", "params.model.lm.order": "2"},
    ]
    assert missing_runs(plan, rows) == [plan[0]]  # order 2 ran with another seed only
    rows.append(  # a key the params leave out: read from the overrides tag
        {
            "run_id": "c",
            "tags.model": "ngram",
            "tags.seed": "0",
            "tags.overrides": "model.lm.order=2",
        }
    )
    assert missing_runs(plan, rows) == []
    plan = planned_runs({"model": "ngram", "corpus": "lee,ptb"}, None)
    assert [str(p) for p in plan] == ["ngram s0 [corpus=lee]", "ngram s0 [corpus=ptb]"]
    rows = [{"run_id": "d", "tags.model": "ngram", "tags.seed": "0", "tags.corpus": "ptb"}]
    assert missing_runs(plan, rows) == [plan[0]]
    # a run with a setting the plan does not sweep is another row, not the planned one
    plan = planned_runs({"model": "ngram", "seed": "0"}, None)
    variant = {"run_id": "e", "tags.model": "ngram", "tags.seed": "0"}
    assert missing_runs(plan, [{**variant, "tags.overrides": "model.lm.order=2"}]) == plan
    assert missing_runs(plan, [variant]) == []


# ----- the command line ---------------------------------------------------------------------


def test_lineage_report_reads_a_study_file_without_running_its_sweep(
    built, tmp_path, monkeypatch, capsys
):
    """`lineage-report experiment=lineage_lee` (the console entry point, in-process) on a store
    holding part of that study: one table and the planned runs still missing, no sweep launched
    although the study file sets hydra.mode=MULTIRUN; and the dashboard URL."""
    from lineage.report.summary import main

    root = copy_of(built, tmp_path)
    client = open_client(f"sqlite:///{root}/mlruns/mlflow.db")
    client.rename_experiment(client.get_experiment_by_name(STUDY).experiment_id, "lineage-lee")
    monkeypatch.chdir(root)
    argv = ["lineage-report", "experiment=lineage_lee", f"paths.root_dir={root}"]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    out = capsys.readouterr().out
    assert "Launching" not in out  # no multirun
    # where the runs came from: the store, runs.csv (none yet), and how many the table holds
    assert (
        "Study 'lineage-lee': 9 runs in the table, 1 superseded; 10 finished runs from the store "
        f"sqlite:///{root}/mlruns/mlflow.db; 0 rows from experiments/lineage_lee/runs.csv, "
        "10 after the merge." in out
    )
    assert "lstm_small" in out and "122.00 ± 2.83*" in out  # the plain-text table
    assert "Not finished yet:" in out and "ngram_kn3 s0" in out  # planned by the study file
    assert "Written: experiments/lineage_lee/runs.csv" in out
    assert (root / "experiments" / "lineage_lee" / "tables" / "table.md").is_file()
    experiment_id = client.get_experiment_by_name("lineage-lee").experiment_id
    monkeypatch.setattr(sys, "argv", [*argv, "action=url", "ui.port=5999"])
    main()
    url = capsys.readouterr().out.strip()
    assert url == f"http://127.0.0.1:5999/#/experiments/{experiment_id}/runs"
    cfg = report_cfg(root, "ui.port=5999")
    assert (
        dashboard_url(cfg.tracking, "no-such-study", "127.0.0.1", 5999) == "http://127.0.0.1:5999"
    )


def test_a_misspelt_study_file_is_one_line_with_the_closest_name(monkeypatch, capsys):
    from lineage.report.summary import main

    monkeypatch.setattr(sys, "argv", ["lineage-report", "experiment=lineage_le"])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "lineage-report: experiment=lineage_le: no config experiment/lineage_le.yaml; options in "
        "'experiment': lineage_lee, lineage_ptb; did you mean lineage_lee?"
    )


def test_an_unknown_source_is_one_line(tmp_path, monkeypatch, capsys):
    from lineage.report.summary import main

    argv = ["lineage-report", "source=cvs", f"paths.root_dir={tmp_path}", "log_to_mlflow=false"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "lineage-report: source='cvs': use mlflow (the store) or csv (runs.csv only)"
    )
    assert not (tmp_path / "experiments").exists()


def _experiments(uri: str) -> set[str]:
    return {e.name for e in open_client(uri).search_experiments()}


def _lineage_report(monkeypatch, *args: str) -> None:
    from lineage.report.summary import main

    monkeypatch.setattr(sys, "argv", ["lineage-report", *args])
    main()


def test_runs_only_in_runs_csv_are_reported_as_such_and_create_no_experiment(
    built, tmp_path, monkeypatch, capsys
):
    """A store without the study, its runs.csv committed: the counts say where the runs came
    from, and no experiment is made to hold the report run."""
    root = tmp_path
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    ensure_experiment(open_client(uri), "other", None)
    (root / "experiments" / STUDY).mkdir(parents=True)
    shutil.copy(built[0] / "experiments" / STUDY / "runs.csv", root / "experiments" / STUDY)
    monkeypatch.chdir(root)
    _lineage_report(monkeypatch, f"study={STUDY}", f"paths.root_dir={root}")
    out = capsys.readouterr().out
    assert (
        f"Study '{STUDY}': 9 runs in the table, 1 superseded; 0 finished runs from the store "
        f"{uri}; 10 rows from experiments/{STUDY}/runs.csv." in out
    )
    assert f"no MLflow report run (the store has no experiment '{STUDY}')" in out
    assert _experiments(uri) == {"Default", "other"}

    _lineage_report(monkeypatch, f"study={STUDY}", f"paths.root_dir={root}", "source=csv")
    out = capsys.readouterr().out
    assert "not read from the store (source=csv); 10 rows from" in out


def test_a_study_with_no_runs_is_an_error_that_lists_the_studies(
    built, tmp_path, monkeypatch, capsys
):
    """`study=nosuch`, a typo of a study file's name, a study file not run yet, no store at all:
    exit status 2, the studies there are, nothing written, no experiment created."""
    root = copy_of(built, tmp_path / "copy")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    before = _experiments(uri)
    monkeypatch.chdir(root)

    def fails(*args: str) -> str:
        with pytest.raises(SystemExit) as exit_info:
            _lineage_report(monkeypatch, f"paths.root_dir={root}", *args)
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        assert "Written" not in captured.out
        return captured.err

    err = fails("study=nosuch")
    assert err.startswith(
        "lineage-report: study 'nosuch' has no runs: no finished run in the store "
        f"{uri}, and no experiments/nosuch/runs.csv.\n"
    )
    assert f"Studies in the store: {STUDY} (lineage-report study=<study>)." in err
    assert "lineage_lee (study lineage-lee), lineage_ptb (study lineage-ptb)" in err
    assert not (root / "experiments" / "nosuch").exists()

    err = fails(f"study={STUDY[:-1]}")  # a typo of a study in the store
    assert f"Did you mean study={STUDY}?" in err

    # `study=lineage_lee` for `lineage-lee`: experiments/lineage_lee/ is the study file's folder
    # and its runs.csv another study's: reporting it under the typo would relabel that study
    folder = root / "experiments" / "lineage_lee"
    folder.mkdir()
    csv = (root / "experiments" / STUDY / "runs.csv").read_bytes()
    (folder / "runs.csv").write_bytes(csv)
    err = fails("study=lineage_lee")
    assert f"experiments/lineage_lee/runs.csv holds the runs of study {STUDY}, not of" in err
    assert "Did you mean experiment=lineage_lee (study lineage-lee)?" in err
    assert (folder / "runs.csv").read_bytes() == csv and not (folder / "tables").exists()
    (folder / "runs.csv").unlink()

    err = fails("experiment=lineage_ptb")  # a study file with no run yet
    assert "study 'lineage-ptb' has no runs" in err
    assert "`lineage-train experiment=lineage_ptb` trains its 31 planned runs" in err
    assert _experiments(uri) == before  # no experiment for a study without runs

    empty = tmp_path / "empty"
    empty.mkdir()
    err = fails("study=nosuch", f"paths.root_dir={empty}")
    assert "the store not read (no store at sqlite:///" in err
    assert "Studies in the store: not read" in err
    assert not (empty / "mlruns").exists()  # reading never creates a store


def test_every_study_file_composes_in_both_apps():
    from hydra import compose, initialize_config_dir

    import lineage.config  # noqa: F401

    models = {p.stem for p in (CONF / "model").glob("*.yaml")}
    for path in sorted((CONF / "experiment").glob("*.yaml")):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            train = compose("train", [f"experiment={path.stem}"], return_hydra_config=True)
            rep = compose("report", [f"experiment={path.stem}"], return_hydra_config=True)
        assert str(train.hydra.mode) == "RunMode.MULTIRUN", path.name
        assert rep.study == train.study, path.name
        named = set(str(train.hydra.sweeper.params.model).split(","))
        assert named <= models, f"{path.name} names unknown models {named - models}"
        assert "prepare_store" in train.hydra.callbacks, path.name
