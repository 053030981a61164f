"""``select-summary``: per budget, the count, fraction and score threshold."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Summarise budgets: resolved count, fraction of scored samples, score threshold (CSV)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scores", required=True, type=Path, help="scores.parquet.")
    parser.add_argument(
        "--budgets", nargs="+", required=True, metavar="BUDGET",
        help="Counts or percentages of the scored samples (16%%).",
    )
    parser.add_argument("--out", required=True, type=Path, help="summary.csv to write.")


def run(args: argparse.Namespace) -> int:
    from scalselect.select import selection

    scores = selection.read_scores(args.scores)
    selection.write_summary(args.out, selection.summary(scores, args.budgets))
    return 0
