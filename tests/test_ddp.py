"""``trainer=ddp``: a recurrent LM trained by two CPU processes (gloo), launched by Lightning from
``lineage-train`` as a user would. Each rank owns its own contiguous rows of every stream batch
(state carrying stays intact), the batch size is the global one, and evaluation scores every
target exactly once — so two processes give the same perplexities as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_train, tiny_corpus_overrides
from mlflow.tracking import MlflowClient

from lineage.train import run

TINY = [
    "model=lstm_small",
    "model.net.hidden_size=16",
    "model.batching.batch_size=4",
    "model.batching.seq_len=10",
    "model.batching.eval_seq_len=50",
    "model.max_epochs=2",
    "model.optimizer.lr=0.3",
    "trainer.enable_progress_bar=false",
    "samples.count=1",
    "samples.max_new_tokens=5",
]


def _train(tmp_path: Path, name: str, *overrides: str) -> dict:
    out = tmp_path / name
    cmd = [
        sys.executable,
        "-m",
        "lineage.train",
        *tiny_corpus_overrides(),
        *TINY,
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={out}",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


# three interpreter start-ups (lightning, mlflow): ~35 s idle, minutes on a loaded machine
@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    two = _train(tmp_path, "two", "trainer=ddp", "tracking=mlflow", "study=ddp")
    torch.set_num_threads(1)
    res1 = run(compose_train([*tiny_corpus_overrides(), *TINY, "tracking=none"], tmp_path / "one"))
    res2 = two["results"]
    # every target scored exactly once, by one rank
    assert res2["val/tokens"] == res1["val/tokens"] and res2["test/tokens"] == res1["test/tokens"]
    # the same optimisation: gradients of the two halves, averaged, equal the whole batch's
    for key in ("val/ppl", "test/ppl"):
        assert res2[key] == pytest.approx(res1[key], rel=1e-4), key
    assert two["config"]["trainer"]["strategy"] == "ddp"
    # one MLflow run (rank 0's), finished, with the per-epoch curve
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert len(client.get_metric_history(runs[0].info.run_id, "val/ppl")) >= 2


def test_sharding_gives_each_rank_its_rows_and_rank_0_every_evaluation_target():
    from lineage.data.sources import DataError
    from lineage.data.windows import shard_stream_batches, stream_batches

    stream = torch.arange(1, 202)  # (201,)
    train = stream_batches(stream, 4, 7, "train")
    halves = [shard_stream_batches(train, r, 2, "train", train=True) for r in (0, 1)]
    for whole, b0, b1 in zip(train, *halves, strict=True):
        # each rank continues its own rows batch after batch: state carrying stays valid
        assert torch.equal(torch.cat([b0.tokens, b1.tokens]), whole.tokens)
        assert b0.carry == b1.carry == whole.carry
    with pytest.raises(DataError, match="batch_size=4 must be a multiple"):
        shard_stream_batches(train, 0, 3, "train", train=True)
    val = stream_batches(stream, 1, 50, "val")
    assert shard_stream_batches(val, 0, 2, "val", train=False) == val
    (empty,) = shard_stream_batches(val, 1, 2, "val", train=False)
    assert empty.n_targets == 0, "rank 1 joins the loop and the reduction, scoring nothing"
