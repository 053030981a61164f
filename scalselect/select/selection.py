"""Selection (METHOD.md stage 3): top-N by importance, the random baseline, budgets.

Samples are keyed by their dataset index (position in the filtered dataset), never by id,
so repeated ids are never merged. The *valid* samples are the scored ones (extraction
failures have no score); a percentage budget is a share of them, rounded half up:
``"16%"`` of 1001 valid samples is ``round_half_up(160.16) = 160``.

Selections hold the chosen records unchanged, in dataset order, copied as the dataset
streams by (:func:`scalselect.data.writers.copy_records`): memory holds the scores and the
chosen indices, never the records. Ties in importance at the
boundary of a top-N are broken by dataset index, lower first (the ranking's order). The
random baseline draws, from the scored samples, the first N of a seeded permutation
(NumPy's PCG64 ``default_rng(seed)``): deterministic per seed, and nested across budgets
of the same seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalselect.budgets import Budget, resolve_budget
from scalselect.data.readers import iter_records
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.io import atomic_write

SUMMARY_COLUMNS = ("budget", "n", "fraction", "score_threshold")
SCORE_COLUMNS = ("index", "id", "id_type", "importance", "rank")


class SelectionError(UserError):
    """A budget that cannot be met, or scores that do not fit the dataset."""


def read_scores(
    path: str | os.PathLike, columns: Sequence[str] = SCORE_COLUMNS
) -> pd.DataFrame:
    """Ranked scores: ``scores.parquet`` (columns ``index``, ``id``, ``id_type``,
    ``importance``, ``rank``), as written by scoring, sorted by rank; only ``columns``
    (with ``rank``) are read."""
    columns = list(dict.fromkeys([*columns, "rank"]))
    table = pd.read_parquet(path, columns=columns)
    return table.sort_values("rank", kind="stable").reset_index(drop=True)


def scored_count(path: str | os.PathLike) -> int:
    """The number of scored samples of a ``scores.parquet``, from its footer: the
    workflow asks it for every selection job, and the table itself is 10M rows at scale."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


class ScoresCheck:
    """Checks, as the dataset streams by, that every scored sample's dataset index holds
    a record with the scored id (``scores.parquet`` carries the ids of the dataset it
    indexes): scores of another dataset, or of the same records in another order, would
    otherwise select the wrong samples.

    Call it with each record's ``(index, id)`` in dataset order, then :meth:`finish`
    with the number of records (as :func:`scalselect.data.writers.copy_records` does); both
    raise ``SelectionError``. Memory: the scored indices and ids (arrow arrays).
    """

    def __init__(self, scores_path: str | os.PathLike, dataset_path: str | os.PathLike) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(scores_path, columns=["index", "id", "id_type"])
        table = table.take(pc.sort_indices(table["index"]))
        self.indices = table["index"].to_numpy()
        self.ids = table["id"].combine_chunks()
        self.types = table["id_type"].combine_chunks()
        self.scores_path, self.dataset_path = scores_path, dataset_path
        self.next = 0

    def __call__(self, number: int, found: Any) -> None:
        """Check the record at dataset index ``number``, whose id is ``found``."""
        while self.next < len(self.indices) and self.indices[self.next] < number:
            self.next += 1  # a negative index: reported by finish
        if self.next == len(self.indices) or self.indices[self.next] != number:
            return
        text, kind = self.ids[self.next].as_py(), self.types[self.next].as_py()
        self.next += 1
        expected = None if kind == "null" else text
        if features.id_text(found) != expected or features.id_type(found) != kind:
            raise SelectionError(
                f"{self.scores_path} does not belong to {self.dataset_path}: dataset index"
                f" {number} holds id {found!r} but the scores have id {text!r} ({kind}) there"
                " (scores of another dataset, or of these records in another order)"
            )

    def finish(self, count: int, sha256: str | None = None) -> None:
        """Check that every scored index is one of the dataset's ``count`` records."""
        if not len(self.indices):
            return
        low, high = int(self.indices[0]), int(self.indices[-1])
        if low < 0 or high >= count:
            raise SelectionError(
                f"{self.scores_path} does not belong to {self.dataset_path}: it scores dataset"
                f" index {low if low < 0 else high} but the dataset has {count} records"
            )


def scores_from_jsonl(path: str | os.PathLike, dataset: str | os.PathLike) -> pd.DataFrame:
    """Ranked scores from the original tool's ``importance_scores.jsonl``, matched to
    the records of ``dataset`` by id (streamed; the ids are held). Ids must be unique in
    the dataset for this to be unambiguous.

    Raises ``SelectionError`` for repeated dataset ids or a scored id not in the dataset.
    """
    positions: dict[str, int] = {}
    for index, record in iter_records(dataset):
        key = features.encode_id(record.get("id") if isinstance(record, dict) else None)
        if key in positions:
            raise SelectionError(
                f"id {key} occurs twice in the dataset (records {positions[key]} and "
                f"{index}): use scores.parquet, which keys samples by dataset index"
            )
        positions[key] = index
    ids, importance, index = [], [], []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            entry = json.loads(line)
            key = features.encode_id(entry["sample_id"])
            if key not in positions:
                raise SelectionError(f"{path}:{lineno}: sample_id {key} is not in the dataset")
            ids.append(key)
            importance.append(float(entry["importance"]))
            index.append(positions[key])
    table = pd.DataFrame({"index": np.asarray(index, np.int64), "id": ids, "importance": importance})
    order = np.lexsort((table["index"].to_numpy(), -table["importance"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
    return table


def budget_names(budgets: Iterable[tuple[int | str, int]]) -> dict[int, str]:
    """Each distinct selection size, smallest first, with the budget asked for it:
    ``(budget as configured, resolved count)`` pairs in, a percentage preferred where a
    count and a percentage select the same N (selections are named by N, so they are
    one selection).

    >>> budget_names([(40, 40), ("25%", 37), ("16%", 40)])
    {37: '25%', 40: '16%'}
    """
    names: dict[int, Budget] = {}
    for budget, n in budgets:
        parsed, n = Budget.parse(budget), int(n)
        if n not in names or (parsed.is_percentage and not names[n].is_percentage):
            names[n] = parsed
    return {n: names[n].text for n in sorted(names)}


def top_indices(scores: pd.DataFrame, n: int) -> np.ndarray:
    """Dataset indices of the ``n`` best-ranked samples, in dataset order."""
    resolve_budget(n, len(scores))
    return np.sort(scores["index"].to_numpy()[:n])


def random_indices(scores: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Dataset indices of ``n`` scored samples drawn at random with ``seed``, in dataset
    order: the first ``n`` of a seeded permutation of the scored indices (sorted)."""
    resolve_budget(n, len(scores))
    pool = np.sort(scores["index"].to_numpy())
    return np.sort(pool[np.random.default_rng(seed).permutation(len(pool))[:n]])


def summary(scores: pd.DataFrame, budgets: Sequence[int | str]) -> pd.DataFrame:
    """Per budget: as configured, resolved count, fraction of the scored samples and the
    importance of the last selected sample (``score_threshold``)."""
    rows = []
    for budget in budgets:
        n = resolve_budget(budget, len(scores))
        rows.append({
            "budget": str(budget),
            "n": n,
            "fraction": n / len(scores),
            "score_threshold": float(scores["importance"].iloc[n - 1]),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def write_summary(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write the summary as CSV, atomically."""
    with atomic_write(Path(path)) as handle:
        table.to_csv(handle, index=False)
