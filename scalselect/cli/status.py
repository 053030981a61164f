"""``python -m scalselect status``: where each run of a configuration stands
(:mod:`scalselect.watch`): per stage done, running, stalled, failed or waiting; per
extraction shard its samples, its progress or its error; the rate and time left of
extraction. Reads the workflow's files only: no lock is taken, nothing is written."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Show where each run of a configuration stands (read-only): stages, shards, time left."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.watch import STALL_MINUTES

    parser.add_argument("--configfile", type=Path, default=Path("config/config.yaml"),
                        help="The workflow's configuration (config/config.yaml).")
    parser.add_argument("--directory", type=Path, default=Path("."),
                        help="The workflow's directory, where results/ and .snakemake/ are.")
    parser.add_argument("--json", action="store_true", help="One JSON object, for scripts.")
    parser.add_argument("--stall-minutes", type=float, default=STALL_MINUTES,
                        help="A running job whose log has not changed for this long is"
                             f" shown as stalled (default {STALL_MINUTES:g}).")


def run(args: argparse.Namespace) -> int:
    import json

    from scalselect.watch import format_status, status

    report = status(args.configfile, args.directory, args.stall_minutes)
    print(json.dumps(report, indent=1) if args.json else format_status(report))
    return 0
