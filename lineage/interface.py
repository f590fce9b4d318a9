"""The contract between data, families and the one scoring path.

Every family, whatever its era, is scored through :meth:`token_log_probs` on :class:`TokenBatch`
objects served by the data module, so all families see the same targets and perplexity is computed
once, outside the families (``lineage.metrics``).

Conventions (design.md §3):

* A split is one stream: its lines joined, each followed by ``<eos>``, and one ``<eos>`` prepended
  as context. Every token of the split is therefore a target exactly once; the leading ``<eos>`` is
  context only.
* Log-probabilities are natural logs.
* ``TokenBatch.tokens[b, t]`` is a target iff ``target_mask[b, t]``; its history is
  ``tokens[b, :t]`` plus whatever state a stateful model carried from the previous batch.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch


class Capability(enum.StrEnum):
    """What a family can do; tasks require capabilities and tables print "—" for the rest."""

    LOG_PROB = "log_prob"  # token_log_probs / next_token_log_probs: a proper distribution
    FEATURES = "features"  # one vector per text, for downstream probes
    GENERATE = "generate"  # sampling text


class FitMode(enum.StrEnum):
    """How a family learns, which decides how the runner drives the Lightning Trainer."""

    GRADIENT = "gradient"  # automatic optimisation (neural families)
    COUNT = "count"  # one counting pass, manual optimisation, no optimizer (n-grams)
    NONE = "none"  # nothing to learn (rule-based): validate and test only


BatchMode = Literal["full", "stream", "window"]


@dataclass(frozen=True)
class Batching:
    """How a family wants a split served.

    Attributes:
        mode: ``"full"`` — the whole split as one sequence, shape (1, N+1) (count and rule models);
            ``"stream"`` — Zaremba-style contiguous batches: the stream cut into ``batch_size``
            rows, consecutive batches continue each row (stateful models carry state);
            ``"window"`` — fixed-length windows (fixed-context models); evaluation uses sliding
            windows so every target is scored once with at least ``min_context + 1`` tokens of
            history (all of it near the split's start).
        batch_size: rows per training batch (ignored by ``"full"``).
        seq_len: targets per row per batch (BPTT length or window length).
        eval_batch_size: rows per evaluation batch; ``"stream"`` with 1 scores each target with its
            full history.
        min_context: ``"window"`` evaluation only: history kept before the first scored target.
        shuffle: ``"window"`` training only: shuffle windows each epoch.
        eval_seq_len: ``"stream"`` evaluation only: targets per row per batch (0: ``seq_len``).
            A stateful model carries its state across batches, so the scores do not depend on it;
            longer chunks make one-row evaluation fast.
    """

    mode: BatchMode = "full"
    batch_size: int = 1
    seq_len: int = 0
    eval_batch_size: int = 1
    min_context: int = 0
    shuffle: bool = True
    eval_seq_len: int = 0


@dataclass
class TokenBatch:
    """A batch of token ids with the positions to score.

    Attributes:
        tokens: (B, T) int64 token ids.
        target_mask: (B, T) bool; True where ``tokens[b, t]`` is scored given ``tokens[b, :t]``.
            Column 0 is never a target.
        carry: True if row b continues row b of the previous batch (stateful models keep their
            state); False at the start of a split.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    tokens: torch.Tensor
    target_mask: torch.Tensor
    carry: bool = False
    split: str = "train"
    meta: dict = field(default_factory=dict)

    @property
    def n_targets(self) -> int:
        return int(self.target_mask.sum())

    def to(self, device) -> TokenBatch:
        """The batch on ``device``. Lightning moves any object with ``to`` through it, instead of
        deep-copying the dataclass (``meta`` included) on every step."""
        if self.tokens.device == torch.device(device):
            return self
        return dataclasses.replace(
            self, tokens=self.tokens.to(device), target_mask=self.target_mask.to(device)
        )


@runtime_checkable
class LanguageModel(Protocol):
    """What every family offers the runner, the scoring path and the tasks.

    Identity (class attributes): ``family`` (e.g. ``"ngram"``), ``year`` (first paper), ``era``,
    ``citation`` (short reference). ``capabilities`` and ``fit_mode`` decide what the runner and
    the tasks do with it.
    """

    family: str
    year: int
    era: str
    citation: str
    capabilities: frozenset[Capability]
    fit_mode: FitMode

    def token_log_probs(self, batch: TokenBatch) -> torch.Tensor:
        """(B, T) float64 natural-log probability of each target; 0 where not a target."""
        ...

    def next_token_log_probs(self, context: torch.Tensor) -> torch.Tensor:
        """(B, T) context ids -> (B, V) next-token log-probabilities (rows logsumexp to 0)."""
        ...

    def features(self, texts: list[list[int]]) -> torch.Tensor:
        """One (D,) vector per text (token ids) for downstream probes: (len(texts), D)."""
        ...

    def generate(
        self,
        prompt: list[int],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> list[int]:
        """Sample a continuation of ``prompt`` (token ids); the same seed gives the same tokens."""
        ...

    def cost(self) -> dict[str, float]:
        """Size of the model: ``params`` (trainable numbers or stored n-grams) and family extras."""
        ...

    def batching(self) -> Batching:
        """How the data module should serve splits to this model."""
        ...

    def trainer_overrides(self) -> dict:
        """Trainer keyword arguments this family needs (e.g. one epoch, no clipping, for counts)."""
        ...
