"""Token ids and vocabulary for a corpus, cached on disk, verified, written atomically.

:func:`prepare` turns the raw lines of each split into one id stream per split (design.md §3):
a leading ``<eos>`` (context only), then each sentence's words followed by one ``<eos>``. The
vocabulary comes from the train split only.

The cache key is the sha256 of the raw inputs' digests, every preparation setting and
:data:`PREP_VERSION`; the result lives in ``<cache_dir>/<name>-<key[:16]>.npz`` with a sidecar
``.json`` (the npz's sha256, the settings, the per-split statistics). Both are written to a temp
file in the same directory and renamed (json last), so a reader sees either a complete cache entry
or none. On load the npz's sha256 is recomputed; a truncated, corrupted or mismatched entry is
deleted and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineage.data.sources import (
    UMASK,
    DataError,
    canonical_split,
    remove_stale_temporaries,
    sha256_file,
)
from lineage.data.tokenizers import check_tokenizer, iter_sentences
from lineage.data.vocab import Vocabulary

log = logging.getLogger(__name__)

# Bump when the preparation code changes what it produces: old cache entries stop matching.
PREP_VERSION = 2  # 2: a byte-order mark is dropped; NLTK keeps <unk> and <eos> whole

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: identical inputs, identical bytes


@dataclass(frozen=True)
class SplitInput:
    """Where one split's raw text comes from.

    Attributes:
        uri: the public origin (URL, or a path for local files), for ``describe()``.
        path: the local file read.
        digest: sha256 of that file (part of the cache key).
        read: returns the split's raw lines (called only on a cache miss).
        selector: what inside the file is this split (zip member, document range); "" for all.
    """

    uri: str
    path: str
    digest: str
    read: Callable[[], list[str]] = field(compare=False, repr=False)
    selector: str = ""


@dataclass(frozen=True)
class PrepSpec:
    """Everything that determines a prepared corpus.

    Attributes:
        name: corpus name (cache file prefix).
        source: source kind (``ptb``, ``lee``, ``text_files``, ...).
        inputs: split (``train``, ``val``, ``test``) -> raw input; ``train`` is required.
        tokenizer, lowercase, line_is_sentence, skip_empty_lines: see
            :func:`lineage.data.tokenizers.tokenize`.
        max_size, min_freq: see :meth:`Vocabulary.build`.
        version: the corpus config's own version (bump to force a rebuild).
    """

    name: str
    source: str
    inputs: Mapping[str, SplitInput]
    tokenizer: str = "whitespace"
    lowercase: bool = False
    line_is_sentence: bool = True
    skip_empty_lines: bool = True
    max_size: int | None = None
    min_freq: int = 1
    version: int = 1

    def settings(self) -> dict[str, Any]:
        """The preparation settings (JSON-ready), without the raw inputs; with NLTK's version
        when it tokenises (an upgrade may split words differently)."""
        extra = {}
        if self.tokenizer == "nltk" or not self.line_is_sentence:
            import nltk

            extra["nltk"] = nltk.__version__
        return {
            **extra,
            "source": self.source,
            "tokenizer": self.tokenizer,
            "lowercase": self.lowercase,
            "line_is_sentence": self.line_is_sentence,
            "skip_empty_lines": self.skip_empty_lines,
            "max_size": self.max_size,
            "min_freq": self.min_freq,
            "version": self.version,
        }

    def key(self) -> str:
        """sha256 of the inputs' digests, the settings and :data:`PREP_VERSION`.

        Paths and URLs are left out: moving the data does not invalidate the cache.
        """
        doc = {
            "prep_version": PREP_VERSION,
            "inputs": {s: [i.digest, i.selector] for s, i in sorted(self.inputs.items())},
            "settings": self.settings(),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass
class Prepared:
    """A prepared corpus.

    Attributes:
        vocab: built from the train split.
        ids: split -> int32 stream: leading ``<eos>``, then every sentence followed by ``<eos>``.
        stats: split -> ``tokens`` (targets, len - 1), ``words``, ``sentences``, ``oov_rate``
            (share of word tokens, ``<eos>`` excluded, not in the vocabulary; a literal ``<unk>``
            counts as in-vocabulary), ``unk_rate`` (share of targets that are ``<unk>``).
        key: the cache key.
        path: the npz file.
        cache_hit: True if loaded from the cache, False if built now.
    """

    vocab: Vocabulary
    ids: dict[str, np.ndarray]
    stats: dict[str, dict[str, float]]
    key: str
    path: Path
    cache_hit: bool = False


def cache_paths(spec: PrepSpec, cache_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The (npz, json) files of ``spec`` in ``cache_dir``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name) or "corpus"
    base = Path(cache_dir).expanduser() / f"{stem}-{spec.key()[:16]}"
    return base.with_suffix(".npz"), base.with_suffix(".json")


def prepare(spec: PrepSpec, cache_dir: str | os.PathLike) -> Prepared:
    """Load ``spec``'s prepared corpus from ``cache_dir``, or build and cache it.

    Raises:
        DataError: no train split, a split without tokens, bad settings, or an unusable cache dir.
    """
    check_tokenizer(spec.tokenizer)
    if "train" not in spec.inputs:
        raise DataError(f"corpus {spec.name!r}: no train split (the vocabulary needs one)")
    npz, meta = cache_paths(spec, cache_dir)
    key = spec.key()
    loaded = _load(npz, meta, key)
    if loaded is not None:
        return loaded
    t0 = time.perf_counter()
    vocab, ids, stats = _build(spec)
    try:
        npz.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(npz.parent, (npz.name, meta.name), ".tmp")
        arrays = {"vocab": np.array(vocab.itos, dtype=np.str_)}
        arrays.update({f"ids_{s}": a for s, a in ids.items()})
        # the statistics inside the checksummed npz: what MLflow logs is verified with the ids
        arrays["stats"] = np.array(json.dumps(stats, sort_keys=True))
        _atomic_write(npz, lambda f: _write_npz(f, arrays))
        doc = {
            "name": spec.name,
            "key": key,
            "prep_version": PREP_VERSION,
            "npz_sha256": sha256_file(npz),
            "settings": spec.settings(),
            "inputs": {
                s: {"uri": i.uri, "digest": i.digest, "selector": i.selector}
                for s, i in spec.inputs.items()
            },
            "splits": list(ids),
            "vocab_size": len(vocab),
            "stats": stats,
        }
        text = json.dumps(doc, indent=2, sort_keys=True)
        _atomic_write(meta, lambda f: f.write(text.encode()))
    except OSError as e:
        raise DataError(
            f"corpus {spec.name!r}: cannot write the prepared cache to {npz.parent} ({e}); "
            f"set corpus.cache_dir=<a writable directory>"
        ) from e
    log.info("prepared %s in %.2fs -> %s", spec.name, time.perf_counter() - t0, npz)
    return Prepared(vocab, ids, stats, key, npz, cache_hit=False)


def encode_stream(
    sentences: Iterable[list[str]], vocab: Vocabulary
) -> tuple[np.ndarray, dict[str, float]]:
    """One split's id stream and its statistics (see :class:`Prepared`)."""
    get = vocab.stoi.get
    buf = array("i", [vocab.eos_id])
    n_sent = 0
    for s in sentences:
        buf.extend([get(w, -1) for w in s])  # -1 marks out-of-vocabulary words
        buf.append(vocab.eos_id)
        n_sent += 1
    ids = np.frombuffer(buf, dtype=np.int32).copy()
    oov = ids == -1
    n_oov = int(oov.sum())
    ids[oov] = vocab.unk_id
    tokens = len(ids) - 1
    words = tokens - n_sent
    n_unk = int((ids[1:] == vocab.unk_id).sum())
    stats = {
        "tokens": tokens,
        "words": words,
        "sentences": n_sent,
        "oov_rate": n_oov / words if words else 0.0,
        "unk_rate": n_unk / tokens if tokens else 0.0,
    }
    return ids, stats


def _build(spec: PrepSpec) -> tuple[Vocabulary, dict[str, np.ndarray], dict[str, dict]]:
    def sentences(lines: list[str]):
        return iter_sentences(
            lines, spec.tokenizer, spec.lowercase, spec.line_is_sentence, spec.skip_empty_lines
        )

    # Tokenise twice (count, then encode) rather than hold every sentence of a big corpus.
    order = ["train", *(s for s in spec.inputs if s != "train")]
    train_lines = spec.inputs["train"].read()
    vocab = Vocabulary.build(sentences(train_lines), max_size=spec.max_size, min_freq=spec.min_freq)
    ids: dict[str, np.ndarray] = {}
    stats: dict[str, dict] = {}
    for split in order:
        inp = spec.inputs[split]
        lines = train_lines if split == "train" else inp.read()
        ids[split], stats[split] = encode_stream(sentences(lines), vocab)
        if stats[split]["tokens"] == 0 or stats[split]["words"] == 0:
            where = inp.path + (f" [{inp.selector}]" if inp.selector else "")
            raise DataError(
                f"corpus {spec.name!r}: the {canonical_split(split)} split ({where}) has no "
                f"tokens; point corpus.files.{canonical_split(split)} (or the corpus's data) at "
                "a file with text"
            )
    return vocab, ids, stats


def _write_npz(f, arrays: Mapping[str, np.ndarray]) -> None:
    # np.savez stamps members with the current time; fixed stamps make the bytes reproducible,
    # so concurrent writers of the same entry produce the same file.
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; cache files are ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _discard(npz: Path, meta: Path, why: str) -> None:
    log.warning("prepared cache %s is unusable (%s): deleting it and rebuilding", npz, why)
    for p in (meta, npz):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


def _load(npz: Path, meta: Path, key: str) -> Prepared | None:
    if not meta.exists():
        # An npz without its json is an interrupted write: rebuilt and overwritten.
        return None
    if not npz.exists():
        _discard(npz, meta, "the npz file is missing")
        return None
    try:
        doc = json.loads(meta.read_text())
        expected_sha = doc["npz_sha256"]
        splits = list(doc["splits"])
        stats = doc["stats"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        _discard(npz, meta, f"unreadable sidecar: {e}")
        return None
    if doc.get("key") != key or doc.get("prep_version") != PREP_VERSION:
        _discard(npz, meta, "the sidecar's key does not match the settings")
        return None
    actual_sha = sha256_file(npz)
    if actual_sha != expected_sha:
        _discard(npz, meta, f"sha256 {actual_sha} != recorded {expected_sha}")
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            vocab = Vocabulary(z["vocab"].tolist())
            ids = {s: np.asarray(z[f"ids_{s}"]) for s in splits}
            stats = json.loads(str(z["stats"]))
        for s, a in ids.items():
            if a.dtype != np.int32 or a.ndim != 1 or len(a) != int(stats[s]["tokens"]) + 1:
                raise ValueError(f"split {s}: unexpected array {a.dtype} {a.shape}")
            if len(a) and (int(a.min()) < 0 or int(a.max()) >= len(vocab)):
                raise ValueError(f"split {s}: ids outside the vocabulary")
    except Exception as e:  # any failure to read means the entry cannot be trusted
        _discard(npz, meta, f"unreadable npz: {e}")
        return None
    return Prepared(vocab, ids, stats, key, npz, cache_hit=True)
