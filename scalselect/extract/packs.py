"""The packs of the feature store (:mod:`scalselect.extract.store`): their files, written
once and never modified, their checks, and their key columns.

A pack is ``<name>.npy`` (the float32 matrix, zero rows for failures) and
``<name>.parquet`` (the table, :data:`PACK_COLUMNS`, one row per matrix row), in a
settings folder's ``packs/``. The table is renamed into place last: a pack exists once
its table does. The table's parquet metadata (:data:`PACK_META`) records its row count,
the matrix file's size and a CRC-32 of the matrix header and of every row; its parquet
pages carry checksums. Packs written before checksums were recorded (without the
metadata) keep working: their sizes and row counts are checked, not their bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from scalselect.io import atomic_write

PACKS_DIR = "packs"
# The key of a pack table's parquet metadata that records its sizes and checksums.
PACK_META = b"scalselect.pack"
PACK_COLUMNS = ("key", "status", "detail", "n_vision", "n_kept", "seq_len", "truncated")
PACK_TYPES = {"key": "str", "status": "str", "detail": "str", "n_vision": "int64",
              "n_kept": "int64", "seq_len": "int64", "truncated": "bool"}
# Threads reading pack key columns (I/O bound on a network filesystem; pyarrow frees the GIL).
LOOKUP_THREADS = 8


def new_name() -> str:
    """A new file name: sorts by creation time; unique across hosts, processes and calls."""
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:16] or "host"
    return f"{time.time_ns():020d}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class PackCheck:
    """The outcome of checking a pack: its table, or the problem; ``legacy`` for a pack
    written before checksums were recorded (its sizes are checked, not its bytes)."""

    table: pd.DataFrame | None
    problem: str | None
    legacy: bool = False


def _npy_header(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(matrix))
    return buffer.getvalue()


def write_pack_files(packs: Path, table: pd.DataFrame, matrix: np.ndarray) -> str:
    """Write one pack into the folder ``packs`` (matrix first, table last); return its name.

    The table's parquet metadata (:data:`PACK_META`) records the row count, the matrix
    file's size and a CRC-32 of its header and of every row; its pages carry parquet
    checksums. A failed write leaves no file behind.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if list(table.columns) != list(PACK_COLUMNS) or len(table) != len(matrix):
        raise ValueError(f"a pack needs columns {PACK_COLUMNS} and one matrix row per row")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    header = _npy_header(matrix)
    meta = {"format": 1, "rows": len(matrix), "npy_bytes": len(header) + matrix.nbytes,
            "header_crc32": zlib.crc32(header), "row_crc32": [zlib.crc32(row) for row in matrix]}
    arrow = pa.Table.from_pandas(table.astype(PACK_TYPES), preserve_index=False)
    arrow = arrow.replace_schema_metadata({**arrow.schema.metadata, PACK_META: json.dumps(meta)})
    name = new_name()
    npy = packs / f"{name}.npy"
    try:
        with atomic_write(npy, "wb") as handle:
            handle.write(header)
            handle.write(matrix.tobytes())
        with atomic_write(packs / f"{name}.parquet", "wb") as handle:
            pq.write_table(arrow, handle, write_page_checksum=True)
    except BaseException:
        # A matrix without its table is no pack; do not leave it to fill the disk.
        with contextlib.suppress(FileNotFoundError):
            npy.unlink()
        raise
    return name


# numpy parses .npy headers with ast.literal_eval, and CPython 3.11's AST builder keeps
# its recursion depth in state the threads share: parses on two threads at once can fail
# with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905; seen
# in CI). Packs are checked on threads, so their headers are parsed one at a time.
_NPY_HEADER_LOCK = threading.Lock()


def check_pack(packs: Path, name: str, rows: Sequence[int] | None = None,
               keys: Sequence[str] | None = None) -> PackCheck:
    """Check a pack: its table (parquet page checksums, columns), the matrix's header and
    size against the table's row count and the recorded sizes, and the CRC-32 of
    ``rows`` (all rows when ``None``). ``keys``, when given, are the keys ``rows`` must hold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    npy = packs / f"{name}.npy"
    try:
        arrow = pq.ParquetFile(packs / f"{name}.parquet", page_checksum_verification=True).read()
        if tuple(arrow.column_names) != PACK_COLUMNS:
            return PackCheck(None, f"not a pack table (columns {arrow.column_names})")
        raw = (arrow.schema.metadata or {}).get(PACK_META)
        meta = json.loads(raw) if raw is not None else None
        table = arrow.to_pandas()
        with open(npy, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            with _NPY_HEADER_LOCK:
                shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
            handle.seek(0)
            header = handle.read(offset)
        if len(shape) != 2 or fortran or dtype != np.float32:
            return PackCheck(None, f"{npy.name} holds {dtype} {shape}, not a float32 matrix")
        if size != offset + shape[0] * shape[1] * 4:
            return PackCheck(None, f"{npy.name} has {size} bytes, its header says"
                                   f" {offset + shape[0] * shape[1] * 4} (truncated?)")
        if shape[0] != len(table):
            return PackCheck(None, f"the table has {len(table)} rows, the matrix {shape[0]}")
        wanted = range(shape[0]) if rows is None else rows
        if meta is not None:
            if meta["rows"] != len(table) or meta["npy_bytes"] != size:
                return PackCheck(None, f"{meta['rows']} rows and {meta['npy_bytes']} bytes were"
                                       f" recorded, the files have {len(table)} and {size}")
            if zlib.crc32(header) != meta["header_crc32"]:
                return PackCheck(None, f"the header of {npy.name} does not match its checksum")
            matrix = np.memmap(npy, np.float32, "r", offset, shape) if shape[0] else None
            for row in wanted:
                if zlib.crc32(matrix[row]) != meta["row_crc32"][row]:
                    return PackCheck(None, f"row {row} of {npy.name} does not match its checksum")
        if keys is not None:
            stored = table["key"].to_numpy()
            for row, key in zip(wanted, keys, strict=True):
                if stored[row] != key:
                    return PackCheck(None, f"row {row} holds another sample than the index says")
    except (OSError, ValueError, KeyError, TypeError, IndexError, pa.ArrowException) as error:
        return PackCheck(None, f"{type(error).__name__}: {error}")
    return PackCheck(table, None, legacy=meta is None)


def _pack_keys(packs: Path, name: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(packs / f"{name}.parquet", columns=["key"]).column(0).to_pylist()


def scan_packs(
    packs: Path, names: Sequence[str]
) -> Iterator[tuple[str, list[str] | None, str | None]]:
    """``(name, keys, problem)`` of each pack, key columns read on threads."""
    def read(name: str) -> tuple[str, list[str] | None, str | None]:
        try:
            return name, _pack_keys(packs, name), None
        except Exception as error:  # noqa: BLE001 - any unreadable table is a damaged pack
            return name, None, f"cannot read its table ({type(error).__name__}: {error})"

    with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
        yield from pool.map(read, names)


def pack_names(packs: Path) -> list[str]:
    """Names of the complete packs of a ``packs`` folder, in look-up order (first wins)."""
    if not packs.is_dir():
        return []
    return sorted(p.name.removesuffix(".parquet") for p in packs.iterdir()
                  if p.suffix == ".parquet" and not p.name.startswith("."))
