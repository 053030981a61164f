"""Baseline selectors on ScalSelect's own representations: k-center and k-means.

Both read the run's extracted features and preprocess them exactly as scoring did (the
transform of ``score/model.npz``: centring, standardisation, row normalisation as
configured in ``score``), so every method sees the same vectors; extraction never reruns.

- **k-center** (greedy coreset, Sener & Savarese 2018): start from the sample of highest
  leverage (rank 1 of ``scores.parquet``), then repeatedly add the sample farthest from
  the selected set (ties: lowest position in dataset order). Exact greedy: every
  distance is computed, none approximated. Squared Euclidean distances in float32 as
  ``|x|^2 - 2 x.c + |c|^2``, with the squared norms in float64; on a GPU when there is
  one. Cost: ``N * budget * d`` multiply-adds and ``N * d`` floats of memory.
- **k-means** (cluster-balanced sampling in the spirit of COINCIDE): scikit-learn's
  Lloyd k-means with ``clusters`` clusters and ``seed`` (k-means++ initialisation, one
  run), fitted once per run (:func:`fit_clusters`, budget-independent), then for each
  budget an equal share per cluster, nearest-to-centroid first (:func:`cluster_balanced`). A
  cluster smaller than its share gives all its samples and the rest is shared equally
  among the larger clusters (water-filling); when the budget does not divide evenly,
  the larger clusters (ties: lower cluster number) get one sample more. Shares of the
  clusters that are not exhausted differ by at most one. scikit-learn sums centroids
  per OpenMP thread, so its thread count is fixed (:data:`KMEANS_THREADS`) whatever the
  machine: the same seed gives the same clusters.

Positions below are rows of the representation matrix (the scored samples in dataset
order); ``index`` maps them to dataset indices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scalselect.config import kmeans_budget_problems
from scalselect.errors import UserError
from scalselect.methods import picks_key
from scalselect.score.leverage import BLOCK_ROWS, Backend, Model, open_sources

log = logging.getLogger(__name__)
# scikit-learn's k-means reduces per thread: a fixed count keeps results machine-independent.
KMEANS_THREADS = 4


@dataclass(frozen=True)
class Representations:
    """The scored samples' preprocessed representations, in dataset order."""

    index: np.ndarray  # int64 [N], dataset index of each row
    matrix: np.ndarray  # float32 [N, d]


def load_representations(
    paths: Sequence[str | os.PathLike], model: Model, block_rows: int = BLOCK_ROWS
) -> Representations:
    """The successfully extracted rows under ``paths`` (shard or extraction directories),
    preprocessed with the scoring ``model``'s transform, in dataset order."""
    backend = Backend("numpy")
    sources = open_sources(paths)
    index = np.empty(sum(s.rows for s in sources), np.int64)
    matrix = np.empty((len(index), sources[0].dim if sources else 0), np.float32)
    row = 0
    for source in sources:
        for block in source.blocks(block_rows):
            stop = row + len(block.index)
            index[row:stop] = block.index
            matrix[row:stop] = model.transform.apply(block.matrix, backend)
            row = stop
    if not np.isfinite(matrix).all():
        raise UserError(f"non-finite representations in {', '.join(map(str, paths))}")
    order = np.argsort(index, kind="stable")
    return Representations(index[order], matrix[order])


def require_scored(index: np.ndarray, scores: pd.DataFrame, scores_path: os.PathLike | str,
                   source: os.PathLike | str) -> None:
    """Raise a :class:`UserError` unless ``index`` (ascending dataset indices, read from
    ``source``) holds exactly the samples of ``scores`` (read from ``scores_path``)."""
    if not np.array_equal(index, np.sort(scores["index"].to_numpy())):
        raise UserError(f"{scores_path} and {source} hold different samples")


@dataclass(frozen=True)
class BaselineInputs:
    """What the baselines read besides the scores: k-center the shard directories and
    the scoring model (``features``, ``model``), k-means the clustering (``clusters``)."""

    features: Sequence[str | os.PathLike] = ()
    model: str | os.PathLike | None = None
    clusters: str | os.PathLike | None = None


def kcenter_picks(inputs: BaselineInputs, asked: int | str, budget: int, scores: pd.DataFrame,
                  scores_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """k-center on the scored representations, started at the top-ranked sample:
    ``(dataset index of each row, picks as row numbers in pick order)``. ``asked`` is
    the budget as configured, ``budget`` its count."""
    if not (inputs.features and inputs.model):
        raise UserError("--method kcenter needs --features and --model")
    reps = load_representations(inputs.features, Model.load(inputs.model))
    require_scored(reps.index, scores, scores_path, f"the features {inputs.features[0]}...")
    start = int(np.searchsorted(reps.index, scores["index"].iloc[0]))
    return reps.index, kcenter(reps.matrix, budget, start)


def kmeans_picks(inputs: BaselineInputs, asked: int | str, budget: int, scores: pd.DataFrame,
                 scores_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-balanced picks from the clustering of ``kmeans-clusters``: ``(dataset
    index of each row, picks as row numbers)``; a budget below the number of clusters
    is warned of with the fix (:func:`scalselect.config.kmeans_budget_problems`)."""
    if not inputs.clusters:
        raise UserError("--method kmeans needs --clusters (the table of kmeans-clusters)")
    clusters = pd.read_parquet(inputs.clusters, columns=["index", "cluster", "distance"])
    index = clusters["index"].to_numpy()
    require_scored(index, scores, scores_path, inputs.clusters)
    for problem in kmeans_budget_problems(int(clusters["cluster"].max()) + 1, [asked], len(scores)):
        log.warning("k-means: %s", problem)
    return index, cluster_balanced(clusters["cluster"].to_numpy(), clusters["distance"].to_numpy(),
                                   budget)


def _device(device: str | None) -> Any:
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def kcenter(
    matrix: np.ndarray, budget: int, start: int, device: str | None = None,
    block_rows: int = 1 << 16,
) -> np.ndarray:
    """Greedy k-center picks, in pick order.

    Parameters
    ----------
    matrix : ndarray of shape (N, d)
        The points (float32).
    budget : int
        Number of points to pick, 1..N.
    start : int
        Position of the first pick.
    device : str, optional
        Torch device; default CUDA when available, else the CPU.
    block_rows : int
        Rows per distance block (bounds the temporary memory).

    Returns
    -------
    picks : ndarray of int64, shape (budget,)
        Positions in ``matrix``: ``start``, then each time the point farthest (squared
        Euclidean distance) from all points picked so far, ties to the lowest position.
    """
    import torch

    n = len(matrix)
    if not 1 <= budget <= n:
        raise UserError(f"k-center budget {budget} is not in 1..{n} (the scored samples)")
    if not 0 <= start < n:
        raise ValueError(f"start {start} is not a row of the {n} points")
    where = _device(device)
    points = torch.from_numpy(np.ascontiguousarray(matrix, np.float32)).to(where)
    norms = points.double().square().sum(1)
    nearest = torch.full((n,), float("inf"), dtype=torch.float64, device=where)
    picks = np.empty(budget, np.int64)
    pick = start
    for step in range(budget):
        picks[step] = pick
        centre = points[pick]
        for first in range(0, n, block_rows):
            last = min(n, first + block_rows)
            dots = (points[first:last] @ centre).double()
            distance = (norms[first:last] - 2 * dots + norms[pick]).clamp_(min=0)
            torch.minimum(nearest[first:last], distance, out=nearest[first:last])
        nearest[pick] = -1.0  # picked: never again, even if it has duplicates at distance 0
        pick = int(torch.argmax(nearest))  # the first maximum: ties to the lowest position
    return picks


def balanced_shares(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Samples to take from each cluster: an equal share, water-filled.

    Parameters
    ----------
    sizes : ndarray of int
        Samples per cluster.
    budget : int
        Total to take, at most ``sizes.sum()``.

    Returns
    -------
    shares : ndarray of int64
        ``min(size, q)`` per cluster for the largest ``q`` that fits the budget, plus one
        for the remaining samples, to the largest clusters above ``q`` first (ties: lower
        cluster number).

    Examples
    --------
    >>> balanced_shares(np.array([2, 10, 10]), 12).tolist()
    [2, 5, 5]
    >>> balanced_shares(np.array([2, 10, 9]), 13).tolist()
    [2, 6, 5]
    """
    sizes = np.asarray(sizes, np.int64)
    if not 0 <= budget <= sizes.sum():
        raise ValueError(f"budget {budget} is not in 0..{sizes.sum()}")
    low, high = 0, int(sizes.max(initial=0))
    while low < high:  # the largest q with sum(min(sizes, q)) <= budget
        q = (low + high + 1) // 2
        if np.minimum(sizes, q).sum() <= budget:
            low = q
        else:
            high = q - 1
    shares = np.minimum(sizes, low)
    extra = budget - int(shares.sum())
    open_clusters = np.flatnonzero(sizes > low)
    by_size = open_clusters[np.argsort(-sizes[open_clusters], kind="stable")]
    shares[by_size[:extra]] += 1
    return shares


@dataclass(frozen=True)
class Clusters:
    """A k-means clustering of the representations (the budget-independent step of the
    k-means baseline: fitted once per run, shared by every budget)."""

    labels: np.ndarray  # int64 [N], cluster of each row
    distance: np.ndarray  # float64 [N], squared distance of each row to its centroid
    iterations: int  # Lloyd iterations run
    converged: bool  # stopped before scikit-learn's iteration limit


def fit_clusters(matrix: np.ndarray, clusters: int, seed: int) -> Clusters:
    """k-means clusters of ``matrix``.

    Parameters
    ----------
    matrix : ndarray of shape (N, d)
        The points (float32).
    clusters : int
        Number of k-means clusters K, 1..N.
    seed : int
        Seed of the k-means++ initialisation.

    Returns
    -------
    Clusters
        Each point's cluster (scikit-learn's Lloyd k-means, one run, float32) and its
        squared Euclidean distance to that cluster's centroid, in float64.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    n = len(matrix)
    if not 1 <= clusters <= n:
        raise UserError(f"select.kmeans_clusters {clusters} is not in 1..{n} (the scored samples)")
    with threadpool_limits(limits=KMEANS_THREADS):
        fitted = KMeans(n_clusters=clusters, n_init=1, random_state=seed, algorithm="lloyd")
        labels = fitted.fit_predict(np.ascontiguousarray(matrix, np.float32)).astype(np.int64)
    centres = fitted.cluster_centers_.astype(np.float64)
    distance = np.empty(n)
    for first in range(0, n, BLOCK_ROWS):
        rows = matrix[first:first + BLOCK_ROWS].astype(np.float64)
        distance[first:first + BLOCK_ROWS] = np.square(rows - centres[labels[first:first + BLOCK_ROWS]]).sum(1)
    iterations = int(fitted.n_iter_)
    return Clusters(labels, distance, iterations, iterations < fitted.max_iter)


def cluster_balanced(labels: np.ndarray, distance: np.ndarray, budget: int) -> np.ndarray:
    """Cluster-balanced picks: an equal share of the budget per cluster
    (:func:`balanced_shares`), nearest to the centroid first.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
        Cluster of every point, 0..K-1.
    distance : ndarray of float, shape (N,)
        Distance of every point to its cluster's centroid.
    budget : int
        Number of points to pick, 1..N.

    Returns
    -------
    picks : ndarray of int64, shape (budget,)
        Positions, ascending: in each cluster the ``share`` points of smallest distance,
        ties to the lower position.

    Examples
    --------
    >>> cluster_balanced(np.array([0, 0, 1, 1, 1]), np.array([3., 1., 2., 0., 2.]), 3).tolist()
    [1, 2, 3]
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    if not 1 <= budget <= n:
        raise UserError(f"k-means budget {budget} is not in 1..{n} (the scored samples)")
    clusters = int(labels.max()) + 1
    shares = balanced_shares(np.bincount(labels, minlength=clusters), budget)
    order = np.lexsort((np.arange(n), distance, labels))
    starts = np.searchsorted(labels[order], np.arange(clusters))
    picks = np.concatenate([order[s:s + k] for s, k in zip(starts, shares)])
    return np.sort(picks)


def clusters_table(index: np.ndarray, clusters: Clusters, ids: pd.Series) -> pd.DataFrame:
    """``index`` (dataset index), ``id``, ``cluster`` and ``distance`` (squared, to the
    centroid) of every row; ``ids`` maps dataset index to the stored sample id."""
    return pd.DataFrame({
        "index": index, "id": ids.loc[index].to_numpy(),
        "cluster": clusters.labels, "distance": clusters.distance,
    })


def picks_table(index: np.ndarray, picks: np.ndarray, ids: pd.Series) -> pd.DataFrame:
    """``index`` (dataset index), ``id`` and ``order`` (1 = first pick) of the picks,
    in dataset order; ``index`` maps positions to dataset indices and ``ids`` dataset
    indices to the stored sample ids."""
    index = index[picks]
    table = pd.DataFrame({
        "index": index, "id": ids.loc[index].to_numpy(),
        "order": np.arange(1, len(picks) + 1, dtype=np.int64),
    })
    return table.sort_values("index", kind="stable").reset_index(drop=True)


def read_picks(paths: Sequence[str | os.PathLike]) -> dict[tuple[str, int], np.ndarray]:
    """``(method, N)`` -> dataset indices (in dataset order) of each picks table, the
    method and budget read from the file's name (:func:`scalselect.methods.picks_name`).

    Raises
    ------
    UserError
        A file not named as a picks table, or two tables of one method and budget.
    """
    picks: dict[tuple[str, int], np.ndarray] = {}
    for path in paths:
        key = picks_key(path)
        if key in picks:
            raise UserError(f"{path}: a second picks table of {key[0]} at {key[1]} samples")
        picks[key] = pd.read_parquet(path, columns=["index"])["index"].to_numpy()
    return picks
