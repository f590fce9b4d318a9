"""The study's figures (PNG, matplotlib's Agg backend): the same bytes for the same table.

* ``test_ppl_vs_params.png`` and ``test_ppl_vs_train_time.png`` — test perplexity against size and
  against training time, log-log, one labelled point per row (error bars: sd over seeds);
* ``learning_curves.png`` — ``val/ppl`` per epoch of every run (one colour per row: a sweep
  point, ``ngram [model.lm.order=2]``, is its own row); rows with a single validation (count and
  rule families) are drawn as dashed horizontal references, named beside the plotting area's
  right edge (the figure widens to fit the names);
* ``downstream_accuracy.png`` — each task's test accuracy per row (bars, sd as error bars).

A figure with nothing to show still exists and says so, so the set of files is always the same.

Labels never overlap nor leave the figure (:func:`place_labels`): a point's label goes to its
right (the x range widens a little so the rightmost points keep room there) or else its left, a
reference line's beside the line's end; where that is taken, to the nearest free spot above or
below, found greedily in display pixels, with a thin leader line back to what it names.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
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
GAP_PT = 4.0  # from a point (or a line's end) to its label
LIFT_PT = 2.0  # a point's label sits just above it: clear of a horizontal error bar
MARKER_PT = 5.0  # the scatter's markersize
PAD_PX = 2.0  # kept free between two labels
ROOM = 0.4  # at most this much more x range, to fit the labels of the rightmost points
LEADER = {"arrowstyle": "-", "linewidth": 0.6, "shrinkA": 0.0}


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


def _overlaps(boxes: np.ndarray, others: np.ndarray, pad: float) -> np.ndarray:
    """Per row of ``boxes`` (x0, y0, x1, y1), how many of ``others`` it overlaps (or comes
    within ``pad`` of)."""
    if len(others) == 0:
        return np.zeros(len(boxes))
    b, o = boxes[:, None, :], others[None, :, :]
    hit = (b[..., 0] < o[..., 2] + pad) & (o[..., 0] < b[..., 2] + pad)
    hit &= (b[..., 1] < o[..., 3] + pad) & (o[..., 1] < b[..., 3] + pad)
    return hit.sum(axis=1)


def _near_segments(starts: np.ndarray, ends: np.ndarray, points: np.ndarray, radius: float):
    """Per segment (``starts[k]`` to ``ends[k]``), how many ``points`` lie within ``radius``."""
    if len(points) == 0:
        return np.zeros(len(ends))
    d = (ends - starts)[:, None, :]
    rel = points[None, :, :] - starts[:, None, :]
    length = np.maximum((d**2).sum(axis=2), 1e-9)
    t = np.clip((rel * d).sum(axis=2) / length, 0.0, 1.0)
    return (((rel - t[..., None] * d) ** 2).sum(axis=2) < radius**2).sum(axis=1)


def _greedy(sizes, options, bounds, placed, points, clearance, order) -> tuple[float, dict]:
    """One greedy pass of :func:`place_labels` in ``order``: its total cost and corners."""
    left, bottom, right, top = bounds
    total, corners = 0.0, {}
    for i in order:
        (width, height), best = sizes[i], (math.inf, 0.0, 0.0)
        others = np.delete(points, i, axis=0) if len(points) else points
        for x0, y0, penalty in options[i]:
            ys = np.concatenate([[y0], np.arange(bottom, top - height, 1.0)])
            xs = np.full_like(ys, x0)
            boxes = np.column_stack([xs, ys, xs + width, ys + height])
            outside = (x0 < left) | (x0 + width > right) | (ys < bottom) | (ys + height > top)
            ruled_out = outside + _overlaps(boxes, placed, PAD_PX)
            cost = np.abs(ys - y0) + penalty
            if len(points):
                # next to another point, a label reads as that point's; a leader over one too
                dots = np.column_stack([others, others])
                cost = cost + 2 * height * _overlaps(boxes, dots, clearance)
                side = x0 if x0 > points[i][0] else x0 + width
                ends = np.column_stack([np.full_like(ys, side), ys + height / 2])
                starts = np.tile(points[i], (len(ys), 1))
                cost = cost + height * _near_segments(starts, ends, others, clearance / 2)
            cost = cost + 1e6 * ruled_out
            k = int(np.argmin(cost))  # the first of equals: the preferred spot, then the lowest
            if cost[k] < best[0]:
                best = (float(cost[k]), x0, float(ys[k]))
        cost, x0, y0 = best
        total += cost
        corners[i] = (x0, y0)
        placed = np.vstack([placed, [x0, y0, x0 + width, y0 + height]])
    return total, corners


def place_labels(
    sizes: list[tuple[float, float]],
    options: list[list[tuple[float, float, float]]],
    bounds: tuple[float, float, float, float],
    orders: list[list[int]],
    taken: list | tuple = (),
    points: list | tuple = (),
    clearance: float = 0.0,
) -> list[tuple[float, float]]:
    """Lower-left corners (display pixels) for labels of ``sizes`` (width, height).

    Each label's ``options`` are ``(x0, y0, penalty)``: a preferred corner and its extra cost.
    Labels are placed one at a time, each at the cheapest spot over its options and over every
    height inside ``bounds`` (x0, y0, x1, y1): the vertical shift, plus the penalty, plus, when
    ``points`` (what each label names, display pixels) are given, twice the label height per
    other point within ``clearance`` of it and the label height per other point its leader line
    would pass over. Spots outside ``bounds`` or on ``taken`` boxes or on the labels placed
    before (:data:`PAD_PX` apart) are ruled out unless nothing else is left. Which label goes
    first decides who gets a contested spot, so each of ``orders`` is tried and the cheapest in
    total kept (the first of equals): plain arithmetic, the same input gives the same corners.
    """
    placed = np.asarray(taken, dtype=float).reshape(-1, 4)
    dots = np.asarray(points, dtype=float).reshape(-1, 2)
    passes = [_greedy(sizes, options, bounds, placed, dots, clearance, order) for order in orders]
    _, corners = min(passes, key=lambda p: p[0])
    return [corners[i] for i in range(len(sizes))]


def _measured(fig, texts) -> list:
    """Each text's window extent as drawn now (Agg renderer, the figure's dpi)."""
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def _move(fig, text, extent, corner) -> None:
    """Shift an annotation (offset points) so its extent's lower-left corner is ``corner``."""
    dx, dy = text.xyann
    scale = 72.0 / fig.dpi
    text.xyann = (dx + (corner[0] - extent.x0) * scale, dy + (corner[1] - extent.y0) * scale)


def _leader(ax, xy, xycoords, anchor_px, corner, colour, shrink_pt: float) -> None:
    """A thin line from what a label names (``xy``, at ``anchor_px`` on screen) to the label's
    nearer side, level with the label's middle."""
    to_pt = 72.0 / ax.figure.dpi
    ax.annotate(
        "",
        xy,
        xycoords=xycoords,
        xytext=((corner[0] - anchor_px[0]) * to_pt, (corner[1] - anchor_px[1]) * to_pt),
        textcoords="offset points",
        arrowprops={**LEADER, "color": colour, "shrinkB": shrink_pt},
    )


def _make_room(ax, xs, needs) -> None:
    """Widen the x range (by :data:`ROOM` of it at most) so that ``needs[i]`` pixels fit right
    of each ``xs[i]`` inside the plotting area: a cluster at the right edge keeps its labels on
    the right, beside their points, instead of piling up on the left over each other's."""
    scale = ax.xaxis.get_transform()  # data -> the axis' linear space (log10 on a log axis)
    low, high = (float(v) for v in scale.transform(np.asarray(ax.get_xlim(), dtype=float)))
    width = ax.get_window_extent(ax.figure.canvas.get_renderer()).width
    span = high - low
    for x, need in zip(scale.transform(np.asarray(xs, dtype=float)), needs, strict=True):
        if need < width:
            span = max(span, (x - low) * width / (width - need))
    span = min(span, (high - low) * (1 + ROOM))
    ax.set_xlim(*scale.inverted().transform(np.array([low, low + span])))


def label_points(ax, xs, ys, labels: list[str], taken: list | tuple = ()) -> list:
    """Name each point (data coordinates) beside it, inside the plotting area, apart from the
    other names, from the other points and from ``taken`` boxes (display pixels). The axes'
    layout must be final; their limits are frozen here (the x range may widen to make room).
    Returns the label artists."""
    fig = ax.figure
    to_px = fig.dpi / 72.0
    gap, lift, radius = GAP_PT * to_px, LIFT_PT * to_px, MARKER_PT / 2 * to_px
    texts = [
        ax.annotate(label, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=8)
        for x, y, label in zip(xs, ys, labels, strict=True)
    ]
    widths = [e.width for e in _measured(fig, texts)]
    _make_room(ax, xs, [gap + w + PAD_PX for w in widths])
    ax.set_ylim(ax.get_ylim())  # positions are worked out in pixels: no autoscaling after them
    points = ax.transData.transform(np.column_stack([xs, ys]))
    extents = _measured(fig, texts)
    sizes = [(e.width, e.height) for e in extents]
    options = [
        [(px + gap, py + lift, 0.0), (px - gap - w, py + lift, h / 2)]  # right, else left
        for (px, py), (w, h) in zip(points, sizes, strict=True)
    ]
    area = ax.get_window_extent(fig.canvas.get_renderer())
    down = sorted(range(len(texts)), key=lambda i: (-points[i][1], points[i][0]))
    leftwards = sorted(range(len(texts)), key=lambda i: (-points[i][0], -points[i][1]))
    orders = [down, down[::-1], leftwards, leftwards[::-1]]
    bounds = (area.x0, area.y0, area.x1, area.y1)
    corners = place_labels(sizes, options, bounds, orders, taken, points, gap + radius / 2)
    for i, corner in enumerate(corners):
        _move(fig, texts[i], extents[i], corner)
        (px, py), (w, h) = points[i], sizes[i]
        off = max(corner[1] - py, py - (corner[1] + h), 0.0)  # point to label, vertically
        if off > lift + 3:  # moved off its point's level: say whose it is
            side = corner[0] if corner[0] > px else corner[0] + w
            end = (side, corner[1] + h / 2)
            _leader(ax, (xs[i], ys[i]), "data", (px, py), end, "0.35", MARKER_PT / 2 + 1)
    return texts


def label_levels(ax, levels, labels: list[str], colours: list) -> list:
    """Name horizontal lines (data ``levels``) beside the plotting area's right edge, apart from
    each other (a leader line when one had to move); the figure widens to fit the widest name,
    the axes keeping their size. Returns the label artists."""
    fig = ax.figure
    ax.set_ylim(ax.get_ylim())
    transform = ax.get_yaxis_transform()
    inks = [tuple(0.7 * c for c in to_rgb(colour)) for colour in colours]  # pale reads poorly
    texts = [
        ax.annotate(
            label,
            (1.0, level),
            xycoords=transform,
            xytext=(0, 0),
            textcoords="offset points",
            fontsize=7,
            color=ink,
        )
        for level, label, ink in zip(levels, labels, inks, strict=True)
    ]
    if not texts:
        return texts
    to_px = fig.dpi / 72.0
    gap = GAP_PT * to_px
    widest = max(e.width for e in _measured(fig, texts))
    position, (width, height) = ax.get_position(), fig.get_size_inches()
    new_width = max(width, position.x1 * width + (gap + widest + PAD_PX) / fig.dpi + 0.05)
    fig.set_size_inches(new_width, height)
    fig.subplots_adjust(left=position.x0 * width / new_width, right=position.x1 * width / new_width)
    extents = _measured(fig, texts)
    sizes = [(e.width, e.height) for e in extents]
    ends = transform.transform(np.column_stack([np.ones(len(texts)), levels]))
    area, frame = ax.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    down = sorted(range(len(texts)), key=lambda i: -ends[i][1])
    corners = place_labels(
        sizes,
        [[(area.x1 + gap, y - h / 2, 0.0)] for (_, y), (_, h) in zip(ends, sizes, strict=True)],
        (area.x1, frame.y0 + PAD_PX, frame.x1, frame.y1 - PAD_PX),
        [down, down[::-1]],
    )
    for i, corner in enumerate(corners):
        _move(fig, texts[i], extents[i], corner)
        (x, y), h = ends[i], sizes[i][1]
        if max(corner[1] - y, y - (corner[1] + h)) > -1:  # its line no longer points at it
            end = (corner[0], corner[1] + h / 2)
            _leader(ax, (1.0, levels[i]), transform, (x, y), end, inks[i], 0.0)
    return texts


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
        rows = np.flatnonzero(shown.to_numpy())
        for i in rows:
            ax.errorbar(
                xm.iloc[i],
                ym.iloc[i],
                xerr=None if math.isnan(xsd.iloc[i]) else xsd.iloc[i],
                yerr=None if math.isnan(ysd.iloc[i]) else ysd.iloc[i],
                fmt="o",
                color=colours[i],
                capsize=2,
                markersize=MARKER_PT,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_ticks(ax.xaxis, _count_tick if x_metric == "cost/params" else _g)
        _plain_log_ticks(ax.yaxis, _g)
        ax.set_xlabel(x_label + " (log)")
        ax.set_ylabel("test perplexity (log)")
        ax.set_title(title)
        fig.subplots_adjust(**MARGINS)
        taken = []
        if left_out:
            note = ax.text(
                0.01,
                0.01,
                "not shown (no value, or 0): " + ", ".join(left_out),
                transform=ax.transAxes,
                fontsize=7,
                color="0.4",
            )
            taken = [tuple(note.get_window_extent(fig.canvas.get_renderer()).extents)]
        label_points(
            ax,
            xm.iloc[rows].to_numpy(float),
            ym.iloc[rows].to_numpy(float),
            [labels[i] for i in rows],
            taken,
        )
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
        lines, references, epochs = 0, [], 2
        for i, label, histories in curves(table, metric):
            if max(len(h) for h in histories) == 1:
                level = float(np.mean([h[0] for h in histories]))
                ax.axhline(level, color=colours[i], linestyle="--", linewidth=0.8)
                references.append((level, label, colours[i]))
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
        if lines == 0 and not references:
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
        if references:
            levels, names, line_colours = (list(v) for v in zip(*references, strict=True))
            label_levels(ax, levels, names, line_colours)
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
