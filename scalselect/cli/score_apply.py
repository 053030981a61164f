"""``score-apply``: the leverage scores of one shard's rows (the scoring map step)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.cli.score import add_compute_arguments, block_rows

HELP = "Scoring, per shard: leverage scores of its rows under the fitted model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features", nargs="+", required=True, metavar="PATH",
        help="Shard directory (or several, or an extraction directory).",
    )
    parser.add_argument("--model", required=True, type=Path, help="Model written by score-fit.")
    parser.add_argument(
        "--out", required=True, type=Path,
        help="Scores of these rows (.parquet: index, id, importance).",
    )
    add_compute_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from scalselect import leverage
    from scalselect.io import atomic_write

    backend = leverage.Backend(args.backend)
    model = leverage.Model.load(args.model)
    parts = [
        leverage.score_source(source, model, backend, block_rows(args))
        for source in leverage.open_sources(args.features)
    ]
    with atomic_write(args.out, "wb") as handle:
        pd.concat(parts, ignore_index=True).to_parquet(handle, index=False)
    return 0
