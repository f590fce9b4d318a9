"""The study's figures (PNG, matplotlib's Agg backend): the same bytes for the same table.

* ``test_ppl_vs_params.png`` and ``test_ppl_vs_train_time.png`` — test perplexity against size and
  against training time, log-log, one labelled point per row (error bars: sd over seeds);
* ``learning_curves.png`` — ``val/ppl`` per epoch of every run (one colour per row: a sweep
  point, ``ngram [model.lm.order=2]``, is its own row); rows with a single validation (count and
  rule families) are drawn as dashed horizontal references;
* ``downstream_accuracy.png`` — each task's test accuracy per row (bars, sd as error bars).

A figure with nothing to show still exists and says so, so the set of files is always the same.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from lineage.report.table import Column, StudyTable, format_count, row_label  # noqa: E402

FIGURES = (
    "test_ppl_vs_params.png",
    "test_ppl_vs_train_time.png",
    "learning_curves.png",
    "downstream_accuracy.png",
)
STYLE = {
    "figure.figsize": (6.4, 4.4),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# fixed margins: tight_layout measures every tick label, the slowest part of drawing here
MARGINS = {"left": 0.11, "right": 0.97, "bottom": 0.12, "top": 0.92}


def _plain_log_ticks(axis, text) -> None:
    """Plain tick labels on a log axis (``text(value)``: 200, 1.5k…); minor ticks labelled at
    2 and 5 × 10^k when the axis spans less than two decades, all of them under one decade."""

    def minor(value: float, _pos) -> str:
        low, high = sorted(axis.get_view_interval())
        if low <= 0 or value <= 0:
            return ""
        mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
        if high / low < 10 or (high / low < 100 and mantissa in (2.0, 5.0)):
            return text(value)
        return ""

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: text(value)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _g(value: float) -> str:
    return f"{value:g}"


def _count_tick(value: float) -> str:
    """12k, 1.5M: a count without trailing zeros."""
    text = format_count(value)
    if "." in text:
        number, unit = text.rstrip("kMB"), text[len(text.rstrip("kMB")) :]
        text = number.rstrip("0").rstrip(".") + unit
    return text


def _colours(n: int) -> list:
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def _empty(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)


def _column(table: StudyTable, metric: str) -> Column | None:
    return next((c for c in table.columns if c.metric == metric), None)


def _labels(table: StudyTable) -> list[str]:
    """Each row's name (its overrides included), as the table's Model cell reads, and its corpus
    when the study has several (one model is then a row per corpus)."""
    frame = table.frame
    labels = [row_label(m, o) for m, o in zip(frame["model"], frame["overrides"], strict=True)]
    if frame["corpus"].nunique() > 1:
        labels = [f"{label} ({c})" for label, c in zip(labels, frame["corpus"], strict=True)]
    return labels


def curves(table: StudyTable, metric: str = "val/ppl") -> list[tuple[int, str, list[np.ndarray]]]:
    """``(row position, label, histories)`` per row with a ``history.{metric}``: its job runs'
    per-epoch values by seed (those of the model, overrides and corpus). A fine-tuning row
    shares its job's runs and is left out (its job's row draws them)."""
    runs, column = table.runs, f"history.{metric}"
    if column not in runs:
        return []
    jobs = runs[runs["parent_run_id"] == ""] if "parent_run_id" in runs else runs
    out, drawn, labels = [], set(), _labels(table)
    for i, (model, overrides, corpus) in enumerate(
        zip(table.frame["model"], table.frame["overrides"], table.frame["corpus"], strict=True)
    ):
        if (model, overrides, corpus) in drawn:  # a fine-tuning row: its job's curves
            continue
        drawn.add((model, overrides, corpus))
        same = (
            (jobs["tags.model"] == model)
            & (jobs["tags.overrides"] == overrides)
            & (jobs["tags.corpus"] == corpus)
        )
        runs_of_row = jobs[same]
        # a seed's latest run (the runs that only fill its gaps come after it)
        seed = runs_of_row["tags.seed"].astype("string").fillna(runs_of_row["run_id"])
        runs_of_row = runs_of_row[~seed.duplicated()].sort_values("tags.seed", kind="stable")
        histories = [np.array([float(v) for v in h.split()]) for h in runs_of_row[column].dropna()]
        if histories:
            out.append((i, labels[i], histories))
    return out


def scatter(table: StudyTable, x_metric: str, x_label: str, title: str, path: Path) -> Path:
    """Test perplexity (y) against ``x_metric`` (x), log-log, one labelled point per row."""
    frame = table.frame
    y_col, x_col = _column(table, "test/ppl"), _column(table, x_metric)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        if y_col is None or x_col is None:
            _empty(ax, f"no {x_metric} or test/ppl column in this table")
            return _save(fig, path)
        ym, ysd = frame[f"{y_col.key}.mean"], frame[f"{y_col.key}.sd"]
        xm, xsd = frame[f"{x_col.key}.mean"], frame[f"{x_col.key}.sd"]
        shown = ym.notna() & xm.notna() & (xm > 0) & (ym > 0)
        labels = _labels(table)
        left_out = [label for label, s in zip(labels, shown, strict=True) if not s]
        if not shown.any():
            _empty(ax, f"no row has both test perplexity and {x_label.lower()}")
            return _save(fig, path)
        colours = _colours(len(frame))
        for i in np.flatnonzero(shown.to_numpy()):
            ax.errorbar(
                xm.iloc[i],
                ym.iloc[i],
                xerr=None if math.isnan(xsd.iloc[i]) else xsd.iloc[i],
                yerr=None if math.isnan(ysd.iloc[i]) else ysd.iloc[i],
                fmt="o",
                color=colours[i],
                capsize=2,
                markersize=5,
            )
            ax.annotate(
                labels[i],
                (xm.iloc[i], ym.iloc[i]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis, _count_tick if x_metric == "cost/params" else _g)
        _plain_log_ticks(ax.yaxis, _g)
        ax.set_xlabel(x_label + " (log)")
        ax.set_ylabel("test perplexity (log)")
        ax.set_title(title)
        if left_out:
            ax.text(
                0.01,
                0.01,
                "not shown (no value, or 0): " + ", ".join(left_out),
                transform=ax.transAxes,
                fontsize=7,
                color="0.4",
            )
        fig.subplots_adjust(**MARGINS)
        return _save(fig, path)


def learning_curves(table: StudyTable, path: Path, metric: str = "val/ppl") -> Path:
    """``metric`` per epoch for every run with a history; single points as dashed references."""
    runs, column = table.runs, f"history.{metric}"
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        if column not in runs or runs[column].isna().all():
            _empty(ax, f"no per-epoch {metric} in these runs")
            return _save(fig, path)
        colours = _colours(len(table.frame))
        lines, references, epochs = 0, 0, 2
        for i, label, histories in curves(table, metric):
            if max(len(h) for h in histories) == 1:
                level = float(np.mean([h[0] for h in histories]))
                ax.axhline(level, color=colours[i], linestyle="--", linewidth=0.8)
                ax.text(
                    0.01,
                    level,
                    f" {label}",
                    transform=ax.get_yaxis_transform(),
                    va="bottom",
                    fontsize=7,
                    color=colours[i],
                )
                references += 1
                continue
            epochs = max(epochs, *(len(h) for h in histories))
            for j, h in enumerate(histories):
                ax.plot(
                    np.arange(1, len(h) + 1),
                    h,
                    color=colours[i],
                    linewidth=1.2,
                    marker=".",
                    label=label if j == 0 else None,
                )
            lines += 1
        if lines == 0 and references == 0:
            plt.close(fig)
            fig, ax = plt.subplots()
            _empty(ax, f"no per-epoch {metric} in these runs")
            return _save(fig, path)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, _g)
        ax.set_xlim(1, epochs)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (log)")
        title = "Learning curves"
        if references:
            title += " (dashed: one-pass families)"
        ax.set_title(title)
        if lines:
            ax.legend(fontsize=7, frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
        fig.subplots_adjust(**MARGINS)
        return _save(fig, path)


def downstream_accuracy(table: StudyTable, path: Path) -> Path:
    """Grouped bars: each task's test accuracy per row, sd over seeds as error bars."""
    columns = [c for c in table.columns if c.metric.endswith("/test/accuracy")]
    frame = table.frame
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6.4, 0.55 * len(frame) + 2), 4.4))
        has = [c for c in columns if frame[f"{c.key}.mean"].notna().any()]
        if not has:
            _empty(ax, "no downstream task results in this study")
            return _save(fig, path)
        width = 0.8 / len(has)
        x = np.arange(len(frame))
        for k, column in enumerate(has):
            scale = 100 if column.format == "percent" else 1
            means = frame[f"{column.key}.mean"].to_numpy(float) * scale
            sds = frame[f"{column.key}.sd"].to_numpy(float) * scale
            ax.bar(
                x + (k - (len(has) - 1) / 2) * width,
                np.nan_to_num(means),
                width,
                yerr=np.where(np.isnan(sds), 0, sds),
                capsize=2,
                label=column.header,
            )
        labels = [
            f"{m} ({a})" if a and a not in ("probe",) else m
            for m, a in zip(_labels(table), frame["adaptation"], strict=True)
        ]
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Downstream accuracy (missing bar: the family cannot answer the task)")
        ax.legend(fontsize=8, frameon=False)
        fig.subplots_adjust(**{**MARGINS, "bottom": 0.3})
        return _save(fig, path)


def write_figures(table: StudyTable, out_dir: str | Path) -> list[Path]:
    """All four figures into ``out_dir``; returns their paths (in :data:`FIGURES` order)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        scatter(table, "cost/params", "Parameters", "Test perplexity vs size", out / FIGURES[0]),
        scatter(
            table,
            "cost/train_seconds",
            "Training time (s)",
            "Test perplexity vs training time",
            out / FIGURES[1],
        ),
        learning_curves(table, out / FIGURES[2]),
        downstream_accuracy(table, out / FIGURES[3]),
    ]
