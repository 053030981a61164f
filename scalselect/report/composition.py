"""Which data sources a selection draws from: the share of each source (e.g. coco, gqa,
ocr_vqa, textvqa, vg in LLaVA-665K) in the full set, in each top-N and in each random-N.

A sample's source is :attr:`scalselect.data.records.Sample.source`: the first folder of its
first image path, or a configured record field. Each source has one colour in every
figure and browser of a configuration's runs (:func:`scalselect.report.style.source_colors`),
fixed by the order of :func:`config_sources` (the sources of all the runs, most frequent
first; ``results/sources.json`` in the workflow); sources beyond the colours are pooled
as ``other``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scalselect.data.readers import iter_samples
from scalselect.data.records import TEXT_ONLY, DatasetError
from scalselect.report import style
from scalselect.select import selection

OTHER = style.OTHER
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
    for the figure with the budget as asked (``Top-32``, ``Random-32``, ``Top-25% (N =
    37)``, or ``Random-32 (seed 1)`` with several seeds), in the order: full set, then
    per budget (smallest first) top then random.

    ``scores`` is the ranked score table, ``summary`` the selection summary (its
    ``budget`` and ``n`` columns give each budget as asked and its size); the subsets are
    those that selection writes.
    """
    subsets = {FULL_SET: np.arange(n_records)}
    for n, budget in selection.budget_names(zip(summary["budget"], summary["n"])).items():
        size = style.budget_label(budget, n, bare=True)
        subsets[f"Top-{size}"] = selection.top_indices(scores, n)
        for seed in seeds:
            label = f"Random-{size}" + (f" (seed {seed})" if len(seeds) > 1 else "")
            subsets[label] = selection.random_indices(scores, n, seed)
    return subsets


def config_sources(reports: Iterable[tuple[Mapping, bool]]) -> list[str]:
    """The data sources of a configuration's runs, most frequent first (ties by name):
    the valid samples per source of each run's validation report (``sources``), less
    its text-only ones (``text_only_sources``) where its filter drops them
    (``(report, keep_text_only)`` pairs). Sources no run keeps are left out."""
    counts: Counter[str] = Counter()
    for report, keep_text_only in reports:
        counts.update(report["sources"])
        if not keep_text_only:
            # Reports from before text_only_sources: text-only samples labelled so.
            counts.subtract(report.get("text_only_sources",
                                       {TEXT_ONLY: report["num_text_only"]}))
    return sorted((s for s in counts if counts[s] > 0), key=lambda s: (-counts[s], s))


def read_sources(path: str | os.PathLike) -> list[str]:
    """The source order written by ``python -m scalselect sources``; a clear error when
    the file is missing or of another kind."""
    try:
        order = json.loads(Path(path).read_text(encoding="utf-8"))["sources"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"cannot read the sources of {path}: {error!r}") from None
    if not (isinstance(order, list) and all(isinstance(s, str) for s in order)):
        raise DatasetError(f"{path}: 'sources' is not a list of source names")
    return order


def source_order(sources: np.ndarray, order: Sequence[str] | None = None) -> list[str]:
    """``order`` when given (:func:`config_sources`), else the sources of ``sources``
    (one label per sample) by their count, most frequent first, ties by name: the order
    of a run on its own."""
    if order is not None:
        return list(order)
    counts = pd.Series(sources).value_counts()
    return sorted(counts.index, key=lambda s: (-counts[s], s))


def composition_table(
    sources: np.ndarray, subsets: Mapping[str, np.ndarray], order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Counts and shares of each source in each subset (tidy: columns ``subset``,
    ``n``, ``source``, ``count``, ``share``). The sources with a colour of their own in
    ``order`` (:func:`source_order`; by default the first subset's, the full set's) that
    the first subset holds come first, in that order; every other source is pooled as
    ``other``."""
    full = set(sources[next(iter(subsets.values()))])
    colors = style.source_colors(source_order(sources[next(iter(subsets.values()))], order))
    keep = [s for s, c in colors.items() if c != style.OTHER_SOURCES and s in full]
    pooled = {s: (s if s in keep else OTHER) for s in full}
    columns = keep + ([OTHER] if len(keep) < len(full) else [])
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
