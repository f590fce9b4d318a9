"""Read a study's finished runs from MLflow into one tidy DataFrame."""

from __future__ import annotations

import pandas as pd


def finished_runs(tracking_uri: str, study: str) -> pd.DataFrame:
    """One row per FINISHED run of ``study``, the latest per config hash.

    Columns: ``run_id``, ``run_name``, ``start_time``, ``tags.*``, ``params.*`` and
    ``metrics.*`` (MLflow's own naming). An unknown study gives an empty frame.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return pd.DataFrame()
    rows, token = [], None
    while True:
        page = client.search_runs(
            [experiment.experiment_id],
            filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        for run in page:
            row = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "start_time": run.info.start_time,
            }
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    runs = pd.DataFrame(rows)
    if not runs.empty and "tags.config_hash" in runs:
        runs = runs.drop_duplicates("tags.config_hash", keep="first")
    return runs.reset_index(drop=True)
