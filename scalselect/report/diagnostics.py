"""Training-free comparison of selections on the representations they were made from.

Diagnostics, not a claim of training quality: they describe what a subset covers in the
space of the scored (preprocessed) representations ``R~`` (``N x d``), whose top-k right
singular vectors ``V_k`` (the rank k of scoring) span the full set's dominant subspace.

- **Subspace retention** of a subset ``S``: the mean squared cosine of the principal
  angles between ``span V_k`` and the span of the top-k right singular vectors ``W`` of
  ``R~_S`` (the subset's rows, preprocessed as for the full set, not re-centred):
  ``||V_k^T W||_F^2 / k``; 1 = the same subspace. Directions beyond the subset's
  numerical rank count as missing (cosine 0).
- **Energy ratio**: the subset's mean rank-k energy ``mean_{i in S} ||r~_i V_k||^2``
  relative to the full set's ``sum_{j<=k} sigma_j^2 / N``.
- **Coverage**: Euclidean distance from each sample to its nearest selected sample;
  mean and maximum. Exact (every sample) when ``N * |S| * d`` is at most
  :data:`COVERAGE_EXACT_MACS`, otherwise over a fixed sample of
  :data:`COVERAGE_QUERIES` query samples drawn uniformly without replacement with
  NumPy's ``default_rng(COVERAGE_SEED)`` (the same for every method and budget).
- **Overlap** with ScalSelect's top-N (Jaccard) and **source composition** come from
  :mod:`scalselect.report.comparison` and :mod:`scalselect.report.composition`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scalselect.methods import SCALSELECT
from scalselect.report import comparison, composition

# Above this many multiply-adds, coverage is measured on a fixed sample of query samples.
COVERAGE_EXACT_MACS = 10**12
COVERAGE_QUERIES = 10_000
COVERAGE_SEED = 0
# Elements of one block of pairwise distances.
DISTANCE_BLOCK = 1 << 24


def top_subspace(rows: np.ndarray, k: int) -> np.ndarray:
    """Orthonormal top-``k`` right singular vectors of ``rows`` (``d x k'``, float64),
    ``k' = min(k, numerical rank)``; through the ``d x d`` Gram matrix when there are
    more rows than columns."""
    x = np.asarray(rows, np.float64)
    if len(x) > x.shape[1]:
        values, vectors = np.linalg.eigh(x.T @ x)
        values, vectors = values[::-1], vectors[:, ::-1]
        singular = np.sqrt(np.clip(values, 0, None))
    else:
        _, singular, vt = np.linalg.svd(x, full_matrices=False)
        vectors = vt.T
    if not len(singular) or singular[0] == 0:
        return np.zeros((x.shape[1], 0))
    rank = int((singular > singular[0] * max(x.shape) * np.finfo(np.float64).eps).sum())
    return vectors[:, : min(k, rank)]


def subspace_retention(full_basis: np.ndarray, subset: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between ``span full_basis``
    (orthonormal, ``d x k``) and the subset's top-k right singular subspace.

    Examples
    --------
    >>> basis = np.eye(3)[:, :2]
    >>> subspace_retention(basis, np.array([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 0.1]]))
    1.0
    >>> subspace_retention(basis, np.array([[2.0, 0, 0], [0, 0, 1.0]]))
    0.5
    """
    k = full_basis.shape[1]
    cosines = full_basis.T @ top_subspace(subset, k)
    return float(np.square(cosines).sum() / k)


def energy_ratio(full_basis: np.ndarray, full_energy: float, n_full: int, subset: np.ndarray) -> float:
    """The subset's mean rank-k energy ``mean ||r V_k||^2`` over the full set's,
    ``full_energy / n_full`` (``full_energy = sum_{j<=k} sigma_j^2``)."""
    projected = np.asarray(subset, np.float64) @ full_basis
    return float(np.square(projected).sum(1).mean() / (full_energy / n_full))


def coverage_queries(n: int, n_selected: int, d: int) -> np.ndarray | None:
    """Positions of the query samples of coverage, or ``None`` for all of them (exact)."""
    if n * n_selected * d <= COVERAGE_EXACT_MACS or n <= COVERAGE_QUERIES:
        return None
    rng = np.random.default_rng(COVERAGE_SEED)
    return np.sort(rng.choice(n, COVERAGE_QUERIES, replace=False))


def nearest_distances(
    queries: np.ndarray, selected: np.ndarray, device: str | None = None
) -> np.ndarray:
    """Euclidean distance (float64) from each query row to its nearest selected row.

    The nearest row is found with float32 dot products and float64 squared norms (torch,
    on a GPU when present); the distance to it is then recomputed directly in float64,
    so that a selected sample is at distance exactly 0 from itself.
    """
    import torch

    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(where)
    s = torch.from_numpy(np.ascontiguousarray(selected, np.float32)).to(where)
    q_norms, s_norms = q.double().square().sum(1), s.double().square().sum(1)
    distance = np.empty(len(q))
    rows = max(1, DISTANCE_BLOCK // max(1, len(s)))
    columns = max(1, DISTANCE_BLOCK // rows)
    for first in range(0, len(q), rows):
        block = slice(first, first + rows)
        best = torch.full((len(q[block]),), float("inf"), dtype=torch.float64, device=where)
        nearest = torch.zeros(len(q[block]), dtype=torch.int64, device=where)
        for start in range(0, len(s), columns):
            part = slice(start, start + columns)
            squared = q_norms[block, None] + s_norms[None, part] - 2 * (q[block] @ s[part].T).double()
            value, column = squared.min(1)
            closer = value < best
            best = torch.where(closer, value, best)
            nearest = torch.where(closer, column + start, nearest)
        exact = (q[block].double() - s[nearest].double()).square().sum(1).sqrt()
        distance[block] = exact.cpu().numpy()
    return distance


@dataclass(frozen=True)
class Space:
    """The full set in the scoring space: preprocessed rows (dataset order), their
    dataset indices, the dominant subspace ``V_k`` and its energy."""

    index: np.ndarray
    matrix: np.ndarray
    basis: np.ndarray  # V_k, d x k
    energy: float  # sum_{j<=k} sigma_j^2


def measures(space: Space, subset_index: np.ndarray, reference_index: np.ndarray) -> dict[str, Any]:
    """All measures of one subset (dataset indices) against the full set; ``reference_index``
    is ScalSelect's top-N of the same budget."""
    positions = np.searchsorted(space.index, subset_index)
    if not np.array_equal(space.index[np.clip(positions, 0, len(space.index) - 1)], subset_index):
        raise ValueError("a selected sample has no representation")
    rows = space.matrix[positions]
    queries = coverage_queries(len(space.index), len(positions), space.matrix.shape[1])
    distance = nearest_distances(space.matrix if queries is None else space.matrix[queries], rows)
    return {
        "n": len(subset_index),
        "jaccard_scalselect": comparison.jaccard(subset_index, reference_index),
        "subspace_retention": subspace_retention(space.basis, rows),
        "energy_ratio": energy_ratio(space.basis, space.energy, len(space.index), rows),
        "coverage_mean": float(distance.mean()),
        "coverage_max": float(distance.max()),
        "coverage_queries": len(space.index) if queries is None else len(queries),
    }


def methods_table(
    space: Space,
    subsets: Mapping[tuple[int, str], np.ndarray],
    sources: np.ndarray,
    order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (budget N, method label) subset, in the mapping's order: the
    measures, then the share of each data source (columns ``share:<source>``, pooled
    and ordered as :func:`scalselect.report.composition.composition_table` does with ``order``).

    ``subsets`` maps (N, label) to dataset indices; each budget must hold a subset
    labelled :data:`scalselect.methods.SCALSELECT` (the overlap reference).
    """
    rows = []
    for (n, label), indices in subsets.items():
        row = {"budget": n, "method": label}
        row.update(measures(space, np.sort(indices), np.sort(subsets[(n, SCALSELECT)])))
        rows.append(row)
    table = pd.DataFrame(rows)
    named = {f"{n}|{label}": idx for (n, label), idx in subsets.items()}
    shares = composition.share_matrix(composition.composition_table(
        sources, {"full": space.index, **named}, order
    )).drop(index="full")
    shares.columns = [f"share:{source}" for source in shares.columns]
    return pd.concat([table, shares.reset_index(drop=True)], axis=1)
