"""On-disk format of the representations (the output of ``extract``).

A *shard directory* holds one extraction job's output:

- ``features.npy``: float32 matrix ``[rows, d]``, memory-mappable; row ``r`` belongs to
  row ``r`` of the table. Rows of failed samples are all zero.
- ``rows.parquet``: one row per sample of the shard, columns

  ``index`` (int64, position in the filtered dataset), ``id`` (str, the sample id
  JSON-encoded so that ``7`` and ``"7"`` stay distinct; :func:`load_rows` decodes it),
  ``status`` (``"ok"`` or a
  failure reason code), ``n_vision`` / ``n_kept`` / ``seq_len`` (int64), ``truncated``
  (bool), ``detail`` (str, human-readable failure detail, empty when ok).
- ``manifest.json``: written last; its presence marks the shard as complete.

An *extraction directory* holds several shard directories named ``shard-*``; loading it
concatenates the shards in dataset order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalselect.io import atomic_write, write_json

FEATURES = "features.npy"
ROWS = "rows.parquet"
MANIFEST = "manifest.json"
ROW_COLUMNS = ("index", "id", "status", "n_vision", "n_kept", "seq_len", "truncated", "detail")


def encode_id(sample_id: Any) -> str:
    """JSON-encode a sample id (int or str) for storage in a string column."""
    return json.dumps(sample_id, ensure_ascii=False)


def decode_id(text: str) -> Any:
    """Inverse of :func:`encode_id`."""
    return json.loads(text)


def id_text(sample_id: Any) -> str | None:
    """A sample id as plain text for tables users filter with pandas (``"000000000017"``,
    ``"93"`` for the int 93, None for a missing id); :func:`id_type` keeps the type."""
    return None if sample_id is None else str(sample_id)


def id_type(sample_id: Any) -> str:
    """``"int"``, ``"str"`` or ``"null"``: with :func:`id_text`, an id exactly as given."""
    if sample_id is None:
        return "null"
    return "int" if isinstance(sample_id, int) and not isinstance(sample_id, bool) else "str"


def write_shard(
    directory: str | os.PathLike,
    rows: pd.DataFrame,
    matrix: np.ndarray,
    manifest: dict[str, Any] | None = None,
) -> None:
    """Write a complete shard: matrix and table atomically, then the manifest."""
    directory = Path(directory)
    if list(rows.columns) != list(ROW_COLUMNS):
        raise ValueError(f"row table columns must be {ROW_COLUMNS}, got {tuple(rows.columns)}")
    if matrix.ndim != 2 or matrix.shape[0] != len(rows):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(rows)} rows")
    with atomic_write(directory / FEATURES, "wb") as handle:
        np.save(handle, np.ascontiguousarray(matrix, dtype=np.float32))
    with atomic_write(directory / ROWS, "wb") as handle:
        rows.to_parquet(handle, index=False)
    write_json(
        directory / MANIFEST,
        {"rows": len(rows), "dim": int(matrix.shape[1]), **(manifest or {})},
    )


def shard_dirs(path: str | os.PathLike) -> list[Path]:
    """The complete shard directories under ``path`` (itself, or its ``shard-*`` children).

    Raises ``FileNotFoundError`` when a shard lacks its manifest (it is unfinished).
    """
    path = Path(path)
    candidates = [path] if (path / ROWS).exists() or (path / MANIFEST).exists() else sorted(
        p for p in path.glob("shard-*") if p.is_dir()
    )
    if not candidates:
        raise FileNotFoundError(f"no extraction shards in {path}")
    for shard in candidates:
        if not (shard / MANIFEST).exists():
            raise FileNotFoundError(f"shard {shard} is incomplete (no {MANIFEST})")
    return candidates


def dataset_fingerprint(shards: Sequence[str | os.PathLike]) -> str | None:
    """The ``dataset_sha256`` the shards' manifests share (None when they predate it).

    Raises ``ValueError`` naming two shards made from different datasets: their dataset
    indices refer to different records and must not be scored or exported together.
    """
    seen: dict[str, Path] = {}
    for shard in map(Path, shards):
        manifest = json.loads((shard / MANIFEST).read_text(encoding="utf-8"))
        digest = manifest.get("dataset_sha256")
        if digest is not None:
            seen.setdefault(digest, shard)
        if len(seen) > 1:
            first, other = seen.values()
            raise ValueError(
                f"{first} and {other} were extracted from different datasets (dataset"
                f" sha256 {next(iter(seen))[:12]}... and {digest[:12]}...): use the shards"
                " of one dataset"
            )
    return next(iter(seen), None)


def open_shard(directory: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """The row table and the memory-mapped matrix of one complete shard."""
    directory = Path(directory)
    rows = pd.read_parquet(directory / ROWS)
    matrix = np.load(directory / FEATURES, mmap_mode="r")
    return rows, matrix


def load_rows(path: str | os.PathLike) -> pd.DataFrame:
    """All row tables under ``path``, concatenated and sorted by dataset index, with the
    ``id`` column decoded to the ids as given (ints and strings), so that
    ``rows[rows.id == "000000000017"]`` finds that sample."""
    tables = [pd.read_parquet(d / ROWS) for d in shard_dirs(path)]
    rows = pd.concat(tables, ignore_index=True).sort_values("index", kind="stable")
    rows["id"] = pd.Series([decode_id(x) for x in rows["id"]], index=rows.index, dtype=object)
    return rows


def load(path: str | os.PathLike) -> tuple[list[Any], np.ndarray]:
    """Ids and float32 representations of the successfully extracted samples under ``path``.

    ``path`` is a shard directory or an extraction directory of ``shard-*``
    subdirectories. Rows come in dataset order; failed samples are left out.
    """
    ids: list[Any] = []
    blocks: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    for shard in shard_dirs(path):
        rows, matrix = open_shard(shard)
        ok = (rows["status"] == "ok").to_numpy()
        indices.append(rows["index"].to_numpy()[ok])
        ids.extend(decode_id(x) for x in rows["id"].to_numpy()[ok])
        blocks.append(np.asarray(matrix[ok], dtype=np.float32))
    order = np.argsort(np.concatenate(indices), kind="stable")
    matrix = np.concatenate(blocks)[order] if blocks else np.empty((0, 0), np.float32)
    return [ids[i] for i in order], matrix



def export_npz(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> tuple[int, int]:
    """Write the original tool's ``all_representations.npz`` from shard directories.

    ``representations`` is float32 ``[N, d]`` (the successful samples of each path, in
    dataset order, paths in the order given); ``sample_ids`` holds the ids as strings
    (``str(id)``), as the original tool writes them (its ``cur.py`` calls
    ``.isdigit()`` on them). Written atomically. Returns ``(N, d)``.
    """
    dataset_fingerprint([shard for path in paths for shard in shard_dirs(path)])
    ids: list[Any] = []
    blocks: list[np.ndarray] = []
    for path in paths:
        path_ids, matrix = load(path)
        ids += path_ids
        blocks.append(matrix)
    dims = {block.shape[1] for block in blocks if len(block)}
    if len(dims) > 1:
        raise ValueError(f"the shards hold representations of different sizes: {sorted(dims)}")
    matrix = np.concatenate([b for b in blocks if len(b)]) if dims else np.empty((0, 0), np.float32)
    sample_ids = np.asarray([str(i) for i in ids], dtype=str)
    with atomic_write(out, "wb") as handle:
        np.savez(handle, representations=matrix, sample_ids=sample_ids)
    return matrix.shape[0], matrix.shape[1]
