"""``lineage-report``: print a study's results as a plain-text table (one row per model).

Rows are ordered by the family's year (the lineage order); values over seeds are shown as
mean ± sd with the number of runs; "—" marks what a family cannot do.

    lineage-report study=lineage-lee
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

import lineage.config  # noqa: F401  (registers the ${lineage.cwd:} resolver)
from lineage.report.collect import finished_runs

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

COLUMNS = [  # (metric, header, decimals)
    ("metrics.val/ppl", "valid ppl", 2),
    ("metrics.test/ppl", "test ppl", 2),
    ("metrics.test/tokens", "test tokens", 0),
    ("metrics.cost/params", "params", 0),
    ("metrics.cost/train_seconds", "train s", 2),
]
DASH = "—"


def _cell(values: pd.Series, decimals: int) -> str:
    values = values.dropna()
    if values.empty:
        return DASH
    mean = values.mean()
    if len(values) == 1:
        return f"{mean:,.{decimals}f}"
    sd = values.std(ddof=1)
    return f"{mean:,.{decimals}f} ± {sd:,.{decimals}f}"


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate finished runs into the study table (strings, ready to print)."""
    if runs.empty:
        return pd.DataFrame()
    runs = runs.copy()
    runs["year"] = pd.to_numeric(runs.get("tags.year"), errors="coerce").fillna(math.inf)
    rows = []
    for (model, corpus), group in runs.groupby(["tags.model", "tags.corpus"], sort=False):
        row = {
            "model": model,
            "family": group["tags.family"].iloc[0] if "tags.family" in group else DASH,
            "year": int(group["year"].iloc[0]) if math.isfinite(group["year"].iloc[0]) else DASH,
            "corpus": corpus,
            "n": len(group),
        }
        for metric, header, decimals in COLUMNS:
            row[header] = _cell(group[metric], decimals) if metric in group else DASH
        size = group["metrics.cost/params"].mean() if "metrics.cost/params" in group else 0.0
        rows.append(((group["year"].iloc[0], size, model), row))
    rows.sort(key=lambda r: r[0])  # lineage order (year), then smaller models first
    return pd.DataFrame([r[1] for r in rows])


@hydra.main(config_path=CONF_DIR, config_name="report", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    runs = finished_runs(str(cfg.tracking.uri), str(cfg.study))
    table = summary_table(runs)
    if table.empty:
        print(f"No finished runs in study {cfg.study!r} at {cfg.tracking.uri}.")
        return
    print(f"\nStudy {cfg.study!r}: {len(runs)} finished run(s) in {cfg.tracking.uri}\n")
    print(table.to_string(index=False))
    print()


def main() -> None:
    """Console entry point ``lineage-report``."""
    _hydra_main()


if __name__ == "__main__":
    main()
