"""The typed schema under ``conf/train.yaml``: wrong types and unknown keys fail at composition.

``lineage-train seed=abc`` stops with OmegaConf's message naming the key and the value instead of
failing later inside a run. Group contents (model, corpus, trainer, tracking) are checked by the
classes they instantiate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


@dataclass
class SamplesConfig:
    count: int = 5
    max_new_tokens: int = 40
    temperature: float = 1.0
    top_k: int | None = None


@dataclass
class TrainConfig:
    study: str = "lineage-default"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: ["fit", "validate", "test"])
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    tags: dict[str, Any] = field(default_factory=dict)
    ckpt_path: str | None = None  # resume an interrupted fit from this Lightning checkpoint
    force: bool = False  # rerun even if a FINISHED run with the same config hash exists
    task: Any = None  # downstream tasks, composed from conf/task/
    paths: Any = None
    corpus: Any = None
    model: Any = None
    trainer: Any = None
    tracking: Any = None


# The environment as the process started: ``mlflow.set_tracking_uri`` writes
# MLFLOW_TRACKING_URI into os.environ, so a later job of the same multirun would otherwise read
# the previous job's store instead of the user's setting.
_START_ENV = dict(os.environ)


def start_env(name: str, default: str | None = None) -> str | None:
    """``${lineage.env:NAME,default}``: like ``oc.env``, but as the process started."""
    return _START_ENV.get(name, default)


def unknown_group_options(argv: Sequence[str], conf_dir: str | Path) -> str | None:
    """The message for an override naming a config that a group of ``conf_dir`` lacks
    (``model=lstmm``, ``-m model=rule,lstmm``, ``task=[sst3]``), with the group's options and
    the closest name.

    Hydra answers ``model=lstmm`` with its whole search path and only says "Could not load" for
    an element of a list, so the command line's overrides are checked here, before Hydra
    composes. ``hydra/...`` groups are left to Hydra (plugins add options to them). None when
    every name exists, or when the command line does not parse (Hydra then says why).
    """
    import difflib

    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    try:
        args = get_args_parser().parse_known_args(list(argv))[0]
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except (Exception, SystemExit):
        return None
    if any(o.key_or_group == "hydra.searchpath" for o in parsed):
        return None  # options may come from anywhere on that path: Hydra checks them
    roots = [Path(conf_dir), *([Path(args.config_dir)] if args.config_dir else [])]
    for override in parsed:
        key = override.key_or_group
        groups = [root / key for root in roots if (root / key).is_dir()]
        if override.is_delete() or key.startswith("hydra") or not groups:
            continue
        value = override.value()
        options = value.list if isinstance(value, ChoiceSweep) else [value]
        names = [n for o in options for n in (o if isinstance(o, list) else [o])]
        names = [n for n in names if isinstance(n, str) and "${" not in n]  # not interpolations
        missing = [n for n in names if not any((g / f"{n}.yaml").is_file() for g in groups)]
        if missing:
            known = sorted({p.stem for g in groups for p in g.glob("*.yaml")})
            close = difflib.get_close_matches(missing[0], known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            return (
                f"{override.input_line}: no config {key}/{missing[0]}.yaml; "
                f"options in '{key}': {', '.join(known)}{hint}"
            )
    return None


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    # The directory lineage was started from; unlike ${hydra:runtime.cwd} it also resolves
    # where Hydra builds the sweep directory, before any job starts.
    OmegaConf.register_new_resolver("lineage.cwd", os.getcwd, replace=True)
    OmegaConf.register_new_resolver("lineage.env", start_env, replace=True)


register()
