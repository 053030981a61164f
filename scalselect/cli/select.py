"""``select``: the top-N samples by importance, or a random baseline of N (stage 3)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "Select the N most important samples (or N at random with --random) and write their "
    "records unchanged, in dataset order."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, help="The (filtered) dataset.")
    parser.add_argument(
        "--scores", required=True, type=Path,
        help="scores.parquet (keyed by dataset index), or the original tool's "
        "importance_scores.jsonl (matched by id; ids must be unique).",
    )
    parser.add_argument(
        "--num", required=True,
        help="Budget: a sample count (100000) or a percentage of the scored samples (16%%).",
    )
    parser.add_argument(
        "--out", required=True, type=Path,
        help="Selection (parquet from a parquet dataset; JSON Lines if named *.jsonl, else a JSON array).",
    )
    parser.add_argument(
        "--random", action="store_true", help="Random baseline instead of the top-N."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of --random (default 0).")
    from scalselect.select import card

    card.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import logging

    from scalselect.budgets import resolve_budget
    from scalselect.data.writers import copy_records
    from scalselect.progress import Progress
    from scalselect.select import card, selection

    check = None
    if args.scores.suffix == ".jsonl":
        scores = selection.scores_from_jsonl(args.scores, args.dataset)
    else:
        columns = ["index", "importance"] if args.card else ["index"]
        scores = selection.read_scores(args.scores, columns=columns)
        check = selection.ScoresCheck(args.scores, args.dataset)
    total = len(scores)
    n = resolve_budget(args.num, total)
    if args.random:
        indices = selection.random_indices(scores, n, args.seed)
    else:
        indices = selection.top_indices(scores, n)
    importance = scores.set_index("index")["importance"] if args.card else None
    del scores
    # The dataset holds unscored records too (extraction failures): its size is unknown.
    with Progress(None, "records") as progress:
        copy_records(args.dataset, args.out, keep=indices, check=check,
                     finish=None if check is None else check.finish, progress=progress)
    card.from_arguments(args, indices, importance, "random" if args.random else "scalselect",
                        n, args.seed if args.random else None)
    logging.getLogger(__name__).info(
        "%s %d of %d scored samples -> %s",
        f"random (seed {args.seed})" if args.random else "top", n, total, args.out,
    )
    return 0
