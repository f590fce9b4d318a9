"""Transformer family (Vaswani et al. 2017; Radford et al. 2018): a proper, causal distribution,
sliding-window scoring, the key/value cache, checkpoints, seeded generation, the schedule, bf16."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_train, tiny_corpus_overrides
from hydra.utils import instantiate

from lineage.data.windows import window_batches
from lineage.interface import TokenBatch
from lineage.models.transformer import TransformerLM
from lineage.modules.base import LineageModule
from lineage.modules.schedules import WarmupCosine, warmup_cosine_factor

V = 50


def _net(**kwargs) -> TransformerLM:
    torch.manual_seed(0)
    spec = dict(d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16, dropout=0.0) | kwargs
    return TransformerLM(V, **spec).eval()


def _module(max_len: int = 16, min_context: int = 8):
    """A NeuralLM around a tiny transformer, built from plain config as the runner does."""
    from lineage.modules.neural import NeuralLM

    torch.manual_seed(0)
    net = {
        "_target_": "lineage.models.transformer.TransformerLM",
        "_partial_": True,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "max_len": max_len,
        "dropout": 0.1,
    }
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
    batching = {"mode": "window", "batch_size": 4, "seq_len": max_len, "min_context": min_context}
    vocab = ["<unk>", "<eos>", *(f"w{i}" for i in range(V - 2))]
    return NeuralLM(vocab, net=net, optimizer=optimizer, batching=batching).eval()


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_distribution_sums_to_one(positions):
    net = _net(positions=positions)
    tokens = torch.randint(0, V, (3, 40), generator=torch.Generator().manual_seed(1))  # > max_len
    logits, _ = net(tokens)  # (3, 40, V)
    assert logits.shape == (3, 40, V)
    total = torch.logsumexp(torch.log_softmax(logits.double(), -1), -1)  # (3, 40)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-6)


def test_causal_mask_future_tokens_change_no_earlier_log_prob():
    net = _net()
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, V, (2, 16), generator=g)
    changed = tokens.clone()
    changed[:, 9:] = torch.randint(0, V, (2, 7), generator=g)
    assert not torch.equal(changed[:, 9:], tokens[:, 9:])
    a = torch.log_softmax(net(tokens)[0], -1)  # (2, 16, V)
    b = torch.log_softmax(net(changed)[0], -1)  # (2, 16, V)
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)  # positions 0..8 never see 9..
    assert not torch.allclose(a[:, 9:], b[:, 9:], atol=1e-3)  # the test can fail


def test_long_inputs_see_exactly_the_last_max_len_tokens():
    net = _net()
    tokens = torch.randint(0, V, (2, 37), generator=torch.Generator().manual_seed(3))
    logits, _ = net(tokens)  # (2, 37, V)
    for t in range(37):
        window, _ = net(tokens[:, max(0, t - 15) : t + 1])  # the last 16 tokens up to t
        assert torch.allclose(logits[:, t], window[:, -1], atol=1e-5), t


def test_cache_gives_the_same_logits_as_reencoding_also_past_max_len():
    net = _net()
    tokens = torch.randint(0, V, (2, 30), generator=torch.Generator().manual_seed(4))
    full, _ = net(tokens)  # (2, 30, V)
    logits, state = net(tokens[:, :5])
    steps = [logits]
    for t in range(5, 30, 3):  # chunks of 3 new tokens, crossing max_len = 16
        logits, state = net(tokens[:, t : t + 3], state)
        steps.append(logits)
        assert state["tokens"].shape[1] <= net.max_len
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_sliding_window_scoring_equals_full_context_when_the_split_fits_one_window():
    model = _module(max_len=16, min_context=8)
    stream = torch.randint(2, V, (17,), generator=torch.Generator().manual_seed(5))
    stream[0] = 1  # the leading <eos>
    batches = window_batches(stream, seq_len=16, min_context=8, batch_size=4, split="test")
    assert len(batches) == 1 and batches[0].n_targets == 16
    windowed = model.token_log_probs(batches[0])[batches[0].target_mask]  # (16,)
    full = torch.stack(
        [model.next_token_log_probs(stream[None, :t])[0, stream[t]] for t in range(1, 17)]
    )  # (16,): each target given its whole history
    assert torch.allclose(windowed, full, atol=1e-6)


def test_sliding_windows_score_every_target_once_with_min_context():
    model = _module(max_len=16, min_context=8)
    stream = torch.randint(2, V, (70,), generator=torch.Generator().manual_seed(6))
    stream[0] = 1
    batches = window_batches(stream, seq_len=16, min_context=8, batch_size=3, split="test")
    total, n = 0.0, 0
    expected = 0.0
    for b in batches:
        scores = model.token_log_probs(b)  # (B, T)
        total += float(scores[b.target_mask].sum())
        n += b.n_targets
        for row, start in enumerate(b.meta["starts"]):
            for col in b.target_mask[row].nonzero().flatten().tolist():
                assert col >= min(8 + 1, start + col)  # min_context + 1 tokens of history
                context = stream[None, start : start + col]  # the window's history of the target
                expected += float(model.next_token_log_probs(context)[0, stream[start + col]])
    assert n == len(stream) - 1
    assert total == pytest.approx(expected, abs=1e-4)


def _fit_tiny(tmp_path, *overrides: str):
    import lightning as L

    cfg = compose_train(
        [*tiny_corpus_overrides(), "tracking=none", "model=transformer_tiny", *overrides], tmp_path
    )
    L.seed_everything(0)
    dm = instantiate(cfg.corpus)
    dm.prepare_data()
    dm.setup()
    model = instantiate(cfg.model, vocab=dm.vocab.itos)
    dm.set_batching(model.batching())
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        limit_train_batches=3,
        limit_val_batches=2,
        **{**model.trainer_overrides(), "max_epochs": 1},
        precision=cfg.trainer.precision,
    )
    trainer.fit(model, datamodule=dm)
    return model, dm, trainer


def test_checkpoint_round_trip_gives_identical_scores(tmp_path):
    from lineage.modules.neural import NeuralLM

    model, dm, trainer = _fit_tiny(tmp_path)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = NeuralLM.load_from_checkpoint(path).eval()  # weights_only: plain data only
    model.eval()
    tokens = dm.stream("test")[None, :40]  # (1, 40): longer than the context (16)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    batch = TokenBatch(tokens, mask, split="test")
    assert torch.equal(model.token_log_probs(batch), restored.token_log_probs(batch))
    assert restored.hparams.scheduler["_target_"].endswith("WarmupCosine")
    assert restored.net.max_len == 16


def test_generation_is_seeded_and_the_cache_matches_uncached_sampling():
    model = _module(max_len=16)
    prompt = [1, 5, 7, 9, 11]
    for temperature, top_k in ((1.0, None), (0.8, 10), (0.0, None)):
        cached = model.generate(prompt, 30, temperature=temperature, top_k=top_k, seed=3)
        # the base class samples from next_token_log_probs(whole context) at every step
        uncached = LineageModule.generate(model, prompt, 30, temperature, top_k, seed=3)
        assert cached == uncached, (temperature, top_k)  # 35 tokens: past the 16-token context
    assert model.generate(prompt, 20, seed=3) == model.generate(prompt, 20, seed=3)
    assert model.generate(prompt, 20, seed=3) != model.generate(prompt, 20, seed=4)
    assert all(0 <= t < V for t in model.generate([], 10, seed=0))


def test_cost_counts_tied_weights_once_and_flops_per_token():
    net = _net(tie_weights=True)
    untied = _net(tie_weights=False)
    assert untied.n_params() - net.n_params() == V * 32
    D, L, T = 32, 2, 16
    per_layer = 3 * D * D + D * D + 2 * D * 64  # qkv, projection, MLP (d_ff 64)
    assert net.flops_per_token() == 6 * (L * per_layer + D * V) + 12 * L * D * T
    groups = net.optim_groups()
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    assert n_grouped == net.n_params() and groups[1]["weight_decay"] == 0.0


def test_warmup_cosine_schedule():
    assert warmup_cosine_factor(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert warmup_cosine_factor(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(500, 10, 110, 0.1) == pytest.approx(0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=2.0)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=8, min_lr_ratio=0.0)
    lrs = []
    for _ in range(9):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[6] == pytest.approx(1.0) and lrs[8] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(1 + math.cos(math.pi / 4))


def test_schedule_length_follows_the_trainer_and_the_budget_is_a_model_setting(tmp_path):
    model, dm, trainer = _fit_tiny(tmp_path, "model.scheduler.total_steps=null")
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == trainer.estimated_stepping_batches == 3  # 1 epoch × 3 batches
    assert trainer.global_step == 3
    model, _, _ = _fit_tiny(tmp_path, "+model.max_time=00:00:30:00")
    assert model.trainer_overrides()["max_time"] == "00:00:30:00"
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 1, None)


def test_bf16_mixed_precision_on_cpu(tmp_path):
    """``lineage-train model=transformer_tiny trainer.precision=bf16-mixed``: a plain setting
    (Lightning's default ``32-true`` is in conf/trainer), which the run's Trainer computes in."""
    import lightning as L

    from lineage.train import run

    class Precision(L.Callback):  # the precision the run's Trainer computes in
        def on_fit_start(self, trainer, pl_module):
            self.precision = trainer.precision

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.scaled_dot_product_attention(*torch.randn(3, 1, 1, 4, 8))
    except RuntimeError as err:
        pytest.skip(f"bfloat16 autocast unsupported here: {err}")
    model, dm, trainer = _fit_tiny(tmp_path, "trainer.precision=bf16-mixed")
    assert trainer.precision == "bf16-mixed"
    trainer.validate(model, datamodule=dm, verbose=False)
    assert math.isfinite(model.eval_results["val/ppl"])
    # through the runner, as the command line does
    cfg = compose_train(
        [*tiny_corpus_overrides(), "tracking=none", "model=transformer_tiny", "samples.count=0"]
        + ["trainer.enable_progress_bar=false", "trainer.precision=bf16-mixed"],
        tmp_path / "run",
    )
    seen = Precision()
    results = run(cfg, callbacks=[seen])
    assert seen.precision == "bf16-mixed"
    assert math.isfinite(results["val/ppl"]) and math.isfinite(results["test/ppl"])
