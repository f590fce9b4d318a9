"""Word-embedding families behind the common Lightning interface: word2vec and GloVe.

Neither is a left-to-right language model: they declare only the FEATURES capability, so the
runner skips validation and test scoring and their perplexity cells print "—". What they have
instead, at the end of ``fit`` (:meth:`EmbeddingModule.on_fit_end`):

* intrinsic evaluation on gensim's shipped test sets (Google analogies, WordSim-353,
  SimLex-999), metrics ``intrinsic/*`` with the share of questions/pairs out of vocabulary,
  logged through the trainer's logger like perplexity and returned in ``eval_results``;
* the vectors exported as gensim ``KeyedVectors`` (``vectors/<family>.kv`` under the run's output
  directory, and the artifact folder ``vectors/`` of the MLflow run).

``Word2VecModule`` (``fit_mode = count``): one pass hands the train split to gensim, which runs its
own epochs. ``GloVeModule`` (``fit_mode = gradient``): each Lightning epoch is one AdaGrad pass
over the co-occurrence matrix, built from the train split in the first epoch; manual optimisation
(many updates per served batch, the whole split is one batch), loss logged per epoch as
``train/loss`` (mean cost per non-zero entry).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lineage.interface import Batching, FitMode, TokenBatch
from lineage.models.embeddings import (
    glove_entries,
    glove_epoch,
    intrinsic,
    keyed_vectors,
    pool,
    sentences_as_words,
    train_glove,
)
from lineage.modules.base import (
    LineageModule,
    build,
    build_net,
    check_max_epochs,
    check_optimizer,
    plain,
)

log = logging.getLogger("lineage")

warnings.filterwarnings(
    "ignore", message=r"`LightningModule.configure_optimizers` returned `None`, this fit will run"
)


def _train_stream(batch: TokenBatch) -> np.ndarray:
    """The served train split (mode ``full``) as one id stream, leading ``<eos>`` included."""
    tokens = batch.tokens.cpu().numpy()  # (B, T)
    mask = batch.target_mask.cpu().numpy()
    parts = []
    for b in range(tokens.shape[0]):
        targets = mask[b].nonzero()[0]
        if len(targets):
            parts.append(tokens[b, : targets[-1] + 1])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class EmbeddingModule(LineageModule):
    """What the embedding families share: features, vectors, intrinsic evaluation, export.

    Subclasses implement :meth:`keyed_vectors` and :meth:`_train_vectors`.

    Args:
        vocab: the corpus vocabulary (list of types).
        evaluate: run the intrinsic evaluation and export the vectors at the end of ``fit``.
    """

    def __init__(self, vocab: Sequence[str], evaluate: bool = True):
        super().__init__(vocab)
        self.evaluate = bool(evaluate)
        self.automatic_optimization = False
        self._extra_vectors: dict[str, object] = {}  # digest of ``extra`` -> KeyedVectors
        self._corpus_words: list[list[str]] = []  # the train split as fit read it

    # ----- the family's vectors ---------------------------------------------------------
    def keyed_vectors(self):
        """gensim ``KeyedVectors`` of the corpus-trained vectors."""
        raise NotImplementedError

    def train_vectors(self, extra: list[list[str]]):
        """``KeyedVectors`` trained with the same settings on the corpus train split + ``extra``.

        Trained once per distinct ``extra``: a task's probe and its fine-tuning both ask for
        vectors on the same train texts (``task_texts``), which costs GloVe minutes.
        """
        digest = hashlib.sha256()
        for words in extra:
            digest.update("\x1f".join(words).encode() + b"\x1e")
        key = digest.hexdigest()
        if key not in self._extra_vectors:
            log.info(
                "%s: training vectors on the corpus train split + %d task texts",
                self.family,
                len(extra),
            )
            self._extra_vectors[key] = self._train_vectors(extra)
        return self._extra_vectors[key]

    def _train_vectors(self, extra: list[list[str]]):
        raise NotImplementedError

    def corpus_sentences(self) -> list[list[str]]:
        """The corpus train split as word lists, as ``fit`` read it.

        A checkpoint keeps the vectors, not the corpus: a model restored from one (a resumed run
        whose training was already done) rebuilds them from the datamodule its trainer holds.
        """
        if not self._corpus_words:
            datamodule = getattr(self._trainer, "datamodule", None)
            if datamodule is None:
                raise RuntimeError(
                    f"{self.family}: vectors on the corpus + task texts need the corpus train "
                    "split, and this model has none (restored from a checkpoint, no trainer "
                    "attached): run Trainer.fit(model, datamodule=...) first"
                )
            ids = datamodule.stream("train").numpy()
            self._corpus_words = sentences_as_words(ids, self.vocab)
        return self._corpus_words

    @torch.no_grad()
    def features(self, texts: Sequence[Sequence[int]], weights=None) -> torch.Tensor:
        """(len(texts), D) mean word vector of each text (token ids of the corpus vocabulary).

        Args:
            texts: id lists.
            weights: optional ``(word -> weight, default)`` for a weighted mean (e.g. IDF).
        """
        kv = self.keyed_vectors()
        words = [[w for w in self.vocab.decode(t)] for t in texts]
        return torch.from_numpy(pool(kv, words, weights))

    # ----- Lightning -------------------------------------------------------------------
    def batching(self) -> Batching:
        return Batching(mode="full")

    def trainer_overrides(self) -> dict:
        # One process (the whole split is one batch); no validation loop (nothing to score);
        # manual optimisation, so no clipping or accumulation.
        return {
            "devices": 1,
            "num_nodes": 1,
            "strategy": "auto",
            "gradient_clip_val": None,
            "accumulate_grad_batches": 1,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
        }

    def on_fit_start(self) -> None:
        self._extra_vectors.clear()  # trained from the corpus split this fit may change

    def on_fit_end(self) -> None:
        if not self.evaluate or self.trainer.sanity_checking:
            return
        kv = self.keyed_vectors()
        if kv is None:
            return
        metrics = intrinsic(kv)
        self.eval_results.update(metrics)
        if self.logger is not None and metrics:
            self.logger.log_metrics(metrics, step=self.global_step)
        root = Path(self.trainer.default_root_dir) / "vectors"
        root.mkdir(parents=True, exist_ok=True)
        kv.save(str(root / f"{self.family}.kv"))
        from lightning.pytorch.loggers import MLFlowLogger

        if isinstance(self.logger, MLFlowLogger):
            self.logger.experiment.log_artifacts(self.logger.run_id, str(root), "vectors")
        shown = ", ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in sorted(metrics.items()))
        log.info("%s intrinsic: %s", self.family, shown)


class Word2VecModule(EmbeddingModule):
    """word2vec through gensim (``fit_mode = count``: one pass, gensim runs its epochs).

    Args:
        vocab: the corpus vocabulary (list of types).
        lm: engine constructor (Hydra ``_partial_``): ``lineage.models.embeddings.Word2Vec``.
        evaluate: intrinsic evaluation and export at the end of ``fit``.
    """

    fit_mode = FitMode.COUNT

    def __init__(self, vocab: Sequence[str], lm, evaluate: bool = True):
        super().__init__(vocab, evaluate)
        self.save_hyperparameters(
            {"vocab": list(vocab), "lm": plain(lm), "evaluate": evaluate}, logger=False
        )
        self.lm = build(lm, vocab=self.vocab)
        for name in ("family", "year", "era", "citation", "capabilities"):
            setattr(self, name, getattr(self.lm, name))

    def trainer_overrides(self) -> dict:
        return {**super().trainer_overrides(), "max_epochs": 1}

    def configure_optimizers(self):
        return None

    def training_step(self, batch: TokenBatch, batch_idx: int) -> None:
        self._corpus_words = sentences_as_words(_train_stream(batch), self.vocab)
        self.lm.fit(self._corpus_words)
        self.log(
            "train/words_per_sec", self.lm.words_per_sec, on_step=False, on_epoch=True, batch_size=1
        )

    def keyed_vectors(self):
        return self.lm.kv

    def _train_vectors(self, extra: list[list[str]]):
        return self.lm.train([*self.corpus_sentences(), *extra])

    def cost(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.lm.cost().items()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["word_vectors"] = self.lm.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lm.load_state_dict(checkpoint.get("word_vectors", {}))


class GloVeModule(EmbeddingModule):
    """GloVe (own implementation, :mod:`lineage.models.embeddings`), ``fit_mode = gradient``.

    Args:
        vocab: the corpus vocabulary (list of types).
        net: ``lineage.models.embeddings.GloVe`` as a Hydra partial (called with ``vocab_size``).
        optimizer: ``torch.optim.Adagrad`` as a Hydra partial (called with ``params``).
        window: symmetric context window.
        distance_weighting: weight co-occurrences by 1/distance.
        symmetric: count left and right contexts.
        batch_size: non-zero entries per AdaGrad update.
        max_epochs: passes over the co-occurrence matrix.
        seed: the shuffle's seed (initialisation follows ``seed_everything``).
        evaluate: intrinsic evaluation and export at the end of ``fit``.
    """

    fit_mode = FitMode.GRADIENT

    def __init__(
        self,
        vocab: Sequence[str],
        net,
        optimizer,
        window: int = 10,
        distance_weighting: bool = True,
        symmetric: bool = True,
        batch_size: int = 512,
        max_epochs: int = 25,
        seed: int = 0,
        evaluate: bool = True,
    ):
        super().__init__(vocab, evaluate)
        check_max_epochs(max_epochs)
        check_optimizer(optimizer)
        self.save_hyperparameters(
            {
                "vocab": list(vocab),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "window": window,
                "distance_weighting": distance_weighting,
                "symmetric": symmetric,
                "batch_size": batch_size,
                "max_epochs": max_epochs,
                "seed": seed,
                "evaluate": evaluate,
            },
            logger=False,
        )
        self.net = build_net(net, vocab_size=len(self.vocab))
        for name in ("family", "year", "era", "citation", "capabilities"):
            setattr(self, name, getattr(self.net, name))
        self._entries: dict[str, torch.Tensor] | None = None
        self._kv = None

    def trainer_overrides(self) -> dict:
        return {**super().trainer_overrides(), "max_epochs": self.hparams.max_epochs}

    def configure_optimizers(self):
        return build(self.hparams.optimizer, params=self.net.parameters())

    def training_step(self, batch: TokenBatch, batch_idx: int) -> None:
        if self._entries is None:
            from lineage.models.embeddings import cooccurrence

            ids = _train_stream(batch)
            X = cooccurrence(
                ids,
                len(self.vocab),
                self.hparams.window,
                self.vocab.eos_id,
                self.hparams.distance_weighting,
                self.hparams.symmetric,
            )
            self._entries = glove_entries(X, self.net)
            self._corpus_words = sentences_as_words(ids, self.vocab)
            self._generator = torch.Generator().manual_seed(int(self.hparams.seed))
            self.log(
                "train/cooccurrence_nnz", float(X.nnz), on_step=False, on_epoch=True, batch_size=1
            )
        self._kv = None
        loss = glove_epoch(
            self.net,
            self.optimizers(),
            self._entries,
            self.hparams.batch_size,
            self._generator,
            backward=self.manual_backward,
        )
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)

    def keyed_vectors(self):
        if self._kv is None:
            self._kv = keyed_vectors(self.vocab.itos, self.net.vectors())
        return self._kv

    def _train_vectors(self, extra: list[list[str]]):
        net = self.net
        return train_glove(
            [*self.corpus_sentences(), *extra],
            dim=net.w.embedding_dim,
            window=self.hparams.window,
            x_max=net.x_max,
            alpha=net.alpha,
            epochs=self.hparams.max_epochs,
            lr=float(self.hparams.optimizer.get("lr", 0.05)),
            batch_size=self.hparams.batch_size,
            seed=int(self.hparams.seed),
            distance_weighting=self.hparams.distance_weighting,
            symmetric=self.hparams.symmetric,
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._kv = None

    def cost(self) -> dict[str, float]:
        return {"params": float(sum(p.numel() for p in self.net.parameters()))}
