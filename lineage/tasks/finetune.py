"""Fine-tuning (``finetune``) and training from scratch (``scratch``) for neural and
word-vector families.

The LM's body (its net up to the last hidden layer, ``net.hidden(tokens, state) -> (B, T, H)``)
plus a classification head on the pooled hidden states (``finetune.pooling``: their mean, as the
probe's features, by default; their maximum; or the last state), trained end to end on the task
with a Lightning ``Trainer``: AdamW (the body's rate may be a fraction of the head's,
``body_lr_scale``), cross-entropy, the epoch with the best dev accuracy kept
(``ModelCheckpoint``), early stopping on dev, then scored once on test.
``scratch`` trains the same architecture from random weights (the family's own initialisation,
seeded), so the pair shows what pretraining on the corpus buys.

``finetune.lm_epochs`` > 0 first continues the LM's own next-word training on the task's train
texts (shuffled once, joined as ``<eos> w1 … wn <eos> v1 …`` and cut into windows of ``max_len``
tokens, so that no step is spent on padding; the LM's output layer over the corpus vocabulary,
task words beyond it predicted as ``<unk>``), keeping the epoch with the lowest dev perplexity, and
only then trains the classifier: the "LM-LSTM" of Dai & Le (2015), "Semi-supervised sequence
learning", the middle stage of Howard & Ruder (2018). It teaches the body the task's domain and
the new input rows of ``task_vocab`` before any label is seen. ``scratch`` does it too, from
random weights (Dai & Le's LM-LSTM proper: pretrained on the task's texts alone), so the pair
still differs only in the corpus pretraining.

Each adaptation is its own MLflow run, a child of the job's run (tag ``mlflow.parentRunId``),
named ``{job run name}-{task}-{adaptation}``, tagged ``adaptation`` = ``finetune`` | ``scratch``
and ``task``, with the parent's identity tags (family, model, corpus, seed, study, ...) so that
tables group it with its probe row; its metrics use the task names (``{task}/test/accuracy``,
...), per-epoch ``train/loss`` and ``val/accuracy``, and ``confusion/{task}.csv``. The parent's
``config_hash`` is stored as ``parent_config_hash`` (not ``config_hash``, so that a finished
child never makes the runner skip its parent's config).

The word-vector families (``word2vec``, ``glove``) are fine-tuned too: their body is a
:class:`~lineage.models.embeddings.VectorBag`, one trainable row per id, so that the classifier is
VecAvg of Socher et al. (2013): the mean of the text's word vectors and a linear head, trained on
the labels. ``finetune`` starts the rows from the family's vectors (with ``finetune.task_texts``:
vectors trained on the corpus and the task's train texts, which then cover the task's own words),
``scratch`` from word2vec's and GloVe's own initialisation, uniform in ±0.5 / dim. Their
analogue of the LM stage is ``task_texts``; ``lm_epochs`` and ``body_dropout`` are errors there.

Families with neither (count and rule families) are unsupported: the tag
``task.{task}.finetune`` says so on the job's run.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lineage.interface import FitMode
from lineage.modules.base import build, plain
from lineage.tasks.base import (
    POOLINGS,
    FinetuneConfig,
    TaskConfig,
    classification_metrics,
    confusion,
    mean_std,
    prefixed,
    write_confusion,
)
from lineage.tasks.data import TaskData

log = logging.getLogger("lineage")

ADAPTATIONS = ("finetune", "scratch")


def has_vectors(model) -> bool:
    """A word-vector family (``word2vec``, ``glove``): its body is a :class:`VectorBag`."""
    return callable(getattr(model, "keyed_vectors", None))


def can_finetune(model) -> bool:
    """A gradient family whose net exposes ``hidden(tokens, state)``, or a word-vector family."""
    if has_vectors(model):
        return True
    net = getattr(model, "net", None)
    return model.fit_mode == FitMode.GRADIENT and callable(getattr(net, "hidden", None))


class TextClassifier(nn.Module):
    """An LM body, pooling over the text's positions, dropout, a linear head.

    Args:
        body: the net (``hidden(tokens, state) -> (hidden (B, T, H), state)``).
        n_classes: size of the label set.
        dropout: on the pooled vector.
        pad_id: the id used to start and pad texts (``<eos>``).
        pooling: ``mean`` or ``max`` over the text's positions, or the ``last`` one's state.
    """

    def __init__(
        self, body: nn.Module, n_classes: int, dropout: float, pad_id: int, pooling: str = "mean"
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}: use {' | '.join(POOLINGS)}")
        self.pooling = pooling
        self.body = body
        with torch.no_grad():
            was = body.training
            body.eval()
            size = body.hidden(torch.full((1, 1), pad_id, dtype=torch.long), None)[0].shape[-1]
            body.train(was)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(size, n_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) ids (column 0 the start ``<eos>``), (B,) lengths incl. it -> (B, C) logits."""
        hidden, _ = self.body.hidden(tokens, None)  # (B, T, H)
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None]  # (1, T)
        mask = (positions < lengths[:, None]) & (positions > 0)  # (B, T): the text's tokens
        mask[lengths == 1, 0] = True  # an empty text: the start state
        if self.pooling == "mean":
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, H)
        elif self.pooling == "max":
            pooled = hidden.masked_fill(~mask[..., None], float("-inf")).amax(1)  # (B, H)
        else:  # last: the state after the text's last token (the start state if it is empty)
            pooled = hidden[torch.arange(len(lengths)), lengths - 1]  # (B, H)
        return self.head(self.drop(pooled))  # (B, C)


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of a :class:`TextClassifier`; dev accuracy per epoch."""

    def __init__(self, net: TextClassifier, lr: float, weight_decay: float, body_lr_scale: float):
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.body_lr_scale = body_lr_scale
        self._correct = 0
        self._seen = 0

    def configure_optimizers(self):
        groups = [
            {"params": self.net.head.parameters(), "lr": self.lr},
            {"params": self.net.body.parameters(), "lr": self.lr * self.body_lr_scale},
        ]
        return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)

    def training_step(self, batch, batch_idx):
        tokens, lengths, y = batch
        loss = F.cross_entropy(self.net(tokens, lengths), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._correct, self._seen = 0, 0

    def validation_step(self, batch, batch_idx):
        tokens, lengths, y = batch
        self._correct += int((self.net(tokens, lengths).argmax(-1) == y).sum())
        self._seen += len(y)

    def on_validation_epoch_end(self) -> None:
        if self._seen:
            self.log("val/accuracy", self._correct / self._seen, prog_bar=True)

    def predict_step(self, batch, batch_idx):
        tokens, lengths, _ = batch
        return torch.softmax(self.net(tokens, lengths).float(), dim=-1)  # (B, C)


class LMAdaptModule(L.LightningModule):
    """Next-word training of the whole LM net on task texts (``finetune.lm_epochs``).

    Args:
        net: the LM net (``forward(tokens, state) -> (logits (B, T, V), state)``).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        n_out: the output layer's size (the corpus vocabulary); target ids at or beyond it
            (task words added to the input side) count as ``unk_id``.
        unk_id: the ``<unk>`` id.
    """

    def __init__(self, net: nn.Module, lr: float, weight_decay: float, n_out: int, unk_id: int):
        super().__init__()
        self.net = net
        self.lr = lr
        self.weight_decay = weight_decay
        self.n_out = n_out
        self.unk_id = unk_id
        self._nll = 0.0
        self._count = 0

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _nll_sum(self, batch) -> tuple[torch.Tensor, int]:
        tokens, lengths, _ = batch  # (B, T+1) windows of the stream, the last one padded
        inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()  # (B, T)
        targets[targets >= self.n_out] = self.unk_id
        mask = torch.arange(inputs.shape[1])[None] < (lengths[:, None] - 1)  # (B, T)
        logits, _ = self.net(inputs, None)  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return (nll * mask.flatten()).sum(), int(mask.sum())

    def training_step(self, batch, batch_idx):
        total, count = self._nll_sum(batch)
        loss = total / count
        self.log("lm/train_loss", loss, on_step=False, on_epoch=True, batch_size=count)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._nll, self._count = 0.0, 0

    def validation_step(self, batch, batch_idx):
        total, count = self._nll_sum(batch)
        self._nll += float(total)
        self._count += count

    def on_validation_epoch_end(self) -> None:
        if self._count:
            loss = self._nll / self._count
            self.log("lm/val_loss", loss)
            self.log("lm/val_ppl", float(np.exp(loss)))


def _collate(pad_id: int):
    def collate(items):
        lengths = torch.tensor([len(ids) for ids, _ in items])
        tokens = torch.full((len(items), int(lengths.max())), pad_id, dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        y = torch.tensor([label for _, label in items], dtype=torch.long)
        return tokens, lengths, y

    return collate


def _batches(items, cfg: FinetuneConfig, pad_id: int, shuffle: bool, seed: int) -> DataLoader:
    """(ids, label) items in batches of ``cfg.batch_size``, in a seeded order with ``shuffle``."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        items,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=_collate(pad_id),
    )


def _loader(ids, y, cfg: FinetuneConfig, pad_id: int, shuffle: bool, seed: int) -> DataLoader:
    items = [([pad_id, *t[: cfg.max_len]], int(label)) for t, label in zip(ids, y, strict=True)]
    return _batches(items, cfg, pad_id, shuffle, seed)


def extend_input_embeddings(net: nn.Module, n_new: int, seed: int = 0) -> None:
    """Append ``n_new`` input rows to ``net``'s embedding, drawn from N(mean, covariance) of its
    rows: each new word starts as a typical, distinct corpus word, not as ``<unk>`` (identical
    rows would make the new words indistinguishable at the start of training).

    Only the input side grows: a tied output layer keeps the old matrix (the classifier never
    uses the LM's output layer).
    """
    old = net.get_input_embeddings()
    rows = typical_rows(old.weight.detach(), n_new, seed)  # (n_new, E)
    new = nn.Embedding(old.num_embeddings + n_new, old.embedding_dim)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = rows.to(old.weight.dtype)
    net.set_input_embeddings(new)


def typical_rows(weight: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, E) rows drawn from N(mean, covariance) of ``weight``'s (V, E) rows, seeded."""
    weight = weight.double()
    mean = weight.mean(0)  # (E,)
    centered = weight - mean
    cov = centered.T @ centered / (len(weight) - 1)  # (E, E)
    cov += 1e-6 * cov.diagonal().mean() * torch.eye(len(mean), dtype=cov.dtype)  # positive definite
    noise = torch.randn(
        n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=cov.dtype
    )
    return (mean + noise @ torch.linalg.cholesky(cov).T).float()  # (n, E) ~ N(mean, cov)


def check_vector_settings(family: str, cfg: FinetuneConfig, task: str = "<name>") -> None:
    """Raise on settings a word-vector body cannot take (it has no LM head and no dropout)."""
    if cfg.lm_epochs:
        raise ValueError(
            f"task.{task}.finetune.lm_epochs={cfg.lm_epochs}: the {family} body is its word "
            f"vectors, with no next-word output layer; set task.{task}.finetune.lm_epochs=0 "
            "(finetune.task_texts=true trains the vectors on the task's texts instead)"
        )
    if cfg.body_dropout is not None:
        raise ValueError(
            f"task.{task}.finetune.body_dropout={cfg.body_dropout}: the {family} body is its word "
            f"vectors, with no dropout of its own; set task.{task}.finetune.body_dropout=null "
            "(finetune.dropout acts on the mean vector)"
        )


def check_finetune_settings(name: str, cfg: FinetuneConfig, model) -> None:
    """Raise on fine-tuning settings that ``model``'s family cannot take, naming the key.

    The runner calls it before training, so that a bad setting costs no fit.
    """
    if has_vectors(model):
        check_vector_settings(model.family, cfg, name)
    elif cfg.task_texts:
        raise ValueError(
            f"task.{name}.finetune.task_texts=true: only word-vector families train their vectors "
            f"on the task's texts; {model.family} is a language model: set "
            f"task.{name}.finetune.task_texts=false and use task.{name}.finetune.lm_epochs"
        )


def _vector_body(model, adaptation: str, seed: int, new_words, kv, cfg: FinetuneConfig):
    """A word-vector family's body: a :class:`VectorBag` over the corpus vocabulary and then
    ``new_words`` (``task_vocab``).

    ``finetune``: a word's row is its vector in ``kv``; words ``kv`` lacks (``<eos>``, task words
    it never saw) get typical rows (:func:`typical_rows` of the known ones). ``scratch``: every
    row uniform in ±0.5 / dim, the families' own initialisation, seeded.
    """
    from lineage.models.embeddings import VectorBag

    check_vector_settings(model.family, cfg)
    words = [*model.vocab.itos, *new_words]
    dim = kv.vector_size
    if adaptation == "scratch":
        generator = torch.Generator().manual_seed(seed)
        return VectorBag((torch.rand(len(words), dim, generator=generator) - 0.5) / dim)
    known = torch.tensor([w in kv.key_to_index for w in words])
    rows = torch.empty(len(words), dim)
    rows[known] = torch.from_numpy(np.asarray(kv[[w for w in words if w in kv.key_to_index]]))
    if not known.all():
        rows[~known] = typical_rows(rows[known], int((~known).sum()), seed)
    bag = VectorBag(rows)
    bag.vector_rows = int(known.sum())  # rows that start from the family's vectors
    return bag


def _body(model, adaptation: str, seed: int, n_new: int = 0, dropout: float | None = None):
    """The classifier's body: a copy of the LM's net (``finetune``) or a fresh one (``scratch``).

    ``dropout`` (not None) replaces the net config's ``dropout``; a copy is then rebuilt with it
    and given the LM's weights.
    """
    spec = model.hparams.net
    if dropout is not None:
        spec = dict(plain(spec))  # a copy: the LM's own config stays as it is
        if "dropout" not in spec:
            raise ValueError(
                f"finetune.body_dropout={dropout}: the {model.family} net config has no "
                "'dropout' key; set task.<name>.finetune.body_dropout=null"
            )
        spec["dropout"] = dropout
    if adaptation == "finetune":
        # scratch builds its rows at the full size; fine-tuning extends the LM's table
        if n_new and not callable(getattr(model.net, "get_input_embeddings", None)):
            raise ValueError(
                f"finetune.task_vocab=true: the {model.family} net has no "
                "get_input_embeddings(); set task.<name>.finetune.task_vocab=false"
            )
        if dropout is None:
            body = copy.deepcopy(model.net)
        else:
            body = build(spec, vocab_size=len(model.vocab))
            body.load_state_dict(model.net.state_dict())
        if n_new:
            extend_input_embeddings(body, n_new, seed)
        return body
    torch.manual_seed(seed)  # scratch: the family's own initialisation, seeded
    return build(spec, vocab_size=len(model.vocab) + n_new)


def _stream_loader(
    ids: list[list[int]], cfg: FinetuneConfig, pad_id: int, shuffle: bool, seed: int
) -> DataLoader:
    """Texts (in a seeded random order with ``shuffle``) joined by ``<eos>`` into one stream,
    cut into windows of ``max_len`` inputs (+ the next token as the last target)."""
    order = np.random.default_rng(seed).permutation(len(ids)) if shuffle else range(len(ids))
    stream = [pad_id]
    for i in order:
        stream.extend(ids[i][: cfg.max_len])
        stream.append(pad_id)
    n = cfg.max_len
    windows = [(stream[s : s + n + 1], 0) for s in range(0, len(stream) - 1, n)]
    return _batches(windows, cfg, pad_id, shuffle, seed)


# The run's trainer settings that its task training shares (``trainer.<key>``): where and at
# which precision it computes. One device: a task's data is small, and under DDP every rank
# would otherwise start its own process group inside the run's.
RUN_TRAINER_KEYS = ("accelerator", "precision", "deterministic")


def run_trainer_settings(trainer_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``RUN_TRAINER_KEYS`` that the run's ``trainer`` config sets (not null)."""
    trainer_cfg = trainer_cfg or {}
    return {k: trainer_cfg[k] for k in RUN_TRAINER_KEYS if trainer_cfg.get(k) is not None}


def _trainer(
    cfg: FinetuneConfig,
    root: Path,
    logger,
    callbacks,
    max_epochs: int,
    run_settings: Mapping[str, Any],
    **kwargs,
):
    return L.Trainer(
        **{"accelerator": "cpu", **run_settings},
        devices=1,
        max_epochs=max_epochs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        gradient_clip_val=cfg.gradient_clip_val,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        log_every_n_steps=50,
        **kwargs,
    )


def adapt_lm(
    body: nn.Module,
    view: dict[str, tuple[list[list[int]], np.ndarray]],
    cfg: FinetuneConfig,
    root: Path,
    n_out: int,
    unk_id: int,
    pad_id: int,
    seed: int,
    logger=None,
    run_settings: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Train ``body`` (in place) as an LM on the train texts of ``view`` for up to
    ``cfg.lm_epochs`` epochs and keep its weights of the epoch with the lowest dev perplexity.

    Returns:
        ``{"val_ppl": best dev perplexity, "epochs": epochs run}``.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    module = LMAdaptModule(body, cfg.lm_lr, cfg.weight_decay, n_out, unk_id)
    checkpoint = ModelCheckpoint(
        dirpath=str(root), monitor="lm/val_loss", mode="min", save_top_k=1, filename="best-lm"
    )
    stop = EarlyStopping("lm/val_loss", mode="min", patience=cfg.patience)
    trainer = _trainer(cfg, root, logger, [checkpoint, stop], cfg.lm_epochs, run_settings or {})
    loaders = [
        _stream_loader(view[split][0], cfg, pad_id, shuffle=split == "train", seed=seed)
        for split in ("train", "val")
    ]
    trainer.fit(module, *loaders)
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    return {
        "val_ppl": float(np.exp(float(checkpoint.best_model_score))),
        "epochs": float(trainer.current_epoch),
    }


def train_classifier(
    model,
    adaptation: str,
    view: dict[str, tuple[list[list[int]], np.ndarray]],
    n_classes: int,
    cfg: FinetuneConfig,
    root: Path,
    seed: int,
    logger=None,
    new_words: Sequence[str] = (),
    vectors=None,
    run_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one classifier (``finetune`` or ``scratch``) and score it once on test.

    Args:
        model: the trained neural LM (its ``net`` and config).
        adaptation: ``finetune`` (start from the LM's weights) or ``scratch``.
        view: split -> (id lists, (N,) class ids) for ``train``, ``val``, ``test``.
        n_classes: size of the label set.
        cfg: the fine-tuning settings.
        root: where checkpoints go.
        seed: initialisation (scratch) and data order.
        logger: a Lightning logger for the per-epoch metrics (or None).
        new_words: the task's words beyond the corpus vocabulary (``finetune.task_vocab``; ids
            from ``len(vocab)`` on in ``view``, in this order).
        vectors: word-vector families: the ``KeyedVectors`` that ``finetune`` starts from
            (None: the family's own).
        run_settings: the run's trainer settings it shares (:func:`run_trainer_settings`;
            None: CPU at full precision).

    Returns:
        ``{"val": metrics, "test": metrics, "confusion": (C, C), "epochs": n}``, and
        ``"lm": {"val_ppl", "epochs"}`` after LM adaptation (``lm_epochs`` > 0), and
        ``"vector_rows"`` (the body's rows that start from word vectors) for a word-vector
        family's ``finetune``.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    L.seed_everything(seed, workers=True, verbose=False)
    pad = model.vocab.eos_id
    if has_vectors(model):
        kv = vectors if vectors is not None else model.keyed_vectors()
        body = _vector_body(model, adaptation, seed, new_words, kv, cfg)
    else:
        body = _body(model, adaptation, seed, len(new_words), cfg.body_dropout)
    out: dict[str, Any] = {}
    if cfg.lm_epochs > 0:
        # targets: corpus ids only (a scratch body's extra output rows are never a target), so
        # both rows' LM dev perplexities count the same tokens
        vocab = model.vocab
        out["lm"] = adapt_lm(
            body, view, cfg, root / "lm", len(vocab), vocab.unk_id, pad, seed, logger, run_settings
        )
        log.info(
            "LM adaptation on the task's train texts: dev perplexity %.2f after %d epochs",
            out["lm"]["val_ppl"],
            out["lm"]["epochs"],
        )
    if hasattr(body, "vector_rows"):
        out["vector_rows"] = body.vector_rows
    net = TextClassifier(body, n_classes, cfg.dropout, pad, cfg.pooling)
    module = ClassifierModule(net, cfg.lr, cfg.weight_decay, cfg.body_lr_scale)
    checkpoint = ModelCheckpoint(
        dirpath=str(root / "classifier"),  # beside the LM stage's lm/, not around it
        monitor="val/accuracy",
        mode="max",
        save_top_k=1,
        filename="best",
    )
    stop = EarlyStopping("val/accuracy", mode="max", patience=cfg.patience)
    trainer = _trainer(
        cfg,
        root,
        logger,
        [checkpoint, stop],
        cfg.epochs,
        run_settings or {},
        val_check_interval=cfg.val_check_interval,
    )
    loaders = {
        split: _loader(*view[split], cfg, pad, shuffle=split == "train", seed=seed)
        for split in ("train", "val", "test")
    }
    trainer.fit(module, loaders["train"], loaders["val"])
    out["epochs"] = trainer.current_epoch
    for split in ("val", "test"):
        probs = torch.cat(trainer.predict(module, loaders[split], ckpt_path="best")).numpy()
        y = view[split][1]
        pred = probs.argmax(1)
        scores = probs[:, 1] if n_classes == 2 else None
        out[split] = classification_metrics(y, pred, n_classes, scores)
        if split == "test":
            out["confusion"] = confusion(y, pred, n_classes)
    return out


def _child_tags(tracker, task: str, adaptation: str) -> dict[str, str]:
    parent = tracker.client.get_run(tracker.run_id).data.tags
    skip = ("mlflow.", "task.", "config_hash", "adaptation", "tasks")
    tags = {k: v for k, v in parent.items() if not k.startswith(skip)}
    tags.update(
        {
            "mlflow.parentRunId": tracker.run_id,
            "parent_config_hash": parent.get("config_hash", ""),
            "adaptation": adaptation,
            "task": task,
            "tasks": task,
            f"task.{task}.status": "ok",
        }
    )
    return tags


def finetune_task(
    name: str,
    cfg: TaskConfig,
    data: TaskData,
    model,
    encoder,
    tracker,
    out_dir,
    seed: int,
    run_settings: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Fine-tune (and, with ``finetune.scratch``, train from scratch) on one task, with the
    run's ``run_settings`` (:func:`run_trainer_settings`).

    Returns ``{adaptation: metrics}`` (metrics named ``{task}/{split}/{metric}``), also written
    to ``{out_dir}/finetune/{task}-{adaptation}.json`` and logged as child MLflow runs.
    """
    from lineage.tasks import _folds, _split_view
    from lineage.tracking import Run

    if not can_finetune(model):
        if tracker is not None:
            tracker.set_tags({f"task.{name}.finetune": "unsupported"})
        log.info("task %s: fine-tuning unsupported by %s", name, model.family)
        return {}
    check_finetune_settings(name, cfg.finetune, model)
    n_classes = len(data.classes)
    adaptations = [
        *(["finetune"] if cfg.finetune.pretrained else []),
        *(["scratch"] if cfg.finetune.scratch or not cfg.finetune.pretrained else []),
    ]
    parent_name = None
    if tracker is not None:
        parent_name = tracker.client.get_run(tracker.run_id).info.run_name
    out: dict[str, dict[str, float]] = {}
    for adaptation in adaptations:
        child = None
        if tracker is not None:
            created = tracker.client.create_run(
                tracker.experiment_id,
                run_name=f"{parent_name}-{name}-{adaptation}",
                tags=_child_tags(tracker, name, adaptation),
            )
            child = Run(
                tracker.client, created.info.run_id, tracker.experiment_id, tracker.tracking_uri
            )
        try:
            folds_val, folds_test, epochs, lm, vector_rows = [], [], [], [], []
            matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
            new_words = []
            for k, fold in enumerate(_folds(data, cfg)):
                texts_of = _split_view(data, fold)
                extra = None
                if cfg.finetune.task_vocab:
                    extra = encoder.new_words(
                        texts_of["train"][0], cfg.finetune.task_vocab_min_count
                    )
                    new_words.append(len(extra))
                view = {
                    split: (encoder.ids(texts, extra), y) for split, (texts, y) in texts_of.items()
                }
                vectors = None
                if cfg.finetune.task_texts and adaptation == "finetune":
                    vectors = model.train_vectors(encoder.words(texts_of["train"][0]))
                root = Path(out_dir) / "finetune" / f"{name}-{adaptation}-{k}"
                result = train_classifier(
                    model,
                    adaptation,
                    view,
                    n_classes,
                    cfg.finetune,
                    root,
                    seed,
                    child.lightning_logger() if child is not None else None,
                    new_words=list(extra or ()),
                    vectors=vectors,
                    run_settings=run_settings,
                )
                folds_val.append(result["val"])
                folds_test.append(result["test"])
                epochs.append(result["epochs"])
                if "lm" in result:
                    lm.append(result["lm"])
                if "vector_rows" in result:
                    vector_rows.append(result["vector_rows"])
                matrix += result["confusion"]
            if len(folds_test) > 1:
                metrics = {
                    **prefixed(name, "val", mean_std(folds_val)),
                    **prefixed(name, "test", mean_std(folds_test)),
                    f"{name}/test/folds": float(len(folds_test)),
                }
            else:
                metrics = {
                    **prefixed(name, "val", folds_val[0]),
                    **prefixed(name, "test", folds_test[0]),
                }
            metrics[f"{name}/finetune/epochs"] = float(np.mean(epochs))
            if new_words:
                metrics[f"{name}/finetune/new_words"] = float(np.mean(new_words))
            if vector_rows:
                metrics[f"{name}/finetune/vector_rows"] = float(np.mean(vector_rows))
            if lm:  # LM adaptation on the task's texts
                for key in ("val_ppl", "epochs"):
                    metrics[f"{name}/lm/{key}"] = float(np.mean([r[key] for r in lm]))
            path = write_confusion(
                Path(out_dir) / "finetune" / "confusion" / adaptation / f"{name}.csv",
                matrix,
                data.classes,
            )
            record = Path(out_dir) / "finetune" / f"{name}-{adaptation}.json"
            record.write_text(json.dumps(metrics, indent=2) + "\n")
            if child is not None:
                child.log_metrics(metrics)
                child.log_artifact(path, "confusion")
                child.client.set_terminated(child.run_id, "FINISHED")
        except BaseException:
            if child is not None:
                child.client.set_terminated(child.run_id, "FAILED")
            raise
        out[adaptation] = metrics
        log.info(
            "task %s (%s): test accuracy %.4f, macro-F1 %.4f, MCC %.4f",
            name,
            adaptation,
            metrics[f"{name}/test/accuracy"],
            metrics[f"{name}/test/f1_macro"],
            metrics[f"{name}/test/mcc"],
        )
    return out
