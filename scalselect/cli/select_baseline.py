"""``select-baseline``: a k-center or k-means selection of N samples, written like
``select``'s top-N (the records unchanged, in dataset order, in the dataset's format), and
its picks table. k-center reads the run's representations (preprocessed as for scoring);
k-means reads the clustering of ``kmeans-clusters``, fitted once per run."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.methods import BASELINES

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


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    import numpy as np
    import pandas as pd

    from scalselect import baselines, selection
    from scalselect.config import kmeans_budget_problems
    from scalselect.dataset import copy_records
    from scalselect.errors import UserError
    from scalselect.io import atomic_write
    from scalselect.leverage import Model

    if args.out.resolve() == args.picks.resolve():
        raise UserError(f"--out and --picks name the same file, {args.out}")
    began = time.perf_counter()
    scores = selection.read_scores(args.scores)
    n = selection.resolve_budget(args.num, len(scores))
    if args.method == "kcenter":
        if not (args.features and args.model):
            raise UserError("--method kcenter needs --features and --model")
        reps = baselines.load_representations(args.features, Model.load(args.model))
        baselines.require_scored(reps.index, scores, args.scores, f"the features {args.features[0]}...")
        start = int(np.searchsorted(reps.index, scores["index"].iloc[0]))
        index, picks = reps.index, baselines.kcenter(reps.matrix, n, start)
    else:
        if not args.clusters:
            raise UserError("--method kmeans needs --clusters (the table of kmeans-clusters)")
        clusters = pd.read_parquet(args.clusters, columns=["index", "cluster", "distance"])
        index = clusters["index"].to_numpy()
        baselines.require_scored(index, scores, args.scores, args.clusters)
        for problem in kmeans_budget_problems(int(clusters["cluster"].max()) + 1, [args.num],
                                              len(scores)):
            logging.getLogger(__name__).warning("k-means: %s", problem)
        picks = baselines.cluster_balanced(clusters["cluster"].to_numpy(), clusters["distance"].to_numpy(), n)
    table = baselines.picks_table(index, picks, scores.set_index("index")["id"])
    check = selection.ScoresCheck(args.scores, args.dataset)
    copy_records(args.dataset, args.out, keep=table["index"].to_numpy(), check=check,
                 finish=check.finish)
    with atomic_write(args.picks, "wb") as handle:
        table.to_parquet(handle, index=False)
    logging.getLogger(__name__).info(
        "%s: %d of %d scored samples in %.1f s -> %s", args.method, n, len(scores),
        time.perf_counter() - began, args.out,
    )
    return 0
