"""Writing records: unchanged, atomically, in the format of the file's name.

The stages write as they read (:func:`copy_records`): a JSON array with one record per
line, JSON Lines, or parquet with the schema of the parquet dataset read; the offset
index of the file written comes with it when asked for, without reading it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalselect.data.index import OffsetSpill, write_index_file
from scalselect.data.readers import (
    ReadStats,
    file_kind,
    iter_records,
    parquet_batches,
    parquet_file,
    write_index,
)
from scalselect.data.records import DatasetError
from scalselect.io import atomic_write
from scalselect.locations import as_location
from scalselect.progress import Progress

# Bytes of rows buffered per row group of a parquet file written here.
ROW_GROUP_BYTES = 64 << 20


class RecordWriter:
    """Writes records, unchanged and atomically, in the file format of ``path``'s name:
    JSON Lines (``.jsonl``, ``.ndjson``), a JSON array with one record per line (as
    ``filter`` writes it; extraction finds a shard's lines without parsing the others),
    or parquet with the schema of the parquet dataset ``schema_of``.

    With ``index``, the :class:`DatasetIndex` of the file written is saved there too
    (what :func:`build_index` of the file gives, without reading it again): the byte
    offsets go to a temporary file as they come, so memory stays bounded.

    Use as a context manager; the file appears complete or not at all.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        schema_of: str | os.PathLike | None = None,
        index: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind = file_kind(path)
        if self.kind == "parquet" and schema_of is None:
            raise DatasetError(f"{path}: parquet is written from a parquet dataset only")
        self.schema_of = schema_of
        self.index = None if index is None else Path(index)
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._position = 0
        self._digest = hashlib.sha256()

    def __enter__(self) -> RecordWriter:
        self.handle = self._stack.enter_context(atomic_write(self.path, "wb"))
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            schema = parquet_file(as_location(self.schema_of)).schema_arrow
            self._parquet = self._stack.enter_context(pq.ParquetWriter(self.handle, schema))
            return self
        if self.index is not None:
            self.index.parent.mkdir(parents=True, exist_ok=True)
            self._offsets = OffsetSpill(
                self._stack.enter_context(tempfile.TemporaryFile(dir=self.index.parent)))
        if self.kind == "json":
            self._emit(b"[")
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool | None:
        if kind is not None:
            return self._stack.__exit__(kind, error, traceback)
        with self._stack:
            if self.kind == "parquet":
                self._flush()
            elif self.kind == "json":
                self._emit(b"\n]\n")
            if self.index is not None and self.kind != "parquet":
                write_index_file(self.index, self.count, self._digest.hexdigest(), self._position,
                             "lines" if self.kind == "jsonl" else "array", self.count,
                             self._offsets.chunks())
        if self.index is not None and self.kind == "parquet":
            write_index(self.path, self.index)
        return None

    def write(self, record: Any) -> None:
        """Append one record (JSON kinds)."""
        if self.kind == "parquet":
            raise DatasetError(f"{self.path}: rows of a parquet file are written by batch")
        if self.kind == "json":
            self._emit(b",\n" if self.count else b"\n")
        if self.index is not None:
            self._offsets.append(self._position)
        self._emit(json.dumps(record, ensure_ascii=False).encode("utf-8")
                   + (b"\n" if self.kind == "jsonl" else b""))
        self.count += 1

    def _emit(self, data: bytes) -> None:
        self.handle.write(data)
        if self.index is not None:
            self._digest.update(data)
        self._position += len(data)

    def write_rows(self, batch: Any) -> None:
        """Append the rows of an arrow record batch (parquet), in row groups of about
        :data:`ROW_GROUP_BYTES`."""
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.count += batch.num_rows
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._parquet.write_table(pa.Table.from_batches(self._pending), row_group_size=None)
            self._pending, self._pending_bytes = [], 0


def write_records(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write records, unchanged, atomically: JSON Lines when ``path`` ends in ``.jsonl``
    or ``.ndjson``, parquet (schema inferred from the records) when it ends in
    ``.parquet``, else a JSON array (one record per line)."""
    if file_kind(path) == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_write(path, "wb") as handle:
            pq.write_table(pa.Table.from_pylist(list(records)), handle)
        return
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def copy_records(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    keep: Sequence[int] | np.ndarray | None = None,
    drop: Sequence[int] | np.ndarray | None = None,
    check: Callable[[int, Any], None] | None = None,
    finish: Callable[[int, str | None], None] | None = None,
    index: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> int:
    """Stream ``source`` and write some of its records to ``out`` as they come,
    unchanged and in dataset order: those at the dataset indices ``keep``, or all but
    those at ``drop`` (sorted, distinct). Returns the number of records of ``source``.

    ``check(index, id)`` sees the id of every record of ``source`` (``None`` when it has
    none), ``finish(count, sha256)`` the number of records and the digest of the bytes
    (``None`` for parquet) once all were read; either may raise to refuse the copy, and
    nothing is written then. A parquet ``source`` gives a parquet ``out`` with the same
    schema; JSON kinds may be written as either JSON kind. With ``index``, the
    :class:`DatasetIndex` of ``out`` is written there (:class:`RecordWriter`). Memory:
    one block or row batch, and the indices. ``progress`` counts the records read.

    Raises ``DatasetError`` when ``keep`` names an index beyond the records of
    ``source``, or for parquet written from (or to) another kind.
    """
    if (keep is None) == (drop is None):
        raise ValueError("give exactly one of keep and drop")
    chosen = np.asarray(keep if drop is None else drop, dtype=np.int64)
    wanted = drop is None
    if (file_kind(source) == "parquet") != (file_kind(out) == "parquet"):
        raise DatasetError(
            f"{out}: a parquet dataset is written as parquet, and only a parquet dataset"
            f" (the dataset is {source})"
        )
    stats = ReadStats()
    with RecordWriter(out, schema_of=source, index=index) as writer:
        if writer.kind == "parquet":
            count = _copy_rows(as_location(source), writer, chosen, wanted, check, progress)
        else:
            count = _copy_json(source, writer, chosen, wanted, check, stats, progress)
        if finish is not None:
            finish(count, stats.sha256)
        if len(chosen) and (chosen[0] < 0 or chosen[-1] >= count):
            outside = chosen[0] if chosen[0] < 0 else chosen[-1]
            raise DatasetError(
                f"dataset index {outside} is not in {source}, which has {count} records"
            )
    return count


def _copy_rows(
    source: Path,
    writer: RecordWriter,
    chosen: np.ndarray,
    wanted: bool,
    check: Callable[[int, Any], None] | None,
    progress: Progress | None,
) -> int:
    """Write the rows of a parquet ``source`` that ``chosen`` lists (``wanted``) or does
    not list, a row batch at a time (see :func:`copy_records`); the number of rows read."""
    count = 0
    for first, batch in parquet_batches(source, 0, None, None):
        rows = batch.num_rows
        if check is not None:
            ids = (batch.column("id").to_pylist() if "id" in batch.schema.names
                   else [None] * rows)
            for number, value in enumerate(ids, first):
                check(number, value)
        lo, hi = np.searchsorted(chosen, [first, first + rows])
        mask = np.full(rows, not wanted)
        mask[chosen[lo:hi] - first] = wanted
        if mask.any():
            writer.write_rows(batch.filter(mask))
        count = first + rows
        if progress is not None:
            progress.update(rows)
    return count


def _copy_json(
    source: str | os.PathLike,
    writer: RecordWriter,
    chosen: np.ndarray,
    wanted: bool,
    check: Callable[[int, Any], None] | None,
    stats: ReadStats,
    progress: Progress | None,
) -> int:
    """Write the records of a JSON or JSON Lines ``source`` that ``chosen`` lists
    (``wanted``) or does not list, one at a time (see :func:`copy_records`); the number
    of records read."""
    count = 0
    position = 0
    for number, record in iter_records(source, stats=stats):
        if check is not None:
            check(number, record.get("id") if isinstance(record, dict) else None)
        listed = position < len(chosen) and chosen[position] == number
        position += listed
        if listed == wanted:
            writer.write(record)
        count = number + 1
        if progress is not None:
            progress.update(1)
    return count

