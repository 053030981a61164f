"""The feature store: every sample's representation, kept under a key of its content.

Extraction is the only stage that costs GPU hours, so its results are reused whenever
the content that determines them is unchanged — whatever the shard, the position, the
id or the file the sample comes from.

Keys
----
- The *sample key* (:func:`sample_key`) is a SHA-256 of what the model sees of a
  sample: its normalised messages (roles and contents, as
  :mod:`scalselect.dataset` reads them from any record format) and the byte digests
  of its image files, in order. Not its id, its position, its shard or the chunk size.
  A record that cannot be normalised is keyed by its JSON text.
- The *settings key* (:func:`settings_key`) is a SHA-256 of the model's files
  (:func:`model_digest`), every field of the extraction
  ``Settings`` (through :func:`dataclasses.asdict`, so a new field joins the key by
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

Why this is safe for many concurrent jobs on a shared filesystem (NFS, Lustre): there
is no index file and no database. Each job only creates new files under unique names
(time, host, process, random) by atomic rename. A look-up reads the ``key`` column of
every pack and takes, for each key, the pack whose name sorts first; two jobs that
computed the same sample at the same time both leave a pack, and either copy is right.
Memory of a look-up is the wanted keys plus one pack's key column at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from huggingface_hub import snapshot_download

from scalselect.dataset import resolve_image
from scalselect.errors import UserError
from scalselect.io import atomic_write, write_json

if TYPE_CHECKING:
    from scalselect.extraction import ShardInput

DEFAULT_CACHE_DIR = "results/.cache/extract"
# Bump when a change of this package changes the numbers a stored row holds.
STORE_FORMAT = 2
FEATURES_DIR = "features"
SETTINGS_FILE = "settings.json"
PACKS_DIR = "packs"
PACK_COLUMNS = ("key", "status", "detail", "n_vision", "n_kept", "seq_len", "truncated")
PACK_TYPES = {"key": "str", "status": "str", "detail": "str", "n_vision": "int64",
              "n_kept": "int64", "seq_len": "int64", "truncated": "bool"}
_HASH_BLOCK = 1 << 20
# Threads reading pack key columns (I/O bound on a network filesystem; pyarrow frees the GIL).
_LOOKUP_THREADS = 8


def sample_key(sample: Any, record: Any, image_keys: Sequence[str]) -> str:
    """The store key of one sample: a digest of what determines its representation.

    Parameters
    ----------
    sample : scalselect.dataset.Sample or None
        The normalised record; ``None`` when it cannot be normalised.
    record : object
        The record as parsed; only used when ``sample`` is ``None``.
    image_keys : sequence of str
        Digests of the sample's image files, in the sample's image order.

    Examples
    --------
    >>> from scalselect.dataset import Message, Sample
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

    ``settings`` is the extraction ``Settings`` dataclass; ``model_key`` the digest of
    the model's files.
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


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


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
    modification time, so multi-gigabyte weights are read once, not on every job.
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
            with atomic_write(memo) as handle:
                handle.write(value + "\n")
        digest.update(f"{relative.as_posix()}\0{value}\n".encode())
    return digest.hexdigest()


def shard_keys(shard: ShardInput, records: Sequence[Any], image_root: str) -> list[str]:
    """The store key of every sample of a shard (image files hashed on threads)."""
    paths = [resolve_image(image_root, p) for s in shard.samples if s for p in s.images]
    digests = iter(image_digests(paths))
    return [sample_key(sample, record, [next(digests) for _ in sample.images] if sample else [])
            for sample, record in zip(shard.samples, records, strict=True)]


# ---------------------------------------------------------------------------------------
# Packs


def _pack_name() -> str:
    # Sorts by creation time; unique across hosts, processes and calls.
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:16] or "host"
    return f"{time.time_ns():020d}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a stored sample is: its pack and row in that pack."""

    pack: str
    row: int


class FeatureStore:
    """The packs of one settings key under a cache directory (see the module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike, key: str) -> None:
        self.key = key
        self.path = Path(cache_dir) / FEATURES_DIR / key
        self.packs = self.path / PACKS_DIR

    def describe(self, description: dict[str, Any]) -> None:
        """Write ``settings.json`` once (every job of the key writes the same content)."""
        if not (self.path / SETTINGS_FILE).exists():
            write_json(self.path / SETTINGS_FILE, description)

    def pack_names(self) -> list[str]:
        """Names of the complete packs, in look-up order (first wins)."""
        if not self.packs.is_dir():
            return []
        return sorted(p.name.removesuffix(".parquet") for p in self.packs.iterdir()
                      if p.suffix == ".parquet" and not p.name.startswith("."))

    def _pack_keys(self, name: str) -> list[str]:
        import pyarrow.parquet as pq

        return pq.read_table(self.packs / f"{name}.parquet", columns=["key"]).column(0).to_pylist()

    def lookup(self, keys: Iterable[str], skip: Iterable[str] = ()) -> tuple[dict[str, Location], list[str]]:
        """Find ``keys`` in the store.

        Returns the locations of the keys found (first pack in name order wins) and the
        names of the packs read; packs named in ``skip`` are not read again (a second
        look-up after computing reads only the new packs).
        """
        wanted = set(keys)
        skipped = set(skip)
        names = [n for n in self.pack_names() if n not in skipped]
        found: dict[str, Location] = {}
        with ThreadPoolExecutor(max_workers=_LOOKUP_THREADS) as pool:
            for name, pack_keys in zip(names, pool.map(self._pack_keys, names), strict=True):
                for row, key in enumerate(pack_keys):
                    if key in wanted and key not in found:
                        found[key] = Location(name, row)
        return found, names

    def write_pack(self, table: pd.DataFrame, matrix: np.ndarray) -> str:
        """Store one pack (matrix first, table last) under a new unique name; return it."""
        if list(table.columns) != list(PACK_COLUMNS) or len(table) != len(matrix):
            raise ValueError(f"a pack needs columns {PACK_COLUMNS} and one matrix row per row")
        name = _pack_name()
        with atomic_write(self.packs / f"{name}.npy", "wb") as handle:
            np.save(handle, np.ascontiguousarray(matrix, dtype=np.float32))
        with atomic_write(self.packs / f"{name}.parquet", "wb") as handle:
            table.astype(PACK_TYPES).to_parquet(handle, index=False)
        return name

    def read_pack(self, name: str) -> tuple[pd.DataFrame, np.ndarray]:
        """The table and the memory-mapped matrix of a pack."""
        return (pd.read_parquet(self.packs / f"{name}.parquet"),
                np.load(self.packs / f"{name}.npy", mmap_mode="r"))


# ---------------------------------------------------------------------------------------
# Cache management: `python -m scalselect cache info|prune`


def settings_dirs(cache_dir: str | os.PathLike) -> list[Path]:
    """The settings-key folders of a cache directory."""
    root = Path(cache_dir) / FEATURES_DIR
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def store_info(cache_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Per settings key: model, settings, packs, entries (rows), distinct samples, bytes."""
    out = []
    for folder in settings_dirs(cache_dir):
        store = FeatureStore(cache_dir, folder.name)
        try:
            description = json.loads((folder / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            description = {}
        names = store.pack_names()
        distinct: set[str] = set()
        entries = 0
        for name in names:
            keys = store._pack_keys(name)
            entries += len(keys)
            distinct.update(keys)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        out.append({
            "key": folder.name, "model_path": description.get("model_path", "?"),
            "settings": description.get("settings", {}), "packs": len(names),
            "entries": entries, "samples": len(distinct), "bytes": size,
            "dim": int(np.load(store.packs / f"{names[0]}.npy", mmap_mode="r").shape[1])
            if names else 0,
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


def unreferenced(cache_dir: str | os.PathLike, results_dir: str | os.PathLike) -> list[Path]:
    """Files of the store that no complete shard under ``results_dir`` references:
    whole settings folders nobody uses, and packs (with leftovers of killed writes)."""
    refs = referenced_packs(results_dir)
    drop: list[Path] = []
    for folder in settings_dirs(cache_dir):
        used = refs.get(folder.name)
        if not used:
            drop.append(folder)
            continue
        packs = folder / PACKS_DIR
        for path in sorted(packs.iterdir()) if packs.is_dir() else []:
            stem = path.name.split(".")[0] if not path.name.startswith(".") else ""
            if stem not in used:
                drop.append(path)
    return drop
