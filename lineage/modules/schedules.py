"""Learning-rate schedules usable as Hydra partials (``NeuralLM`` calls them with ``optimizer=``).

``WarmupCosine`` is the schedule of GPT-style training (Vaswani et al. 2017 warm up linearly;
Radford et al. 2018 follow the warm-up with cosine annealing): the learning rate rises linearly
from 0 over ``warmup_steps`` optimizer steps, then follows a half cosine from the base rate down to
``min_lr_ratio`` times it at ``total_steps``, and stays there. Step it every optimizer step
(``scheduler_interval: step``).

    scheduler:
      _target_: lineage.modules.schedules.WarmupCosine
      _partial_: true
      warmup_steps: 200
      total_steps: null   # NeuralLM fills in the trainer's epochs × batches
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # never 0: the first step already learns
    if step >= total_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 → 1
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupCosine(LRScheduler):
    """Linear warm-up then cosine decay to ``min_lr_ratio`` × the base rate of each group.

    Args:
        optimizer: the optimizer whose groups' ``lr`` are the base rates.
        warmup_steps: optimizer steps of linear warm-up.
        total_steps: the step at which the cosine reaches its floor (e.g. epochs × batches).
        min_lr_ratio: the floor, as a fraction of the base rate.
        last_epoch: the index of the last step taken (-1: start of training).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int | None,
        min_lr_ratio: float = 0.1,
        last_epoch: int = -1,
    ):
        if total_steps is None:
            raise ValueError(
                "WarmupCosine needs total_steps; NeuralLM fills a `total_steps: null` from the "
                "trainer (epochs × batches), elsewhere give the number of optimizer steps"
            )
        if warmup_steps < 0 or total_steps < 1:
            raise ValueError(
                f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}"
            )
        # a run shorter than the warm-up (a smoke test, limit_train_batches) only warms up
        warmup_steps = min(warmup_steps, total_steps)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = warmup_cosine_factor(
            self.last_epoch, self.warmup_steps, self.total_steps, self.min_lr_ratio
        )
        return [base * factor for base in self.base_lrs]
