"""``python -m scalselect cache info|prune|verify|compact``: the feature store.

``info`` lists, per model and settings (one folder of the store each), the packs,
stored entries, distinct samples and bytes. ``prune`` deletes what no complete shard
under ``--results`` references (each shard's ``manifest.json`` names the packs it was
assembled from): settings folders no shard uses, packs no shard uses, and leftovers of
killed writes. Run it when no extract job is running; ``--dry-run`` lists first; a
prune killed midway leaves only complete packs. ``verify`` checks every pack and index
against its recorded checksums and lists the damaged ones (exit status 1); with
``--fix`` it moves them into the settings folder's ``damaged/`` (nothing is deleted).
``compact`` writes each settings folder's key index, so that look-ups read it instead
of every pack (extract jobs also do it when many packs are not indexed).
"""

from __future__ import annotations

import argparse
import sys

HELP = "Show (info), clean up (prune), check (verify) or index (compact) the extraction feature store."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.settings import ExtractSettings, declared

    default_store = declared(ExtractSettings)["cache_dirs"].default[0]
    parser.add_argument("action", choices=["info", "prune", "verify", "compact"], help="info: list the store; prune: delete what no shard references; verify: check every pack; compact: index the packs.")
    parser.add_argument("--cache-dir", default=default_store, help="The store (one of extract.cache_dirs; default: %(default)s).")
    parser.add_argument("--results", default="results", help="prune: keep what the shards under RESULTS/*/extract/ reference (default: %(default)s).")
    parser.add_argument("--dry-run", action="store_true", help="prune: list what would be deleted, delete nothing.")
    parser.add_argument("--fix", action="store_true", help="verify: move the damaged files into <settings folder>/damaged/.")


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def _info(args: argparse.Namespace) -> int:
    from scalselect.extract.maintenance import store_info

    entries = store_info(args.cache_dir)
    if not entries:
        print(f"{args.cache_dir}: the feature store is empty")
        return 0
    for entry in entries:
        settings = ", ".join(f"{k}={v}" for k, v in entry["settings"].items())
        print(f"{entry['key'][:16]}  {entry['model_path']}  ({settings})")
        damaged = f", {entry['damaged']} damaged (run cache verify)" if entry["damaged"] else ""
        print(f"    {entry['samples']} samples, {entry['entries']} entries in"
              f" {entry['packs']} packs{damaged}, d={entry['dim']}, {_size(entry['bytes'])}")
    total = sum(e["bytes"] for e in entries)
    print(f"total: {sum(e['samples'] for e in entries)} samples, {_size(total)}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scalselect.errors import UserError
    from scalselect.extract.maintenance import remove, unreferenced

    if not Path(args.results).is_dir():
        raise UserError(f"--results {args.results} is not a directory: nothing tells which packs are in use")
    drop = unreferenced(args.cache_dir, args.results)
    freed = sum(p.stat().st_size for path in drop
                for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    for path in drop:
        print(("would delete " if args.dry_run else "delete ") + str(path))
    if not args.dry_run:
        remove(drop)
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(drop)} paths, {verb} {_size(freed)}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from scalselect.extract.maintenance import move_aside, verify_store

    damage, counts = verify_store(args.cache_dir)
    for item in damage:
        print(f"damaged: {item.files[0]}: {item.problem}")
    legacy = (f" ({counts['legacy']} written before checksums were recorded: sizes checked)"
              if counts["legacy"] else "")
    print(f"{counts['packs']} packs{legacy}, {counts['indexes']} indexes checked;"
          f" {len(damage)} damaged", file=sys.stderr)
    if damage and args.fix:
        for path in move_aside(damage):
            print(f"moved aside: {path}")
        return 0
    if damage:
        print("run `python -m scalselect cache verify --fix` to move them aside; their samples"
              " are computed again when needed", file=sys.stderr)
    return 1 if damage else 0


def _compact(args: argparse.Namespace) -> int:
    import time

    from scalselect.extract.maintenance import settings_dirs
    from scalselect.extract.store import compact_folder

    for folder in settings_dirs(args.cache_dir):
        began = time.perf_counter()
        name, entries = compact_folder(folder)
        if name is None:
            print(f"{folder.name[:16]}: nothing to index (or another compaction is running)")
        else:
            print(f"{folder.name[:16]}: index {name}, {entries} entries"
                  f" ({time.perf_counter() - began:.1f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"info": _info, "prune": _prune, "verify": _verify, "compact": _compact}[args.action](args)
