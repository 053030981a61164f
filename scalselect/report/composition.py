"""Which data sources a selection draws from: the share of each source (e.g. coco, gqa,
ocr_vqa, textvqa, vg in LLaVA-665K) in the full set, in each top-N and in each random-N.

A sample's source is :attr:`scalselect.data.records.Sample.source`: the first folder of its
first image path, or a configured record field. Sources beyond the ``max_sources`` most
frequent ones in the full set are pooled as ``other`` so that colours stay distinguishable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from scalselect.data.readers import iter_samples
from scalselect.data.records import DatasetError
from scalselect.report import style
from scalselect.select import selection

OTHER = "other"
FULL_SET = "Full set"


def sample_sources(
    path: str | os.PathLike, fmt: str = "auto", source_field: str | None = None
) -> np.ndarray:
    """The source label of every record of a dataset file, by dataset index, read as
    the file streams by (one shared string per label: 8 bytes a record).

    Raises ``DatasetError`` naming a record that cannot be normalised.
    """
    labels: dict[str, str] = {}
    sources = []
    for index, sample, problems in iter_samples(path, fmt, source_field=source_field):
        if sample is None:
            details = "; ".join(p.detail for p in problems)
            raise DatasetError(f"{path}: record {index} is malformed: {details}")
        sources.append(labels.setdefault(sample.source, sample.source))
    return np.array(sources, dtype=object)


def selection_subsets(
    scores: pd.DataFrame, summary: pd.DataFrame, seeds: Sequence[int], n_records: int
) -> dict[str, np.ndarray]:
    """Dataset indices of the full set and of each top-N and random-N subset, labelled
    for the figure (``Top-32``, ``Random-32`` or ``Random-32 (seed 1)`` with several
    seeds), in the order: full set, then per budget (smallest first) top then random.

    ``scores`` is the ranked score table, ``summary`` the selection summary (its ``n``
    column gives each budget's size); the subsets are those that selection writes.
    """
    subsets = {FULL_SET: np.arange(n_records)}
    for n in sorted(set(summary["n"].astype(int))):
        size = style.format_count(n)
        subsets[f"Top-{size}"] = selection.top_indices(scores, n)
        for seed in seeds:
            label = f"Random-{size}" + (f" (seed {seed})" if len(seeds) > 1 else "")
            subsets[label] = selection.random_indices(scores, n, seed)
    return subsets


def composition_table(
    sources: np.ndarray, subsets: Mapping[str, np.ndarray], max_sources: int = 7
) -> pd.DataFrame:
    """Counts and shares of each source in each subset (tidy: columns ``subset``,
    ``n``, ``source``, ``count``, ``share``), sources ordered by their count in the
    first subset (the full set), rarer ones beyond ``max_sources`` pooled as ``other``."""
    full = pd.Series(sources[next(iter(subsets.values()))]).value_counts()
    order = sorted(full.index, key=lambda s: (-full[s], s))
    keep = order if len(order) <= max_sources else order[: max_sources - 1]
    pooled = {s: (s if s in keep else OTHER) for s in order}
    columns = keep + ([OTHER] if len(keep) < len(order) else [])
    rows = []
    for name, indices in subsets.items():
        labels = pd.Series(sources[indices]).map(lambda s: pooled.get(s, OTHER))
        counts = labels.value_counts()
        for source in columns:
            count = int(counts.get(source, 0))
            rows.append({"subset": name, "n": len(indices), "source": source,
                         "count": count, "share": count / len(indices)})
    return pd.DataFrame(rows, columns=["subset", "n", "source", "count", "share"])


def share_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The tidy composition table as subsets x sources shares, in the table's order."""
    matrix = table.pivot(index="subset", columns="source", values="share")
    return matrix.loc[list(dict.fromkeys(table["subset"])), list(dict.fromkeys(table["source"]))]
