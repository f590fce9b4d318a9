"""The Lightning data module: one corpus, prepared once, served as TokenBatch objects.

Sources (``source=``): the registry's ``ptb``, ``wikitext2``, ``wikitext103`` (downloaded and
verified by :mod:`lineage.data.sources`), ``lee`` (gensim's shipped Lee background corpus, split by
document index ranges) and ``text_files`` (your own train/valid/test files).

Split names: the module speaks the metric names ``train``/``val``/``test``; raw files and configs
use ``train``/``valid``/``test``.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lineage.data.prepare import Prepared, PrepSpec, SplitInput, prepare
from lineage.data.sources import (
    LOCAL_SOURCES,
    SOURCES,
    DataError,
    default_data_dir,
    fetch,
    read_split_lines,
    read_text_lines,
    sha256_file,
)
from lineage.data.tokenizers import check_tokenizer
from lineage.data.vocab import Vocabulary
from lineage.data.windows import (
    RankSampler,
    ShuffledWindowSampler,
    WindowDataset,
    empty_batch,
    full_batches,
    passthrough,
    shard_stream_batches,
    shard_windows,
    sliding_windows,
    stream_batches,
    training_windows,
)
from lineage.interface import Batching

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FILE_SPLIT = {"train": "train", "val": "valid", "test": "test"}  # metric name -> file/config name
KNOWN_SOURCES = (*SOURCES, *LOCAL_SOURCES)
LEE_FILE = "lee_background.cor"
LEE_DOCUMENTS = {"train": (0, 240), "valid": (240, 270), "test": (270, 300)}


_FLAG_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False,
               "1": True, "0": False}  # fmt: skip


def _flag(value: Any, key: str) -> bool:
    """A yes/no setting: a boolean, or one of the words of :data:`_FLAG_WORDS` (an environment
    variable arrives as a string). ``bool("no")`` would be true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    raise DataError(f"corpus.{key}={value!r} must be true or false")


def _whole(value: Any, key: str, minimum: int) -> int:
    """An integer setting >= ``minimum``: an int (numpy's too), a float with no fraction
    (``1e4``) or a string of digits (an environment variable); ``2.9`` is not silently 2."""
    number: int | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    if number is None or number < minimum:
        raise DataError(f"corpus.{key}={value!r} must be a whole number >= {minimum}")
    return number


def _config_value(cfg: Mapping[str, Any], split: str) -> Any:
    """``cfg[valid]`` (or ``cfg[val]``) for ``val``; ``cfg[split]`` otherwise; None if absent."""
    for key in (FILE_SPLIT[split], split):
        if key in cfg:
            return cfg[key]
    return None


class CorpusDataModule(L.LightningDataModule):
    """A corpus: fetched and verified, tokenised, cached, and batched per the family's Batching.

    Construction does no work; :meth:`prepare_data` fetches, verifies and builds the cache, and
    :meth:`setup` (idempotent, called lazily by every accessor) loads it.

    Args:
        name: corpus name (metrics, cache file names).
        source: ``ptb``, ``wikitext2``, ``wikitext103``, ``lee`` or ``text_files``.
        data_dir: directory holding the source's files (default: the user cache dir).
        cache_dir: where prepared ids go (default ``default_data_dir("prepared")``).
        offline: never download (``LINEAGE_OFFLINE=1`` also does).
        files: ``text_files``: ``{train, valid, test}`` paths.
        documents: ``lee``: ``{train, valid, test}`` half-open document index ranges.
        lowercase, tokenizer, line_is_sentence, skip_empty_lines: tokenisation (see
            :func:`lineage.data.tokenizers.tokenize`).
        max_size, min_freq: vocabulary (see :meth:`Vocabulary.build`).
        version: bump to force a rebuild of the prepared cache.
        seed: base seed of the per-epoch window shuffle; default drawn from torch's global RNG
            when the train loader is made (so ``seed_everything`` fixes it; rank 0's draw under
            data parallelism, where every rank must shuffle alike).

    Raises:
        DataError: unknown source or tokenizer, a yes/no setting that is not a boolean, or a
            vocabulary size or count that is not a whole number in range.
    """

    def __init__(
        self,
        name: str,
        source: str,
        data_dir: str | None = None,
        cache_dir: str | None = None,
        offline: bool = False,
        files: Mapping[str, str] | None = None,
        documents: Mapping[str, Any] | None = None,
        lowercase: bool = False,
        tokenizer: str = "whitespace",
        line_is_sentence: bool = True,
        skip_empty_lines: bool = True,
        max_size: int | None = None,
        min_freq: int = 1,
        version: int = 1,
        seed: int | None = None,
    ):
        super().__init__()
        if source not in KNOWN_SOURCES:
            raise DataError(
                f"corpus {name!r}: unknown source {source!r}; corpus.source must be one of: "
                f"{', '.join(KNOWN_SOURCES)}"
            )
        check_tokenizer(tokenizer)
        self.name = name
        self.source = source
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.offline = _flag(offline, "offline")
        self.files = dict(files) if files is not None else None
        self.documents = dict(documents) if documents is not None else None
        self.lowercase = _flag(lowercase, "lowercase")
        self.tokenizer = tokenizer
        self.line_is_sentence = _flag(line_is_sentence, "line_is_sentence")
        self.skip_empty_lines = _flag(skip_empty_lines, "skip_empty_lines")
        # <unk>, <eos> and at least one word
        self.max_size = None if max_size is None else _whole(max_size, "max_size", 3)
        self.min_freq = _whole(min_freq, "min_freq", 1)
        self.version = _whole(version, "version", 0)
        self.seed = seed
        self.batching = Batching()
        self._spec: PrepSpec | None = None
        self._prepared: Prepared | None = None
        self._streams: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- preparation

    def spec(self) -> PrepSpec:
        """The preparation spec: fetches and verifies the raw files (every call does)."""
        if self.source in SOURCES:
            inputs = self._registry_inputs()
        elif self.source == "lee":
            inputs = self._lee_inputs()
        else:
            inputs = self._text_file_inputs()
        return PrepSpec(
            name=self.name,
            source=self.source,
            inputs=inputs,
            tokenizer=self.tokenizer,
            lowercase=self.lowercase,
            line_is_sentence=self.line_is_sentence,
            skip_empty_lines=self.skip_empty_lines,
            max_size=self.max_size,
            min_freq=self.min_freq,
            version=self.version,
        )

    def _registry_inputs(self) -> dict[str, SplitInput]:
        src = SOURCES[self.source]
        # offline=False still lets LINEAGE_OFFLINE=1 forbid downloads.
        paths = fetch(self.source, self.data_dir, offline=True if self.offline else None)
        inputs = {}
        for split in SPLITS:
            fsplit = FILE_SPLIT[split]
            if "archive" in src.files:
                rf, path = src.files["archive"], paths["archive"]
                selector = (rf.members or {})[fsplit]
            else:
                rf, path, selector = src.files[fsplit], paths[fsplit], ""
            inputs[split] = SplitInput(
                uri=rf.url + (f"#{selector}" if selector else ""),
                path=str(path.absolute()),
                digest=rf.sha256,  # fetch() just checked the file against it
                read=lambda s=fsplit, p=paths: read_split_lines(self.source, s, p),
                selector=selector,
            )
        return inputs

    def _lee_inputs(self) -> dict[str, SplitInput]:
        from gensim.test.utils import datapath

        path = Path(datapath(LEE_FILE))
        if not path.is_file():
            raise DataError(f"corpus {self.name!r}: gensim's {LEE_FILE} is missing ({path})")
        digest = sha256_file(path)
        docs = self.documents if self.documents is not None else LEE_DOCUMENTS
        ranges: dict[str, tuple[int, int]] = {}
        for split in SPLITS:
            value = _config_value(docs, split)
            try:
                lo, hi = (int(v) for v in value)
            except (TypeError, ValueError):
                raise DataError(
                    f"corpus {self.name!r}: corpus.documents.{FILE_SPLIT[split]} must be a "
                    f"[start, end) pair of document indices, got {value!r}"
                ) from None
            if not 0 <= lo < hi:
                raise DataError(
                    f"corpus {self.name!r}: corpus.documents.{FILE_SPLIT[split]}=[{lo}, {hi}) "
                    f"is empty or negative"
                )
            ranges[split] = (lo, hi)
        spans = sorted(ranges.values())
        for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
            if lo < hi:
                raise DataError(
                    f"corpus {self.name!r}: corpus.documents ranges overlap ({ranges}); "
                    f"train, valid and test must be disjoint"
                )

        lines = read_text_lines(path)  # 360 KB: cheap enough to check the ranges every time
        for split, (lo, hi) in ranges.items():
            if hi > len(lines):
                raise DataError(
                    f"corpus {self.name!r}: corpus.documents.{FILE_SPLIT[split]}=[{lo}, {hi}) is "
                    f"past the end of {path} ({len(lines)} documents)"
                )
        return {
            split: SplitInput(
                uri=str(path),
                path=str(path),
                digest=digest,
                read=lambda r=r: lines[r[0] : r[1]],
                selector=f"documents[{r[0]}:{r[1]}]",
            )
            for split, r in ranges.items()
        }

    def _text_file_inputs(self) -> dict[str, SplitInput]:
        files = self.files or {}
        known = {FILE_SPLIT[s] for s in SPLITS} | set(SPLITS)
        unknown = sorted(str(k) for k in files if k not in known)
        if unknown:
            raise DataError(
                f"corpus {self.name!r}: unknown corpus.files key(s) {unknown}; the keys are "
                f"{', '.join(FILE_SPLIT[s] for s in SPLITS)}"
            )
        inputs = {}
        for split in SPLITS:
            key = FILE_SPLIT[split]
            value = _config_value(files, split)
            if value is None:
                raise DataError(
                    f"corpus {self.name!r}: source text_files needs corpus.files.{key} "
                    f"(a path to the {key} text file)"
                )
            path = Path(os.fspath(value)).expanduser()
            if not path.is_file():
                what = "is a directory, not a file" if path.is_dir() else "does not exist"
                raise DataError(
                    f"corpus {self.name!r}: corpus.files.{key}={value} {what} "
                    f"(looked for {path.absolute()})"
                )
            inputs[split] = SplitInput(
                uri=str(path.absolute()),
                path=str(path),
                digest=sha256_file(path),
                read=lambda p=path: read_text_lines(p),
            )
        return inputs

    def _cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir).expanduser()
        if os.environ.get("LINEAGE_CACHE_DIR"):  # as paths.cache_dir reads it under Hydra
            return Path(os.environ["LINEAGE_CACHE_DIR"]).expanduser()
        return default_data_dir("prepared")

    def _load(self) -> None:
        self._spec = self.spec()
        self._prepared = prepare(self._spec, self._cache_dir())
        self._streams.clear()
        log.info(
            "corpus %s: %s %s (vocabulary %d)",
            self.name,
            "loaded" if self._prepared.cache_hit else "prepared",
            self._prepared.path,
            len(self._prepared.vocab),
        )

    def prepare_data(self) -> None:
        """Fetch and verify the raw files, and build the prepared cache if needed.

        Lightning calls this again at every fit/validate/test; once loaded, the corpus is kept.
        """
        if self._prepared is None:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load the prepared corpus (idempotent; prepares it if :meth:`prepare_data` did not)."""
        if self._prepared is None:
            self._load()

    @property
    def prepared(self) -> Prepared:
        """The prepared corpus (set up on first access)."""
        self.setup()
        assert self._prepared is not None
        return self._prepared

    # ---------------------------------------------------------------- access

    @property
    def vocab(self) -> Vocabulary:
        return self.prepared.vocab

    @property
    def vocab_size(self) -> int:
        return len(self.prepared.vocab)

    def stream(self, split: str) -> torch.Tensor:
        """The split's id stream as a LongTensor (leading ``<eos>`` included)."""
        split = self._check_split(split)
        if split not in self._streams:
            self._streams[split] = torch.from_numpy(self.prepared.ids[split]).to(torch.long)
        return self._streams[split]

    def stats(self) -> dict[str, float]:
        """Flat metrics ``{split}/tokens|sentences|oov_rate|unk_rate`` and ``vocab/size``."""
        out: dict[str, float] = {}
        for split, st in self.prepared.stats.items():
            for k in ("tokens", "sentences", "oov_rate", "unk_rate"):
                out[f"{split}/{k}"] = float(st[k])
        out["vocab/size"] = float(self.vocab_size)
        return out

    def digests(self) -> dict[str, str]:
        """Split -> sha256 of the raw source file (the archive's for zipped sources)."""
        spec = self._spec or self.spec()
        return {split: inp.digest for split, inp in spec.inputs.items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per split, for MLflow dataset inputs and results.json.

        Keys: ``name`` (``<corpus>/<split>``), ``source`` (URL for downloaded corpora, path for
        local ones), ``path`` (the local file read), ``selector`` (zip member or document range),
        ``digest`` (sha256 of the raw file), ``tokens`` (targets), ``sentences``.
        """
        prepared = self.prepared
        assert self._spec is not None
        return {
            split: {
                "name": f"{self.name}/{split}",
                "source": inp.uri,
                "path": inp.path,
                "selector": inp.selector,
                "digest": inp.digest,
                "tokens": int(prepared.stats[split]["tokens"]),
                "sentences": int(prepared.stats[split]["sentences"]),
            }
            for split, inp in self._spec.inputs.items()
        }

    @staticmethod
    def _check_split(split: str) -> str:
        split = {"valid": "val", "validation": "val"}.get(split, split)
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        return split

    # ---------------------------------------------------------------- batching

    def set_batching(self, batching: Batching) -> None:
        """How the loaders serve splits (the family's :meth:`batching`), checked against every
        split now (sizes, windows), so that a bad ``model.batching.*`` fails before a run
        starts, not when Lightning first asks for a loader."""
        if batching.mode not in ("full", "stream", "window"):
            raise DataError(f"unknown batching mode {batching.mode!r}; use full, stream or window")
        self.batching = batching
        if self._prepared is not None:  # set up: the loaders can be built
            for split in SPLITS:
                self.dataloader(split)

    def dataloader(self, split: str) -> DataLoader:
        """A DataLoader of TokenBatch objects for ``split`` per the current batching."""
        split = self._check_split(split)
        b = self.batching
        ids = self.stream(split)
        train = split == "train"
        sampler = None
        if b.mode == "full":
            dataset: Any = full_batches(ids, split)
        elif b.mode == "stream":
            rows = b.batch_size if train else b.eval_batch_size
            seq_len = b.seq_len if train or not b.eval_seq_len else b.eval_seq_len
            dataset = stream_batches(ids, rows, seq_len, split)
            rank, world = self._rank_and_world()
            if world > 1:
                dataset = shard_stream_batches(dataset, rank, world, split, train)
        elif train:
            windows = training_windows(len(ids), b.seq_len)
            dataset = WindowDataset(ids, windows, b.batch_size, split)
            rank, world = self._rank_and_world()
            if b.shuffle:
                seed = self.seed
                if seed is None:
                    seed = int(torch.randint(0, 2**31 - 1, ()).item())
                    if world > 1:  # every rank must draw the same permutation
                        seed = int(self.trainer.strategy.broadcast(seed, src=0))
                sampler = ShuffledWindowSampler(len(windows), b.batch_size, seed)
            if world > 1:  # each rank its own batches (the trainer injects no sampler)
                order = sampler if sampler is not None else range(len(dataset))
                sampler = RankSampler(order, rank, world)
        else:
            # Each rank scores its own windows; the module adds the sums across ranks.
            rank, world = self._rank_and_world()
            every = sliding_windows(len(ids), b.seq_len, b.min_context)
            windows = shard_windows(every, rank, world)
            if windows:
                dataset = WindowDataset(ids, windows, b.eval_batch_size, split)
            else:
                dataset = [empty_batch(ids, split, rank)]
        # batch_size=None: the dataset already yields whole batches.
        return DataLoader(dataset, batch_size=None, sampler=sampler, collate_fn=passthrough)

    def _rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")
