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
  extract job, never modified after it is written (:mod:`scalselect.extract.packs`).
  The ``.npy`` is the float32 matrix (zero rows for failures), the ``.parquet`` the
  table, one row per matrix row. The table is renamed into place last: a pack exists
  once its table does. Failed samples are stored too, with their reason, so a rerun
  does not retry a corrupt image (unless its bytes change, which changes the key).
- ``index/``: compacted key indexes (:mod:`scalselect.extract.store_index`), written by
  ``python -m scalselect cache compact`` and by extract jobs that find many packs no
  index covers; a look-up reads the newest sound index and only the packs it does not
  cover, so its cost does not grow with the packs other jobs wrote.
- ``damaged/``: what ``python -m scalselect cache verify --fix`` moved aside
  (:mod:`scalselect.extract.maintenance`).

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
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalselect.data.records import ShardInput, resolve_image
from scalselect.errors import UserError
from scalselect.extract.packs import (
    LOOKUP_THREADS,
    PACKS_DIR,
    PackCheck,
    check_pack,
    new_name,
    pack_names,
    scan_packs,
    write_pack_files,
)
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
from scalselect.io import atomic_write, file_digest, write_json
from scalselect.locations import FetchFailure, fetch_all, is_url, redact
from scalselect.progress import Progress

log = logging.getLogger(__name__)

# Bump when a change of this package changes the numbers a stored row holds.
STORE_FORMAT = 2
FEATURES_DIR = "features"
SETTINGS_FILE = "settings.json"
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


def spooled(spool: Path, url: str) -> Path:
    """Where :func:`image_digests` keeps the fetched bytes of the image at ``url``."""
    return spool / hashlib.sha256(url.encode()).hexdigest()


def image_digests(paths: Sequence[str | Path], threads: int = 8,
                  spool: Path | None = None, progress: Progress | None = None) -> list[str]:
    """Digests of image files or objects, in order; one that cannot be read gets a marker
    naming it and why instead.

    Local files are hashed on ``threads`` threads (hashlib releases the GIL). When any
    is a URL, all are fetched :data:`~scalselect.locations.FETCH_THREADS` at a time, and
    with ``spool`` each fetched object is kept there (:func:`spooled`), so extraction
    decodes it without fetching it again; ``progress`` counts the fetched images.
    """
    if not any(is_url(p) for p in paths):
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            return list(pool.map(_image_digest, paths))
    if spool is not None:
        spool.mkdir(parents=True, exist_ok=True)
    digests = []
    for path, got in zip(paths, fetch_all(paths), strict=True):
        if progress is not None:
            progress.update(1)
        if isinstance(got, FetchFailure):
            why = "missing" if got.missing else "unreachable"
            digests.append(f"unreadable:{redact(path)}:{why}")
            continue
        digests.append(hashlib.sha256(got).hexdigest())
        if spool is not None and is_url(path):
            # Scratch for this job only: renamed into place (a reader never sees half an
            # image) but not synced, which would cost a disk flush per image.
            target = spooled(spool, str(path))
            partial = target.with_suffix(".partial")
            partial.write_bytes(got)
            partial.replace(target)
    return digests


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


def shard_keys(shard: ShardInput, records: Sequence[Any], image_root: str,
               spool: Path | None = None) -> list[str]:
    """The store key of every sample of a shard (image files hashed on threads, objects
    at URLs fetched concurrently and kept in ``spool``, :func:`image_digests`; an
    embedded image's digest is that of its bytes, as a file holding them would get)."""
    paths = [resolve_image(image_root, p) for s in shard.samples if s
             for n, p in enumerate(s.images) if s.image_bytes(n) is None]
    # Fetching from a URL takes a while: its lines say how far the fetch has gone.
    remote = any(is_url(p) for p in paths)
    with Progress(len(paths), "images") if remote else contextlib.nullcontext() as progress:
        hashed = iter(image_digests(paths, spool=spool, progress=progress))
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


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a stored sample is: its pack and row in that pack."""

    pack: str
    row: int


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
            for name, pack_keys, problem in scan_packs(packs, sorted(present - covered)):
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

            with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
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
        for name, keys, problem in scan_packs(packs, new):
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
