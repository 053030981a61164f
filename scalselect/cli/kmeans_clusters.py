"""``kmeans-clusters``: the k-means clustering of the run's representations (preprocessed
as for scoring), fitted once and shared by every budget of the k-means baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect import settings
from scalselect.settings import SelectSettings

HELP = "Cluster the representations with k-means, once for every k-means budget."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, nargs="+", type=Path, help="Extraction shard directories.")
    parser.add_argument("--model", required=True, type=Path, help="score/model.npz (the preprocessing of scoring).")
    parser.add_argument("--scores", required=True, type=Path, help="score/scores.parquet (the scored samples).")
    settings.add_arguments(parser, SelectSettings, "kmeans_clusters", "kmeans_seed")
    parser.add_argument("--out", required=True, type=Path,
                        help="Table (parquet: index, id, cluster, distance), in dataset order.")


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from scalselect.io import atomic_write
    from scalselect.score.leverage import Model
    from scalselect.select import baselines, selection

    chosen = settings.from_arguments(SelectSettings, args)
    began = time.perf_counter()
    scores = selection.read_scores(args.scores)
    reps = baselines.load_representations(args.features, Model.load(args.model))
    baselines.require_scored(reps.index, scores, args.scores, f"the features {args.features[0]}...")
    clusters = baselines.fit_clusters(reps.matrix, chosen.kmeans_clusters, chosen.kmeans_seed)
    table = baselines.clusters_table(reps.index, clusters, scores.set_index("index")["id"])
    with atomic_write(args.out, "wb") as handle:
        table.to_parquet(handle, index=False)
    logging.getLogger(__name__).info(
        "k-means: %d clusters of %d samples (d = %d, seed %d), %d iterations (%s) in %.1f s -> %s",
        chosen.kmeans_clusters, len(table), reps.matrix.shape[1], chosen.kmeans_seed,
        clusters.iterations, "converged" if clusters.converged else "iteration limit reached",
        time.perf_counter() - began, args.out,
    )
    return 0
