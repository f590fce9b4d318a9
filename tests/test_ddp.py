"""``trainer=ddp``: a recurrent LM and a transformer trained by two CPU processes (gloo), launched
by Lightning from ``lineage-train`` as a user would. Each rank owns its own contiguous rows of
every stream batch (state carrying stays intact), the batch size is the global one, and evaluation
scores every target exactly once — so two processes give the same perplexities as one. A
transformer's evaluation windows are shared out among the ranks without padding (Lightning's
DistributedSampler would repeat windows when their number does not divide by the number of
ranks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, compose_train, free_port, tiny_corpus_overrides

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


# transformer_tiny (window 16) with stride 9 and 3 windows per batch: on the tiny corpus, val has 7
# evaluation windows (3 batches) and test 9 (3 batches), odd numbers for two ranks
TRANSFORMER = [
    "model=transformer_tiny",
    "model.batching.min_context=7",
    "model.batching.eval_batch_size=3",
    "model.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "samples.count=0",
]


def _targets(tmp_path: Path) -> dict[str, int]:
    """The number of targets of each evaluation split, from the corpus itself."""
    from hydra.utils import instantiate

    cfg = compose_train([*tiny_corpus_overrides(), "tracking=none"], tmp_path / "corpus")
    dm = instantiate(cfg.corpus)
    dm.setup()
    return {split: dm.stream(split).numel() - 1 for split in ("val", "test")}


def _train(tmp_path: Path, name: str, *overrides: str, model: list[str] = TINY) -> dict:
    out = tmp_path / name
    cmd = [
        sys.executable,
        "-m",
        "lineage.train",
        *tiny_corpus_overrides(),
        *model,
        f"paths.root_dir={tmp_path}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={out}",
        *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


# three interpreter start-ups (lightning, mlflow): 22 s on an idle 2-core machine (2026-12-07),
# minutes on a loaded one; test_two_processes_train_on_disjoint_rows_... is its fast form
@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    # imported here: the fast test's worker processes import this module, and need neither
    from mlflow.tracking import MlflowClient

    from lineage.train import run

    two = _train(tmp_path, "two", "trainer=ddp", "tracking=mlflow", "study=ddp")
    torch.set_num_threads(1)
    res1 = run(compose_train([*tiny_corpus_overrides(), *TINY, "tracking=none"], tmp_path / "one"))
    res2 = two["results"]
    # every target scored exactly once, by one rank: the counts scored are the splits' targets
    for split, n in _targets(tmp_path).items():
        assert res2[f"{split}/tokens"] == res1[f"{split}/tokens"] == n, split
    # the same optimisation: gradients of the two halves, averaged, equal the whole batch's
    for key in ("val/ppl", "test/ppl"):
        assert res2[key] == pytest.approx(res1[key], rel=1e-4), key
    assert two["config"]["trainer"]["strategy"] == "ddp"
    # one MLflow run (rank 0's), finished, with the per-epoch curve
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert len(client.get_metric_history(runs[0].info.run_id, "val/ppl")) >= 2


class _RankRecord(L.Callback):
    """Each process writes the training rows it was given, the evaluation targets it scored and
    its last valid metrics to ``<out>/rank<r>.pt`` (a worker process returns nothing else)."""

    def __init__(self, out: Path):
        self.out = out

    def setup(self, trainer, pl_module, stage):
        self.train, self.carry, self.val = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch.tokens.clone())
        self.carry.append(batch.carry)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(batch.n_targets)

    def on_fit_end(self, trainer, pl_module):
        metrics = {k: float(trainer.callback_metrics[k]) for k in ("val/ppl", "val/tokens")}
        record = {"train": self.train, "carry": self.carry, "val": self.val, **metrics}
        record["vocab"] = len(pl_module.vocab)
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def _fit(corpus: dict, model: dict, root: Path, **trainer_kwargs) -> dict:
    """One fit from the same initial weights whatever the processes; this process's record."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    dm = instantiate(corpus)
    dm.setup()
    module = instantiate(model, vocab=dm.vocab.itos)
    dm.set_batching(module.batching())
    root.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        callbacks=[_RankRecord(root)],
        **trainer_kwargs,
        **module.trainer_overrides(),
    )
    trainer.fit(module, datamodule=dm)
    return torch.load(root / f"rank{trainer.global_rank}.pt")


def _ddp_worker(rank: int, corpus: dict, model: dict, root: str, port: int) -> None:
    """One of two processes launched by the test, as a cluster's launcher would: Lightning's
    ``ddp`` strategy (that of ``trainer=ddp``) then starts no processes of its own."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    _fit(corpus, model, Path(root), devices=2, strategy="ddp")


def test_two_processes_train_on_disjoint_rows_and_match_one_process(tmp_path):
    """The fast form of the slow test above: two gloo processes started here (interpreters with
    this module imported, not two ``lineage-train`` runs with MLflow), one epoch of the tiny
    corpus. Each rank trains on its own half of every batch's rows, rank 0 scores every valid
    target, and the valid perplexity after the epoch equals one process's: the average of the
    halves' gradients is the whole batch's."""
    import torch.multiprocessing as mp
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose_train(
        [*tiny_corpus_overrides(), *TINY, "model.max_epochs=1", "tracking=none"], tmp_path
    )
    corpus, model = (OmegaConf.to_container(c, resolve=True) for c in (cfg.corpus, cfg.model))
    dm = instantiate(corpus)
    dm.setup()  # prepared once into the cache, which the three fits then read
    n = dm.stream("val").numel() - 1  # the valid targets
    workers = mp.start_processes(
        _ddp_worker,
        args=(corpus, model, str(tmp_path / "two"), free_port()),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    try:
        whole = _fit(corpus, model, tmp_path / "one", devices=1)  # meanwhile, in this process
        deadline = time.monotonic() + 240
        while not workers.join(timeout=1):  # raises if a worker failed, with its traceback
            if time.monotonic() > deadline:
                pytest.fail("the two DDP processes did not finish in 240 s")
    finally:
        for process in workers.processes:
            if process.is_alive():
                process.kill()
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1)]

    assert len(whole["train"]) > 5, "several steps, so that two different fits drift apart"
    assert [len(r["train"]) for r in ranks] == [len(whole["train"])] * 2
    for i, batch in enumerate(whole["train"]):
        halves = [r["train"][i] for r in ranks]
        assert [h.shape[0] for h in halves] == [2, 2], "rows shared out, not repeated"
        assert torch.equal(torch.cat(halves), batch), i  # rank 0 rows 0-1, rank 1 rows 2-3
        assert ranks[0]["carry"][i] == ranks[1]["carry"][i] == whole["carry"][i]
    assert sum(whole["val"]) == sum(ranks[0]["val"]) == n and sum(ranks[1]["val"]) == 0
    assert whole["val/tokens"] == ranks[0]["val/tokens"] == ranks[1]["val/tokens"] == n
    assert whole["val/ppl"] < 0.9 * whole["vocab"], "trained: the comparison can fail"
    for rank in ranks:  # the reduced sums: both ranks report rank 0's scoring
        assert rank["val/ppl"] == pytest.approx(whole["val/ppl"], rel=1e-4)


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


@pytest.mark.slow
def test_ddp_transformer_scores_every_evaluation_window_once(tmp_path):
    """Two ranks and an odd number of evaluation windows: each window is scored by one rank, and
    the perplexities equal one process's scoring of the same (best) checkpoint."""
    from hydra.utils import instantiate

    from lineage.data.windows import sliding_windows
    from lineage.modules.neural import NeuralLM

    two = _train(tmp_path, "two", "trainer=ddp", "tracking=none", model=TRANSFORMER)
    res2 = two["results"]
    assert two["config"]["trainer"]["strategy"] == "ddp"
    targets = _targets(tmp_path)
    for split, n in targets.items():
        assert len(sliding_windows(n + 1, 16, 7)) % 2 == 1, "the case the test is about"
        assert res2[f"{split}/tokens"] == n, split
        assert res2[f"{split}/data_tokens"] == n, split

    # the DDP run's best checkpoint scored by one process
    (best,) = (tmp_path / "two").rglob("best.ckpt")
    torch.set_num_threads(1)
    model = NeuralLM.load_from_checkpoint(best, map_location="cpu")
    cfg = compose_train([*tiny_corpus_overrides(), "tracking=none"], tmp_path / "one")
    dm = instantiate(cfg.corpus)
    dm.setup()
    dm.set_batching(model.batching())
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path / "one"),
    )
    trainer.validate(model, datamodule=dm, verbose=False)
    trainer.test(model, datamodule=dm, verbose=False)
    res1 = model.eval_results
    for split, n in targets.items():
        assert res1[f"{split}/tokens"] == n
        # The same weights score the same windows, each with the same history; only their
        # grouping into batches differs (rank 1 starts a batch of its own), which can change the
        # last bits of float32 matrix products (seen: 1e-10 relative on the mean NLL; float32's
        # epsilon, 1.2e-7, bounds it per token). A window scored twice would move the perplexity
        # by percents: rel=1e-6 tells the two apart with a wide margin on both sides.
        assert res2[f"{split}/ppl"] == pytest.approx(res1[f"{split}/ppl"], rel=1e-6), split
        assert res2[f"{split}/nll"] == pytest.approx(res1[f"{split}/nll"], rel=1e-6), split


def test_each_rank_scores_its_own_evaluation_windows_and_takes_as_many_training_steps(tmp_path):
    """The data module under two ranks (no processes needed): the evaluation windows are split
    without repeating one, and each rank gets the same number of training batches."""
    from types import SimpleNamespace

    from hydra.utils import instantiate

    from lineage.interface import Batching

    cfg = compose_train([*tiny_corpus_overrides(), "tracking=none"], tmp_path)
    dm = instantiate(cfg.corpus, seed=0)
    dm.setup()
    dm.set_batching(
        Batching(mode="window", batch_size=8, seq_len=16, eval_batch_size=3, min_context=7)
    )
    per_rank = {}
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        per_rank[rank] = {split: list(dm.dataloader(split)) for split in ("train", "val", "test")}
    dm.trainer = None
    for split in ("val", "test"):
        single = list(dm.dataloader(split))
        n = dm.stream(split).numel() - 1
        assert sum(b.n_targets for b in single) == n
        scored = [b.n_targets for r in (0, 1) for b in per_rank[r][split]]
        assert sum(scored) == n, "no window scored twice, none left out"
        starts = [s for r in (0, 1) for b in per_rank[r][split] for s in b.meta["starts"]]
        assert starts == [s for b in single for s in b.meta["starts"]]
    train = [per_rank[r]["train"] for r in (0, 1)]
    assert len(train[0]) == len(train[1]), "DDP needs every rank at every optimiser step"
    assert len(train[0]) == -(-len(list(dm.dataloader("train"))) // 2)


def test_a_rank_with_no_evaluation_window_still_joins_the_reduction():
    from lineage.data.windows import empty_batch, shard_windows, sliding_windows

    windows = sliding_windows(12, 16, 7)  # one window
    assert shard_windows(windows, 0, 2) == windows and shard_windows(windows, 1, 2) == []
    shares = [shard_windows(sliding_windows(81, 16, 7), r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert sum(shares, []) == sliding_windows(81, 16, 7)
    assert empty_batch(torch.arange(12), "val", 1).n_targets == 0


def test_gradient_families_shard_their_own_data_under_ddp():
    from lineage.models.recurrent import RecurrentLM
    from lineage.modules.neural import NeuralLM

    for mode in ("stream", "window"):
        model = NeuralLM(
            ["<unk>", "<eos>", "a"],
            net=lambda vocab_size: RecurrentLM(vocab_size, cell="lstm", hidden_size=4),
            optimizer=lambda params: torch.optim.SGD(params, lr=1.0),
            batching={"mode": mode, "batch_size": 2, "seq_len": 4},
        )
        assert model.trainer_overrides()["use_distributed_sampler"] is False, mode
