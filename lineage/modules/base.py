"""LineageModule: the one scoring path shared by every family.

Families supply natural-log probabilities of target tokens (``token_log_probs``); this module sums
them over exactly the targets the data module marks and turns the sums into ``{split}/nll``,
``{split}/ppl``, ``{split}/bits_per_token`` and ``{split}/tokens`` (``lineage.metrics``), the
same way for an n-gram, a rule system and a transformer. The sums are float64 (a sum over tokens,
never a mean of batch means) and are added across processes under DDP. They are plain numbers, not
torchmetrics ``SumMetric``s: moving such a metric to a device resets its input dtype to float32.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch

from lineage.data.vocab import Vocabulary
from lineage.interface import Batching, Capability, FitMode, TokenBatch
from lineage.metrics import perplexity_metrics

EVAL_SPLITS = ("val", "test")


class ResumeState(L.Callback):
    """What a fit resumed from a checkpoint needs beyond Lightning's own state.

    * ``rng_states``: the torch, NumPy and Python generators at the checkpoint, restored when a
      fit resumes from it. Lightning keeps the step, the optimizer and the schedule but not these,
      so a resumed run would draw again the dropout masks of epoch 1, in the same order over the
      same contiguous batches (a fixed mask per position is a much weaker regulariser). A
      checkpoint without them (written before they were kept) gets generators seeded from
      (seed, global step) instead: new masks, reproducibly.
    * ``mlflow_run_id``: the run that wrote the checkpoint; absent without tracking. A fit
      resumed from it calls ``on_resume(run_id, global_step)``, so that the new run continues
      that run's record (:meth:`lineage.tracking.Run.take_over`).

    The states are stored as tensors and plain numbers, so the checkpoint still loads with
    ``torch.load(..., weights_only=True)``.
    """

    def __init__(
        self,
        seed: int,
        run_id: str | None = None,
        on_resume: Callable[[str, int], None] | None = None,
    ):
        self.seed = int(seed)
        self.run_id = run_id
        self.on_resume = on_resume

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        version, state, py_gauss = random.getstate()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, torch.tensor(state, dtype=torch.int64), py_gauss],
        }
        if self.run_id is not None:
            checkpoint["mlflow_run_id"] = self.run_id

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn != "fit":  # scoring a checkpoint draws nothing
            return
        previous = checkpoint.get("mlflow_run_id")
        if self.on_resume is not None and previous is not None:
            self.on_resume(previous, int(checkpoint.get("global_step", 0)))
        states = checkpoint.get("rng_states")
        if states is None:
            # not L.seed_everything: it would overwrite PL_GLOBAL_SEED (the run's seed, which
            # Lightning's dataloader workers derive theirs from)
            seed = self.seed + int(checkpoint.get("global_step", 0))
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            return
        torch.set_rng_state(states["torch"])
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, state, py_gauss = states["python"]
        random.setstate((version, tuple(int(x) for x in state), py_gauss))


class LineageModule(L.LightningModule):
    """Base of every family's LightningModule.

    Subclasses set the identity (``family``, ``year``, ``era``, ``citation``), ``capabilities``
    and ``fit_mode``, and implement ``token_log_probs`` / ``next_token_log_probs``. Engine-backed
    families (``CountLM``, ``StaticLM``) take them from the wrapped engine ``self.lm``.

    Args:
        vocab: the corpus vocabulary as a list of types (stored in the checkpoint, so a saved
            model scores and generates without the data module).
    """

    family: str = "?"
    year: int = 0
    era: str = ""
    citation: str = ""
    capabilities: frozenset[Capability] = frozenset()
    fit_mode: FitMode = FitMode.GRADIENT

    def __init__(self, vocab: Sequence[str]):
        super().__init__()
        self.vocab = Vocabulary(vocab)
        self._sums = {s: [0.0, 0] for s in EVAL_SPLITS}  # split -> [nll in nats, targets]
        self._eval_seconds = {s: 0.0 for s in EVAL_SPLITS}
        self.eval_results: dict[str, float] = {}  # latest float64 metrics per split

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # ----- what the family provides ---------------------------------------------------------
    def token_log_probs(self, batch: TokenBatch) -> torch.Tensor:
        """(B, T) float64 natural-log probability of each target given its history; 0 elsewhere."""
        raise NotImplementedError

    def next_token_log_probs(self, context: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 contexts -> (B, V) float64 log-probabilities of the next token."""
        raise NotImplementedError

    def features(self, texts: Sequence[Sequence[int]]) -> torch.Tensor:
        """(len(texts), D) one vector per text, for families with the FEATURES capability."""
        raise NotImplementedError(
            f"family {self.family!r} has no {Capability.FEATURES.value!r} capability; "
            "tasks that need features skip it and tables print '—'"
        )

    def batching(self) -> Batching:
        return Batching(mode="full")

    def trainer_overrides(self) -> dict:
        return {}

    def cost(self) -> dict[str, float]:
        return {"params": float(sum(p.numel() for p in self.parameters()))}

    # ----- the one scoring path -------------------------------------------------------------
    def _score(self, batch: TokenBatch, split: str) -> None:
        start = time.perf_counter()
        log_probs = self.token_log_probs(batch)  # (B, T)
        mask = batch.target_mask
        if not torch.isfinite(log_probs[mask]).all():
            raise FloatingPointError(
                f"{type(self).__name__} gave a non-finite log-probability on split {split!r}: "
                "every family must define a proper distribution with no zero probabilities"
            )
        sums = self._sums[split]
        sums[0] += float(-log_probs[mask].double().sum())
        sums[1] += int(mask.sum())
        self._eval_seconds[split] += time.perf_counter() - start

    def _log_split(self, split: str) -> None:
        totals = torch.tensor(self._sums[split], dtype=torch.float64, device=self.device)
        self._sums[split] = [0.0, 0]
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        nll, n = float(totals[0]), int(totals[1])
        seconds, self._eval_seconds[split] = self._eval_seconds[split], 0.0
        if n == 0 or self.trainer.sanity_checking:
            return
        metrics = perplexity_metrics(nll, n, split)
        if split == "test" and seconds > 0:  # valid may include a count model's finalisation
            metrics["cost/eval_tokens_per_sec"] = n / seconds
        self.eval_results.update(metrics)
        # Lightning's self.log casts to float32; it feeds the progress bar and checkpoint
        # monitors, while the logger receives the float64 values directly.
        self.log_dict(metrics, logger=False)
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch: TokenBatch, batch_idx: int) -> None:
        self._score(batch, "val")

    def test_step(self, batch: TokenBatch, batch_idx: int) -> None:
        self._score(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # ----- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> list[int]:
        """Sample ``max_new_tokens`` ids after ``prompt`` (ids; empty means "after ``<eos>``").

        ``temperature=0`` is greedy decoding. The same seed gives the same tokens: sampling uses
        its own ``torch.Generator``, never the global RNG.
        """
        generator = torch.Generator().manual_seed(seed)
        context = list(prompt) if len(prompt) else [self.vocab.eos_id]
        new: list[int] = []
        for _ in range(max_new_tokens):
            log_probs = self.next_token_log_probs(torch.tensor([context]))[0].double().cpu()  # (V,)
            next_id = sample_token(log_probs, temperature, top_k, generator)
            context.append(next_id)
            new.append(next_id)
        return new

    def sample_texts(
        self,
        n: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> list[str]:
        """``n`` samples as text, one line per sentence (``<eos>`` ends a line)."""
        texts = []
        for i in range(n):
            ids = self.generate([], max_new_tokens, temperature, top_k, seed=seed + i)
            words = self.vocab.decode(ids)
            texts.append(" ".join(words).replace(" <eos> ", "\n").replace("<eos>", "").strip())
        return texts


def sample_token(
    log_probs: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> int:
    """Draw one id from (V,) log-probabilities with temperature and top-k filtering."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return int(torch.argmax(log_probs))
    logits = log_probs / temperature
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, -np.inf), logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def plain(spec):
    """A Hydra config node as plain dicts and lists, so a checkpoint loads with ``torch.load``'s
    default ``weights_only=True`` (no pickled classes or partials)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(spec, DictConfig | ListConfig):
        return OmegaConf.to_container(spec, resolve=True)
    return spec


def build(spec, **kwargs):
    """Call a constructor given as a Hydra config (``_partial_: true``) or as a callable."""
    if spec is None:
        return None
    if callable(spec):
        return spec(**kwargs)
    from hydra.utils import instantiate

    factory = instantiate(spec)
    return factory(**kwargs)


def check_max_epochs(value) -> None:
    """``model.max_epochs`` must be a whole number >= 1 (Lightning would fail on it mid-fit)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.max_epochs={value!r}: use a whole number of epochs >= 1")


def refused(key: str, spec, err: Exception) -> ValueError:
    """``model.<key>`` (a built spec) refused ``err``, naming the spec's target and values."""
    values = {k: v for k, v in (spec.items() if isinstance(spec, Mapping) else ())}
    target = values.pop("_target_", getattr(spec, "__name__", spec))
    values.pop("_partial_", None)
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return ValueError(f"model.{key} ({target}: {shown}) is refused: {err}; fix model.{key}.*")


def build_net(net, **kwargs):
    """``model.net`` built; a value it cannot take (``hidden_size=abc``: int() fails deep in
    torch) is refused naming ``model.net`` unless the message names its key already."""
    try:
        return build(net, **kwargs)
    except ValueError as err:
        if "model.net" in str(err):
            raise
        raise refused("net", net, err) from err


def check_optimizer(optimizer, scheduler=None) -> None:
    """Build the optimizer (and scheduler) once on a stand-in parameter, so that a bad value
    (``model.optimizer.lr=abc``) is refused at construction, naming the key, rather than in the
    first training step. Builds draw no random numbers."""

    try:
        built = build(optimizer, params=[torch.nn.Parameter(torch.zeros(1))])
    except Exception as err:
        raise refused("optimizer", optimizer, err) from err
    if scheduler is None:
        return
    extra = {}
    if isinstance(scheduler, Mapping) and scheduler.get("total_steps", 0) is None:
        extra["total_steps"] = 1  # set from the trainer at fit time
    try:
        build(scheduler, optimizer=built, **extra)
    except Exception as err:
        raise refused("scheduler", scheduler, err) from err


class EngineModule(LineageModule):
    """A family whose maths lives in a plain numpy engine (``lineage.models``), wrapped here.

    The engine provides ``log_probs(tokens (N,)) -> (N,)`` and ``next_token_log_probs(contexts
    (B, T)) -> (B, V)``, both natural logs; identity and capabilities are read from its class.

    Args:
        vocab: the corpus vocabulary (list of types).
        lm: the engine: a Hydra config with ``_partial_: true`` (or a callable) that takes
            ``vocab=Vocabulary``, e.g. ``NgramLM`` with its order and smoothing bound.
    """

    def __init__(self, vocab: Sequence[str], lm):
        super().__init__(vocab)
        # The engine's config is stored in the checkpoint as plain data, so
        # `load_from_checkpoint(path)` rebuilds the family with no config at hand.
        self.save_hyperparameters({"vocab": list(vocab), "lm": plain(lm)}, logger=False)
        self.lm = build(lm, vocab=self.vocab)
        for name in ("family", "year", "era", "citation", "capabilities"):
            setattr(self, name, getattr(self.lm, name))

    def token_log_probs(self, batch: TokenBatch) -> torch.Tensor:
        tokens = batch.tokens.cpu().numpy()  # (B, T)
        out = np.zeros(tokens.shape, dtype=np.float64)  # (B, T)
        for b in range(tokens.shape[0]):
            out[b] = self.lm.log_probs(tokens[b])
        log_probs = torch.from_numpy(out).to(batch.tokens.device)
        return torch.where(batch.target_mask, log_probs, torch.zeros_like(log_probs))

    def next_token_log_probs(self, context: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.lm.next_token_log_probs(context.cpu().numpy()))

    def cost(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.lm.cost().items()}

    def trainer_overrides(self) -> dict:
        # One process: the whole split is one batch, which a distributed sampler would hand to
        # every rank (counting and scoring it twice). These families take seconds on one core.
        return {"devices": 1, "num_nodes": 1, "strategy": "auto"}
