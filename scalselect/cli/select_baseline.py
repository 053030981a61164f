"""``select-baseline``: a k-center or k-means selection of N samples, written like
``select``'s top-N (the records unchanged, in dataset order, in the dataset's format), and
its picks table. k-center reads the run's representations (preprocessed as for scoring);
k-means reads the clustering of ``kmeans-clusters``, fitted once per run."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.methods import BASELINES, METHODS

HELP = "Select N samples with a baseline selector (k-center or k-means) on the representations."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=BASELINES, help="The selector.")
    parser.add_argument("--dataset", required=True, type=Path, help="The (filtered) dataset.")
    parser.add_argument("--scores", required=True, type=Path, help="score/scores.parquet (k-center starts at rank 1).")
    parser.add_argument("--features", nargs="+", type=Path, help="k-center: extraction shard directories.")
    parser.add_argument("--model", type=Path, help="k-center: score/model.npz (the preprocessing of scoring).")
    parser.add_argument("--clusters", type=Path, help="k-means: the table written by kmeans-clusters.")
    parser.add_argument("--num", required=True, help="Budget: a sample count or a percentage of the scored samples.")
    parser.add_argument("--out", required=True, type=Path,
                        help="Selection (parquet from a parquet dataset; JSON Lines if named *.jsonl,"
                        " else a JSON array).")
    parser.add_argument("--picks", required=True, type=Path,
                        help="Table of the picks (parquet: index, id, order), e.g. <out>.picks.parquet.")
    from scalselect.select import card

    card.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from scalselect.budgets import resolve_budget
    from scalselect.data.writers import copy_records
    from scalselect.errors import UserError
    from scalselect.io import atomic_write
    from scalselect.progress import Progress
    from scalselect.select import baselines, card, selection

    if args.out.resolve() == args.picks.resolve():
        raise UserError(f"--out and --picks name the same file, {args.out}")
    began = time.perf_counter()
    scores = selection.read_scores(args.scores)
    n = resolve_budget(args.num, len(scores))
    pick = getattr(baselines, METHODS[args.method].picker)
    inputs = baselines.BaselineInputs(args.features or (), args.model, args.clusters)
    index, picks = pick(inputs, args.num, n, scores, args.scores)
    table = baselines.picks_table(index, picks, scores.set_index("index")["id"])
    check = selection.ScoresCheck(args.scores, args.dataset)
    with Progress(None, "records") as progress:  # scored records are only some of them
        copy_records(args.dataset, args.out, keep=table["index"].to_numpy(), check=check,
                     finish=check.finish, progress=progress)
    with atomic_write(args.picks, "wb") as handle:
        table.to_parquet(handle, index=False)
    card.from_arguments(args, table["index"].to_numpy(), scores.set_index("index")["importance"],
                        args.method, n)
    logging.getLogger(__name__).info(
        "%s: %d of %d scored samples in %.1f s -> %s", args.method, n, len(scores),
        time.perf_counter() - began, args.out,
    )
    return 0
