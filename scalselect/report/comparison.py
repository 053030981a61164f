"""Agreement between runs on the same dataset (e.g. two models): overlap of their top-N
sets per budget (Jaccard) and rank correlation of their scores (Spearman).

Samples are matched by dataset index (position in the filtered dataset), so runs are
comparable only when their filtered datasets are identical. Spearman's ρ is computed on
the samples scored by both runs, with average ranks for ties; each run's top-N is its
own (a percentage budget resolves against that run's scored count).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from scalselect.budgets import resolve_budget
from scalselect.select import selection


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks.

    Examples
    --------
    >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 15.0]))
    0.5
    """
    rx = pd.Series(x).rank(method="average").to_numpy()
    ry = pd.Series(y).rank(method="average").to_numpy()
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """``|A ∩ B| / |A ∪ B|`` of two index sets.

    Examples
    --------
    >>> jaccard(np.array([1, 2, 3]), np.array([2, 3, 4]))
    0.5
    """
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b)) / union if union else float("nan")


def random_jaccard(size_a: int, size_b: int, pool: int) -> float:
    """Expected overlap of two independent uniform random subsets of sizes ``size_a``
    and ``size_b`` from ``pool`` items, as ``E|A∩B| / (|A| + |B| - E|A∩B|)``.

    Examples
    --------
    >>> random_jaccard(50, 50, 100)
    0.3333333333333333
    """
    common = size_a * size_b / pool
    return common / (size_a + size_b - common)


def compare_runs(
    scores: Mapping[str, pd.DataFrame], budgets: Sequence[int | str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise agreement of ranked score tables (``index``, ``importance``; rank order).

    Returns
    -------
    overlap : DataFrame
        One row per pair and budget: ``run_a``, ``run_b``, ``budget``, ``n_a``,
        ``n_b``, ``jaccard``, ``random_jaccard`` (expectation for random subsets of the
        same sizes drawn from the samples both runs scored).
    correlation : DataFrame
        One row per pair: ``run_a``, ``run_b``, ``n_common``, ``spearman``.
    """
    overlap, correlation = [], []
    for run_a, run_b in itertools.combinations(scores, 2):
        a, b = scores[run_a], scores[run_b]
        common = np.intersect1d(a["index"], b["index"])
        xa = a.set_index("index")["importance"].reindex(common).to_numpy()
        xb = b.set_index("index")["importance"].reindex(common).to_numpy()
        correlation.append({"run_a": run_a, "run_b": run_b, "n_common": len(common),
                            "spearman": spearman(xa, xb)})
        for budget in budgets:
            n_a = resolve_budget(budget, len(a))
            n_b = resolve_budget(budget, len(b))
            overlap.append({
                "run_a": run_a, "run_b": run_b, "budget": str(budget), "n_a": n_a,
                "n_b": n_b,
                "jaccard": jaccard(selection.top_indices(a, n_a), selection.top_indices(b, n_b)),
                "random_jaccard": random_jaccard(n_a, n_b, len(common)),
            })
    return pd.DataFrame(overlap), pd.DataFrame(correlation)


def percentile_ranks(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Each commonly scored sample's percentile rank (0 = most important, 1 = least) in
    runs ``a`` and ``b``: columns ``index``, ``x``, ``y``."""
    common = np.intersect1d(a["index"], b["index"])
    out = pd.DataFrame({"index": common})
    for column, table in (("x", a), ("y", b)):
        values = table.set_index("index")["importance"].reindex(common)
        ranks = values.rank(method="average", ascending=False).to_numpy()
        out[column] = (ranks - 1) / max(len(common) - 1, 1)
    return out
