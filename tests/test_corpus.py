"""The Lightning data module: PTB via corpus.data_dir, the embedded Lee corpus, text files."""

from __future__ import annotations

import shutil
import time

import lightning as L
import pytest
import torch

from lineage.data.corpus import CorpusDataModule
from lineage.data.sources import SOURCES, DataError
from lineage.interface import Batching

LEE = dict(
    name="lee",
    source="lee",
    tokenizer="nltk",
    lowercase=True,
    line_is_sentence=False,
    min_freq=2,
    documents={"train": [0, 240], "valid": [240, 270], "test": [270, 300]},
)


@pytest.fixture(scope="module")
def ptb(tmp_path_factory):
    from conftest import shared_data_dir

    ptb_dir = shared_data_dir() / "ptb"
    if not ptb_dir.is_dir():
        pytest.skip(f"benchmark data not found at {ptb_dir}")
    cache = tmp_path_factory.mktemp("prepared")
    dm = CorpusDataModule(
        name="ptb", source="ptb", data_dir=str(ptb_dir), cache_dir=str(cache), offline=True
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def lee(tmp_path_factory):
    dm = CorpusDataModule(**LEE, cache_dir=str(tmp_path_factory.mktemp("prepared")))
    dm.prepare_data()
    return dm


def _targets(loader) -> int:
    return sum(b.n_targets for b in loader)


# ---------------------------------------------------------------- PTB


def test_construction_does_no_work(tmp_path):
    start = time.perf_counter()
    dm = CorpusDataModule(
        name="ptb", source="ptb", data_dir=str(tmp_path / "absent"), cache_dir=str(tmp_path / "c")
    )
    assert time.perf_counter() - start < 0.05
    assert not (tmp_path / "absent").exists() and not (tmp_path / "c").exists()
    with pytest.raises(DataError, match="corpus.data_dir"):  # LINEAGE_OFFLINE=1 in tests
        dm.prepare_data()


def test_ptb_statistics_and_digests(ptb):
    assert ptb.vocab_size == 10_000 and len(ptb.vocab) == 10_000
    stats = ptb.stats()
    assert stats["train/tokens"] == 929_589
    assert stats["val/tokens"] == 73_760
    assert stats["test/tokens"] == 82_430
    assert stats["val/oov_rate"] == 0.0 and stats["test/oov_rate"] == 0.0
    assert 0.04 < stats["test/unk_rate"] < 0.07 and stats["vocab/size"] == 10_000
    files = SOURCES["ptb"].files
    assert ptb.digests() == {
        "train": files["train"].sha256,
        "val": files["valid"].sha256,
        "test": files["test"].sha256,
    }
    described = ptb.describe()
    assert described["val"]["source"] == files["valid"].url
    assert described["val"]["name"] == "ptb/val" and described["val"]["tokens"] == 73_760
    assert described["test"]["digest"] == files["test"].sha256


def test_ptb_stream(ptb):
    val = ptb.stream("val")
    assert val.dtype == torch.long and val.shape == (73_761,)
    assert ptb.stream("valid") is val
    assert int(val[0]) == ptb.vocab.eos_id
    with pytest.raises(DataError, match="split"):
        ptb.stream("dev")


def test_ptb_loaders_score_every_target_once(ptb):
    ptb.set_batching(Batching(mode="full"))
    (batch,) = list(ptb.val_dataloader())
    assert batch.tokens.shape == (1, 73_761) and batch.n_targets == 73_760 and batch.split == "val"

    ptb.set_batching(Batching(mode="stream", batch_size=20, seq_len=35, eval_batch_size=1))
    train = ptb.train_dataloader()
    first = next(iter(train))
    assert first.tokens.shape == (20, 36) and not first.carry and first.split == "train"
    assert len(train) == -(-(929_590 // 20 - 1) // 35)
    assert _targets(ptb.test_dataloader()) == 82_430

    ptb.set_batching(
        Batching(mode="window", batch_size=16, seq_len=64, eval_batch_size=8, min_context=32)
    )
    assert _targets(ptb.val_dataloader()) == 73_760
    assert _targets(ptb.train_dataloader()) == 929_589


def test_ptb_second_datamodule_is_a_cache_hit(ptb):
    again = CorpusDataModule(
        name="ptb",
        source="ptb",
        data_dir=ptb.data_dir,
        cache_dir=ptb.cache_dir,
        offline=True,
    )
    again.setup()
    assert again.prepared.cache_hit and again.vocab == ptb.vocab
    assert torch.equal(again.stream("test"), ptb.stream("test"))


def test_ptb_checksum_mismatch_through_the_datamodule(shared_data, tmp_path):
    local = tmp_path / "ptb"
    shutil.copytree(shared_data / "ptb", local)
    target = local / "ptb.test.txt"
    target.chmod(0o644)
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x01
    target.write_bytes(bytes(data))
    dm = CorpusDataModule(name="ptb", source="ptb", data_dir=str(local), offline=True)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "ptb.test.txt" in msg and SOURCES["ptb"].files["test"].sha256 in msg
    assert SOURCES["ptb"].files["test"].url in msg and "corpus.data_dir" in msg


WIKITEXT_BODY = {"train": " \n = A = \n \n a b c . \n", "valid": " a d \n\n", "test": " b \n"}


def _register_wikitext_zip(archive, monkeypatch):
    """A WikiText-layout zip of WIKITEXT_BODY, registered as wikitext2 with its own sha256."""
    import dataclasses
    import hashlib
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        for split, text in WIKITEXT_BODY.items():
            zf.writestr(f"wikitext-2/wiki.{split}.tokens", text)
    rf = dataclasses.replace(
        SOURCES["wikitext2"].files["archive"],
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(
        SOURCES, "wikitext2", dataclasses.replace(SOURCES["wikitext2"], files={"archive": rf})
    )
    return rf


def test_zipped_source_keeps_every_line(tmp_path, monkeypatch):
    """WikiText layout: splits read from the verified zip; empty lines get an <eos> too."""
    rf = _register_wikitext_zip(tmp_path / "wikitext-2-v1.zip", monkeypatch)
    dm = CorpusDataModule(
        name="wt",
        source="wikitext2",
        data_dir=str(tmp_path),
        cache_dir=str(tmp_path / "c"),
        skip_empty_lines=False,
    )
    stats = dm.stats()
    # words + lines: 7 + 4 in train (as WikiText's published counts are made), 2 + 2 in valid
    assert (stats["train/tokens"], stats["val/tokens"], stats["test/tokens"]) == (11, 4, 2)
    assert dm.vocab.decode(dm.stream("val")) == ["<eos>", "a", "<unk>", "<eos>", "<eos>"]
    assert set(dm.digests().values()) == {rf.sha256}
    assert dm.describe()["val"]["source"].endswith("#wikitext-2/wiki.valid.tokens")


def test_extracted_wikitext_is_named_and_reads_as_text_files(tmp_path, monkeypatch):
    """Unpacked WikiText without its zip: the error says how to read the files unverified, and
    that command gives the streams and vocabulary the verified zip gives."""
    import re

    unpacked = tmp_path / "unpacked"
    for split, text in WIKITEXT_BODY.items():
        (unpacked / "wikitext-2").mkdir(parents=True, exist_ok=True)
        (unpacked / "wikitext-2" / f"wiki.{split}.tokens").write_text(text)
    with pytest.raises(DataError) as err:
        CorpusDataModule(
            name="wt",
            source="wikitext2",
            data_dir=str(unpacked),
            cache_dir=str(tmp_path / "c"),
            offline=True,
            skip_empty_lines=False,
        ).stats()
    message = str(err.value)
    assert "holds the extracted files but not wikitext-2-v1.zip" in message
    files = dict(re.findall(r"corpus\.files\.(\w+)=(\S+)", message))
    assert sorted(files) == ["test", "train", "valid"]
    assert "corpus=text_files" in message and "corpus.skip_empty_lines=false" in message
    own = CorpusDataModule(
        name="own",
        source="text_files",
        files=files,
        cache_dir=str(tmp_path / "c"),
        skip_empty_lines=False,
    )

    archive = tmp_path / "zipped" / "wikitext-2-v1.zip"
    archive.parent.mkdir()
    _register_wikitext_zip(archive, monkeypatch)
    zipped = CorpusDataModule(
        name="wt",
        source="wikitext2",
        data_dir=str(archive.parent),
        cache_dir=str(tmp_path / "c"),
        skip_empty_lines=False,
    )
    assert own.vocab.itos == zipped.vocab.itos
    for split in ("train", "val", "test"):
        assert torch.equal(own.stream(split), zipped.stream(split))


# ---------------------------------------------------------------- Lee


def test_lee_split_sizes_are_deterministic(lee, tmp_path):
    stats = lee.stats()
    expected = {
        "train/tokens": 55_625,
        "train/sentences": 2_136,
        "val/tokens": 7_877,
        "val/sentences": 304,
        "test/tokens": 6_262,
        "test/sentences": 247,
        "vocab/size": 3_491,
    }
    assert {k: stats[k] for k in expected} == expected
    # An independent build (another cache dir) gives the same streams.
    other = CorpusDataModule(**LEE, cache_dir=str(tmp_path / "other"))
    assert not other.prepared.cache_hit
    for split in ("train", "val", "test"):
        assert torch.equal(other.stream(split), lee.stream(split))
    assert lee.describe()["test"]["selector"] == "documents[270:300]"


def test_lee_vocabulary_comes_from_train_only(lee):
    from collections import Counter

    from gensim.test.utils import datapath

    from lineage.data.tokenizers import tokenize

    lines = open(datapath("lee_background.cor"), encoding="utf-8").read().split("\n")
    settings = dict(tokenizer="nltk", lowercase=True, line_is_sentence=False)
    train = Counter(w for s in tokenize(lines[:240], **settings) for w in s)
    test = {w for s in tokenize(lines[270:300], **settings) for w in s}
    vocab = set(lee.vocab.itos)
    assert vocab - {"<unk>", "<eos>"} == {w for w, c in train.items() if c >= 2}
    assert test - set(train), "some test words never occur in train"
    assert not (test - set(train)) & vocab
    stats = lee.stats()
    for split in ("train", "val", "test"):
        assert stats[f"{split}/tokens"] > 0
    assert stats["test/oov_rate"] > stats["train/oov_rate"] > 0  # min_freq=2 makes train OOVs


def test_lee_bad_document_ranges(tmp_path):
    overlap = {**LEE, "documents": {"train": [0, 250], "valid": [240, 270], "test": [270, 300]}}
    with pytest.raises(DataError, match="overlap"):
        CorpusDataModule(**overlap, cache_dir=str(tmp_path)).prepare_data()
    past = {**LEE, "documents": {"train": [0, 240], "valid": [240, 270], "test": [270, 400]}}
    with pytest.raises(DataError, match="past the end"):
        CorpusDataModule(**past, cache_dir=str(tmp_path)).prepare_data()
    bad = {**LEE, "documents": {"train": [0, 240], "valid": [240], "test": [270, 300]}}
    with pytest.raises(DataError, match="corpus.documents.valid"):
        CorpusDataModule(**bad, cache_dir=str(tmp_path)).prepare_data()


def test_lightning_drives_the_loaders(lee):
    """Lightning moves TokenBatch objects unchanged and reshuffles windows every epoch."""

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.epochs: list[list[tuple]] = []
            self.val_targets = 0

        def on_train_epoch_start(self):
            self.epochs.append([])

        def training_step(self, batch, batch_idx):
            self.epochs[-1].append(tuple(batch.meta["starts"]))
            return self.w * batch.n_targets

        def validation_step(self, batch, batch_idx):
            assert batch.split == "val"
            self.val_targets += batch.n_targets

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    lee.set_batching(
        Batching(mode="window", batch_size=8, seq_len=32, eval_batch_size=4, min_context=16)
    )
    L.seed_everything(0)
    probe = Probe()
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(probe, datamodule=lee)
    first, second = probe.epochs
    assert first != second
    assert sorted(s for b in first for s in b) == sorted(s for b in second for s in b)
    assert probe.val_targets == 2 * lee.stats()["val/tokens"]


# ---------------------------------------------------------------- text files


def _files(tmp_path, **texts):
    out = {}
    for split, text in texts.items():
        path = tmp_path / f"{split}.txt"
        path.write_text(text)
        out[split] = str(path)
    return out


def test_text_files_corpus(tmp_path):
    files = _files(tmp_path, train="a b\nb c\n", valid="a d\n", test="c\n")
    dm = CorpusDataModule(name="mine", source="text_files", files=files, cache_dir=str(tmp_path))
    assert dm.stats()["val/oov_rate"] == 0.5 and dm.stats()["test/tokens"] == 2
    assert dm.describe()["train"]["source"] == files["train"]


def test_text_files_errors_name_the_setting_and_path(tmp_path):
    files = _files(tmp_path, train="a b\n", valid="a\n")
    with pytest.raises(DataError, match=r"corpus\.files\.test"):
        CorpusDataModule(name="x", source="text_files", files=files).prepare_data()

    files["test"] = str(tmp_path / "nope.txt")
    with pytest.raises(DataError) as err:
        CorpusDataModule(name="x", source="text_files", files=files).prepare_data()
    assert "corpus.files.test" in str(err.value) and "nope.txt" in str(err.value)

    files = _files(tmp_path, train="\n\n", valid="a\n", test="a\n")
    with pytest.raises(DataError) as err:
        CorpusDataModule(
            name="x", source="text_files", files=files, cache_dir=str(tmp_path / "c")
        ).prepare_data()
    assert str(err.value) == (
        f"corpus 'x': the train split ({files['train']}) has no tokens; point "
        "corpus.files.train (or the corpus's data) at a file with text"
    )


def test_text_files_refuse_unknown_keys_and_directories(tmp_path):
    files = _files(tmp_path, train="a b\n", valid="a\n", test="a\n")
    with pytest.raises(DataError, match=r"unknown corpus.files key\(s\) \['tset'\]"):
        CorpusDataModule(name="x", source="text_files", files={**files, "tset": "t.txt"}).spec()
    with pytest.raises(DataError, match=r"corpus\.files\.valid=.* is a directory, not a file"):
        CorpusDataModule(
            name="x", source="text_files", files={**files, "valid": str(tmp_path)}
        ).spec()


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"lowercase": "nope"}, "corpus.lowercase='nope' must be true or false"),
        ({"line_is_sentence": 2}, "corpus.line_is_sentence=2 must be true or false"),
        ({"max_size": 2.9}, "corpus.max_size=2.9 must be a whole number >= 3"),
        ({"max_size": 1}, "corpus.max_size=1 must be a whole number >= 3"),
        ({"min_freq": -3}, "corpus.min_freq=-3 must be a whole number >= 1"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused_not_coerced(setting, message):
    # bool("nope") is true in Python: coerced, it would silently lowercase the corpus
    with pytest.raises(DataError) as err:
        CorpusDataModule(name="x", source="lee", **setting)
    assert str(err.value) == message


def test_settings_from_environment_variables_or_numpy_are_read_as_meant():
    import numpy as np

    dm = CorpusDataModule(name="x", source="lee", lowercase="no", offline="TRUE", max_size="10000")
    assert dm.lowercase is False and dm.offline is True and dm.max_size == 10000
    dm = CorpusDataModule(name="x", source="lee", max_size=np.int64(500), min_freq=1e0)
    assert dm.max_size == 500 and dm.min_freq == 1


def test_lineage_cache_dir_moves_the_prepared_cache_for_the_api_too(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEAGE_CACHE_DIR", str(tmp_path / "prepared"))
    dm = CorpusDataModule(name="lee", source="lee")
    assert dm._cache_dir() == tmp_path / "prepared"


def test_unknown_source_and_tokenizer():
    with pytest.raises(DataError) as err:
        CorpusDataModule(name="x", source="wiki")
    assert all(s in str(err.value) for s in ("ptb", "wikitext2", "lee", "text_files"))
    with pytest.raises(DataError, match="whitespace, nltk"):
        CorpusDataModule(name="x", source="lee", tokenizer="bpe")
