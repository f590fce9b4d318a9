"""The family contract, checked for every model config found in conf/model/ (a new family is
tested the moment its config exists): proper distributions, one scoring path that agrees with the
next-token distribution, the same targets for every family, checkpoint round-trip, seeded
generation."""

from __future__ import annotations

import pytest
import torch
from conftest import MODEL_CONFIGS, compose_train, tiny_corpus_overrides
from hydra.utils import instantiate

from lineage.interface import Capability, FitMode, TokenBatch

_FITTED: dict[str, tuple] = {}


@pytest.fixture
def fitted(request, tmp_path_factory):
    """(model, datamodule, trainer) for one model config, fitted once on the tiny corpus."""
    name = request.param
    if name not in _FITTED:
        import lightning as L

        root = tmp_path_factory.mktemp(name)
        cfg = compose_train([*tiny_corpus_overrides(), "tracking=none", f"model={name}"], root)
        L.seed_everything(0)
        dm = instantiate(cfg.corpus)
        dm.prepare_data()
        dm.setup()
        model = instantiate(cfg.model, vocab=dm.vocab.itos)
        dm.set_batching(model.batching())
        kwargs = {"max_epochs": 1, "limit_train_batches": 5, **model.trainer_overrides()}
        trainer = L.Trainer(
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(root),
            **kwargs,
        )
        if model.fit_mode != FitMode.NONE:
            trainer.fit(model, datamodule=dm)
        else:  # nothing to fit; attaches the model (checkpoints), whatever test runs first
            trainer.validate(model, datamodule=dm, verbose=False)
        _FITTED[name] = (model, dm, trainer)
    return _FITTED[name]


def _contexts(dm, generator) -> list[torch.Tensor]:
    """Contexts of lengths 0..20: real text, <unk>, <eos>, and random (unseen) histories (20 is
    longer than transformer_tiny's window: its sliding path for long inputs)."""
    V = dm.vocab_size
    stream = dm.stream("test")
    unk, eos = dm.vocab.unk_id, dm.vocab.eos_id
    out = [torch.zeros((2, 0), dtype=torch.long)]
    for length in (1, 2, 3, 5, 8, 12, 20):
        real = stream[:length].unsqueeze(0)
        rand = torch.randint(0, V, (2, length), generator=generator)
        specials = torch.tensor([[unk, eos] * length][0][:length]).unsqueeze(0)
        out.append(torch.cat([real, rand, specials]))
    return out


parametrize_models = pytest.mark.parametrize("fitted", MODEL_CONFIGS, indirect=True)


@parametrize_models
def test_next_token_distribution_sums_to_one(fitted):
    model, dm, _ = fitted
    if Capability.LOG_PROB not in model.capabilities:
        pytest.skip(f"{model.family} has no log-probabilities")
    generator = torch.Generator().manual_seed(0)
    for context in _contexts(dm, generator):
        log_probs = model.next_token_log_probs(context)  # (B, V)
        assert log_probs.shape == (context.shape[0], dm.vocab_size)
        assert torch.isfinite(log_probs).all(), "every type needs a non-zero probability"
        total = torch.logsumexp(log_probs.double(), dim=-1)
        assert torch.allclose(total, torch.zeros_like(total), atol=1e-4), total


@parametrize_models
def test_token_log_probs_agree_with_next_token_distribution(fitted):
    model, dm, _ = fitted
    if Capability.LOG_PROB not in model.capabilities:
        pytest.skip(f"{model.family} has no log-probabilities")
    tokens = dm.stream("test")[:30].unsqueeze(0)  # (1, T)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    scored = model.token_log_probs(TokenBatch(tokens, mask, split="test"))[0]  # (T,)
    for t in range(1, tokens.shape[1]):
        expected = model.next_token_log_probs(tokens[:, :t])[0, tokens[0, t]]
        assert scored[t].item() == pytest.approx(expected.item(), abs=1e-5), t  # float32 nets


@parametrize_models
def test_every_family_scores_every_target_once(fitted):
    model, dm, trainer = fitted
    if Capability.LOG_PROB not in model.capabilities:
        pytest.skip(f"{model.family} has no log-probabilities")
    trainer.validate(model, datamodule=dm, verbose=False)
    metrics = model.eval_results
    # the stream is [<eos>, tokens of the split]: every token of the split is a target once
    assert metrics["val/tokens"] == dm.stream("val").numel() - 1
    assert metrics["val/ppl"] == pytest.approx(torch.tensor(metrics["val/nll"]).exp().item())


@parametrize_models
def test_checkpoint_round_trip_gives_identical_scores(fitted, tmp_path):
    model, dm, trainer = fitted
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = type(model).load_from_checkpoint(path)  # weights_only: plain data only
    restored.eval()
    model.eval()
    if Capability.LOG_PROB not in model.capabilities:  # embedding families: the same features
        texts = [dm.stream("test")[1:30].tolist(), dm.stream("test")[30:33].tolist()]
        assert torch.equal(model.features(texts), restored.features(texts))
        assert restored.vocab == model.vocab
        return
    tokens = dm.stream("test").unsqueeze(0)  # (1, N+1)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 0] = False
    batch = TokenBatch(tokens, mask, split="test")
    assert torch.equal(model.token_log_probs(batch), restored.token_log_probs(batch))
    assert restored.vocab == model.vocab


@pytest.mark.parametrize("fitted", ["word2vec", "glove"], indirect=True)
def test_restored_vectors_on_task_texts_still_read_the_corpus(fitted, tmp_path):
    """A resumed run whose training was done restores the vectors; task-text vectors must
    still be trained on the corpus train split + the task texts, not on the task texts alone."""
    import lightning as L

    model, dm, trainer = fitted
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = type(model).load_from_checkpoint(path)
    with pytest.raises(RuntimeError, match=r"Trainer\.fit\(model, datamodule=\.\.\.\) first"):
        restored.train_vectors([["zebra", "cat"]])
    again = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),  # the vectors it exports go here, not into the checkout
        max_epochs=trainer.max_epochs,
        **{k: v for k, v in restored.trainer_overrides().items() if k != "max_epochs"},
    )
    again.fit(restored, datamodule=dm, ckpt_path=path)  # nothing left to train
    assert restored.corpus_sentences() == model.corpus_sentences()
    words = set(restored.train_vectors([["zebra", "cat"]] * 3).key_to_index)
    assert "zebra" in words and {w for s in model.corpus_sentences() for w in s} <= words


@parametrize_models
def test_seeded_generation_repeats(fitted):
    model, dm, _ = fitted
    if Capability.GENERATE not in model.capabilities:
        pytest.skip(f"{model.family} does not generate")
    prompt = dm.stream("test")[1:4].tolist()
    first = model.generate(prompt, 20, temperature=1.0, top_k=50, seed=7)
    again = model.generate(prompt, 20, temperature=1.0, top_k=50, seed=7)
    other = model.generate(prompt, 20, temperature=1.0, top_k=50, seed=8)
    assert first == again
    assert len(first) == 20 and all(0 <= t < dm.vocab_size for t in first)
    assert first != other  # 20 draws from a spread-out distribution: a collision is ~impossible
    assert model.generate(prompt, 10, temperature=0, seed=1) == model.generate(
        prompt, 10, temperature=0, seed=2
    )  # greedy ignores the seed


@parametrize_models
def test_identity_and_trainer_overrides(fitted):
    import lightning as L

    model, _, _ = fitted
    assert model.family and model.year > 1900 and model.citation and model.era
    assert isinstance(model.fit_mode, FitMode)
    L.Trainer(accelerator="cpu", logger=False, **model.trainer_overrides())  # no misconfiguration
    assert model.cost()["params"] >= 0
