"""``score-partial``: the moments of one extraction shard (the map step of scoring)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.cli.score import add_compute_arguments, block_rows

HELP = "Scoring, map step: count, mean, centred scatter matrix and range of one shard."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features", nargs="+", required=True, metavar="PATH",
        help="Shard directory (or several, or an extraction directory).",
    )
    parser.add_argument("--out", required=True, type=Path, help="Moments file (.npz).")
    add_compute_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from scalselect.progress import Progress
    from scalselect.score import leverage

    backend = leverage.Backend(args.backend)
    sources = leverage.open_sources(args.features)
    with Progress(sum(source.rows for source in sources), "rows") as progress:
        parts = [leverage.source_moments(source, backend, block_rows(args), progress)
                 for source in sources]
    leverage.merge_moments(parts).save(args.out)
    return 0
