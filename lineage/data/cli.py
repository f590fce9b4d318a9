"""``lineage-data``: list, fetch and verify the registered corpora and task data sets.

Examples::

    lineage-data list
    lineage-data fetch ptb --data-dir ~/data/ptb
    lineage-data fetch sst2 --data-dir ~/data/sst2
    lineage-data verify ptb --data-dir ~/data/ptb   # exit code 1 if a file is missing or differs
    lineage-data verify                             # every source in its default directory
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lineage.data.sources import (
    CLI_OPTIONS,
    LOCAL_SOURCES,
    SOURCES,
    DataError,
    default_data_dir,
    fetch,
    verify,
)


def _dir(name: str, data_dir: str | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir(name)


def _task_sources() -> dict:
    from lineage.tasks.data import TASK_SOURCES

    return TASK_SOURCES


def _all_sources() -> dict:
    """Corpora, then downloadable task data sets (their names do not clash)."""
    return {**SOURCES, **_task_sources()}


def _print_source(name: str, src, data_dir: str | None) -> None:
    root = _dir(name, data_dir)
    print(f"{name}: {src.description}")
    print(f"  citation: {src.citation}")
    if src.homepage:
        print(f"  homepage: {src.homepage}")
    print(f"  data dir: {root}")
    for split, rf in src.files.items():
        present = "cached" if (root / rf.filename).is_file() else "not cached"
        print(f"  {split}: {rf.filename} ({present})")
        print(f"    url:    {rf.url}")
        for mirror in rf.mirrors:
            print(f"    mirror: {mirror}")
        print(f"    sha256: {rf.sha256}")
        for member_split, member in (rf.members or {}).items():
            print(f"    {member_split}: {member}")


def _cmd_list(args: argparse.Namespace) -> int:
    for name, src in SOURCES.items():
        _print_source(name, src, args.data_dir)
    for name, desc in LOCAL_SOURCES.items():
        print(f"{name}: {desc} (local, nothing to download)")
    print("-- task data sets (task.<name>.data_dir for lineage-train)")
    for name, src in _task_sources().items():
        _print_source(name, src, args.data_dir)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    offline = True if args.offline else None
    tasks = _task_sources()
    if args.name in tasks:
        from lineage.tasks.data import fetch_task

        paths = fetch_task(tasks[args.name], args.name, args.data_dir, offline, CLI_OPTIONS)
    else:
        paths = fetch(args.name, args.data_dir, offline=offline, settings=CLI_OPTIONS)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.name is None:  # every source where lineage keeps it: missing is normal, not a fault
        if args.data_dir:
            raise DataError("--data-dir needs a source name: lineage-data verify <name> --data-dir")
        mismatches = 0
        for name, src in _all_sources().items():
            for st in verify(name, None, src.files):
                mismatches += st.status == "mismatch"
                print(f"{st.status.upper():9} {name}: {st.path}")
        if mismatches:
            print(f"{mismatches} file(s) differ from their sha256", file=sys.stderr)
        return 1 if mismatches else 0
    problems = 0
    for st in verify(args.name, args.data_dir, _all_sources()[args.name].files):
        if st.ok:
            print(f"OK        {st.path}  sha256 {st.actual_sha256}")
        elif st.status == "missing":
            problems += 1
            print(f"MISSING   {st.path}  (download: {st.file.url})")
        else:
            problems += 1
            print(
                f"MISMATCH  {st.path}  expected sha256 {st.file.sha256}, "
                f"actual {st.actual_sha256} (original: {st.file.url})"
            )
    if problems:
        print(f"{problems} problem(s) in {args.name}", file=sys.stderr)
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (subcommands ``list``, ``fetch``, ``verify``)."""
    parser = argparse.ArgumentParser(
        prog="lineage-data", description="List, download and verify lineage's corpora."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    names = sorted(_all_sources())

    p = sub.add_parser("list", help="registered sources, URLs, checksums, cache state")
    p.add_argument("--data-dir", help="look for the files here instead of the default dirs")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("fetch", help="download (or verify) a source's files")
    p.add_argument("name", choices=names)
    p.add_argument("--data-dir", help="directory for the files (default: the user cache dir)")
    p.add_argument("--offline", action="store_true", help="verify only, never download")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser(
        "verify",
        help="check a source's files (default: all) against their sha256",
        description="Exit code 1 if a file differs from its sha256, or, for a named source, is "
        "missing; with no name, files not downloaded yet are listed as MISSING and are no fault.",
    )
    p.add_argument("name", choices=names, nargs="?")
    p.add_argument("--data-dir", help="directory holding the files (default: the user cache dir)")
    p.set_defaults(func=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lineage-data``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
