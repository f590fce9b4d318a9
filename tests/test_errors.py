"""Bad input: each case asserts the message a user sees."""

from __future__ import annotations

import shutil

import pytest
from conftest import CONF, compose_train, tiny_corpus_overrides
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate

from lineage.data.sources import DataError
from lineage.train import run


def test_unknown_model_name_lists_the_available_ones(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_train(["model=lstm_huge", "tracking=none"], tmp_path)
    message = str(err.value)
    assert "model/lstm_huge" in message or "'model/lstm_huge'" in message
    for known in ("ngram", "rule", "uniform"):
        assert known in message


@pytest.mark.parametrize(
    "argv",
    [["task=[sst2,sst3]"], ["-m", "task=[sst2],[sst3]"], ["--cfg", "job", "+task=[sst3]"]],
)
def test_unknown_task_in_a_list_lists_the_available_ones(argv, monkeypatch, capsys):
    # Hydra itself only says "Could not load 'task/sst3'" for a list element.
    from lineage import train

    monkeypatch.setattr("sys.argv", ["lineage-train", *argv])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    assert exit_.value.code == 2
    message = capsys.readouterr().err
    assert "task/sst3.yaml" in message
    assert "options in 'task': ag_news, csv, imdb, polarity, sms_spam, sst2" in message


@pytest.mark.parametrize("argv", [["model=lstmm"], ["-m", "model=rule,lstmm", "seed=0,1"]])
def test_a_misspelt_model_is_one_line_with_the_closest_name(argv, monkeypatch, capsys):
    from lineage import train

    monkeypatch.setattr("sys.argv", ["lineage-train", *argv])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no config model/lstmm.yaml; options in 'model': glove, gru_small" in line
    assert line.endswith("did you mean lstm_small?")


def test_known_tasks_in_lists_pass_the_check():
    from lineage.config import unknown_group_options

    argv = ["-m", "task=[sst2,sms_spam],[polarity]", "model=ngram,rule", "task.sst2.probe.C=1"]
    assert unknown_group_options(argv, CONF) is None
    # Hydra's own groups take options from plugins (joblib is not a file in conf/hydra/launcher)
    assert unknown_group_options(["hydra/launcher=joblib", "experiment=lineage_lee"], CONF) is None
    # interpolations and glob sweeps are Hydra's to resolve
    assert unknown_group_options(["model=${oc.env:MODEL,ngram}"], CONF) is None
    assert unknown_group_options(["-m", "model=glob(ngram*)"], CONF) is None


def test_wrong_type_in_an_override_names_the_key_and_value(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(["seed=abc", "tracking=none"], tmp_path)
    message = str(err.value) + str(err.value.__cause__)
    assert "seed" in message and "abc" in message


@pytest.mark.parametrize(
    "override,expected",
    [
        ("seed=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("samples.count=many", "Value 'many' of type 'str' could not be converted to Integer"),
    ],
)
def test_wrong_type_on_the_command_line_is_the_line_a_user_sees(
    override, expected, monkeypatch, capsys
):
    # what `lineage-train seed=abc` prints: the override, the value and the key, no traceback
    from lineage import train

    monkeypatch.setattr("sys.argv", ["lineage-train", override, "tracking=none"])
    with pytest.raises(SystemExit) as exit_:
        train.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"Error merging override {override}" in err
    assert expected in err
    assert f"full_key: {override.split('=')[0]}" in err
    assert "Traceback" not in err


def test_unknown_top_level_key_is_refused(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train(["sed=3", "tracking=none"], tmp_path)
    assert "sed" in str(err.value) + str(err.value.__cause__)


def test_a_trainer_setting_the_family_decides_names_the_key_to_use(tiny_cfg):
    # Lightning users reach for trainer.max_epochs; the family would replace it without a word.
    with pytest.raises(DataError) as err:
        run(tiny_cfg("model=lstm_tiny", "trainer.max_epochs=3"))
    message = str(err.value)
    assert "trainer.max_epochs=3" in message and "set model.max_epochs=3 instead" in message
    with pytest.raises(DataError, match=r"sets max_epochs=1 itself; leave trainer.max_epochs"):
        run(tiny_cfg("model=ngram", "trainer.max_epochs=3"))
    with pytest.raises(DataError, match=r"set model.gradient_clip_val=1 instead"):
        run(tiny_cfg("model=lstm_tiny", "+trainer.gradient_clip_val=1"))
    # the family's own value is no conflict
    assert run(tiny_cfg("model=ngram", "trainer.max_epochs=1"))["test/ppl"] > 1


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=lstm_tiny", "model.net.hidden_size=-5"], "model.net.hidden_size must be >= 1"),
        (
            ["model=lstm_tiny", "model.net.hidden_size=abc"],
            "hidden_size='abc', embedding_size=None, dropout=0.0, variational=False, "
            "tie_weights=False, init_range=0.1) is refused: invalid literal for int()",
        ),
        (["model=transformer_tiny", "model.net.n_heads=3"], "multiple of model.net.n_heads=3"),
        (
            ["model=lstm_tiny", "model.optimizer.lr=abc"],
            "model.optimizer (torch.optim.SGD: lr='abc') is refused",
        ),
        (["model=lstm_tiny", "model.max_epochs=abc"], "model.max_epochs='abc': use a whole"),
        (["model=glove", "model.max_epochs=0"], "model.max_epochs=0: use a whole number"),
        (["stages=[fit,tset]"], "unknown stage(s) ['tset']; use a list of fit, validate, test"),
        (["stages=[]"], "stages=[]: nothing to run; use a list of fit, validate, test"),
        (["seed=-1"], "seed=-1: use a whole number from 0 to 4294967295"),
        (["study="], "study='': name the study (study=<name>) or leave it out"),
        (["samples.temperature=-1"], "samples.temperature=-1.0: use >= 0 (0: greedy)"),
        (["+tags.config_hash=x"], "tags.config_hash: a tag lineage sets itself"),
        (
            ["model=lstm_tiny", "+model.net.hiden=3"],
            "unexpected keyword argument 'hiden': not a setting of this config",
        ),
    ],
)
def test_a_setting_a_constructor_refuses_is_one_line(
    overrides, message, tmp_path, monkeypatch, capsys
):
    from lineage import train

    argv = ["lineage-train", *overrides, "tracking=none", f"paths.root_dir={tmp_path}"]
    monkeypatch.setattr("sys.argv", [*argv, *tiny_corpus_overrides()])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        train.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lineage-train: ") and message in err[-1]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["trainer.accelerator=bogus"], "trainer: You selected an invalid accelerator name"),
        (["trainer.precision=bogus"], "trainer: Precision 'bogus' is invalid"),
        (["+trainer.nonsense=1"], "argument 'nonsense' (not a Trainer setting;"),
        (["model=lstm_tiny", "model.batching.batch_size=0"], "batch_size must be >= 1, got 0"),
        (
            ["model=transformer_tiny", "model.batching.min_context=99"],
            "model.batching: min_context must be in [0, seq_len), got 99",
        ),
    ],
)
def test_a_setting_refused_when_built_leaves_no_run(overrides, message, tiny_cfg):
    """Lightning checks a trainer setting when the Trainer is built, the loaders theirs when
    built: both are built before the MLflow run opens, so the study keeps no FAILED run."""
    from mlflow import MlflowClient

    cfg = tiny_cfg("model=ngram", *overrides, "study=trainer_typo", tracking="mlflow")
    with pytest.raises(DataError) as err:
        run(cfg)
    assert message in str(err.value)
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    assert experiment is None or client.search_runs([experiment.experiment_id]) == []


def test_bad_ngram_order_names_the_value(tiny_cfg):
    cfg = tiny_cfg("model=ngram", "model.lm.order=9")
    with pytest.raises(Exception) as err:
        instantiate(cfg.model, vocab=["<unk>", "<eos>", "a"])
    assert "9" in str(err.value) and "order" in str(err.value)


SPLITS = ("train", "valid", "test")


def _text_files(root, train, valid, test):
    files = [f"corpus.files.{k}={v}" for k, v in zip(SPLITS, (train, valid, test), strict=True)]
    return compose_train(["corpus=text_files", *files, "tracking=none", "model=uniform"], root)


def test_missing_corpus_file(tmp_path):
    missing = tmp_path / "nope.txt"
    cfg = _text_files(tmp_path, missing, missing, missing)
    with pytest.raises(DataError) as err:
        run(cfg)
    message = str(err.value)
    assert "nope.txt" in message and "corpus.files.train" in message


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    good = CONF.parent / "tests" / "fixtures" / "tiny_corpus" / "valid.txt"
    cfg = _text_files(tmp_path, empty, good, good)
    with pytest.raises(DataError) as err:
        run(cfg)
    message = str(err.value)
    assert "empty.txt" in message and "no tokens" in message


def test_checksum_mismatch_names_file_hash_url_and_setting(tmp_path, shared_data):
    local = tmp_path / "ptb"
    shutil.copytree(shared_data / "ptb", local)
    target = local / "ptb.valid.txt"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.write_bytes(bytes(data))
    cfg = compose_train(
        ["corpus=ptb", f"corpus.data_dir={local}", "tracking=none", "model=uniform"], tmp_path
    )
    with pytest.raises(DataError) as err:
        run(cfg)
    message = str(err.value)
    assert "ptb.valid.txt" in message
    assert "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2" in message
    assert "https://" in message
    assert "corpus.data_dir" in message


def test_offline_without_a_local_copy(tmp_path):
    cfg = compose_train(
        ["corpus=ptb", f"corpus.data_dir={tmp_path / 'empty'}", "tracking=none", "model=uniform"],
        tmp_path,
    )
    with pytest.raises(DataError) as err:
        run(cfg)
    message = str(err.value)
    assert "ptb.train.txt" in message and "corpus.data_dir" in message and "https://" in message


def test_the_command_line_prints_the_data_error_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    cmd = [
        sys.executable,
        "-m",
        "lineage.train",
        "corpus=ptb",
        f"corpus.data_dir={tmp_path / 'nowhere'}",
        "tracking=none",
        f"paths.root_dir={tmp_path}",
    ]
    env = {**os.environ, "LINEAGE_OFFLINE": "1", "LINEAGE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "lineage-train: source 'ptb': ptb.train.txt is missing" in done.stderr
    assert "corpus.data_dir=" in done.stderr


def test_a_setting_refused_by_a_constructor_is_printed_without_hydras_wrapper(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    cmd = [sys.executable, "-m", "lineage.train", "corpus.max_size=2.5", "tracking=none",
           f"paths.root_dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "LINEAGE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Error in call to target" not in done.stderr
    assert "lineage-train: corpus.max_size=2.5 must be a whole number >= 3" in done.stderr


def test_a_corpus_file_left_unset_is_named_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT, TINY

    cmd = [sys.executable, "-m", "lineage.train", "model=ngram", "corpus=text_files",
           f"corpus.files.train={TINY / 'train.txt'}", f"corpus.files.test={TINY / 'test.txt'}",
           "tracking=none", f"paths.root_dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "LINEAGE_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "lineage-train: corpus.files.valid has no value; set it on the command line" in (
        done.stderr
    )
