"""Benchmark of the baseline selectors and the methods comparison on synthetic
representations (float32, low-rank plus noise, like centred first-layer features).

Measures, in this process, on ``--rows`` x ``--dim`` representations:

1. k-center: ``--kcenter-budget`` greedy picks (cost N * budget * d, so the time per
   pick extrapolates linearly to other N and budgets);
2. k-means: the clustering with ``--clusters`` clusters (fitted once per run, its cost
   ~ N * K * d per Lloyd iteration, independent of the budget; the iteration count is
   printed, since it is what an extrapolation to other N cannot know), then the
   balanced picks of ``--kmeans-budget`` samples (the per-budget step);
3. the comparison measures of one subset of ``--subset`` samples
   (:func:`scalselect.report.diagnostics.measures`: subspace retention, energy ratio, coverage),
   and their multiply-add count (``|S| d^2`` for the subset's Gram matrix, ``Q |S| d``
   for coverage on Q query samples), from which the time of another subset size follows.

Usage::

    python bench/baselines.py [--rows 50000] [--dim 4096] [--kcenter-budget 500]
        [--clusters 100] [--subset 7500]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.report import diagnostics  # noqa: E402
from scalselect.select import baselines  # noqa: E402


def synthetic(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Centred low-rank (rank 16) representations plus isotropic noise, float32."""
    rng = np.random.default_rng(seed)
    matrix = np.empty((rows, dim), np.float32)
    mixing = rng.standard_normal((16, dim)).astype(np.float32)
    scales = np.geomspace(8, 1, 16).astype(np.float32)
    for first in range(0, rows, 8192):
        block = min(8192, rows - first)
        low = (rng.standard_normal((block, 16), dtype=np.float32) * scales) @ mixing
        matrix[first:first + block] = low + 0.5 * rng.standard_normal((block, dim), dtype=np.float32)
    matrix -= matrix.mean(0)
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--kcenter-budget", type=int, default=500)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--kmeans-budget", type=int, default=7_500)
    parser.add_argument("--subset", type=int, default=7_500)
    args = parser.parse_args()
    began = time.perf_counter()
    matrix = synthetic(args.rows, args.dim)
    print(f"synthetic {args.rows} x {args.dim} float32 in {time.perf_counter() - began:.1f} s")

    began = time.perf_counter()
    picks = baselines.kcenter(matrix, args.kcenter_budget, start=0, device="cpu")
    elapsed = time.perf_counter() - began
    per_mac = elapsed / (args.rows * args.kcenter_budget * args.dim)
    print(f"k-center {args.kcenter_budget} picks: {elapsed:.1f} s, {1e3 * elapsed / args.kcenter_budget:.1f} ms/pick;"
          f" 665,000 x 4096, 100K picks at this rate: {per_mac * 665_000 * 100_000 * 4096 / 3600:.1f} h")

    began = time.perf_counter()
    clusters = baselines.fit_clusters(matrix, args.clusters, seed=0)
    fit = time.perf_counter() - began
    per_iteration = fit / clusters.iterations
    print(f"k-means clustering K={args.clusters}: {fit:.1f} s, {clusters.iterations} Lloyd iterations"
          f" ({'converged' if clusters.converged else 'iteration limit'}), {per_iteration:.1f} s/iteration;"
          f" 665,000 rows: {per_iteration * 665_000 / args.rows / 60:.1f} min per iteration"
          f" (linear in N), x the iterations it needs")
    began = time.perf_counter()
    chosen = baselines.cluster_balanced(clusters.labels, clusters.distance, args.kmeans_budget)
    shares = time.perf_counter() - began
    print(f"k-means balanced picks of {len(chosen)}: {1e3 * shares:.1f} ms per budget"
          f" (the clustering is shared: B budgets cost {fit:.0f} s + B x {shares:.2f} s,"
          f" not B x {fit:.0f} s)")

    model_basis = np.linalg.svd(matrix[:: max(1, args.rows // 20_000)].astype(np.float64),
                                full_matrices=False)[2][:9].T
    energy = float(np.square(matrix @ model_basis).sum())
    space = diagnostics.Space(np.arange(args.rows), matrix, model_basis, energy)
    subset = np.sort(np.random.default_rng(1).choice(args.rows, args.subset, replace=False))
    began = time.perf_counter()
    measures = diagnostics.measures(space, subset, subset)
    elapsed = time.perf_counter() - began
    macs = args.subset * args.dim**2 + measures["coverage_queries"] * args.subset * args.dim
    print(f"measures of one {args.subset}-sample subset: {elapsed:.1f} s, {macs:.2e} multiply-adds,"
          f" {macs / elapsed / 1e9:.1f} G/s {measures}")
    big = 100_000 * 4096**2 + diagnostics.COVERAGE_QUERIES * 100_000 * 4096
    print(f"one 100K-sample subset of 665,000 x 4096 ({diagnostics.COVERAGE_QUERIES} coverage queries):"
          f" {big:.2e} multiply-adds, {big / (macs / elapsed) / 60:.1f} min at this rate")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak:.2f} GiB")


if __name__ == "__main__":
    main()
