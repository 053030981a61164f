"""``score-shards``: score-fit, score-apply on every shard and score-merge in one process
(the workflow's one scoring job; the files are those of the three steps run apart)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.cli.score_apply import shard_scores
from scalselect.cli.score_fit import add_fit_arguments, fit_and_save

HELP = (
    "Scoring of a sharded extraction in one process: merge the shards' moments, fit, "
    "score every shard, rank; writes spectrum, model, importance_scores.jsonl and "
    "scores.parquet."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_fit_arguments(parser)
    parser.add_argument(
        "--out", required=True, type=Path,
        help="importance_scores.jsonl; scores.parquet goes next to it. Every shard of "
        "--features is scored, in the order given.",
    )


def run(args: argparse.Namespace) -> int:
    from scalselect.score import leverage

    if not args.features:
        raise leverage.LeverageError("score-shards needs --features: the shards to score")
    model = fit_and_save(args)
    parts = [shard_scores([shard], model, args) for shard in args.features]
    leverage.write_scores(args.out, leverage.rank_scores(parts))
    return 0
