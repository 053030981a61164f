"""The feature store: every sample's representation, kept under a key of its content.

Extraction is the only stage that costs GPU hours, so its results are reused whenever
the content that determines them is unchanged — whatever the shard, the position, the
id or the file the sample comes from.

Keys
----
- The *sample key* (:func:`sample_key`) is a SHA-256 of what the model sees of a
  sample: its normalised messages (roles and contents, as
  :mod:`scalselect.data.records` reads them from any record format) and the byte digests
  of its image files, in order. Not its id, its position, its shard or the chunk size.
  A record that cannot be normalised is keyed by its JSON text.
- The *settings key* (:func:`settings_key`) is a SHA-256 of the model's files
  (:func:`model_digest`), every field of the extraction
  ``ExtractSettings`` (through :func:`dataclasses.asdict`, so a new field joins the key by
  itself), the torch and transformers versions (they may round differently) and
  :data:`STORE_FORMAT`.

Layout (``<cache_dir>/features/<settings key>/``)
-----------------------------------------------
- ``settings.json``: what the key stands for (model, settings, versions), for
  ``python -m scalselect cache info``.
- ``packs/<name>.npy`` + ``packs/<name>.parquet``: one *pack* per finished chunk of an
  extract job, never modified after it is written. The ``.npy`` is the float32 matrix
  (zero rows for failures), the ``.parquet`` the table (:data:`PACK_COLUMNS`), one row
  per matrix row. The table is renamed into place last: a pack exists once its table
  does. Failed samples are stored too, with their reason, so a rerun does not retry a
  corrupt image (unless its bytes change, which changes the key).
- ``index/``: compacted key indexes (:mod:`scalselect.extract.store_index`), written by
  ``python -m scalselect cache compact`` and by extract jobs that find many packs no
  index covers; a look-up reads the newest sound index and only the packs it does not
  cover, so its cost does not grow with the packs other jobs wrote.
- ``damaged/``: what ``python -m scalselect cache verify --fix`` moved aside.

Why this is safe for many concurrent jobs on a shared filesystem (NFS, Lustre): there
is no database and no file is ever modified. Each job only creates new files under
unique names (time, host, process, random) by atomic rename. For each key the pack
whose name sorts first wins, whether the key was found through an index or by reading
the pack's key column; two jobs that computed the same sample at the same time both
leave a pack, and either copy is right. Memory of a look-up is the wanted keys plus one
pack's key column at a time (an index is memory-mapped).

Damage
------
A pack records, in its table's parquet metadata, its row count, the matrix file's size
and a CRC-32 of the matrix header and of every row; its parquet pages carry checksums.
A look-up checks the rows it is about to use (and the table) before anything is
assembled: a truncated or corrupt file, a table whose rows disagree with its matrix, an
unreadable file or a foreign file named like a table is reported once, naming the file,
and its samples count as not stored (they are computed again; results do not change).
Packs written before checksums were recorded (this store format, without the metadata)
keep working: their sizes and row counts are checked, not their bytes. A damaged index
is ignored and the packs it covers are read instead.

Several cache directories: look-ups search them all; new packs go to the first one that
can be written (a colleague's read-only store can be listed after one's own). A full
disk stops the job with a message naming the store and the space a pack needs; nothing
partial is left behind, and a rerun reuses every pack stored before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalselect.data.records import ShardInput, resolve_image
from scalselect.errors import UserError
from scalselect.extract.store_index import (
    INDEX_DIR,
    IndexDamaged,
    KeyIndex,
    check_all,
    index_files,
    index_names,
    key_bytes,
    load_index,
    search,
    write_index,
)
from scalselect.io import atomic_write, file_digest, kill_point, write_json

log = logging.getLogger(__name__)

# Bump when a change of this package changes the numbers a stored row holds.
STORE_FORMAT = 2
FEATURES_DIR = "features"
SETTINGS_FILE = "settings.json"
PACKS_DIR = "packs"
DAMAGED_DIR = "damaged"
# The key of a pack table's parquet metadata that records its sizes and checksums.
PACK_META = b"scalselect.pack"
PACK_COLUMNS = ("key", "status", "detail", "n_vision", "n_kept", "seq_len", "truncated")
PACK_TYPES = {"key": "str", "status": "str", "detail": "str", "n_vision": "int64",
              "n_kept": "int64", "seq_len": "int64", "truncated": "bool"}
# Threads reading pack key columns (I/O bound on a network filesystem; pyarrow frees the GIL).
_LOOKUP_THREADS = 8
# An extract job indexes its store when it finds this many packs no index covers.
COMPACT_AFTER = 256
# A compaction lock older than this was left by a killed process.
LOCK_STALE_S = 3600


def sample_key(sample: Any, record: Any, image_keys: Sequence[str]) -> str:
    """The store key of one sample: a digest of what determines its representation.

    Parameters
    ----------
    sample : scalselect.data.records.Sample or None
        The normalised record; ``None`` when it cannot be normalised.
    record : object
        The record as parsed; only used when ``sample`` is ``None``.
    image_keys : sequence of str
        Digests of the sample's image files, in the sample's image order.

    Examples
    --------
    >>> from scalselect.data.records import Message, Sample
    >>> a = Sample(0, 1, (Message("user", "<image>\\nHi"),), ("a.jpg",), "x")
    >>> b = Sample(9, "other", (Message("user", "<image>\\nHi"),), ("b/c.jpg",), "y")
    >>> sample_key(a, None, ["d1"]) == sample_key(b, None, ["d1"])
    True
    >>> sample_key(a, None, ["d1"]) == sample_key(a, None, ["d2"])
    False
    """
    if sample is None:
        content: Any = {"record": record}
    else:
        content = {"messages": [[m.role, m.content] for m in sample.messages],
                   "images": list(image_keys)}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def settings_key(model_key: str, settings: Any) -> tuple[str, dict[str, Any]]:
    """The settings key and the description it digests.

    ``settings`` is the extraction's :class:`~scalselect.settings.ExtractSettings`;
    ``model_key`` the digest of the model's files.
    """
    description = {
        "store_format": STORE_FORMAT,
        "model": model_key,
        "settings": dataclasses.asdict(settings),
        "torch": version("torch"),
        "transformers": version("transformers"),
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), description


# ---------------------------------------------------------------------------------------
# The parts of the keys: digests of files, images and models; the keys of a shard


def _image_digest(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as error:
        # An unreadable image is a recorded failure; its key part names the file and why.
        return f"unreadable:{path}:{type(error).__name__}:{error.errno}"


def image_digests(paths: Sequence[Path], threads: int = 8) -> list[str]:
    """Digests of image files, in order, hashed on ``threads`` threads (hashlib releases
    the GIL); a file that cannot be read gets a marker naming the error instead."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(_image_digest, paths))


def resolve_model_dir(model: str) -> Path:
    """The local directory of a model: ``model`` itself, or its Hugging Face cache snapshot.

    Raises ``UserError`` when the model is neither a directory nor in the local cache.
    """
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import (
        snapshot_download,  # slow to import; `cache` commands never need it
    )

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any lookup failure means "not available"
        raise UserError(
            f"model {model!r} is not a local directory nor in the local Hugging Face cache"
            f" ({type(error).__name__}); download it first"
        ) from None


def model_digest(model_dir: Path, memo_dir: Path) -> str:
    """Digest of every file of a model directory (names and bytes; dot-files skipped).

    Each file's digest is memoised in ``memo_dir`` under its real path, size and
    modification time, so multi-gigabyte weights are read once, not on every job (when
    ``memo_dir`` cannot be written, as in a read-only store, nothing is memoised).
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        stat = path.stat()
        stamp = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        memo = memo_dir / hashlib.sha256(stamp.encode()).hexdigest()
        try:
            value = memo.read_text().strip()
        except FileNotFoundError:
            value = file_digest(path)
            with contextlib.suppress(OSError), atomic_write(memo) as handle:
                handle.write(value + "\n")
        digest.update(f"{relative.as_posix()}\0{value}\n".encode())
    return digest.hexdigest()


def shard_keys(shard: ShardInput, records: Sequence[Any], image_root: str) -> list[str]:
    """The store key of every sample of a shard (image files hashed on threads; an
    embedded image's digest is that of its bytes, as a file holding them would get)."""
    paths = [resolve_image(image_root, p) for s in shard.samples if s
             for n, p in enumerate(s.images) if s.image_bytes(n) is None]
    hashed = iter(image_digests(paths))
    digests = iter([next(hashed) if s.image_bytes(n) is None
                    else hashlib.sha256(s.image_bytes(n)).hexdigest()
                    for s in shard.samples if s for n in range(len(s.images))])
    return [sample_key(sample, record if sample or not _embeds(record) else _keyable(record),
                       [next(digests) for _ in sample.images] if sample else [])
            for sample, record in zip(shard.samples, records, strict=True)]


def _embeds(value: Any) -> bool:
    """Whether a record holds bytes (a malformed parquet record is keyed by its JSON)."""
    if isinstance(value, dict):
        return any(_embeds(v) for v in value.values())
    if isinstance(value, list):
        return any(_embeds(v) for v in value)
    return isinstance(value, bytes)


def _keyable(value: Any) -> Any:
    """The record with each bytes value replaced by its SHA-256 (JSON has no bytes)."""
    if isinstance(value, dict):
        return {k: _keyable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keyable(v) for v in value]
    return {"sha256": hashlib.sha256(value).hexdigest()} if isinstance(value, bytes) else value


# ---------------------------------------------------------------------------------------
# Packs: writing, checking, finding


def new_name() -> str:
    """A new file name: sorts by creation time; unique across hosts, processes and calls."""
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:16] or "host"
    return f"{time.time_ns():020d}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a stored sample is: its pack and row in that pack."""

    pack: str
    row: int


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


def _scan(packs: Path, names: Sequence[str]) -> Iterator[tuple[str, list[str] | None, str | None]]:
    """``(name, keys, problem)`` of each pack, key columns read on threads."""
    def read(name: str) -> tuple[str, list[str] | None, str | None]:
        try:
            return name, _pack_keys(packs, name), None
        except Exception as error:  # noqa: BLE001 - any unreadable table is a damaged pack
            return name, None, f"cannot read its table ({type(error).__name__}: {error})"

    with ThreadPoolExecutor(max_workers=_LOOKUP_THREADS) as pool:
        yield from pool.map(read, names)


def pack_names(packs: Path) -> list[str]:
    """Names of the complete packs of a ``packs`` folder, in look-up order (first wins)."""
    if not packs.is_dir():
        return []
    return sorted(p.name.removesuffix(".parquet") for p in packs.iterdir()
                  if p.suffix == ".parquet" and not p.name.startswith("."))


@dataclasses.dataclass
class Lookup:
    """What a look-up found: ``found`` key -> location (first pack in name order among the
    sound ones); ``scanned`` the packs it considered (a later look-up may skip them);
    ``damaged`` pack file -> problem; ``lost`` the keys held only by damaged packs."""

    found: dict[str, Location]
    scanned: list[str]
    damaged: dict[str, str]
    lost: set[str]


_WRITE_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class FeatureStore:
    """The packs of one settings key in one or more cache directories (see the module
    docstring). Look-ups search them all; new packs go to the first one that can be
    written, else to ``scratch`` (a job's private folder, searched too)."""

    def __init__(self, cache_dirs: str | os.PathLike | Sequence[str | os.PathLike], key: str,
                 scratch: str | os.PathLike | None = None) -> None:
        if isinstance(cache_dirs, (str, os.PathLike)):
            cache_dirs = [cache_dirs]
        self.key = key
        self.roots = [Path(d) / FEATURES_DIR / key for d in cache_dirs]
        self.scratch = Path(scratch) if scratch is not None else None
        if self.scratch is not None:
            self.roots.append(self.scratch)
        self.path = self.roots[0]
        self._home: dict[str, Path] = {}
        self._readonly: set[Path] = set()
        self._tables: dict[str, pd.DataFrame] = {}
        self._warned: set[str] = set()

    def describe(self, description: dict[str, Any]) -> None:
        """Write ``settings.json`` where it is missing (every job of the key writes the
        same content); a store that cannot be written is left as it is."""
        for root in self.roots:
            if root != self.scratch and not (root / SETTINGS_FILE).exists():
                with contextlib.suppress(OSError):
                    write_json(root / SETTINGS_FILE, description)

    def pack_names(self) -> list[str]:
        """Names of the complete packs of every directory, in look-up order (first wins)."""
        self._home = {}
        for root in reversed(self.roots):  # a name in two directories: the first one's
            for name in pack_names(root / PACKS_DIR):
                self._home[name] = root / PACKS_DIR
        return sorted(self._home)

    def _warn(self, path: Path, problem: str, consequence: str) -> None:
        if str(path) not in self._warned:
            self._warned.add(str(path))
            log.warning("damaged %s: %s; %s", path, problem, consequence)

    def _candidates(self, root: Path, wanted: list[str], present: set[str],
                    candidates: dict[str, list[tuple[str, int]]]) -> set[str]:
        """Add the entries of the newest sound index of ``root`` to ``candidates``; return
        the packs it covers."""
        index_dir = root / INDEX_DIR
        for name in index_names(index_dir):
            try:
                index = load_index(index_dir, name)
                hits = search(index, key_bytes(wanted))
            except IndexDamaged as problem:
                self._warn(index_dir / f"{name}.json", str(problem),
                           "the index is ignored and its packs are read instead")
                continue
            for position, pack, row in hits:
                if pack in present:
                    candidates.setdefault(wanted[position], []).append((pack, row))
            return set(index.packs)
        return set()

    def lookup(self, keys: Iterable[str], skip: Iterable[str] = ()) -> Lookup:
        """Find ``keys`` in the store: in each directory's newest index, and in the packs no
        index covers. For each key the first pack in name order whose rows pass their
        checks wins; a damaged pack is reported once and its samples are not used.
        Packs named in ``skip`` are not considered (a second look-up after computing
        reads only the new packs)."""
        wanted = sorted(set(keys))
        wanted_set = set(wanted)
        skipped = set(skip)
        self.pack_names()
        candidates: dict[str, list[tuple[str, int]]] = {}
        damaged: dict[str, str] = {}
        considered: list[str] = []
        for root in self.roots:
            packs = root / PACKS_DIR
            present = {n for n, home in self._home.items() if home == packs and n not in skipped}
            considered += present
            covered = self._candidates(root, wanted, present, candidates) if wanted else set()
            for name, pack_keys, problem in _scan(packs, sorted(present - covered)):
                if problem is not None:
                    damaged[name] = problem
                    self._warn(packs / f"{name}.parquet", problem, "its samples are computed again")
                    continue
                for row, key in enumerate(pack_keys):
                    if key in wanted_set:
                        candidates.setdefault(key, []).append((name, row))
        for options in candidates.values():
            options.sort()
        found = self._resolve(candidates, damaged)
        return Lookup(found, sorted(considered), damaged,
                      {k for k in candidates if k not in found})

    def _resolve(self, candidates: dict[str, list[tuple[str, int]]],
                 damaged: dict[str, str]) -> dict[str, Location]:
        """For each key the first candidate whose pack passes the check of its rows."""
        checked: dict[str, set[int]] = {}
        while True:
            found = {}
            for key, options in candidates.items():
                for pack, row in options:
                    if pack not in damaged:
                        found[key] = Location(pack, row)
                        break
            todo: dict[str, list[tuple[int, str]]] = {}
            for key, location in found.items():
                if location.row not in checked.get(location.pack, ()):
                    todo.setdefault(location.pack, []).append((location.row, key))
            if not todo:
                return found

            def check(item: tuple[str, list[tuple[int, str]]]) -> PackCheck:
                pack, rows = item
                return check_pack(self._home[pack], pack, [r for r, _ in rows], [k for _, k in rows])

            with ThreadPoolExecutor(max_workers=_LOOKUP_THREADS) as pool:
                for (pack, rows), result in zip(todo.items(), pool.map(check, todo.items()), strict=True):
                    if result.problem is not None:
                        damaged[pack] = result.problem
                        self._warn(self._home[pack] / f"{pack}.npy", result.problem,
                                   "its samples are computed again")
                    else:
                        self._tables[pack] = result.table
                        checked.setdefault(pack, set()).update(r for r, _ in rows)

    def write_pack(self, table: pd.DataFrame, matrix: np.ndarray) -> str:
        """Store one pack in the first directory that can be written; return its name.

        A directory that refuses the write (read-only, no permission) is reported once
        and not tried again; a full disk stops the job with a ``UserError`` naming the
        store and the space the pack needs.
        """
        for root in self.roots:
            if root in self._readonly:
                continue
            try:
                name = write_pack_files(root / PACKS_DIR, table, matrix)
            except OSError as error:
                if error.errno in _NO_SPACE:
                    raise UserError(self._no_space(root, table, matrix, error)) from None
                if error.errno not in _WRITE_REFUSED:
                    raise
                self._readonly.add(root)
                log.warning("%s", self._refused(root, error))
                continue
            self._home[name] = root / PACKS_DIR
            return name
        raise UserError(f"no feature store can be written: {', '.join(map(str, self.roots))}")

    def _refused(self, root: Path, error: OSError) -> str:
        rest = [r for r in self.roots if r not in self._readonly]
        where = (f"new packs go to {rest[0]}" if rest and rest[0] != self.scratch else
                 f"the samples this job computes are kept in {self.scratch} until its shard is"
                 " written, not stored for later runs (list a writable store first:"
                 " extract.cache_dirs: [mine, shared])")
        return (f"the feature store {root} cannot be written ({error.strerror}): its packs"
                f" are reused; {where}")

    @staticmethod
    def _no_space(root: Path, table: pd.DataFrame, matrix: np.ndarray, error: OSError) -> str:
        need = matrix.size * 4 + len(table) * 200
        free = shutil.disk_usage(root).free if root.exists() else 0
        return (f"the feature store {root} is full ({error.strerror}): a pack of"
                f" {len(table)} samples needs about {need / 2**20:.1f} MiB"
                f" ({matrix.shape[1] * 4} bytes a sample), {free / 2**20:.1f} MiB are free."
                " Free space (python -m scalselect cache prune) or list another store first"
                " in extract.cache_dirs, then rerun: the packs already stored are reused")

    def read_pack(self, name: str) -> tuple[pd.DataFrame, np.ndarray]:
        """The table and the memory-mapped matrix of a pack (the table as checked by the
        look-up that found it, when one did)."""
        if name not in self._home:
            self.pack_names()
        packs = self._home[name]
        table = self._tables.get(name)
        if table is None:
            table = pd.read_parquet(packs / f"{name}.parquet")
        return table, np.load(packs / f"{name}.npy", mmap_mode="r")

    def discard_scratch(self) -> None:
        """Remove the job's private folder (once its shard is written)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def compact(self, min_new: int = 1) -> str | None:
        """Index the packs of the first writable directory that no index covers, when
        there are at least ``min_new``; see :func:`compact_folder`."""
        for root in self.roots:
            if root in self._readonly or root == self.scratch:
                continue
            try:
                return compact_folder(root, min_new)[0]
            except OSError as error:
                if error.errno not in _WRITE_REFUSED:
                    raise
                self._readonly.add(root)
        return None


# ---------------------------------------------------------------------------------------
# The index: `python -m scalselect cache compact`, and extract jobs


@contextlib.contextmanager
def _compaction_lock(index_dir: Path) -> Iterator[bool]:
    """Hold ``index/.compact.lock`` (created exclusively); yields False when another
    process holds it. A lock older than :data:`LOCK_STALE_S` (a killed compaction) is
    taken over."""
    index_dir.mkdir(parents=True, exist_ok=True)
    lock = index_dir / ".compact.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime > LOCK_STALE_S:
                    lock.unlink()
                    continue
            yield False
            return
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.close(fd)
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        return
    yield False


def _sound_index(index_dir: Path) -> KeyIndex | None:
    """The newest index whose every entry passes its check (damaged ones are reported)."""
    for name in index_names(index_dir):
        try:
            index = load_index(index_dir, name)
            check_all(index)
            return index
        except IndexDamaged as problem:
            log.warning("damaged index %s: %s; not used", index_dir / f"{name}.json", problem)
    return None


def compact_folder(folder: Path, min_new: int = 1) -> tuple[str | None, int]:
    """Write a new index of a settings folder: its newest sound index merged with the
    packs it does not cover, when there are at least ``min_new`` such packs and no other
    process is compacting. Indexes older than the one merged are then removed (a job
    may still be reading the one merged).

    Returns the new index's name (``None`` when nothing was written) and its entries.
    Damaged packs are left out, so look-ups keep reporting them.
    """
    index_dir = folder / INDEX_DIR
    packs = folder / PACKS_DIR
    present = pack_names(packs)
    if len(present) < min_new:
        return None, 0
    with _compaction_lock(index_dir) as mine:
        if not mine:
            return None, 0
        base = _sound_index(index_dir)
        covered = set(base.packs) if base else set()
        new = [name for name in present if name not in covered]
        if not new or len(new) < min_new:
            return None, 0
        additions = []
        for name, keys, problem in _scan(packs, new):
            if problem is None:
                additions.append((name, keys))
            else:
                log.warning("damaged %s: %s; not indexed", packs / f"{name}.parquet", problem)
        name = new_name()
        write_index(index_dir, name, base, additions)
        for old in index_names(index_dir):
            if old < (base.name if base else name):
                for path in index_files(index_dir, old):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        return name, (len(base.keys) if base else 0) + sum(len(k) for _, k in additions)


# ---------------------------------------------------------------------------------------
# Cache management: `python -m scalselect cache info|prune|verify|compact`


def settings_dirs(cache_dir: str | os.PathLike) -> list[Path]:
    """The settings-key folders of a cache directory."""
    root = Path(cache_dir) / FEATURES_DIR
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def store_info(cache_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Per settings key: model, settings, packs, entries (rows), distinct samples, bytes,
    and the packs whose table cannot be read (``damaged``; see ``cache verify``)."""
    out = []
    for folder in settings_dirs(cache_dir):
        try:
            description = json.loads((folder / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            description = {}
        names = pack_names(folder / PACKS_DIR)
        distinct: set[str] = set()
        entries = damaged = 0
        dim = 0
        for name, keys, problem in _scan(folder / PACKS_DIR, names):
            if problem is not None:
                damaged += 1
                continue
            entries += len(keys)
            distinct.update(keys)
            if not dim:
                with contextlib.suppress(OSError, ValueError):
                    dim = int(np.load(folder / PACKS_DIR / f"{name}.npy", mmap_mode="r").shape[1])
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        out.append({
            "key": folder.name, "model_path": description.get("model_path", "?"),
            "settings": description.get("settings", {}), "packs": len(names),
            "entries": entries, "samples": len(distinct), "bytes": size, "dim": dim,
            "damaged": damaged,
        })
    return out


def referenced_packs(results_dir: str | os.PathLike) -> dict[str, set[str]]:
    """Settings key -> pack names referenced by the complete shards under
    ``<results_dir>/*/extract/shard-*/manifest.json``."""
    refs: dict[str, set[str]] = {}
    for manifest in sorted(Path(results_dir).glob("*/extract/shard-*/manifest.json")):
        store = json.loads(manifest.read_text()).get("store")
        if store:
            refs.setdefault(store["settings_key"], set()).update(store["packs"])
    return refs


def _pack_files_first(paths: Iterable[Path]) -> list[Path]:
    # A pack stops existing when its table goes: tables first, then everything else.
    paths = list(paths)
    return [p for p in paths if p.suffix == ".parquet"] + [p for p in paths if p.suffix != ".parquet"]


def unreferenced(cache_dir: str | os.PathLike, results_dir: str | os.PathLike) -> list[Path]:
    """Files of the store that no complete shard under ``results_dir`` references, in a
    safe order to delete: whole settings folders nobody uses; in the others, the indexes
    (they cover packs about to go; ``cache compact`` or the next jobs rebuild them), then
    the unused packs' tables, then their matrices and leftovers of killed writes.
    The ``damaged/`` folder (``cache verify --fix``) of a folder still used is left to
    the user."""
    refs = referenced_packs(results_dir)
    drop: list[Path] = []
    for folder in settings_dirs(cache_dir):
        used = refs.get(folder.name)
        if not used:
            drop.append(folder)
            continue
        packs = folder / PACKS_DIR
        stale = [p for p in (sorted(packs.iterdir()) if packs.is_dir() else [])
                 if (p.name.split(".")[0] if not p.name.startswith(".") else "") not in used]
        if stale:
            index_dir = folder / INDEX_DIR
            drop += [p for name in index_names(index_dir) for p in index_files(index_dir, name)]
            drop += _pack_files_first(stale)
    return drop


def remove(paths: Sequence[Path]) -> None:
    """Delete ``paths`` in the order given; a settings folder loses its indexes and pack
    tables first, so a process killed at any point leaves only complete packs."""
    for path in paths:
        if path.is_dir():
            index_dir = path / INDEX_DIR
            for name in index_names(index_dir):
                for file in index_files(index_dir, name):
                    with contextlib.suppress(FileNotFoundError):
                        file.unlink()
                    kill_point("SCALSELECT_TEST_KILL_AFTER_DELETES")
            for table in sorted((path / PACKS_DIR).glob("*.parquet")):
                table.unlink()
                kill_point("SCALSELECT_TEST_KILL_AFTER_DELETES")
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        kill_point("SCALSELECT_TEST_KILL_AFTER_DELETES")


@dataclasses.dataclass(frozen=True)
class Damage:
    """A damaged file of a store (``files``: the files to move aside, table first)."""

    folder: Path
    files: list[Path]
    problem: str


def verify_store(cache_dir: str | os.PathLike) -> tuple[list[Damage], dict[str, int]]:
    """Check every pack (all its rows) and every index of a cache directory.

    Returns the damaged packs, indexes and foreign files of ``packs/``, and counts:
    ``packs``, ``legacy`` (packs without recorded checksums: sizes checked only),
    ``indexes``.
    """
    damage: list[Damage] = []
    counts = {"packs": 0, "legacy": 0, "indexes": 0}
    for folder in settings_dirs(cache_dir):
        packs = folder / PACKS_DIR
        names = pack_names(packs)
        counts["packs"] += len(names)
        with ThreadPoolExecutor(max_workers=_LOOKUP_THREADS) as pool:
            results = pool.map(lambda name: check_pack(packs, name), names)
            for name, result in zip(names, results, strict=True):
                counts["legacy"] += result.legacy
                if result.problem is not None:
                    damage.append(Damage(folder, [packs / f"{name}.parquet", packs / f"{name}.npy"],
                                         result.problem))
        for path in sorted(packs.iterdir()) if packs.is_dir() else []:
            if not path.name.startswith(".") and path.suffix not in (".parquet", ".npy"):
                damage.append(Damage(folder, [path], "not a file of the store"))
        index_dir = folder / INDEX_DIR
        for name in index_names(index_dir):
            counts["indexes"] += 1
            try:
                check_all(load_index(index_dir, name))
            except IndexDamaged as problem:
                damage.append(Damage(folder, index_files(index_dir, name), str(problem)))
    return damage, counts


def move_aside(damage: Sequence[Damage]) -> list[Path]:
    """Move damaged files into their settings folder's ``damaged/`` (tables first, so no
    look-up sees half a pack); nothing is deleted. Returns the new paths."""
    moved = []
    for item in damage:
        target = item.folder / DAMAGED_DIR
        target.mkdir(exist_ok=True)
        for path in item.files:
            if path.exists():
                os.replace(path, target / path.name)
                moved.append(target / path.name)
    return moved
