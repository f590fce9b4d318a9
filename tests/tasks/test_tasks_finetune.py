"""Fine-tuning and training from scratch through the runner: a neural LM on the tiny corpus, a
separable task in the corpus's own words, each adaptation a child MLflow run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lineage.train import run


@pytest.fixture
def separable_csv(tmp_path):
    a = ["alice was very tired", "she thought of the book", "alice had pictures"]
    b = ["the rabbit went down", "rabbit ran out suddenly", "down the rabbit well"]
    rows = [f"{t},a" for t in a] * 10 + [f"{t},b" for t in b] * 10
    path = tmp_path / "sep.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_finetune_and_scratch_are_child_runs(tiny_cfg, separable_csv):
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.max_epochs=1",
        "task=[csv]",
        f"task.csv.csv.files.all={separable_csv}",
        "task.csv.finetune.enabled=true",
        "task.csv.finetune.scratch=true",
        "task.csv.finetune.epochs=4",
        "task.csv.finetune.lr=0.01",
        "task.csv.finetune.body_lr_scale=0.1",
        "task.csv.finetune.patience=4",
        "study=finetune",
        tracking="mlflow",
    )
    results = run(cfg)
    assert results["csv/test/accuracy"] >= 0.0  # the probe row (pooled states)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("finetune")
    runs = client.search_runs([experiment.experiment_id])
    by_adaptation = {r.data.tags.get("adaptation"): r for r in runs}
    assert set(by_adaptation) == {"probe", "finetune", "scratch"}
    parent = by_adaptation["probe"]
    for adaptation in ("finetune", "scratch"):
        child = by_adaptation[adaptation]
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["family"] == "lstm" and child.data.tags["task"] == "csv"
        assert "config_hash" not in child.data.tags  # never mistaken for the parent's config
        assert child.data.tags["parent_config_hash"] == parent.data.tags["config_hash"]
        assert child.info.run_name == f"lstm_small-text_files-s0-csv-{adaptation}"
        metrics = child.data.metrics
        assert metrics["csv/test/accuracy"] == 1.0, adaptation  # a separable task
        assert "csv/test/roc_auc" in metrics and "train/loss" in metrics
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "confusion")}
        assert artifacts == {"confusion/csv.csv"}
    assert "csv/test/accuracy" in parent.data.metrics  # the probe stays on the job's run


def test_body_learns_at_a_fraction_of_the_heads_rate():
    from torch import nn

    from lineage.tasks.finetune import ClassifierModule, TextClassifier

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 4)

        def hidden(self, tokens, state):
            return self.proj(tokens.float()[..., None].expand(*tokens.shape, 3)), state

    net = TextClassifier(Body(), n_classes=2, dropout=0.0, pad_id=0)
    module = ClassifierModule(net, lr=0.01, weight_decay=0.0, body_lr_scale=0.1)
    groups = module.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.001])
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in net.head.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.body.parameters()}
