"""StaticLM: families with nothing to learn (rule-based, uniform): validated and tested directly."""

from __future__ import annotations

from lineage.interface import FitMode
from lineage.modules.base import EngineModule


class StaticLM(EngineModule):
    """A family with ``fit_mode = none``; the runner skips ``Trainer.fit``.

    Args:
        vocab: the corpus vocabulary (list of types): the only thing such a family takes from a
            corpus.
        lm: engine constructor (Hydra ``_partial_``), e.g. ``lineage.models.rule.RuleLM``.
    """

    fit_mode = FitMode.NONE
