"""Tokenisation and cached preparation: PTB's published counts, cache hits, never-trusted caches."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from lineage.data.prepare import PrepSpec, SplitInput, cache_paths, encode_stream, prepare
from lineage.data.sources import (
    SOURCES,
    DataError,
    fetch,
    read_split_lines,
    read_text_lines,
    sha256_file,
)
from lineage.data.tokenizers import tokenize
from lineage.data.vocab import EOS, UNK, Vocabulary

# ---------------------------------------------------------------- tokenizers


def test_whitespace_tokenizer_and_empty_lines():
    lines = [" a b ", "", "   ", "C d"]
    assert tokenize(lines) == [["a", "b"], ["C", "d"]]
    assert tokenize(lines, skip_empty_lines=False) == [["a", "b"], [], [], ["C", "d"]]
    assert tokenize(lines, lowercase=True)[1] == ["c", "d"]


def test_nltk_tokenizer_works_offline(tmp_path, monkeypatch):
    import nltk

    # Hide any installed NLTK data: the tokenizers must not need a downloaded resource.
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    sents = tokenize(["Mr. Smith didn't go to Washington, D.C. today."], tokenizer="nltk")
    assert sents == [
        ["Mr.", "Smith", "did", "n't", "go", "to", "Washington", ",", "D.C.", "today", "."]
    ]


def test_nltk_splits_paragraphs_into_sentences(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    doc = "The fire spread quickly. Residents were evacuated! Was anyone hurt? No."
    sents = tokenize([doc], tokenizer="nltk", lowercase=True, line_is_sentence=False)
    assert sents == [
        ["the", "fire", "spread", "quickly", "."],
        ["residents", "were", "evacuated", "!"],
        ["was", "anyone", "hurt", "?"],
        ["no", "."],
    ]
    # one line per sentence when line_is_sentence is True
    assert len(tokenize([doc], tokenizer="nltk")) == 1


def test_nltk_keeps_the_specials_of_pre_unked_text_whole(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    sents = tokenize([" the <unk> rose N N to $ N <eos> ."], tokenizer="nltk")
    assert sents == [["the", UNK, "rose", "N", "N", "to", "$", "N", EOS, "."]]


def test_unknown_tokenizer_lists_the_allowed_ones():
    with pytest.raises(DataError) as err:
        tokenize(["a"], tokenizer="spacy")
    assert "spacy" in str(err.value) and "whitespace" in str(err.value) and "nltk" in str(err.value)


# ---------------------------------------------------------------- small specs


def _spec(tmp_path: Path, texts: dict[str, str], name: str = "toy", **settings) -> PrepSpec:
    inputs = {}
    for split, text in texts.items():
        path = tmp_path / f"{name}.{split}.txt"
        path.write_text(text)
        inputs[split] = SplitInput(
            uri=str(path),
            path=str(path),
            digest=sha256_file(path),
            read=lambda p=path: p.read_text().splitlines(),
        )
    return PrepSpec(name=name, source="text_files", inputs=inputs, **settings)


def test_stream_layout_and_rates(tmp_path):
    spec = _spec(tmp_path, {"train": "a b <unk>\nb\n", "val": "a c\n", "test": "c c d\n"})
    p = prepare(spec, tmp_path / "cache")
    assert p.vocab.itos == [UNK, EOS, "b", "a"]
    eos, unk = p.vocab.eos_id, p.vocab.unk_id
    assert p.ids["train"].tolist() == [eos, 3, 2, unk, eos, 2, eos]
    assert p.ids["val"].tolist() == [eos, 3, unk, eos]
    assert all(a.dtype == np.int32 for a in p.ids.values())
    # a literal <unk> is in the vocabulary: not an OOV, but counted by unk_rate
    assert p.stats["train"] == {
        "tokens": 6,
        "words": 4,
        "sentences": 2,
        "oov_rate": 0.0,
        "unk_rate": 1 / 6,
    }
    assert p.stats["val"]["oov_rate"] == 0.5 and p.stats["val"]["unk_rate"] == 1 / 3
    assert p.stats["test"]["oov_rate"] == 1.0 and p.stats["test"]["tokens"] == 4


def test_vocabulary_settings_change_the_key(tmp_path):
    texts = {"train": "a a a b b c\n", "val": "a\n", "test": "b\n"}
    base = _spec(tmp_path, texts)
    capped = _spec(tmp_path, texts, max_size=3)
    frequent = _spec(tmp_path, texts, min_freq=2)
    assert len({base.key(), capped.key(), frequent.key()}) == 3
    assert prepare(capped, tmp_path / "c").vocab.itos == [UNK, EOS, "a"]
    assert prepare(frequent, tmp_path / "c").vocab.itos == [UNK, EOS, "a", "b"]
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2


def test_empty_split_is_a_data_error(tmp_path):
    spec = _spec(tmp_path, {"train": "a b\n", "val": "\n\n", "test": "a\n"})
    with pytest.raises(DataError) as err:
        prepare(spec, tmp_path / "cache")
    assert "valid split" in str(err.value) and "toy.val.txt" in str(err.value)
    assert "no tokens" in str(err.value)


def test_no_train_split_is_a_data_error(tmp_path):
    spec = _spec(tmp_path, {"val": "a\n"})
    with pytest.raises(DataError, match="train"):
        prepare(spec, tmp_path / "cache")


def test_encode_stream_counts():
    vocab = Vocabulary.build([["x", "y"]])
    ids, stats = encode_stream([["x", "z"], [], ["y"]], vocab)
    assert vocab.decode(ids) == [EOS, "x", UNK, EOS, EOS, "y", EOS]
    assert stats["sentences"] == 3 and stats["words"] == 3 and stats["tokens"] == 6


# ---------------------------------------------------------------- PTB


def _ptb_spec(ptb_dir: Path, **settings) -> PrepSpec:
    paths = fetch("ptb", ptb_dir, offline=True)
    inputs = {
        split: SplitInput(
            uri=SOURCES["ptb"].files[fs].url,
            path=str(paths[fs]),
            digest=sha256_file(paths[fs]),
            read=lambda s=fs: read_split_lines("ptb", s, paths),
        )
        for split, fs in (("train", "train"), ("val", "valid"), ("test", "test"))
    }
    return PrepSpec(name="ptb", source="ptb", inputs=inputs, **settings)


@pytest.fixture(scope="module")
def ptb_prepared(tmp_path_factory):
    from conftest import shared_data_dir

    ptb = shared_data_dir() / "ptb"
    if not ptb.is_dir():
        pytest.skip(f"benchmark data not found at {ptb}")
    return prepare(_ptb_spec(ptb), tmp_path_factory.mktemp("ptb-cache"))


def test_ptb_matches_the_published_figures(ptb_prepared):
    p = ptb_prepared
    assert len(p.vocab) == 10_000
    assert {s: p.stats[s]["tokens"] for s in p.ids} == {
        "train": 929_589,
        "val": 73_760,
        "test": 82_430,
    }
    assert {s: p.stats[s]["sentences"] for s in p.ids} == {
        "train": 42_068,
        "val": 3_370,
        "test": 3_761,
    }
    for split in ("train", "val", "test"):
        assert p.stats[split]["oov_rate"] == 0.0
        ids = p.ids[split]
        assert ids[0] == p.vocab.eos_id and ids[-1] == p.vocab.eos_id
        assert int((ids == p.vocab.eos_id).sum()) == p.stats[split]["sentences"] + 1
    # MANIFEST.md: <unk> occurs 45,020 times in train
    assert p.stats["train"]["unk_rate"] == pytest.approx(45_020 / 929_589)
    assert p.vocab.decode(p.ids["train"][1:4]) == ["aer", "banknote", "berlitz"]


def test_cache_hit_then_corruption_is_rebuilt(shared_data, tmp_path, caplog):
    cache = tmp_path / "cache"
    spec = _ptb_spec(shared_data / "ptb")
    first = prepare(spec, cache)
    assert not first.cache_hit
    npz, meta = cache_paths(spec, cache)
    assert first.path == npz and npz.is_file() and meta.is_file()
    assert npz.name.startswith("ptb-") and len(npz.stem) == len("ptb-") + 16
    doc = json.loads(meta.read_text())
    assert doc["npz_sha256"] == sha256_file(npz) and doc["key"] == spec.key()
    assert doc["stats"]["val"]["tokens"] == 73_760
    stamp = (npz.stat().st_mtime_ns, meta.stat().st_mtime_ns)

    second = prepare(_ptb_spec(shared_data / "ptb"), cache)
    assert second.cache_hit and second.vocab == first.vocab
    assert all(np.array_equal(second.ids[s], first.ids[s]) for s in first.ids)
    assert second.stats == first.stats
    assert (npz.stat().st_mtime_ns, meta.stat().st_mtime_ns) == stamp, "not rewritten"

    # Truncate the npz: detected by its sha256, deleted, rebuilt correctly.
    with open(npz, "r+b") as f:
        f.truncate(npz.stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="lineage.data.prepare"):
        third = prepare(spec, cache)
    assert not third.cache_hit
    assert "unusable" in caplog.text
    assert third.stats["test"]["tokens"] == 82_430 and len(third.vocab) == 10_000
    assert np.array_equal(third.ids["train"], first.ids["train"])
    assert prepare(spec, cache).cache_hit

    # A garbled sidecar is not trusted either.
    meta.write_text("{not json")
    assert not prepare(spec, cache).cache_hit
    assert prepare(spec, cache).cache_hit

    # The statistics that MLflow logs come from the checksummed npz, not the editable sidecar.
    doc = json.loads(meta.read_text())
    doc["stats"]["test"]["sentences"] = 9761
    meta.write_text(json.dumps(doc))
    loaded = prepare(spec, cache)
    assert loaded.cache_hit and loaded.stats == first.stats
    assert loaded.stats["test"]["sentences"] == int((first.ids["test"][1:] == 1).sum())

    # Atomic writes leave no temp files; the npz holds no pickles and a unicode vocabulary.
    assert sorted(p.name for p in cache.iterdir()) == sorted([npz.name, meta.name])
    with np.load(npz, allow_pickle=False) as z:
        assert z["vocab"].dtype.kind == "U" and len(z["vocab"]) == 10_000


def test_cache_bytes_are_reproducible(tmp_path):
    texts = {"train": "a b c\n", "val": "a\n", "test": "b\n"}
    one = prepare(_spec(tmp_path, texts), tmp_path / "one")
    two = prepare(_spec(tmp_path, texts), tmp_path / "two")
    assert sha256_file(one.path) == sha256_file(two.path)


def test_temporaries_of_a_killed_writer_are_removed_fresh_ones_kept(tmp_path):
    spec = _spec(tmp_path, {"train": "a b c\n", "val": "a\n", "test": "b\n"})
    cache = tmp_path / "cache"
    cache.mkdir()
    npz, meta = cache_paths(spec, cache)
    stale, live = cache / f".{npz.name}.killed.tmp", cache / f".{npz.name}.writing.tmp"
    stale.write_bytes(b"half an npz")
    live.write_bytes(b"another process, now")
    day_ago = os.stat(stale).st_mtime - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    prepare(spec, cache)
    assert not stale.exists() and live.exists()


def test_a_byte_order_mark_or_a_nul_byte(tmp_path):
    paths = {s: tmp_path / f"{s}.txt" for s in ("train", "val", "test")}
    paths["train"].write_bytes("the cat\nthe dog\n".encode("utf-8-sig"))
    paths["val"].write_bytes("the cat sat\n".encode("utf-8-sig"))
    paths["test"].write_text("the dog\n")
    inputs = {
        s: SplitInput(str(p), str(p), sha256_file(p), lambda p=p: read_text_lines(p))
        for s, p in paths.items()
    }
    prepared = prepare(PrepSpec("bom", "text_files", inputs), tmp_path / "cache")
    assert prepared.vocab.itos == [UNK, EOS, "the", "cat", "dog"]  # no "\ufeffthe"
    assert prepared.stats["val"]["oov_rate"] == pytest.approx(1 / 3)  # "sat" alone
    paths["test"].write_bytes(b"a b\nc\x00d\n")
    with pytest.raises(DataError, match=r"test\.txt:2 contains a NUL byte"):
        read_text_lines(paths["test"])


def test_npz_without_sidecar_is_rebuilt(tmp_path):
    spec = _spec(tmp_path, {"train": "a b c\n", "val": "a\n", "test": "b\n"})
    cache = tmp_path / "cache"
    prepare(spec, cache)
    npz, meta = cache_paths(spec, cache)
    meta.unlink()  # as if interrupted between the two renames
    p = prepare(spec, cache)
    assert not p.cache_hit and meta.is_file()
    assert prepare(spec, cache).cache_hit


def test_unwritable_cache_dir_is_a_data_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        cache = blocker / "sub"  # a directory under a regular file cannot exist, even for root
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(0o500)
    spec = _spec(tmp_path, {"train": "a\n", "val": "a\n", "test": "a\n"})
    with pytest.raises(DataError, match="corpus.cache_dir"):
        prepare(spec, cache)
