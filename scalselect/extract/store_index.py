"""The compacted key index of a feature-store folder: sorted sample keys -> (pack, row).

Without it a look-up reads the key column of every pack of the folder, so its cost grows
with the packs other jobs wrote. An index holds the entries of many packs sorted by key;
a look-up binary-searches the shard's keys in it (memory-mapped, so only the pages it
touches are read) and reads only the packs no index covers.

Files (``<folder>/index/``), immutable, each written under a new name by atomic rename;
an index exists once its ``.json`` does (written last):

- ``<name>.keys.npy``: the sample keys of the entries as 32 raw bytes (``S32``), sorted.
- ``<name>.where.npy``: uint32 ``[entries, 3]``: pack number (into the JSON's ``packs``),
  row in that pack, and the entry's check.
- ``<name>.json``: ``format``, ``entries``, ``packs`` (the packs the index covers) and
  ``packs_sha256`` (a digest of that list).

An index may hold several entries of one key (two jobs stored the same sample); they are
not ordered among themselves: the caller orders candidates by pack name, so the winner
never depends on which index was read. The check of an entry is a weighted sum, modulo
2^32, of its key's eight 32-bit words, its pack number and its row with odd weights, so
that any change of one word (one flipped byte) changes it. A search verifies the entries
it returns and the neighbours of every key searched: the keys were sorted when written,
so verified neighbours prove a key absent. Any failure raises :class:`IndexDamaged`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scalselect.io import write_json

INDEX_DIR = "index"
INDEX_FORMAT = 1
KEY_BYTES = 32
# Odd weights of the check: the key's eight words, the pack number, the row.
_WEIGHTS = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646D,
                     0xFD7046C5, 0xB55A4F09, 0x8CB92BA7, 0xE7037ED1], dtype=np.uint64)
# Entries handled at a time when an index is copied or checked whole (bounds memory).
_BLOCK = 1 << 20


class IndexDamaged(Exception):
    """An index file that is unreadable or whose entries fail their checks."""


@dataclasses.dataclass(frozen=True)
class KeyIndex:
    """One loaded index: its name, the packs it covers and its memory-mapped arrays."""

    name: str
    packs: list[str]
    keys: np.ndarray
    where: np.ndarray


def key_bytes(keys: Sequence[str]) -> np.ndarray:
    """Hex SHA-256 sample keys as an ``S32`` array (the byte order is the hex order).

    Examples
    --------
    >>> key_bytes(["00" * 31 + "ff"])[0][-1]
    255
    """
    return np.frombuffer(b"".join(bytes.fromhex(k) for k in keys), dtype=f"S{KEY_BYTES}").copy()


def entry_checks(keys: np.ndarray, packs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The check of each entry (see the module docstring), as uint32."""
    words = np.ascontiguousarray(keys).view("<u4").reshape(len(keys), KEY_BYTES // 4)
    parts = np.column_stack([words, packs, rows]).astype(np.uint64)
    return ((parts * _WEIGHTS).sum(axis=1, dtype=np.uint64) & 0xFFFFFFFF).astype(np.uint32)


def index_names(index_dir: Path) -> list[str]:
    """The complete indexes of a folder, newest first."""
    if not index_dir.is_dir():
        return []
    return sorted((p.name.removesuffix(".json") for p in index_dir.iterdir()
                   if p.suffix == ".json" and not p.name.startswith(".")), reverse=True)


def index_files(index_dir: Path, name: str) -> list[Path]:
    """An index's files, the JSON first (removing them in this order is safe)."""
    return [index_dir / f"{name}{suffix}" for suffix in (".json", ".keys.npy", ".where.npy")]


def load_index(index_dir: Path, name: str) -> KeyIndex:
    """Open an index (arrays memory-mapped); sizes and the pack list are checked here,
    the entries when they are read. Raises :class:`IndexDamaged`."""
    try:
        description = json.loads((index_dir / f"{name}.json").read_text())
        packs = description["packs"]
        if description["format"] != INDEX_FORMAT:
            raise IndexDamaged(f"format {description['format']} is not {INDEX_FORMAT}")
        if hashlib.sha256("\n".join(packs).encode()).hexdigest() != description["packs_sha256"]:
            raise IndexDamaged("its list of packs does not match its digest")
        keys = np.load(index_dir / f"{name}.keys.npy", mmap_mode="r")
        where = np.load(index_dir / f"{name}.where.npy", mmap_mode="r")
    except IndexDamaged:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IndexDamaged(f"{type(error).__name__}: {error}") from None
    entries = description["entries"]
    if keys.dtype != np.dtype(f"S{KEY_BYTES}") or keys.shape != (entries,):
        raise IndexDamaged(f"the keys are {keys.dtype} {keys.shape}, not {entries} entries")
    if where.dtype != np.uint32 or where.shape != (entries, 3):
        raise IndexDamaged(f"the locations are {where.dtype} {where.shape}, not {entries} entries")
    return KeyIndex(name, packs, keys, where)


def _verified(index: KeyIndex, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys, where = index.keys[positions], np.asarray(index.where[positions])
    bad = entry_checks(keys, where[:, 0], where[:, 1]) != where[:, 2]
    if bad.any() or (where[:, 0] >= len(index.packs)).any():
        raise IndexDamaged(f"entry {int(positions[np.argmax(bad)])} fails its check")
    return keys, where


def search(index: KeyIndex, wanted: np.ndarray) -> list[tuple[int, str, int]]:
    """Every entry of the sorted ``S32`` keys ``wanted``: ``(position in wanted, pack,
    row)``. Raises :class:`IndexDamaged` when an entry read fails its check or the keys
    around a searched key are out of order."""
    n = len(index.keys)
    if not n or not len(wanted):
        return []
    lo = np.searchsorted(index.keys, wanted, "left")
    hi = np.searchsorted(index.keys, wanted, "right")
    spans = hi - lo
    # The matches and the entry on each side of every key searched.
    inside = np.repeat(lo - np.cumsum(spans) + spans, spans) + np.arange(spans.sum())
    positions = np.unique(np.concatenate([lo - 1, hi, inside]).clip(0, n - 1))
    keys, where = _verified(index, positions)

    def key(p: np.ndarray) -> np.ndarray:
        return keys[np.searchsorted(positions, p)]

    before, after = lo > 0, hi < n
    if ((key(lo[before] - 1) >= wanted[before]).any() or (key(hi[after]) <= wanted[after]).any()
            or (key(inside) != np.repeat(wanted, spans)).any()):
        raise IndexDamaged("its keys are out of order")
    owners = np.repeat(np.arange(len(wanted)), spans)
    found = where[np.searchsorted(positions, inside)]
    return [(int(o), index.packs[p], int(r)) for o, p, r in zip(owners, found[:, 0], found[:, 1], strict=True)]


def check_all(index: KeyIndex) -> None:
    """Check every entry and the order of all keys, a block at a time; raises
    :class:`IndexDamaged`."""
    previous = None
    for start in range(0, len(index.keys), _BLOCK):
        stop = min(start + _BLOCK, len(index.keys))
        keys, _ = _verified(index, np.arange(start, stop))
        if (keys[1:] < keys[:-1]).any() or (previous is not None and keys[0] < previous):
            raise IndexDamaged(f"its keys are out of order near entry {start}")
        previous = keys[-1]


def _replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_index(index_dir: Path, name: str, base: KeyIndex | None,
                additions: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Write index ``name``: the entries of ``base`` (checked whole by the caller) and of
    the packs ``additions`` (name, keys in row order), merged in key order.

    The base is copied a block at a time into the memory-mapped output, so memory is the
    new entries plus one block, whatever the size of the index.
    """
    first = len(base.packs) if base else 0
    packs = (base.packs if base else []) + [pack for pack, _ in additions]
    new_keys = key_bytes([k for _, keys in additions for k in keys])
    new_packs = np.repeat(np.arange(first, len(packs), dtype=np.uint32),
                          [len(keys) for _, keys in additions])
    new_rows = np.concatenate([np.arange(len(keys), dtype=np.uint32) for _, keys in additions]
                              or [np.zeros(0, np.uint32)])
    order = np.argsort(new_keys, kind="stable")
    new_keys, new_packs, new_rows = new_keys[order], new_packs[order], new_rows[order]
    n, m = (len(base.keys) if base else 0), len(new_keys)
    # Where each new entry goes: before the base entries of an equal or greater key.
    inserted = np.searchsorted(base.keys, new_keys, "left") if base else np.zeros(m, np.int64)
    index_dir.mkdir(parents=True, exist_ok=True)
    tmps = [index_dir / f".{name}.{part}.{os.getpid()}.tmp" for part in ("keys", "where")]
    try:
        keys = np.lib.format.open_memmap(tmps[0], "w+", np.dtype(f"S{KEY_BYTES}"), (n + m,))
        where = np.lib.format.open_memmap(tmps[1], "w+", np.uint32, (n + m, 3))
        slots = inserted + np.arange(m)
        keys[slots] = new_keys
        where[slots] = np.column_stack([new_packs, new_rows,
                                        entry_checks(new_keys, new_packs, new_rows)])
        for start in range(0, n, _BLOCK):
            old = np.arange(start, min(start + _BLOCK, n))
            out = old + np.searchsorted(inserted, old, "right")
            keys[out] = base.keys[start : old[-1] + 1]
            where[out] = base.where[start : old[-1] + 1]
        keys.flush()
        where.flush()
        del keys, where
        _replace(tmps[0], index_dir / f"{name}.keys.npy")
        _replace(tmps[1], index_dir / f"{name}.where.npy")
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    write_json(index_dir / f"{name}.json", {
        "format": INDEX_FORMAT, "entries": n + m, "packs": packs,
        "packs_sha256": hashlib.sha256("\n".join(packs).encode()).hexdigest()}, indent=None)
