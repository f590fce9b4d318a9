"""``ckpt_path=`` resumes an interrupted recurrent run where it stopped: epoch count, global step,
learning-rate schedule, weights and optimizer, so the resumed run ends with the same metrics as
one that was never interrupted."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from conftest import compose_train, tiny_corpus_overrides

from lineage.data.sources import DataError
from lineage.tracking import config_hash
from lineage.train import run

OVERRIDES = [
    *tiny_corpus_overrides(),
    "tracking=none",
    "model=lstm_small",
    "model.net.hidden_size=16",
    "model.batching.batch_size=4",
    "model.batching.seq_len=10",
    "model.batching.eval_seq_len=50",
    "model.max_epochs=6",  # the schedule halves the lr after epochs 4 and 5 (0-based 3 and 4)
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "samples.count=0",
    "model.optimizer.lr=0.3",  # stable on the tiny corpus (the test needs no divergence)
    "seed=5",
]


class _Record(L.Callback):
    """What each epoch started from: (epoch, global step, learning rate)."""

    def __init__(self):
        self.epochs: list[tuple[int, int, float]] = []
        self.val_ppl: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.epochs.append((trainer.current_epoch, trainer.global_step, lr))

    def on_validation_end(self, trainer, pl_module):  # after the module's epoch-end hook
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.val_ppl.append(float(trainer.callback_metrics["val/ppl"]))


class _Crash(L.Callback):
    """Kills the fit at the start of ``epoch`` (as a crash or a lost machine would)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets; a shared machine's busy cores stall a thread pool
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_resume_continues_the_epoch_count_and_the_lr_schedule(tmp_path, dropout):
    # with dropout the masks continue too: the generators' states are in the checkpoint
    overrides = [*OVERRIDES, f"model.net.dropout={dropout}"]
    whole = _Record()
    expected = run(compose_train(overrides, tmp_path / "whole"), callbacks=[whole])
    steps_per_epoch = whole.epochs[1][1]
    assert [lr for _, _, lr in whole.epochs] == pytest.approx([0.3, 0.3, 0.3, 0.3, 0.15, 0.075])

    first = _Record()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_train(overrides, tmp_path / "first"), callbacks=[first, _Crash(epoch=4)])
    last = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file(), "the module's ModelCheckpoint keeps last.ckpt for resuming"
    assert torch.load(last, weights_only=True)["epoch"] == 3

    resumed = _Record()
    results = run(
        compose_train([*overrides, f"ckpt_path={last}"], tmp_path / "resumed"),
        callbacks=[resumed],
    )
    # starts at epoch 4 from the saved step, with the decayed learning rate, then decays again
    assert resumed.epochs == [
        (4, 4 * steps_per_epoch, pytest.approx(0.15)),
        (5, 5 * steps_per_epoch, pytest.approx(0.075)),
    ]
    assert first.val_ppl + resumed.val_ppl == pytest.approx(whole.val_ppl, rel=1e-9)
    for key in ("val/ppl", "test/ppl", "test/tokens"):
        assert results[key] == pytest.approx(expected[key], rel=1e-9), key
    # the training time carries over: the checkpoint's seconds plus the resumed fit's
    before = torch.load(last, weights_only=True)["lineage_train_seconds"]
    assert before > 0
    assert results["cost/train_seconds"] > before


def test_a_resumed_run_continues_the_killed_runs_record_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    tracked = [
        *[o for o in OVERRIDES if o != "tracking=none"],
        "tracking=mlflow",
        f"paths.mlruns_dir={tmp_path / 'mlruns'}",
        "tracking.log_model=false",
        "study=resume",
    ]
    first = _Record()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_train(tracked, tmp_path / "first"), callbacks=[first, _Crash(epoch=4)])
    (last,) = (tmp_path / "first").rglob("last.ckpt")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (killed,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert torch.load(last, weights_only=True)["mlflow_run_id"] == killed.info.run_id
    # a SIGKILL leaves the run RUNNING: nothing in the process could end it
    client.update_run(killed.info.run_id, status="RUNNING")
    step = torch.load(last, weights_only=True)["global_step"]
    for key in ("test/ppl", "sst2/test/accuracy", "cost/train_seconds"):  # as if killed later
        client.log_metric(killed.info.run_id, key, -1.0, step=step)

    resumed = _Record()
    run(compose_train([*tracked, f"ckpt_path={last}"], tmp_path / "resumed"), callbacks=[resumed])
    runs = client.search_runs([killed.info.experiment_id], order_by=["attributes.start_time"])
    old, new = runs
    assert old.info.status == "FAILED" and old.data.tags["resumed_by"] == new.info.run_id
    assert new.info.status == "FINISHED" and new.data.tags["resumed_from"] == old.info.run_id
    history = client.get_metric_history(new.info.run_id, "val/ppl")
    per_step: dict[int, float] = {}  # the first value of a step (the report's rule)
    for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
        per_step.setdefault(m.step, m.value)
    # epochs 1-4 from the killed run, 5-6 from the resumed fit, one value per epoch's step
    assert list(per_step.values()) == pytest.approx(first.val_ppl + resumed.val_ppl)
    tokens = client.get_metric_history(new.info.run_id, "train/tokens")
    assert len(tokens) == 1  # logged by both runs at step 0: kept once
    assert new.data.tags["config_hash"] == old.data.tags["config_hash"]  # the same config
    # what the killed run scored after its fit is not this run's
    assert "sst2/test/accuracy" not in new.data.metrics
    for key in ("test/ppl", "cost/train_seconds"):
        assert -1.0 not in [m.value for m in client.get_metric_history(new.info.run_id, key)]
    # continued under another config (seed 6 from seed 5's checkpoint): recorded as neither
    other = [*[o for o in tracked if o != "seed=5"], "seed=6", f"ckpt_path={last}"]
    run(compose_train(other, tmp_path / "other"))
    latest = client.search_runs(
        [killed.info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )[0]
    mine = config_hash(compose_train(other, tmp_path / "other"))
    assert latest.data.tags["config_hash"] == f"{mine}+{old.data.tags['config_hash']}"
    assert run(compose_train(other[:-1], tmp_path / "fresh"))["val/ppl"] > 0  # not skipped
    assert len(client.search_runs([killed.info.experiment_id])) == 4


def test_a_missing_checkpoint_is_a_clear_error_and_opens_no_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from lineage.data.sources import DataError

    missing = tmp_path / "nowhere" / "last.ckpt"
    untracked = compose_train([*OVERRIDES, f"ckpt_path={missing}"], tmp_path / "untracked")
    with pytest.raises(DataError, match=rf"ckpt_path={missing}: no such checkpoint file"):
        run(untracked)
    cfg = compose_train(
        [
            *[o for o in OVERRIDES if o != "tracking=none"],
            "tracking=mlflow",
            f"ckpt_path={missing}",
            "study=resume_missing",
        ],
        tmp_path,
    )
    with pytest.raises(DataError, match=rf"ckpt_path={missing}: no such checkpoint file"):
        run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("resume_missing")  # checked before a run opens
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_a_checkpoint_without_generator_states_resumes_with_new_reproducible_masks(tmp_path):
    overrides = [*OVERRIDES, "model.net.dropout=0.5"]
    first = _Record()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_train(overrides, tmp_path / "first"), callbacks=[first, _Crash(epoch=4)])
    last = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    old = tmp_path / "old.ckpt"  # as written before checkpoints kept the generators
    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["rng_states"]
    torch.save(checkpoint, old)

    def resume(name: str, ckpt) -> list[float]:
        record = _Record()
        run(compose_train([*overrides, f"ckpt_path={ckpt}"], tmp_path / name), callbacks=[record])
        return record.val_ppl

    from_old = resume("old", old)
    assert os.environ["PL_GLOBAL_SEED"] == "5"  # the run's seed stays the workers' seed
    assert resume("old_again", old) == from_old  # seeded from (seed, step): reproducible
    assert from_old != pytest.approx(resume("kept", last), rel=1e-6)  # other masks than kept


def test_without_fit_the_checkpoint_is_the_model_scored(tmp_path):
    """``stages=[validate,test] ckpt_path=…/best.ckpt`` scores that checkpoint (valid, test and
    tasks), not freshly initialised weights; the run is its own row (``overrides`` tag)."""
    from mlflow.tracking import MlflowClient

    short = [o for o in OVERRIDES if not o.startswith("model.max_epochs")] + ["model.max_epochs=2"]
    trained = run(compose_train(short, tmp_path / "trained"))
    (best,) = (tmp_path / "trained").rglob("best.ckpt")
    with pytest.raises(DataError) as err:  # without a checkpoint: untrained weights, refused
        run(compose_train([*short, "stages=[validate,test]"], tmp_path / "fresh"))
    assert str(err.value) == (
        "stages=['validate', 'test']: without fit, lstm_small would be scored untrained; give "
        "the model to score (ckpt_path=<its run's checkpoints/best.ckpt>) or add fit"
    )
    tracked = [o for o in short if o != "tracking=none"] + ["tracking=mlflow", "study=scored"]
    cfg = compose_train([*tracked, "stages=[validate,test]", f"ckpt_path={best}"], tmp_path)
    scored = run(cfg)
    assert scored["test/ppl"] == pytest.approx(trained["test/ppl"], rel=1e-9)
    assert scored["val/ppl"] == pytest.approx(trained["val/ppl"], rel=1e-9)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("scored").experiment_id])
    assert "resumed_from" not in mlrun.data.tags
    assert "stages=[validate,test]" in mlrun.data.tags.get("overrides", "")
    # the same command again is skipped; once the file is replaced by another model, it runs
    assert run(cfg)["test/ppl"] == scored["test/ppl"]
    other = run(compose_train([*short, "seed=6"], tmp_path / "other"))
    (other_best,) = (tmp_path / "other").rglob("best.ckpt")
    best.write_bytes(other_best.read_bytes())
    rescored = run(cfg)
    assert len(client.search_runs([mlrun.info.experiment_id])) == 2
    assert rescored["test/ppl"] == pytest.approx(other["test/ppl"], rel=1e-9)
    assert rescored["test/ppl"] != pytest.approx(trained["test/ppl"], rel=1e-6)
    # another vocabulary (here: a smaller cap) would give the ids other words: refused, scoring
    # or continuing, before a run opens
    for stages in ("stages=[validate,test]", "stages=[fit,validate,test]"):
        smaller = compose_train([*tracked, stages, "corpus.max_size=20", f"ckpt_path={best}"],
                                tmp_path)  # fmt: skip
        with pytest.raises(DataError, match=r"the checkpoint's vocabulary is not this corpus's"):
            run(smaller)
    assert len(client.search_runs([mlrun.info.experiment_id])) == 2
