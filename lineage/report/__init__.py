"""Reports built from the MLflow store: tables of finished runs."""
