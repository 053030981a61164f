"""``python -m scalselect cache info|prune``: what the feature store holds, and cleaning it.

``info`` lists, per model and settings (one folder of the store each), the packs,
stored entries, distinct samples and bytes. ``prune`` deletes what no complete shard
under ``--results`` references (each shard's ``manifest.json`` names the packs it was
assembled from): settings folders no shard uses, packs no shard uses, and leftovers of
killed writes. Run it when no extract job is running; ``--dry-run`` lists first.
"""

from __future__ import annotations

import argparse
import shutil
import sys

HELP = "Show (info) or clean up (prune) the extraction feature store."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.store import DEFAULT_CACHE_DIR

    parser.add_argument("action", choices=["info", "prune"], help="info: list the store; prune: delete what no shard references.")
    parser.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="The store (extract.cache_dir; default: %(default)s).")
    parser.add_argument("--results", default="results", help="prune: keep what the shards under RESULTS/*/extract/ reference (default: %(default)s).")
    parser.add_argument("--dry-run", action="store_true", help="prune: list what would be deleted, delete nothing.")


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scalselect.store import store_info, unreferenced

    if args.action == "info":
        entries = store_info(args.cache_dir)
        if not entries:
            print(f"{args.cache_dir}: the feature store is empty")
            return 0
        for entry in entries:
            settings = ", ".join(f"{k}={v}" for k, v in entry["settings"].items())
            print(f"{entry['key'][:16]}  {entry['model_path']}  ({settings})")
            print(f"    {entry['samples']} samples, {entry['entries']} entries in"
                  f" {entry['packs']} packs, d={entry['dim']}, {_size(entry['bytes'])}")
        total = sum(e["bytes"] for e in entries)
        print(f"total: {sum(e['samples'] for e in entries)} samples, {_size(total)}")
        return 0
    if not Path(args.results).is_dir():
        from scalselect.errors import UserError

        raise UserError(f"--results {args.results} is not a directory: nothing tells which packs are in use")
    drop = unreferenced(args.cache_dir, args.results)
    freed = sum(p.stat().st_size for path in drop
                for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    for path in drop:
        print(("would delete " if args.dry_run else "delete ") + str(path))
        if not args.dry_run:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(drop)} paths, {verb} {_size(freed)}", file=sys.stderr)
    return 0
