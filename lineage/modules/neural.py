"""NeuralLM: families trained by gradient descent (RNN/LSTM/GRU, transformers).

The architecture is a plain ``nn.Module`` from ``lineage.models`` (no Lightning there) with two
methods: ``forward(tokens, state=None) -> (logits, state)`` — ``tokens`` (B, T) int64,
``logits`` (B, T, V) for the next token at each position, and ``state`` whatever the net carries
between calls (an RNN's hidden state, a transformer's key/value cache; ``None`` for none) — and
``hidden(tokens, state=None) -> (hidden, state)`` with ``hidden`` (B, T, H), the last layer's
states before the output layer (``forward`` applies the output layer to them). It also carries
the identity class attributes (``family``, ``year``, ``era``, ``citation``, ``capabilities``).
This module adds what every gradient family shares: the loss on exactly the target positions,
stateful truncated BPTT (state carried across consecutive stream batches and detached), evaluation
through the one scoring path, stateful generation (linear in the number of new tokens), optimizer
and scheduler as Hydra partials, best-on-valid checkpointing, and the trainer settings the family
needs (gradient clipping).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from lineage.interface import Batching, FitMode, TokenBatch
from lineage.modules.base import (
    LineageModule,
    build,
    build_net,
    check_max_epochs,
    check_optimizer,
    plain,
    sample_token,
)

LOSS_REDUCTIONS = ("mean", "sum_over_time")


def detach_state(state):
    """Cut the graph at a batch boundary (truncated BPTT), whatever the state's structure."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


class BestCheckpoint(ModelCheckpoint):
    """The best-on-valid checkpoint, whose best score survives a resume into a new directory.

    Lightning 2.6 restores only ``best_model_path`` when the run directory changed (every Hydra
    run has its own), so the first resumed epoch would become "best" even when it is worse.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        path, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        moved = state_dict.get("dirpath", self.dirpath) != self.dirpath
        if moved and path and score is not None and os.path.isfile(path):
            # Lightning deletes only files in its own dirpath: the old run's is kept
            self.best_model_score = score
            self.best_k_models = {path: score}
            self.kth_best_model_path, self.kth_value = path, score


class LastCheckpoint(ModelCheckpoint):
    """The checkpoint of the last epoch (``last.ckpt``), from which a run resumes.

    A class of its own: Lightning replaces a trainer's callbacks by the module's
    ``configure_callbacks`` on each ``fit``/``validate``/``test`` by type, stopping at the first
    trainer callback type (in set order, which differs between processes) that a module
    callback subclasses. With a plain ``ModelCheckpoint`` beside :class:`BestCheckpoint`, the
    ``validate`` after ``fit`` sometimes kept the fit's ``BestCheckpoint`` as a third
    checkpoint, in some DDP processes and not others, whose collectives then no longer matched
    (a hang).
    """


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """Evaluation mode (no dropout) inside the block, the caller's mode restored after it."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class NeuralLM(LineageModule):
    """A gradient-trained family around a plain ``nn.Module``.

    Args:
        vocab: the corpus vocabulary (list of types).
        net: the architecture: a Hydra config with ``_partial_: true`` (or a callable), called
            with ``vocab_size=``.
        optimizer: the same, called with ``params=``, e.g. ``torch.optim.SGD``.
        scheduler: optional, the same, called with ``optimizer=``; a ``total_steps: null`` in
            its config is filled with the trainer's ``estimated_stepping_batches`` (epochs ×
            batches), so the schedule follows ``max_epochs`` and the batch size.
        scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
        batching: how splits are served (keyword arguments of :class:`lineage.Batching`):
            ``mode: stream`` for stateful nets, ``window`` for fixed-context ones.
        gradient_clip_val: clip the global gradient norm at this value (None: no clipping).
        max_epochs: training epochs (the schedule in the family's paper).
        max_time: a wall-clock budget for fit, ``"DD:HH:MM:SS"`` (Lightning's ``max_time``);
            training stops at the first step past it and test scores the best checkpoint so far.
        loss_reduction: what the optimizer minimises: ``"mean"`` — nats per target; or
            ``"sum_over_time"`` — summed over the BPTT steps and averaged over the rows, the
            cost of Zaremba et al. (2014) and TensorFlow's ``ptb_word_lm``, for which their
            learning rate and clipping norm are stated (it is ``mean`` times the steps per row).
            ``train/loss`` is logged in nats per target either way.

    Raises:
        ValueError: unknown ``loss_reduction`` or ``scheduler_interval``.
    """

    fit_mode = FitMode.GRADIENT

    def __init__(
        self,
        vocab: Sequence[str],
        net,
        optimizer,
        scheduler=None,
        scheduler_interval: str = "epoch",
        batching: dict | None = None,
        gradient_clip_val: float | None = None,
        max_epochs: int = 1,
        max_time: str | None = None,
        loss_reduction: str = "mean",
    ):
        super().__init__(vocab)
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"model.loss_reduction={loss_reduction!r} is unknown; use one of {LOSS_REDUCTIONS}"
            )
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"model.scheduler_interval={scheduler_interval!r}: use 'epoch' or 'step'"
            )
        check_max_epochs(max_epochs)
        check_optimizer(optimizer, scheduler)
        self.save_hyperparameters(
            {
                "vocab": list(vocab),
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "scheduler_interval": scheduler_interval,
                "batching": plain(batching),
                "gradient_clip_val": gradient_clip_val,
                "max_epochs": max_epochs,
                "max_time": max_time,
                "loss_reduction": loss_reduction,
            },
            logger=False,
        )
        self.net = build_net(net, vocab_size=len(self.vocab))
        for name in ("family", "year", "era", "citation", "capabilities"):
            setattr(self, name, getattr(self.net, name))
        self._batching = Batching(**(batching or {"mode": "window", "seq_len": 64}))
        self._train_state = None
        self._eval_state = None
        self._tokens_seen = 0
        self.trained_tokens = 0  # target tokens trained on by this process (cost/...)
        # fit seconds before a resume, from the checkpoint: the run's training time is the sum
        self.prior_train_seconds = 0.0
        self._fit_clock: float | None = None
        self._clock: float | None = None

    # ----- configuration --------------------------------------------------------------------
    def batching(self) -> Batching:
        return self._batching

    def trainer_overrides(self) -> dict:
        overrides = {
            "max_epochs": self.hparams.max_epochs,
            "gradient_clip_val": self.hparams.gradient_clip_val,
            "gradient_clip_algorithm": "norm",
        }
        if self.hparams.get("max_time"):
            overrides["max_time"] = self.hparams.max_time
        if self._batching.mode in ("stream", "window"):
            # Under DDP the data module gives each rank its share itself. Lightning's injected
            # DistributedSampler would deal consecutive stream batches to alternate ranks (breaking
            # state carrying), and pad evaluation batches to a multiple of the number of ranks by
            # repeating the first ones (scoring their targets twice).
            overrides["use_distributed_sampler"] = False
        return overrides

    def configure_optimizers(self):
        # a net may split its parameters into groups (e.g. no weight decay on norms and biases)
        groups = self.net.optim_groups() if hasattr(self.net, "optim_groups") else None
        optimizer = build(self.hparams.optimizer, params=groups or self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        extra = {}
        spec = self.hparams.scheduler
        if isinstance(spec, Mapping) and "total_steps" in spec and spec["total_steps"] is None:
            extra["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = build(spec, optimizer=optimizer, **extra)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }

    def configure_callbacks(self):
        # test scores the best-on-valid weights (design.md §3.4): the first ModelCheckpoint is the
        # trainer's `checkpoint_callback`, which `ckpt_path="best"` reads. `last.ckpt` lets a run
        # resume; it has its own callback because Lightning 2.6's `save_last` only writes when the
        # monitored checkpoint was saved too, so a run whose valid stopped improving would resume
        # from its best epoch, not its last.
        # In the run's directory whatever the logger (MLflow's would nest them under its
        # experiment and run ids): <run dir>/checkpoints/{best,last}.ckpt, as documented.
        dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")
        return [
            BestCheckpoint(dirpath, monitor="val/ppl", mode="min", filename="best", save_top_k=1),
            LastCheckpoint(dirpath, monitor=None, filename="last", save_top_k=1),
        ]

    def cost(self) -> dict[str, float]:
        out = {"params": float(sum(p.numel() for p in self.net.parameters()))}
        if hasattr(self.net, "flops_per_token"):  # training FLOPs per token (6·N plus attention)
            out["train_flops_per_token"] = float(self.net.flops_per_token())
        return out

    # ----- training ------------------------------------------------------------------------
    def _forward(self, batch: TokenBatch, state):
        """Logits for columns 1.. of the batch, given columns ..-1 and the carried state."""
        inputs = batch.tokens[:, :-1]  # (B, T-1)
        logits, state = self.net(inputs, state)  # (B, T-1, V)
        return logits, state

    def on_fit_start(self) -> None:
        self._fit_clock = time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        elapsed = time.perf_counter() - self._fit_clock if self._fit_clock is not None else 0.0
        checkpoint["lineage_train_seconds"] = self.prior_train_seconds + elapsed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self._fit_clock is None:  # resuming a fit (not test loading the best weights)
            self.prior_train_seconds = float(checkpoint.get("lineage_train_seconds", 0.0))

    def on_train_epoch_start(self) -> None:
        self._train_state = None
        self._clock = time.perf_counter()
        self._tokens_seen = 0
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self.trainer.optimizers else 0.0
        self.log("train/lr", lr, on_step=False, on_epoch=True)

    def training_step(self, batch: TokenBatch, batch_idx: int) -> torch.Tensor:
        state = self._train_state if batch.carry else None
        logits, state = self._forward(batch, state)
        self._train_state = detach_state(state)
        mask = batch.target_mask[:, 1:]  # (B, T-1)
        # ignore_index instead of logits[mask]: no copy of the (B, T-1, V) logits
        targets = batch.tokens[:, 1:].masked_fill(~mask, -100)  # (B, T-1)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        n = int(mask.sum())
        self._tokens_seen += n
        self.trained_tokens += n
        elapsed = time.perf_counter() - (self._clock or time.perf_counter())
        # design.md §4: `train/loss` is the epoch's mean (per target). With on_step and on_epoch
        # both set Lightning would log `train/loss_step` and `train/loss_epoch` instead, so the
        # live value for the progress bar has its own explicit name.
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log("train/loss_step", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        if elapsed > 0:
            self.log(
                "tok/s", self._tokens_seen / elapsed, prog_bar=True, logger=False, batch_size=n
            )
        if self.hparams.loss_reduction == "sum_over_time":
            return loss * (n / batch.tokens.shape[0])  # sum over steps, mean over rows
        return loss

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - (self._clock or time.perf_counter())
        if elapsed > 0:
            self.log("train/tokens_per_sec", self._tokens_seen / elapsed, on_epoch=True)

    # ----- scoring -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._eval_state = None

    def on_test_epoch_start(self) -> None:
        self._eval_state = None

    def token_log_probs(self, batch: TokenBatch) -> torch.Tensor:
        state = self._eval_state if batch.carry else None
        with torch.no_grad(), _eval_mode(self):  # a probability, not a dropout sample
            logits, state = self._forward(batch, state)  # (B, T-1, V)
        self._eval_state = state
        log_probs = F.log_softmax(logits.double(), dim=-1)  # (B, T-1, V)
        picked = log_probs.gather(-1, batch.tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)
        out = F.pad(picked, (1, 0))  # (B, T): column 0 is never a target
        return torch.where(batch.target_mask, out, torch.zeros_like(out))

    @torch.no_grad()
    def features(self, texts: Sequence[Sequence[int]], batch_size: int = 64) -> torch.Tensor:
        """(len(texts), H) mean of the last layer's hidden states over each text's tokens.

        Each text is read from a fresh state after one ``<eos>`` (the start of a sentence).
        """
        was_training = self.training
        self.eval()
        eos = self.vocab.eos_id
        out = []
        for i in range(0, len(texts), batch_size):
            chunk = [[eos, *t] for t in texts[i : i + batch_size]]
            lengths = torch.tensor([len(t) for t in chunk], device=self.device)  # (B,)
            tokens = torch.full((len(chunk), int(lengths.max())), eos, device=self.device)
            for row, t in enumerate(chunk):
                tokens[row, : len(t)] = torch.tensor(t, device=self.device)
            hidden, _ = self.net.hidden(tokens, None)  # (B, T, H)
            mask = torch.arange(tokens.shape[1], device=self.device)[None] < lengths[:, None]
            mask[:, 0] = False  # the <eos> start symbol is context, not part of the text
            mask[lengths == 1, 0] = True  # an empty text: its vector is the start state
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, H)
            out.append(pooled.float().cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros((0, 0))

    @torch.no_grad()
    def next_token_log_probs(self, context: torch.Tensor) -> torch.Tensor:
        context = context.to(self.device)
        if context.shape[1] == 0:  # no history: as after an end of sentence
            context = torch.full((context.shape[0], 1), self.vocab.eos_id, device=self.device)
        with _eval_mode(self):
            logits, _ = self.net(context, None)  # (B, T, V)
        return F.log_softmax(logits[:, -1].double(), dim=-1)  # (B, V)

    @torch.no_grad()
    def generate(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> list[int]:
        """Sample with the net's carried state: one forward step per new token."""
        was_training = self.training
        self.eval()
        generator = torch.Generator().manual_seed(seed)
        context = list(prompt) if len(prompt) else [self.vocab.eos_id]
        logits, state = self.net(torch.tensor([context], device=self.device), None)
        new: list[int] = []
        for _ in range(max_new_tokens):
            log_probs = F.log_softmax(logits[0, -1].double().cpu(), dim=-1)  # (V,)
            next_id = sample_token(log_probs, temperature, top_k, generator)
            new.append(next_id)
            logits, state = self.net(torch.tensor([[next_id]], device=self.device), state)
        self.train(was_training)
        return new
