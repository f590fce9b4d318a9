"""The source registry: verification, clear errors, atomic downloads (file:// URLs, no network)."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from lineage.data import sources
from lineage.data.cli import main as cli_main
from lineage.data.sources import (
    SOURCES,
    DataError,
    RemoteFile,
    Source,
    default_data_dir,
    fetch,
    read_split_lines,
    sha256_file,
    split_lines,
    verify,
)

PTB_SHA = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}


def _copy_ptb(shared_data: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        shutil.copyfile(shared_data / "ptb" / name, dest / name)
        (dest / name).chmod(0o644)  # the shared copies are read-only
    return dest


def _flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_registry_lists_the_published_checksums():
    assert {k: f.sha256 for k, f in SOURCES["ptb"].files.items()} == PTB_SHA
    assert SOURCES["ptb"].splits == ("train", "valid", "test")
    assert SOURCES["wikitext2"].splits == ("train", "valid", "test")
    for name in ("wikitext2", "wikitext103"):
        archive = SOURCES[name].files["archive"]
        assert archive.url.startswith("https://") and len(archive.sha256) == 64


def test_fetch_ptb_from_a_local_copy(shared_data):
    paths = fetch("ptb", shared_data / "ptb", offline=True)
    assert set(paths) == {"train", "valid", "test"}
    for split, path in paths.items():
        assert path.is_file() and sha256_file(path) == PTB_SHA[split]
    lines = read_split_lines("ptb", "val", paths)  # the metric name works too
    assert len(lines) == 3370 and lines[0].startswith(" ") and lines[0].endswith(" ")


def test_checksum_mismatch_names_file_hashes_url_and_fix(shared_data, tmp_path):
    local = _copy_ptb(shared_data, tmp_path / "ptb")
    _flip_byte(local / "ptb.valid.txt")
    with pytest.raises(DataError) as err:
        fetch("ptb", local, offline=True)
    msg = str(err.value)
    assert str(local / "ptb.valid.txt") in msg
    assert PTB_SHA["valid"] in msg
    assert sha256_file(local / "ptb.valid.txt") in msg
    assert SOURCES["ptb"].files["valid"].url in msg
    assert "corpus.data_dir=" in msg and "delete" in msg
    # Offline or not, a corrupted file is never replaced silently.
    with pytest.raises(DataError):
        fetch("ptb", local, offline=False)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_missing_file_names_file_hash_url_and_setting(tmp_path, monkeypatch, how):
    empty = tmp_path / "nothing"
    if how == "argument":
        monkeypatch.delenv("LINEAGE_OFFLINE", raising=False)
        call = dict(offline=True)
    else:
        monkeypatch.setenv("LINEAGE_OFFLINE", "1")
        call = dict(offline=None)
    with pytest.raises(DataError) as err:
        fetch("ptb", empty, **call)
    msg = str(err.value)
    assert "ptb.train.txt" in msg and PTB_SHA["train"] in msg
    assert SOURCES["ptb"].files["train"].url in msg
    assert "corpus.data_dir=" in msg and "offline" in msg
    assert not empty.exists(), "offline fetch creates nothing"


def test_default_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LINEAGE_DATA_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_data_dir("ptb") == tmp_path / "a" / "ptb"
    monkeypatch.delenv("LINEAGE_DATA_DIR")
    assert default_data_dir("ptb") == tmp_path / "x" / "lineage" / "ptb"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir("ptb") == tmp_path / "home" / ".cache" / "lineage" / "ptb"


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(DataError) as err:
        fetch("ptb2", offline=True)
    assert "ptb2" in str(err.value)
    assert all(name in str(err.value) for name in ("ptb", "wikitext2", "wikitext103"))


# --- real downloads through urllib, from file:// URLs (no network) -------------------------


@pytest.fixture
def tiny_source(tmp_path, monkeypatch):
    """A registered source whose single file is served from a file:// URL."""
    origin = tmp_path / "origin" / "tiny.txt"
    origin.parent.mkdir()
    origin.write_text("a b c\nd e\n")
    digest = hashlib.sha256(origin.read_bytes()).hexdigest()

    def register(sha256: str = digest, url: str = origin.as_uri(), mirrors=()) -> Source:
        rf = RemoteFile("tiny.txt", url, sha256, mirrors=tuple(mirrors))
        src = Source("tiny", "test source", "none", {"train": rf})
        monkeypatch.setitem(SOURCES, "tiny", src)
        return src

    return register


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_is_verified_and_atomic(tiny_source, tmp_path):
    tiny_source()
    dest = tmp_path / "dest"
    paths = fetch("tiny", dest, offline=False)
    assert paths["train"].read_text() == "a b c\nd e\n"
    assert _leftovers(dest) == ["tiny.txt"], "no temp file left behind"
    # Second call: verified in place, no download needed even offline.
    assert fetch("tiny", dest, offline=True) == paths


def test_a_file_in_a_subdirectory_of_the_source_downloads(tmp_path, monkeypatch):
    """SST-2's files live under glue/ and sentence/ in its data directory."""
    origin = tmp_path / "origin.tsv"
    origin.write_text("sentence\tlabel\n")
    rf = RemoteFile(
        "glue/train.tsv", origin.as_uri(), hashlib.sha256(origin.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(SOURCES, "nested", Source("nested", "test source", "none", {"train": rf}))
    dest = tmp_path / "dest"
    dest.mkdir()
    paths = fetch("nested", dest, offline=False)
    assert paths["train"] == dest / "glue" / "train.tsv" and paths["train"].read_text()
    assert _leftovers(dest / "glue") == ["train.tsv"]


def test_a_data_dir_that_does_not_exist_is_named_and_not_left_behind(tiny_source, tmp_path):
    tiny_source(url=(tmp_path / "origin" / "gone.txt").as_uri())  # the download fails
    typo = tmp_path / "data" / "pt"
    with pytest.raises(DataError) as err:
        fetch("tiny", typo, offline=False)
    assert f"missing from {typo} (no such directory: a typo?)" in str(err.value)
    assert not (tmp_path / "data").exists()  # the folders made for the download are gone


def test_download_with_wrong_checksum_leaves_nothing(tiny_source, tmp_path):
    tiny_source(sha256="0" * 64)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as err:
        fetch("tiny", dest, offline=False)
    assert "wrong checksum" in str(err.value) and "0" * 64 in str(err.value)
    assert _leftovers(dest) == []


def test_failed_download_is_a_clear_chained_error(tiny_source, tmp_path):
    missing_url = (tmp_path / "origin" / "gone.txt").as_uri()
    tiny_source(url=missing_url)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as err:
        fetch("tiny", dest, offline=False)
    msg = str(err.value)
    assert "download failed" in msg and missing_url in msg and "corpus.data_dir=" in msg
    assert err.value.__cause__ is not None
    assert _leftovers(dest) == []


def test_a_mirror_serves_when_the_first_url_fails_or_serves_another_file(tiny_source, tmp_path):
    origin = tmp_path / "origin"
    other = origin / "other.txt"
    other.write_text("not the file\n")
    gone = (origin / "gone.txt").as_uri()
    tiny_source(url=gone, mirrors=[other.as_uri(), (origin / "tiny.txt").as_uri()])
    dest = tmp_path / "dest"
    paths = fetch("tiny", dest, offline=False)
    assert paths["train"].read_text() == "a b c\nd e\n"
    assert _leftovers(dest) == ["tiny.txt"]


def test_when_every_mirror_fails_the_error_names_each_url(tiny_source, tmp_path):
    origin = tmp_path / "origin"
    gone, also_gone = (origin / "gone.txt").as_uri(), (origin / "also_gone.txt").as_uri()
    tiny_source(url=gone, mirrors=[also_gone])
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as err:
        fetch("tiny", dest, offline=False)
    msg = str(err.value)
    assert f"{gone}: " in msg and f"{also_gone}: " in msg and "corpus.data_dir=" in msg
    assert _leftovers(dest) == []
    # a mirror serving another file is one clause, and the fix is given once
    other = origin / "other.txt"
    other.write_text("not the file\n")
    tiny_source(url=gone, mirrors=[other.as_uri()])
    with pytest.raises(DataError) as err:
        fetch("tiny", dest, offline=False)
    msg = str(err.value)
    assert f"{other.as_uri()}: the wrong checksum (a different or truncated file)" in msg
    assert msg.count("Fix:") == 1


# --- reading --------------------------------------------------------------------------------


def test_split_lines_keeps_published_line_counts():
    assert split_lines("a\nb\n") == ["a", "b"]
    assert split_lines("a\r\nb") == ["a", "b"]
    assert split_lines("a\x0cb\u2028c\n\n") == ["a\x0cb\u2028c", ""]  # not str.splitlines


def test_wikitext_splits_are_read_from_the_zip(tmp_path):
    archive = tmp_path / "wikitext-2-v1.zip"
    body = " \n = Title = \n \n Some text . \n"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "valid", "test"):
            zf.writestr(f"wikitext-2/wiki.{split}.tokens", body)
    lines = read_split_lines("wikitext2", "val", {"archive": archive})
    assert lines == [" ", " = Title = ", " ", " Some text . "]
    with pytest.raises(DataError, match="no split"):
        read_split_lines("wikitext2", "dev2", {"archive": archive})


def test_bad_utf8_is_a_data_error(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        sources.read_text_lines(bad)


# --- the lineage-data command ---------------------------------------------------------------


def test_cli_verify_ptb_ok(shared_data, capsys):
    assert cli_main(["verify", "ptb", "--data-dir", str(shared_data / "ptb")]) == 0
    out = capsys.readouterr().out
    assert out.count("OK") == 3 and PTB_SHA["test"] in out


def test_cli_verify_reports_mismatch_and_missing(shared_data, tmp_path, capsys):
    local = _copy_ptb(shared_data, tmp_path / "ptb")
    _flip_byte(local / "ptb.test.txt")
    (local / "ptb.valid.txt").unlink()
    assert cli_main(["verify", "ptb", "--data-dir", str(local)]) == 1
    out = capsys.readouterr().out
    assert "OK" in out and "MISMATCH" in out and "MISSING" in out
    assert [s.status for s in verify("ptb", local)] == ["ok", "missing", "mismatch"]


def test_cli_list_and_fetch(shared_data, capsys):
    assert cli_main(["list", "--data-dir", str(shared_data / "ptb")]) == 0
    out = capsys.readouterr().out
    assert "ptb.train.txt (cached)" in out and "wikitext-103-v1.zip (not cached)" in out
    assert SOURCES["wikitext2"].files["archive"].url in out and "lee" in out
    assert cli_main(["fetch", "ptb", "--offline", "--data-dir", str(shared_data / "ptb")]) == 0
    assert "ptb.valid.txt" in capsys.readouterr().out


def test_cli_fetch_offline_missing_exits_1(tmp_path, capsys):
    assert cli_main(["fetch", "ptb", "--offline", "--data-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err  # the fix in the CLI's own options, not lineage-train's keys
    assert "set --data-dir <dir holding ptb.train.txt>" in err and "without --offline" in err
    assert "corpus." not in err


def test_cli_lists_fetches_and_verifies_task_data_too(shared_data, tmp_path, capsys):
    assert cli_main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "\nsst2: SST-2" in listed and "\nsms_spam: " in listed
    sst2 = str(shared_data / "sst2")
    assert cli_main(["verify", "sst2", "--data-dir", sst2]) == 0
    assert capsys.readouterr().out.count("OK ") == 3
    assert cli_main(["fetch", "sst2", "--offline", "--data-dir", sst2]) == 0
    assert "test: " in capsys.readouterr().out
    assert cli_main(["fetch", "sms_spam", "--offline", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "set --data-dir <dir holding SMSSpamCollection>" in err and "task." not in err
    assert "without --offline" in err
    # no name: every source in its default directory; nothing there yet is not a fault
    assert cli_main(["verify"]) == 0
    assert "MISSING   sst2: " in capsys.readouterr().out
