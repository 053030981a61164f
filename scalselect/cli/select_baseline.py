"""``select-baseline``: a k-center or k-means selection of N samples from the run's
representations (preprocessed as for scoring), written like ``select``'s top-N."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Select N samples with a baseline selector (k-center or k-means) on the representations."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=["kcenter", "kmeans"], help="The selector.")
    parser.add_argument("--dataset", required=True, type=Path, help="The (filtered) dataset.")
    parser.add_argument("--features", required=True, nargs="+", type=Path, help="Extraction shard directories.")
    parser.add_argument("--model", required=True, type=Path, help="score/model.npz (the preprocessing of scoring).")
    parser.add_argument("--scores", required=True, type=Path, help="score/scores.parquet (k-center starts at rank 1).")
    parser.add_argument("--num", required=True, help="Budget: a sample count or a percentage of the scored samples.")
    parser.add_argument("--out", required=True, type=Path, help="Selection (JSON array).")
    parser.add_argument("--picks", required=True, type=Path, help="Table of the picks (parquet: index, id, order).")
    parser.add_argument("--kmeans-clusters", type=int, default=100, help="k-means: number of clusters K.")
    parser.add_argument("--kmeans-seed", type=int, default=0, help="k-means: seed of the initialisation.")


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    import numpy as np

    from scalselect import baselines, selection
    from scalselect.cli import UserError
    from scalselect.dataset import load_dataset, write_records
    from scalselect.io import atomic_write
    from scalselect.leverage import Model

    began = time.perf_counter()
    scores = selection.read_scores(args.scores)
    n = selection.resolve_budget(args.num, len(scores))
    reps = baselines.load_representations(args.features, Model.load(args.model))
    if not np.array_equal(reps.index, np.sort(scores["index"].to_numpy())):
        raise UserError(f"{args.scores} and the features {args.features[0]}... hold different samples")
    if args.method == "kcenter":
        start = int(np.searchsorted(reps.index, scores["index"].iloc[0]))
        picks = baselines.kcenter(reps.matrix, n, start)
    else:
        picks, _ = baselines.kmeans(reps.matrix, n, args.kmeans_clusters, args.kmeans_seed)
    table = baselines.picks_table(reps, picks, scores.set_index("index")["id"])
    records = load_dataset(args.dataset).records
    write_records(args.out, selection.pick_records(records, table["index"].to_numpy()))
    with atomic_write(args.picks, "wb") as handle:
        table.to_parquet(handle, index=False)
    logging.getLogger(__name__).info(
        "%s: %d of %d scored samples (d = %d) in %.1f s -> %s", args.method, n, len(scores),
        reps.matrix.shape[1], time.perf_counter() - began, args.out,
    )
    return 0
