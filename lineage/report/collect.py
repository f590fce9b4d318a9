"""Read a study's finished runs from MLflow into one tidy DataFrame."""

from __future__ import annotations

import pandas as pd


def finished_runs(tracking_uri: str, study: str) -> pd.DataFrame:
    """One row per FINISHED run of ``study``, the latest per config hash.

    Columns: ``run_id``, ``start_time``, ``tags.*`` and ``metrics.*`` as MLflow names them.
    An unknown study gives an empty frame.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return pd.DataFrame()
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        tracking_uri=tracking_uri,
    )
    if runs.empty:
        return runs
    if "tags.config_hash" in runs:
        runs = runs.drop_duplicates("tags.config_hash", keep="first")
    return runs.reset_index(drop=True)
