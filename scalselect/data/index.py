"""The offset index of a dataset file: where every record starts, found once.

Later jobs seek to their records with it instead of parsing the ones before them
(:func:`scalselect.data.readers.write_index` makes one by reading the file;
:class:`scalselect.data.writers.RecordWriter` as it writes one). Offsets are spilled to
a temporary file as they come and memory-mapped when read, so an index of any size is
written and used in bounded memory. :func:`shard_range` gives a job's records.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalselect import locations
from scalselect.data.records import DatasetError, unreadable
from scalselect.io import atomic_write


@dataclass(frozen=True)
class DatasetIndex:
    """Where every record of a dataset file starts, found once (:func:`build_index`) so
    that later jobs seek to their records instead of parsing the ones before them.

    ``offsets[i]`` is the byte offset of record ``i`` (JSON, JSON Lines; empty for
    parquet, whose rows are found by number); ``sha256`` and ``size`` identify the
    file's content; ``layout`` is ``"array"`` or ``"lines"``.
    """

    count: int
    sha256: str
    size: int
    layout: str
    offsets: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetIndex:
        """Read an index written by :func:`write_index`; the offsets are memory-mapped (a job
        reads the few it needs, not 8 bytes for every record of the dataset)."""
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
            offsets = _npz_memmap(path, "offsets")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise DatasetError(f"cannot read dataset index {path}: {error}") from None
        return cls(meta["count"], meta["sha256"], meta["size"], meta["layout"], offsets)

    def check(self, path: str | os.PathLike) -> None:
        """Raise ``DatasetError`` when ``path`` no longer has the indexed size."""
        try:
            size = locations.size(path)
        except OSError as error:
            raise unreadable(path, error) from None
        if size != self.size:
            raise DatasetError(
                f"{path} changed since it was indexed ({self.size} bytes then, {size} now)"
            )


# Offsets moved at a time when an index is written (8 MiB).
OFFSETS_CHUNK = 1 << 20


def write_index_file(
    path: str | os.PathLike, count: int, sha256: str, size: int, layout: str,
    num_offsets: int, chunks: Iterable[bytes],
) -> None:
    """Write a :class:`DatasetIndex` file atomically, its offsets (``num_offsets``
    little-endian int64, in ``chunks``) streamed: an ``.npz`` as ``np.savez`` writes it,
    without holding the offsets."""
    meta = io.BytesIO()
    np.lib.format.write_array(meta, np.array(json.dumps(
        {"count": count, "sha256": sha256, "size": size, "layout": layout})))
    header = {"descr": "<i8", "fortran_order": False, "shape": (num_offsets,)}
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
        with archive.open("offsets.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for chunk in chunks:
                member.write(chunk)
        # A fixed time stamp (the offsets' member has none either): the same index, the
        # same bytes.
        archive.writestr(zipfile.ZipInfo("meta.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                         meta.getvalue())


def _npz_memmap(path: str | os.PathLike, name: str) -> np.ndarray:
    """Array ``name`` of an ``.npz`` file (``np.savez`` stores members uncompressed) as
    a read-only memory map of its bytes in the file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{name} is compressed")
        with archive.open(info) as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(member)
            header = member.tell()
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        # The local file header: 30 bytes, then the name and the extra field.
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(
            local[28:30], "little"
        )
    if not shape[0]:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + header, shape=shape,
                     order="F" if fortran else "C")


class OffsetSpill:
    """Byte offsets appended one by one and moved to ``handle`` (a temporary file)
    every :data:`OFFSETS_CHUNK`, so that an index is written in bounded memory."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._held = array("q")
        self.count = 0

    def append(self, offset: int) -> None:
        self._held.append(offset)
        self.count += 1
        if len(self._held) == OFFSETS_CHUNK:
            self._handle.write(self._held.tobytes())
            del self._held[:]

    def chunks(self) -> Iterator[bytes]:
        """Every offset so far, as little-endian int64 bytes, in order."""
        self._handle.write(self._held.tobytes())
        del self._held[:]
        self._handle.seek(0)
        return iter(lambda: self._handle.read(8 * OFFSETS_CHUNK), b"")


# A job's records: light enough for the data stages (extraction imports torch).
def shard_range(num_samples: int, shard: int, num_shards: int) -> range:
    """Dataset indices of shard ``shard`` of ``num_shards``: contiguous, sizes within one.

    Examples
    --------
    >>> [list(shard_range(5, i, 2)) for i in range(2)]
    [[0, 1], [2, 3, 4]]
    >>> shard_range(2, 2, 3)
    range(1, 2)
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards} does not exist")
    return range(shard * num_samples // num_shards, (shard + 1) * num_samples // num_shards)

