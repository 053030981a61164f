"""Feature-store look-up of one shard: 100 packs present vs 20,000, compacted or not.

Builds a store of synthetic packs (512 rows, random sample keys, 4-float rows) written
by ``scalselect.extract.packs.write_pack_files`` (fsync skipped while building: durability is not
measured, the files are the same), and a shard of 10,000 keys taken from 20 of its packs
(as a re-shard finds them). Look-up = ``FeatureStore.lookup`` of the shard's keys, the
checks of the rows it will use included, warm page cache, best of ``--repeats``:

- 100 packs, no index (today's scan of every pack's key column),
- 100 packs, compacted (``cache compact``),
- 20,000 packs, no index,
- 20,000 packs, compacted.

Target (issue 20): 20,000 packs compacted <= 2x 100 packs (either way).

Usage::

    python bench/store_lookup.py --tmp /tmp/store-lookup
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.extract.packs import PACK_COLUMNS, PACKS_DIR, write_pack_files  # noqa: E402
from scalselect.extract.store import FEATURES_DIR, FeatureStore, compact_folder  # noqa: E402
from scalselect.extract.store_index import INDEX_DIR  # noqa: E402

ROWS = 512
KEY = "b" * 64


def add_packs(folder: Path, count: int, rng: np.random.Generator) -> list[list[str]]:
    """Write ``count`` synthetic packs into ``folder``; return their keys."""
    written = []
    fsync = os.fsync
    os.fsync = lambda fd: None
    try:
        for _ in range(count):
            keys = [rng.bytes(32).hex() for _ in range(ROWS)]
            table = pd.DataFrame({"key": keys, "status": "ok", "detail": "", "n_vision": 0,
                                  "n_kept": 0, "seq_len": 0, "truncated": False},
                                 columns=list(PACK_COLUMNS))
            write_pack_files(folder / PACKS_DIR, table,
                             rng.standard_normal((ROWS, 4)).astype(np.float32))
            written.append(keys)
    finally:
        os.fsync = fsync
    return written


def timed(cache: Path, keys: list[str], repeats: int) -> tuple[float, int]:
    best, found = float("inf"), 0
    for _ in range(repeats):
        began = time.perf_counter()
        result = FeatureStore(cache, KEY).lookup(keys)
        best = min(best, time.perf_counter() - began)
        found = len(result.found)
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tmp", required=True, help="Scratch directory (emptied first).")
    parser.add_argument("--packs", type=int, default=20_000)
    parser.add_argument("--shard", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    cache = tmp / "cache"
    folder = cache / FEATURES_DIR / KEY
    rng = np.random.default_rng(0)
    written = add_packs(folder, 100, rng)
    # The shard: 10,000 keys of 20 packs among the first 100.
    shard = [k for keys in written[40:60] for k in keys][: args.shard]
    results = {}
    for packs in (100, args.packs):
        if packs > 100:
            shutil.rmtree(folder / INDEX_DIR, ignore_errors=True)
            began = time.perf_counter()
            add_packs(folder, packs - 100, rng)
            print(f"wrote {packs - 100} more packs in {time.perf_counter() - began:.0f} s", flush=True)
        results[packs, "scan"] = timed(cache, shard, 1 if packs > 100 else args.repeats)
        began = time.perf_counter()
        compact_folder(folder)
        compacting = time.perf_counter() - began
        results[packs, "index"] = timed(cache, shard, args.repeats)
        print(f"{packs} packs: scan {results[packs, 'scan'][0]:.3f} s, compacted"
              f" {results[packs, 'index'][0]:.3f} s (compaction {compacting:.1f} s)", flush=True)
    assert all(found == len(set(shard)) for _, found in results.values())
    base = results[100, "scan"][0]
    for (packs, how), (seconds, _) in results.items():
        print(f"| {packs} | {how} | {seconds:.3f} s | {seconds / base:.2f}x |")
    print(f"target: {args.packs} packs compacted / 100 packs scanned ="
          f" {results[args.packs, 'index'][0] / base:.2f} (<= 2);"
          f" / 100 packs compacted = {results[args.packs, 'index'][0] / results[100, 'index'][0]:.2f}")


if __name__ == "__main__":
    main()
