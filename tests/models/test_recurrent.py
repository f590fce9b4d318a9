"""Recurrent families (RNN, LSTM, GRU): proper distributions, learning, stateful scoring equal to
one untruncated pass, truncated BPTT in training (state carried, detached, reset each epoch), the
Zaremba schedule, MLflow learning curves, seeded determinism, and the PTB reproduction behind
``slow``."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from conftest import compose_train, tiny_corpus_overrides
from hydra.utils import instantiate

from lineage.data.windows import stream_batches
from lineage.interface import TokenBatch
from lineage.models.recurrent import RecurrentLM
from lineage.modules.neural import NeuralLM
from lineage.train import run

CELLS = ("rnn", "lstm", "gru")
SMALL = {"rnn": "rnn_small", "lstm": "lstm_small", "gru": "gru_small"}
TINY_NET = ("model.net.hidden_size=16", "model.net.num_layers=2")
RECURRENT = "lineage.models.recurrent.RecurrentLM"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets gain nothing from threads, and on a shared 2-core machine an OpenMP pool that
    waits for a busy core makes these tests 10-25x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _module(cell: str, vocab_size: int = 30, **net) -> NeuralLM:
    vocab = ["<unk>", "<eos>", *(f"w{i}" for i in range(vocab_size - 2))]
    return NeuralLM(
        vocab,
        net=lambda vocab_size: RecurrentLM(vocab_size, cell=cell, hidden_size=12, **net),
        optimizer=lambda params: torch.optim.SGD(params, lr=1.0),
        batching={"mode": "stream", "batch_size": 2, "seq_len": 5},
    )


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "options", [{}, {"dropout": 0.3, "variational": True, "tie_weights": True}]
)
def test_distribution_sums_to_one(cell, options):
    torch.manual_seed(0)
    model = _module(cell, **options).train()  # scoring must switch dropout off by itself
    context = torch.randint(0, 30, (4, 9))  # (B, T)
    log_probs = model.next_token_log_probs(context)  # (B, V)
    assert log_probs.shape == (4, 30)
    total = torch.logsumexp(log_probs, dim=-1)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-6)
    assert torch.equal(log_probs, model.next_token_log_probs(context)), "no dropout in scoring"
    assert model.training, "the caller's mode is restored"


@pytest.mark.parametrize("cell", CELLS)
def test_state_carrying_scores_the_same_as_one_untruncated_pass(cell):
    torch.manual_seed(1)
    model = _module(cell, vocab_size=25).eval()
    stream = torch.randint(0, 25, (203,))  # (N+1,)
    one_pass = TokenBatch(stream[None], torch.ones(1, 203, dtype=torch.bool), split="test")
    one_pass.target_mask[:, 0] = False
    expected = model.token_log_probs(one_pass)[0, 1:]  # (N,)
    for seq_len in (1, 7, 50):
        pieces = []
        for batch in stream_batches(stream, 1, seq_len, "test"):  # carry=True after the first
            pieces.append(model.token_log_probs(batch)[0, 1:])
        carried = torch.cat(pieces)  # (N,)
        assert carried.shape == expected.shape
        assert torch.allclose(carried, expected, atol=1e-5, rtol=0), seq_len
    # without the carried state the scores differ: the test can fail
    fresh = stream_batches(stream, 1, 7, "test")[1]
    fresh.carry = False
    assert not torch.allclose(model.token_log_probs(fresh)[0, 1:], expected[7:14], atol=1e-5)


def _tensors(state) -> list[torch.Tensor]:
    """The tensors of a net's state (an LSTM's: one ``(h, c)`` pair per layer), in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for part in state for t in _tensors(part)]


def test_training_carries_the_detached_state_across_batches_and_resets_it_each_epoch(tmp_path):
    """Truncated BPTT in a real fit (two epochs of four stream batches): batch k+1 starts from
    batch k's final state, equal in value and detached, so its loss's gradient stops at the batch
    boundary; every epoch starts from the zero state."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from lineage.data.windows import passthrough

    torch.manual_seed(0)
    model = NeuralLM(  # specs, not lambdas: Lightning drops hparams it cannot pickle in fit
        ["<unk>", "<eos>", *(f"w{i}" for i in range(18))],
        net={"_target_": RECURRENT, "_partial_": True, "cell": "lstm", "hidden_size": 12},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1.0},
        batching={"mode": "stream", "batch_size": 2, "seq_len": 5},
    )  # 2 layers of 12 units, no clipping, no dropout
    batches = stream_batches(torch.randint(0, 20, (41,)), 2, 5, "train")  # 4 batches, (2, 6)
    assert [b.carry for b in batches] == [False, True, True, True]
    net_forward = model.net.forward
    calls = []  # one per training step: the net's state in and out, its embedded inputs

    def recording_forward(tokens, state=None):
        if not torch.is_grad_enabled():  # scoring and sampling: not a training step
            return net_forward(tokens, state)
        embedded = []
        hook = model.net.embedding.register_forward_hook(lambda m, i, out: embedded.append(out))
        try:
            logits, new_state = net_forward(tokens, state)
        finally:
            hook.remove()
        embedded[0].retain_grad()  # the gradient that reaches this batch's inputs
        calls.append({"state_in": state, "state_out": new_state, "embedded": embedded[0]})
        return logits, new_state

    model.net.forward = recording_forward
    params = [p for p in model.parameters() if p.requires_grad]

    class Watch(L.Callback):
        def __init__(self):
            self.starts = []  # (epoch, batch index, the module's state before the step)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            # the module's own state, after its on_train_epoch_start and before the step
            held = pl_module._train_state
            self.starts.append((trainer.current_epoch, batch_idx, held))
            self.batch = batch

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            # after this step's backward, before the update
            call = calls[-1]
            call["epoch"] = trainer.current_epoch
            call["grad_own_step"] = call["embedded"].grad.clone()
            call["param_grads"] = [p.grad.clone() for p in params]
            # the same loss computed afresh from the carried state as a constant
            with torch.enable_grad():
                logits, _ = net_forward(self.batch.tokens[:, :-1], call["state_in"])
                loss = F.cross_entropy(logits.flatten(0, 1), self.batch.tokens[:, 1:].flatten())
                call["fresh_grads"] = torch.autograd.grad(loss, params)

    watch = Watch()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[watch],
        default_root_dir=str(tmp_path),
    )
    val = stream_batches(torch.randint(0, 20, (21,)), 1, 10, "val")  # between the epochs
    trainer.fit(
        model,
        train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=passthrough),
        val_dataloaders=DataLoader(val, batch_size=None, collate_fn=passthrough),
    )

    assert [c["epoch"] for c in calls] == [0, 0, 0, 0, 1, 1, 1, 1]
    # (b) reset: each epoch's first step starts from the zero state, not the previous epoch's
    # last one (which is still held when the epoch ends)
    firsts = [held for epoch, i, held in watch.starts if i == 0]
    assert len(firsts) == 2 and all(held is None for held in firsts)
    assert [c["state_in"] is None for c in calls] == [True, False, False, False] * 2
    for prev, call in zip(calls, calls[1:], strict=False):
        if call["state_in"] is None:  # the first step of an epoch
            continue
        # (a) carried: batch k+1 starts from batch k's final state, value for value ...
        before, carried = _tensors(prev["state_out"]), _tensors(call["state_in"])
        assert len(carried) == 4, "(h, c) for each of the 2 layers"
        for out, into in zip(before, carried, strict=True):
            assert out.grad_fn is not None, "in the graph before the cut: the test can fail"
            assert torch.equal(into, out.detach())
            # ... and detached: outside batch k's graph
            assert into.grad_fn is None and not into.requires_grad
        # (c) batch k+1's backward sent no gradient into batch k's inputs: their gradient is
        # the one their own step gave them (a backward through the carried state would add to it)
        assert prev["grad_own_step"].abs().sum() > 0
        assert torch.equal(prev["embedded"].grad, prev["grad_own_step"])
        # and the gradient Lightning stepped with is that of batch k+1 alone, from the state
        for stepped, fresh in zip(call["param_grads"], call["fresh_grads"], strict=True):
            assert torch.allclose(stepped, fresh, rtol=1e-5, atol=1e-7)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="model.net.cell='elman'"):
        RecurrentLM(10, cell="elman")
    with pytest.raises(ValueError, match="tie_weights"):
        RecurrentLM(10, hidden_size=8, embedding_size=4, tie_weights=True)
    with pytest.raises(ValueError, match="model.net.dropout"):
        RecurrentLM(10, dropout=1.0)
    with pytest.raises(ValueError, match="model.loss_reduction='sum'"):
        NeuralLM(["<unk>", "<eos>"], net=None, optimizer=None, loss_reduction="sum")


def test_tied_weights_share_one_matrix():
    net = RecurrentLM(50, hidden_size=8, tie_weights=True)
    assert net.decoder.weight is net.embedding.weight
    assert sum(p.numel() for p in net.parameters()) < sum(
        p.numel() for p in RecurrentLM(50, hidden_size=8).parameters()
    )


def test_identity_follows_the_cell():
    years = {c: RecurrentLM(10, cell=c).year for c in CELLS}
    assert years == {"rnn": 1990, "lstm": 1997, "gru": 2014}
    assert {RecurrentLM(10, cell=c).family for c in CELLS} == set(CELLS)


def test_sum_over_time_loss_is_mean_times_steps():
    """Zaremba's cost (sum over BPTT steps, mean over rows): the gradient is T times the mean's."""
    torch.manual_seed(0)
    grads = {}
    for reduction in ("mean", "sum_over_time"):
        model = _module("lstm")
        model.hparams.loss_reduction = reduction
        torch.manual_seed(0)
        model.net.reset_parameters(0.1)
        batch = stream_batches(torch.randint(0, 30, (41,)), 2, 5, "train")[0]  # (2, 6)
        loss = model.training_step(batch, 0)
        loss.backward()
        grads[reduction] = model.net.decoder.bias.grad.clone()
    assert torch.allclose(grads["sum_over_time"], 5 * grads["mean"], atol=1e-6)


def test_zaremba_small_config_states_the_paper_hyper_parameters(tmp_path):
    cfg = compose_train([*tiny_corpus_overrides(), "tracking=none", "model=lstm_small"], tmp_path)
    m = cfg.model
    assert (m.net.num_layers, m.net.hidden_size, m.net.dropout, m.net.init_range) == (
        2,
        200,
        0.0,
        0.1,
    )
    assert (m.batching.batch_size, m.batching.seq_len, m.optimizer.lr) == (20, 20, 1.0)
    assert (m.gradient_clip_val, m.max_epochs, m.loss_reduction) == (5.0, 13, "sum_over_time")
    # TF ptb_word_lm: lr * lr_decay ** max(i + 1 - max_epoch, 0) for epoch i (0-based)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=m.optimizer.lr)
    sched = instantiate(m.scheduler)(optimizer=opt)
    for i in range(m.max_epochs):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 ** max(i + 1 - 4, 0)), i
        opt.step()
        sched.step()
    med = compose_train([*tiny_corpus_overrides(), "model=lstm_medium"], tmp_path / "m").model
    assert (med.net.hidden_size, med.net.dropout, med.net.init_range) == (650, 0.5, 0.05)
    assert (med.batching.seq_len, med.max_epochs, med.scheduler.gamma) == (35, 39, 0.8)
    assert list(med.scheduler.milestones) == list(range(6, 39))


def _tiny_overrides(cell: str, *extra: str) -> list[str]:
    return [
        f"model={SMALL[cell]}",
        *TINY_NET,
        "model.batching.batch_size=4",
        "model.batching.seq_len=10",
        "model.batching.eval_seq_len=50",
        "trainer.enable_progress_bar=false",
        "samples.count=2",
        "samples.max_new_tokens=5",
        *extra,
    ]


@pytest.mark.parametrize("cell", CELLS)
def test_loss_decreases_on_a_tiny_corpus(cell, tiny_cfg, tmp_path):
    # valid = train: the loss on the training text itself must fall
    train_file = tiny_corpus_overrides()[1].split("=", 1)[1]
    cfg = tiny_cfg(
        *_tiny_overrides(cell, "model.max_epochs=8", "model.optimizer.lr=0.2"),
        f"corpus.files.valid={train_file}",
    )
    L.seed_everything(0)
    dm = instantiate(cfg.corpus)
    dm.setup()
    model = instantiate(cfg.model, vocab=dm.vocab.itos)
    dm.set_batching(model.batching())
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),  # the module's ModelCheckpoint writes here
        **model.trainer_overrides(),
    )
    trainer.validate(model, datamodule=dm, verbose=False)
    before = model.eval_results["val/ppl"]
    assert before == pytest.approx(dm.vocab_size, rel=0.1), "U(-0.1, 0.1) init: near uniform"
    trainer.fit(model, datamodule=dm)
    assert model.eval_results["val/ppl"] < 0.7 * before
    assert model.eval_results["val/tokens"] == dm.stream("val").numel() - 1


def test_learning_curve_schedule_and_samples_reach_mlflow(tiny_cfg):
    from mlflow.tracking import MlflowClient

    cfg = tiny_cfg(*_tiny_overrides("gru", "model.max_epochs=6"), "study=rnn", tracking="mlflow")
    results = run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("rnn").experiment_id])
    curve = client.get_metric_history(mlrun.info.run_id, "val/ppl")
    assert len(curve) >= 6, "one val/ppl per epoch (the final validation may add one)"
    steps = [m.step for m in curve]
    assert steps[:6] == sorted(set(steps[:6])), "one point per epoch, at increasing steps"
    lrs = [m.value for m in client.get_metric_history(mlrun.info.run_id, "train/lr")]
    lr = cfg.model.optimizer.lr  # the config's base rate, halved after each epoch from the 5th
    assert lrs == pytest.approx([lr, lr, lr, lr, lr / 2, lr / 4])
    assert mlrun.data.tags["family"] == "gru"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert "samples.txt" in artifacts
    # valid and test are reported for the best-on-valid checkpoint: the curve's minimum
    assert min(m.value for m in curve[:6]) == pytest.approx(results["val/ppl"], rel=1e-6)


def test_seeded_deterministic_runs_give_identical_metrics(tiny_cfg):
    overrides = _tiny_overrides("lstm", "model.max_epochs=2", "trainer.deterministic=true")
    first = run(tiny_cfg(*overrides, "seed=3"))
    again = run(tiny_cfg(*overrides, "seed=3", "force=true"))
    other = run(tiny_cfg(*overrides, "seed=4", "force=true"))
    for key in ("val/ppl", "test/ppl", "val/nll"):
        assert first[key] == again[key], key
    assert first["val/ppl"] != other["val/ppl"]


@pytest.mark.slow
def test_zaremba_small_reproduces_on_ptb(shared_data, tmp_path):
    """The full reproduction (≈ 1 h on one core): PTB test perplexity ≤ 116 (paper 114.5)."""
    cfg = compose_train(
        [
            "corpus=ptb",
            f"corpus.data_dir={shared_data / 'ptb'}",
            "model=lstm_small",
            "tracking=none",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
    )
    results = run(cfg)
    assert results["test/tokens"] == 82430
    assert results["test/ppl"] <= 116.0
    assert math.isfinite(results["val/ppl"]) and results["val/ppl"] < 125
