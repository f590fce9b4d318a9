"""Every config composes: each model with each corpus, every trainer and tracking option, and
every model instantiates with a vocabulary (the only thing the runner passes)."""

from __future__ import annotations

import pytest
from conftest import CONF, MODEL_CONFIGS, compose_train
from hydra.utils import instantiate

from lineage.interface import Capability, FitMode

CORPORA = sorted(p.stem for p in (CONF / "corpus").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
TRACKING = sorted(p.stem for p in (CONF / "tracking").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_model_and_corpus_compose(tmp_path, model, corpus):
    cfg = compose_train([f"model={model}", f"corpus={corpus}"], tmp_path)
    assert cfg.model._target_.startswith("lineage.modules.")
    assert cfg.corpus._target_ == "lineage.data.corpus.CorpusDataModule"
    assert cfg.tracking.uri.startswith("sqlite:///") and cfg.tracking.uri.endswith("mlflow.db")


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_model_instantiates_with_a_vocabulary(tmp_path, model):
    cfg = compose_train([f"model={model}"], tmp_path)
    lm = instantiate(cfg.model, vocab=["<unk>", "<eos>", "the", "cat", "N", "."])
    assert lm.vocab_size == 6
    assert Capability.LOG_PROB in lm.capabilities or Capability.FEATURES in lm.capabilities
    assert isinstance(lm.fit_mode, FitMode)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_configs_compose(tmp_path, trainer):
    cfg = compose_train([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize("tracking", TRACKING)
def test_tracking_configs_compose(tmp_path, tracking):
    cfg = compose_train([f"tracking={tracking}"], tmp_path)
    assert "enabled" in cfg.tracking


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose_with_their_sweep(tmp_path, experiment):
    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    params = cfg.hydra.sweeper.params
    for model in str(params.model).split(","):
        assert model in MODEL_CONFIGS
    assert cfg.study != "lineage-default"


def test_debug_fast_turns_tracking_off(tmp_path):
    cfg = compose_train(["debug=fast"], tmp_path)
    assert cfg.tracking.enabled is False and cfg.trainer.fast_dev_run == 1
