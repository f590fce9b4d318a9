"""Studies and their reports: ``lineage-report experiment=<study>``.

* :mod:`.collect` — a study's finished runs, read from MLflow and kept in ``runs.csv`` (merged by
  config hash across sessions and stores);
* :mod:`.table` — the study table as one DataFrame (mean, sd, n and best per column, rows in
  lineage order), rendered as text, Markdown, LaTeX (booktabs) and CSV;
* :mod:`.plots` — the figures (perplexity against size and training time, learning curves,
  downstream accuracy);
* :mod:`.summary` — the Hydra app that writes ``experiments/<study>/`` and logs a ``report`` run.
"""
