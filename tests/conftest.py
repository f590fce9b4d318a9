"""Shared fixtures: Hydra composition, a tiny committed corpus, the shared benchmark data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models run fastest on one thread, and a 2-core machine running a test that starts
# processes (DDP, joblib sweeps, `mlflow server`) would otherwise oversubscribe its cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread settings, which it reads at import)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY = Path(__file__).resolve().parent / "fixtures" / "tiny_corpus"
MODEL_CONFIGS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (benchmark copies; never read by the product)."""
    return (ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"benchmark data not found at {path}")
    return path


def free_port() -> int:
    """A local port nothing listens on (now)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_corpus_overrides() -> list[str]:
    return [
        "corpus=text_files",
        f"corpus.files.train={TINY / 'train.txt'}",
        f"corpus.files.valid={TINY / 'valid.txt'}",
        f"corpus.files.test={TINY / 'test.txt'}",
    ]


def compose_train(overrides: list[str], root: Path):
    """Compose ``conf/train.yaml`` as ``lineage-train`` would, with outputs under ``root``.

    Sets the HydraConfig singleton, as a real Hydra run does, so ``${hydra:...}`` resolves.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import lineage.config  # noqa: F401  (registers the schema)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.root_dir={root}", f"paths.cache_dir={root / 'cache'}", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(root / "run")
        cfg.hydra.runtime.cwd = str(root)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    """A factory: ``tiny_cfg("model=rule", ...)`` -> composed config on the tiny corpus."""

    def make(*overrides: str, tracking: str = "none"):
        return compose_train(
            [*tiny_corpus_overrides(), f"tracking={tracking}", *overrides], tmp_path
        )

    return make


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    # Never touch the user's cache or download anything from a test.
    monkeypatch.setenv("LINEAGE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LINEAGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LINEAGE_OFFLINE", "1")
    os.environ.setdefault("PYTHONHASHSEED", "0")
