"""Fine-tuning and training from scratch through the runner: a neural LM on the tiny corpus, a
separable task in the corpus's own words, each adaptation a child MLflow run."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from lineage.train import run

# a last word that tells nothing: 30 distinct texts per class, so the split's test texts are not
# copies of train texts (the pool is deduplicated before splitting)
FILLERS = ["then", "there", "once", "so", "that", "when", "what", "all", "never", "not"]


@pytest.fixture
def separable_csv(tmp_path):
    a = ["alice was very tired", "she thought of the book", "alice had pictures"]
    b = ["the rabbit went down", "rabbit ran out suddenly", "down the rabbit well"]
    rows = [f"{t} {w},a" for t in a for w in FILLERS] + [f"{t} {w},b" for t in b for w in FILLERS]
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


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ("mean", [[3.0, -3.0], [2.0, -2.0], [9.0, -9.0]]),
        ("max", [[5.0, -1.0], [2.0, -2.0], [9.0, -9.0]]),
        ("last", [[1.0, -1.0], [2.0, -2.0], [9.0, -9.0]]),
    ],
)
def test_pooling_reads_the_texts_positions_only(pooling, expected):
    import torch
    from torch import nn

    from lineage.tasks.finetune import TextClassifier

    class Body(nn.Module):  # the state at a position is (id, -id): a leak of padding shows
        def hidden(self, tokens, state):
            h = tokens.float()[..., None]  # (B, T, 1)
            return torch.cat([h, -h], -1), state  # (B, T, 2)

    net = TextClassifier(Body(), n_classes=2, dropout=0.0, pad_id=9, pooling=pooling)
    with torch.no_grad():
        net.head.weight.copy_(torch.eye(2))
        net.head.bias.zero_()
    # start id 9, the text, padding 9; the last row is an empty text (its start state)
    tokens = torch.tensor([[9, 3, 5, 1, 9, 9], [9, 2, 9, 9, 9, 9], [9, 9, 9, 9, 9, 9]])
    lengths = torch.tensor([4, 2, 1])
    with torch.no_grad():
        torch.testing.assert_close(net(tokens, lengths), torch.tensor(expected))


def test_task_vocab_numbers_the_tasks_new_words_after_the_corpus_vocabulary():
    from lineage.data.vocab import EOS, UNK, Vocabulary
    from lineage.tasks.features import TextEncoder

    vocab = Vocabulary([UNK, EOS, "the", "film"])
    encoder = TextEncoder(vocab=vocab)
    train = ["the witty film", "witty and tedious", "tedious film", "the rare film"]
    extra = encoder.new_words(train, min_count=2)
    assert extra == {"tedious": 4, "witty": 5}  # "and", "rare" seen once; ties alphabetical
    ids = encoder.ids(["the witty rare film", "tedious"], extra)
    assert ids == [[2, 5, vocab.unk_id, 3], [4]]
    assert encoder.ids(["the witty rare film"]) == [[2, vocab.unk_id, vocab.unk_id, 3]]
    assert encoder.new_words(train, min_count=1) == {"tedious": 4, "witty": 5, "and": 6, "rare": 7}


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_new_input_rows_are_typical_distinct_words_and_the_old_ones_stay(family):
    import copy

    import torch

    from lineage.models.recurrent import RecurrentLM
    from lineage.models.transformer import TransformerLM
    from lineage.tasks.finetune import extend_input_embeddings

    torch.manual_seed(0)
    if family == "lstm":
        net = RecurrentLM(50, cell="lstm", embedding_size=4, hidden_size=4, num_layers=1)
    else:
        net = TransformerLM(50, d_model=4, n_layers=1, n_heads=2, max_len=16)
    net.eval()
    old = net.get_input_embeddings().weight.detach()  # (50, 4)
    extended = copy.deepcopy(net)
    extend_input_embeddings(extended, 20_000, seed=3)
    weight = extended.get_input_embeddings().weight.detach()  # (20050, 4)
    assert weight.shape == (20_050, 4)
    torch.testing.assert_close(weight[:50], old)
    new = weight[50:]
    # N(mean, covariance) of the old rows: the sample moments match, the rows differ
    torch.testing.assert_close(new.mean(0), old.mean(0), atol=0.05 * old.std(), rtol=0)
    torch.testing.assert_close(new.T.cov(), old.T.cov(), atol=0.05 * old.var(), rtol=0)
    assert len(torch.unique(new, dim=0)) == 20_000
    tokens = torch.tensor([[1, 7, 2, 49]])  # corpus ids: the same states as before
    torch.testing.assert_close(extended.hidden(tokens)[0], net.hidden(tokens)[0])
    again = copy.deepcopy(net)
    extend_input_embeddings(again, 20_000, seed=3)
    assert torch.equal(again.get_input_embeddings().weight, extended.get_input_embeddings().weight)


def write_unseen_csv(path, suffix: str = ""):
    """A separable task whose class words the tiny corpus lacks (then ``suffix``)."""
    a = ["zebra quantum violet", "quantum violet zebra", "violet zebra quantum"]
    b = ["mango orbit crimson", "orbit crimson mango", "crimson mango orbit"]
    rows = [f"{t} {w}{suffix},a" for t in a for w in FILLERS]
    rows += [f"{t} {w}{suffix},b" for t in b for w in FILLERS]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_task_vocab_learns_a_task_written_in_words_the_corpus_lacks(tiny_cfg, tmp_path):
    unseen_csv = write_unseen_csv(tmp_path / "unseen.csv")
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.max_epochs=1",
        "task=[csv]",
        f"task.csv.csv.files.all={unseen_csv}",
        "task.csv.finetune.enabled=true",
        "task.csv.finetune.task_vocab=true",
        "task.csv.finetune.epochs=4",
        "task.csv.finetune.lr=0.01",
        "task.csv.finetune.body_lr_scale=0.1",
        "task.csv.finetune.patience=4",
        "study=task_vocab",
        tracking="mlflow",
    )
    results = run(cfg)
    # the probe reads the corpus vocabulary: every text is "<unk> <unk> <unk>", so no better
    # than the majority class
    assert results["csv/test/accuracy"] <= 0.6
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("task_vocab")
    (child,) = client.search_runs([experiment.experiment_id], "tags.adaptation = 'finetune'")
    assert child.data.metrics["csv/finetune/new_words"] == 6
    assert child.data.metrics["csv/test/accuracy"] == 1.0


@pytest.mark.parametrize("model", ["lstm_small", "transformer_tiny"])
def test_body_dropout_rebuilds_the_body_with_the_lms_weights(tmp_path, model):
    import torch
    from conftest import compose_train
    from hydra.utils import instantiate

    from lineage.tasks.finetune import _body

    cfg = compose_train([f"model={model}"], tmp_path)
    lm = instantiate(cfg.model, vocab=["<unk>", "<eos>", "the", "cat", "N", "."])
    assert lm.hparams.net["dropout"] != 0.35
    body = _body(lm, "finetune", seed=0, n_new=2, dropout=0.35)
    drops = [m.p for m in body.modules() if hasattr(m, "p") and isinstance(m.p, float)]
    assert drops and set(drops) == {0.35}
    state, old = body.state_dict(), lm.net.state_dict()
    for key, value in old.items():
        if value.shape == state[key].shape:
            torch.testing.assert_close(state[key], value)  # the LM's weights ...
        else:  # ... and the task's new input rows after its vocabulary
            torch.testing.assert_close(state[key][: len(value)], value)
            assert state[key].shape[0] == len(value) + 2
    scratch = _body(lm, "scratch", seed=0, n_new=0, dropout=0.35)
    assert {m.p for m in scratch.modules() if isinstance(m, torch.nn.Dropout)} == {0.35}
    assert not torch.equal(
        scratch.get_input_embeddings().weight, lm.net.get_input_embeddings().weight
    )
    kept = _body(lm, "finetune", seed=0)  # no override: the LM's own dropout
    assert {m.p for m in kept.modules() if isinstance(m, torch.nn.Dropout)} == {
        lm.hparams.net["dropout"]
    }


def test_pretrained_false_trains_only_the_scratch_row_checked_twice_per_epoch(
    tiny_cfg, separable_csv
):
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.max_epochs=1",
        "task=[csv]",
        f"task.csv.csv.files.all={separable_csv}",
        "task.csv.finetune.enabled=true",
        "task.csv.finetune.pretrained=false",
        "task.csv.finetune.val_check_interval=0.5",
        "task.csv.finetune.body_dropout=0.2",
        "task.csv.finetune.epochs=2",
        "task.csv.finetune.patience=4",
        "task.csv.finetune.lr=0.01",
        "study=scratch_only",
        tracking="mlflow",
    )
    run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("scratch_only")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags.get("adaptation") for r in runs) == ["probe", "scratch"]
    (child,) = [r for r in runs if r.data.tags["adaptation"] == "scratch"]
    checks = client.get_metric_history(child.info.run_id, "val/accuracy")
    assert len(checks) == 4  # 2 epochs x 2 dev checks
    assert child.data.metrics["csv/test/accuracy"] == 1.0


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("val_check_interval", 0, "val_check_interval=0 must be in (0, 1]"),
        ("body_dropout", 1.0, "body_dropout=1.0 must be in [0, 1)"),
        ("dropout", -0.1, "dropout=-0.1 must be in [0, 1)"),
        ("lm_epochs", -1, "lm_epochs=-1 must be >= 0"),
        ("lm_lr", 0.0, "lm_lr=0.0 > 0"),
        ("pooling", "first", "pooling='first': use mean | max | last"),
    ],
)
def test_bad_finetune_values_name_the_key(key, value, message):
    from lineage.data.sources import DataError
    from lineage.tasks.base import parse_task_config

    cfg = {"source": "csv", "finetune": {key: value}}
    with pytest.raises(DataError, match=re.escape(message)) as error:
        parse_task_config("t", cfg)
    assert "task.t.finetune" in str(error.value)


def test_body_options_a_net_cannot_take_are_errors_that_name_the_setting():
    from types import SimpleNamespace

    from torch import nn

    from lineage.tasks.finetune import _body

    spec = {"_target_": "torch.nn.Embedding", "_partial_": True, "embedding_dim": 3}
    lm = SimpleNamespace(
        family="toy", net=nn.Embedding(4, 3), hparams=SimpleNamespace(net=spec), vocab="abcd"
    )
    with pytest.raises(ValueError, match=r"body_dropout=0.5: the toy net config has no 'dropout'"):
        _body(lm, "scratch", seed=0, dropout=0.5)
    with pytest.raises(ValueError, match=r"set task.<name>.finetune.task_vocab=false"):
        _body(lm, "finetune", seed=0, n_new=2)


def test_lm_stage_loss_is_the_mean_next_word_nll_with_new_words_as_unk():
    import torch

    from lineage.models.recurrent import RecurrentLM
    from lineage.tasks.finetune import LMAdaptModule, _collate

    torch.manual_seed(0)
    net = RecurrentLM(6, cell="lstm", embedding_size=4, hidden_size=4, num_layers=1)
    net.eval()
    extended_input = torch.nn.Embedding(8, 4)  # ids 6, 7: task words the output layer lacks
    with torch.no_grad():
        extended_input.weight[:6] = net.embedding.weight
    net.set_input_embeddings(extended_input)
    eos, unk = 1, 0
    texts = [[eos, 2, 6, 3, eos], [eos, 7, eos]]
    batch = _collate(eos)([(t, 0) for t in texts])
    module = LMAdaptModule(net, lr=1e-3, weight_decay=0.0, n_out=6, unk_id=unk)
    total, count = module._nll_sum(batch)
    expected, n = 0.0, 0
    for text in texts:  # one text at a time, no padding: an independent computation
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.tensor([text[:-1]]))[0][0], dim=-1)  # (T, V)
        for position, target in enumerate(text[1:]):
            expected -= float(logp[position, target if target < 6 else unk])
            n += 1
    assert count == n == 6
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_lm_stage_lowers_dev_perplexity_then_the_classifier_trains(tiny_cfg, tmp_path):
    # the class words are new; "the end" gives the LM corpus words to predict after them
    unseen_csv = write_unseen_csv(tmp_path / "unseen.csv", " the end")
    cfg = tiny_cfg(
        "model=lstm_small",
        "model.max_epochs=1",
        "task=[csv]",
        f"task.csv.csv.files.all={unseen_csv}",
        "task.csv.finetune.enabled=true",
        "task.csv.finetune.task_vocab=true",
        "task.csv.finetune.scratch=true",
        "task.csv.finetune.lm_epochs=3",
        "task.csv.finetune.lm_lr=0.01",
        "task.csv.finetune.epochs=4",
        "task.csv.finetune.lr=0.01",
        "task.csv.finetune.patience=4",
        "study=lm_stage",
        tracking="mlflow",
    )
    run(cfg)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("lm_stage")
    children = client.search_runs([experiment.experiment_id], "tags.adaptation != 'probe'")
    first = {}
    for child in children:  # finetune continues the corpus LM, scratch starts from random
        history = [m.value for m in client.get_metric_history(child.info.run_id, "lm/val_ppl")]
        assert len(history) == 3  # one dev perplexity per LM epoch
        # dev texts repeat the train ones: "<unk> <unk> <unk> the end <eos>" becomes predictable
        assert history[-1] < history[0]
        assert child.data.metrics["csv/lm/val_ppl"] == pytest.approx(min(history))
        assert child.data.metrics["csv/lm/epochs"] == 3
        assert child.data.metrics["csv/test/accuracy"] == 1.0
        first[child.data.tags["adaptation"]] = history[0]
    # after one epoch on the task's texts the corpus LM still predicts "the end" better
    assert first["finetune"] < first["scratch"]


def test_lm_stage_stream_predicts_every_token_once_without_padding_waste():
    from lineage.tasks.base import FinetuneConfig
    from lineage.tasks.finetune import _stream_loader

    eos = 1
    texts = [[2, 3], [4], [5, 6, 7]]  # max_len 2 keeps [5, 6]
    cfg = FinetuneConfig(max_len=2, batch_size=3)
    tokens, lengths, _ = zip(*_stream_loader(texts, cfg, eos, shuffle=False, seed=0), strict=True)
    targets = [
        int(t)
        for batch, n in zip(tokens, lengths, strict=True)
        for row, k in zip(batch, n, strict=True)
        for t in row[1:k]
    ]
    assert targets == [2, 3, eos, 4, eos, 5, 6, eos]  # the stream after its first <eos>
    shuffled = _stream_loader(texts * 50, cfg, eos, shuffle=True, seed=0)
    windows = [row[:k] for batch, n, _ in shuffled for row, k in zip(batch, n, strict=True)]
    assert sum(len(w) - 1 for w in windows) == 50 * 8  # each token a target once per epoch
    assert sum(len(w) < 3 for w in windows) <= 1  # only the stream's last window is short


def test_vector_body_starts_from_the_familys_vectors_and_the_classifier_averages_them():
    from types import SimpleNamespace

    import numpy as np
    import torch

    from lineage.data.vocab import EOS, UNK, Vocabulary
    from lineage.models.embeddings import keyed_vectors, pool
    from lineage.tasks.base import FinetuneConfig
    from lineage.tasks.finetune import TextClassifier, _vector_body

    vocab = Vocabulary([UNK, EOS, "the", "film", "dull"])
    known = [UNK, "the", "film", "dull", "witty"]  # no vector for <eos>; "witty" a task word
    kv = keyed_vectors(known, np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32))
    model = SimpleNamespace(family="word2vec", vocab=vocab)
    body = _vector_body(model, "finetune", 0, ["witty", "tedious"], kv, FinetuneConfig())
    rows = body.get_input_embeddings().weight.detach()  # (7, 3)
    words = [*vocab.itos, "witty", "tedious"]
    assert rows.shape == (7, 3)
    for i, word in enumerate(words):
        if word in known:
            torch.testing.assert_close(rows[i], torch.from_numpy(kv[word]))
    typical = rows[[words.index(EOS), words.index("tedious")]]  # drawn, distinct
    assert len(torch.unique(torch.cat([rows, typical]), dim=0)) == 7

    # VecAvg: the head sees the mean of the text's word vectors (start and padding excluded)
    net = TextClassifier(body, n_classes=2, dropout=0.0, pad_id=vocab.eos_id).eval()
    the, film, dull, witty = (words.index(w) for w in ("the", "film", "dull", "witty"))
    tokens = torch.tensor([[1, the, film, witty, 1], [1, dull, 1, 1, 1]])
    lengths = torch.tensor([4, 2])
    means = torch.from_numpy(pool(kv, [["the", "film", "witty"], ["dull"]]))  # (2, 3)
    with torch.no_grad():
        torch.testing.assert_close(net(tokens, lengths), net.head(means))

    scratch = _vector_body(model, "scratch", 3, ["witty"], kv, FinetuneConfig())
    weight = scratch.get_input_embeddings().weight.detach()
    assert weight.shape == (6, 3) and float(weight.abs().max()) <= 0.5 / 3
    again = _vector_body(model, "scratch", 3, ["witty"], kv, FinetuneConfig())
    assert torch.equal(again.get_input_embeddings().weight, weight)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lm_epochs", 2, "task.<name>.finetune.lm_epochs=2: the word2vec body is its word"),
        ("body_dropout", 0.5, "set task.<name>.finetune.body_dropout=null"),
    ],
)
def test_vector_body_rejects_what_only_a_language_model_has(key, value, message):
    from types import SimpleNamespace

    import numpy as np

    from lineage.data.vocab import EOS, UNK, Vocabulary
    from lineage.models.embeddings import keyed_vectors
    from lineage.tasks.base import FinetuneConfig
    from lineage.tasks.finetune import _vector_body

    kv = keyed_vectors([UNK, "a"], np.ones((2, 3), dtype=np.float32))
    model = SimpleNamespace(family="word2vec", vocab=Vocabulary([UNK, EOS, "a"]))
    with pytest.raises(ValueError, match=re.escape(message)):
        _vector_body(model, "finetune", 0, [], kv, FinetuneConfig(**{key: value}))


def test_word2vec_finetune_starts_the_tasks_words_from_task_text_vectors(tiny_cfg, tmp_path):
    unseen_csv = write_unseen_csv(tmp_path / "unseen.csv")
    cfg = tiny_cfg(
        "model=word2vec",
        "model.lm.workers=1",
        "task=[csv]",
        f"task.csv.csv.files.all={unseen_csv}",
        "task.csv.finetune.enabled=true",
        "task.csv.finetune.scratch=true",
        "task.csv.finetune.task_vocab=true",
        "task.csv.finetune.task_texts=true",
        "task.csv.finetune.epochs=6",
        "task.csv.finetune.lr=0.05",
        "task.csv.finetune.patience=6",
        "study=vectors_finetune",
        tracking="mlflow",
    )
    results = run(cfg)
    assert results["csv/test/accuracy"] <= 0.6  # the probe reads "<unk> <unk> <unk>"
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name("vectors_finetune")
    runs = {r.data.tags["adaptation"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"probe", "finetune", "scratch"}
    for adaptation in ("finetune", "scratch"):
        child = runs[adaptation]
        assert child.info.status == "FINISHED" and child.data.tags["family"] == "word2vec"
        assert child.data.metrics["csv/finetune/new_words"] == 6
        assert child.data.metrics["csv/test/accuracy"] == 1.0, adaptation
    # the corpus's vectors (the run's export) know no task word; the task-text ones know all 6
    from gensim.models import KeyedVectors

    probe_id = runs["probe"].info.run_id
    exported = client.download_artifacts(probe_id, "vectors/word2vec.kv", str(tmp_path))
    corpus_words = len(KeyedVectors.load(exported))
    assert runs["finetune"].data.metrics["csv/finetune/vector_rows"] == corpus_words + 6
    assert "csv/finetune/vector_rows" not in runs["scratch"].data.metrics


@pytest.mark.parametrize(
    ("model", "key", "message"),
    [
        ("lstm_small", "task_texts=true", "task.csv.finetune.task_texts=true: only word-vector"),
        ("word2vec", "lm_epochs=2", "task.csv.finetune.lm_epochs=2: the word2vec body is"),
        ("glove", "body_dropout=0.3", "set task.csv.finetune.body_dropout=null"),
    ],
)
def test_a_setting_the_family_cannot_take_fails_before_training(
    tiny_cfg, separable_csv, tmp_path, model, key, message
):
    cfg = tiny_cfg(
        f"model={model}",
        "task=[csv]",
        f"task.csv.csv.files.all={separable_csv}",
        "task.csv.finetune.enabled=true",
        f"task.csv.finetune.{key}",
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        run(cfg)
    trained = [*tmp_path.rglob("*.ckpt"), *tmp_path.rglob("*.kv")]
    assert not trained  # nothing was fitted


@pytest.mark.parametrize(
    "overrides, precision",
    [([], "32-true"), (["trainer=ddp", "trainer.precision=bf16-mixed"], "bf16-mixed")],
)
def test_task_training_shares_the_runs_accelerator_and_precision_on_one_device(
    tmp_path, overrides, precision
):
    from conftest import compose_train
    from lightning.pytorch.accelerators import CPUAccelerator
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from lineage.tasks.base import FinetuneConfig
    from lineage.tasks.finetune import _trainer, run_trainer_settings

    cfg = compose_train(overrides, tmp_path)
    settings = run_trainer_settings(cfg.trainer)
    assert settings["accelerator"] == "cpu"
    trainer = _trainer(FinetuneConfig(), tmp_path, None, [], 1, settings)
    assert trainer.precision == precision
    assert isinstance(trainer.accelerator, CPUAccelerator)
    # under trainer=ddp (2 devices) a task still trains in the one process that runs it
    assert isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.num_devices == 1
