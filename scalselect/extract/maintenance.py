"""Cache maintenance: ``python -m scalselect cache info|prune|verify`` over the feature
store (:mod:`scalselect.extract.store`) of a cache directory.

``prune`` deletes in an order that keeps the store sound if it is killed at any point
(indexes, then pack tables, then matrices); ``verify --fix`` moves damaged files into
their settings folder's ``damaged/`` and deletes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from scalselect.extract.packs import (
    LOOKUP_THREADS,
    PACKS_DIR,
    check_pack,
    pack_names,
    scan_packs,
)
from scalselect.extract.store import FEATURES_DIR, SETTINGS_FILE
from scalselect.extract.store_index import (
    INDEX_DIR,
    IndexDamaged,
    check_all,
    index_files,
    index_names,
    load_index,
)
from scalselect.io import kill_point

DAMAGED_DIR = "damaged"


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
        for name, keys, problem in scan_packs(folder / PACKS_DIR, names):
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
        with ThreadPoolExecutor(max_workers=LOOKUP_THREADS) as pool:
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
