"""``score-merge``: all shards' scores, ranked, in the original tool's format."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "Scoring, merge step: rank all scores (descending, ties by dataset index); writes "
    "importance_scores.jsonl and scores.parquet next to it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parts", nargs="+", required=True, type=Path, metavar="PARQUET",
        help="Per-shard scores written by score-apply.",
    )
    parser.add_argument("--out", required=True, type=Path, help="importance_scores.jsonl.")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from scalselect.score import leverage

    table = leverage.rank_scores([pd.read_parquet(p) for p in args.parts])
    leverage.write_scores(args.out, table)
    return 0
