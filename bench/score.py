"""Benchmark of scoring (METHOD.md stage 2) on synthetic representations.

1. ``small`` (default 30,000 x 4096 float32): the original recipe — load everything,
   centre, thin SVD twice (once for the spectrum and k, once more for U), as the
   original script did — against ours (streamed float64 moments, Gram eigendecomposition,
   scores without U), each in its own process: wall time, peak RSS, score agreement and
   ranking agreement, and the speed ratio, all measured in this run.
2. ``large`` (default 665,000 x 4096 float32, ~10.9 GB): ours only, on a shard written to
   disk and read memory-mapped, through ``python -m scalselect score``. The original
   recipe is not run: its SVD of the full matrix needs far more RAM than the machine has.

Every shard is written under ``--tmp`` and deleted afterwards. Usage::

    python bench/score.py [--part small|large|both] [--tmp /tmp] [--rows-small 30000]
                          [--rows-large 665000] [--dim 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.extract import features  # noqa: E402
from scalselect.io import atomic_write, write_json  # noqa: E402

# Strong leading directions on top of per-column offsets and isotropic noise, roughly the
# shape of first-layer representations (the paper reports k = 9 there).
SCALES = np.array([30, 25, 20, 16, 13, 10, 8, 6, 5, 4, 3, 2], dtype=np.float32)
CHUNK = 8192


def peak_rss_gib() -> float:
    """This process's peak resident set size (VmHWM), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_synthetic_shard(directory: Path, rows: int, dim: int, seed: int = 0) -> None:
    """A complete shard of ``rows`` synthetic float32 representations, streamed to disk
    chunk by chunk (never the whole matrix in memory)."""
    rng = np.random.default_rng(seed)
    offset = (1.0 + 2.0 * rng.standard_normal(dim)).astype(np.float32)
    basis = rng.standard_normal((len(SCALES), dim)).astype(np.float32) / np.sqrt(dim)
    directory.mkdir(parents=True, exist_ok=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (rows, dim)}
    with atomic_write(directory / features.FEATURES, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, rows, CHUNK):
            count = min(CHUNK, rows - start)
            block = rng.standard_normal((count, dim), dtype=np.float32) * 0.05 + offset
            block += (rng.standard_normal((count, len(SCALES)), dtype=np.float32) * SCALES) @ basis * np.sqrt(dim)
            handle.write(block.tobytes())
    table = pd.DataFrame({
        "index": np.arange(rows, dtype=np.int64),
        "id": [features.encode_id(i) for i in range(rows)],
        "status": "ok",
        "n_vision": np.full(rows, 576, np.int64),
        "n_kept": np.full(rows, 100, np.int64),
        "seq_len": np.full(rows, 800, np.int64),
        "truncated": np.zeros(rows, bool),
        "detail": "",
    })
    with atomic_write(directory / features.ROWS, "wb") as handle:
        table.to_parquet(handle, index=False)
    write_json(directory / features.MANIFEST, {"rows": rows, "dim": dim, "synthetic": True})


# --------------------------------------------------------------------------- children


def original_recipe(shard: Path, out: Path, sv_threshold: float) -> dict:
    """The original script's computation: all rows in memory, centred, thin SVD twice."""
    _, matrix = features.open_shard(shard)
    r = np.array(matrix)
    r -= r.mean(axis=0)
    _, s, _ = np.linalg.svd(r, full_matrices=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.searchsorted(energy, sv_threshold) + 1)
    u, _, _ = np.linalg.svd(r, full_matrices=False)
    np.save(out, (u[:, :k].astype(np.float64) ** 2).sum(axis=1))
    return {"k": k}


def ours(shard: Path, out: Path, sv_threshold: float) -> dict:
    """Streamed moments, Gram eigendecomposition, scores (the library, one process)."""
    from scalselect.score import leverage

    table, model = leverage.leverage_scores(
        leverage.open_sources([shard]), leverage.Preprocessing(), sv_threshold,
        leverage.Backend("auto"),
    )
    np.save(out, table.sort_values("index")["importance"].to_numpy())
    return {"k": model.spectrum.k}


def cli(shard: Path, out: Path, sv_threshold: float) -> dict:
    """``python -m scalselect score`` as a user runs it."""
    from scalselect.cli import main

    code = main(["score", "--features", str(shard), "--out", str(out),
                 "--sv-threshold", str(sv_threshold)])
    spectrum = json.loads(out.with_name("spectrum.json").read_text())
    return {"k": spectrum["k"], "exit": code}


CHILDREN = {"original": original_recipe, "ours": ours, "cli": cli}


def measure(kind: str, shard: Path, out: Path, sv_threshold: float = 0.9) -> dict:
    """Run one computation in a fresh process: wall seconds, peak RSS, its report."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(shard), str(out), str(sv_threshold)],
        capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {"kind": kind, "seconds": round(seconds, 1), **report}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def small(tmp: Path, rows: int, dim: int) -> None:
    shard = tmp / "small/shard-0-of-1"
    write_synthetic_shard(shard, rows, dim)
    print(f"small: {rows} x {dim} float32 ({rows * dim * 4 / 2**30:.2f} GiB), load {load_average()}")
    original = measure("original", shard, tmp / "original.npy")
    print("  original recipe (centre, thin SVD twice):", original, flush=True)
    mine = measure("ours", shard, tmp / "ours.npy")
    print("  ours (float64 Gram + eigh, streamed):", mine, flush=True)
    a, b = np.load(tmp / "original.npy"), np.load(tmp / "ours.npy")
    relative = float(np.max(np.abs(a - b) / np.abs(b)))
    order_a = np.lexsort((np.arange(rows), -a))
    order_b = np.lexsort((np.arange(rows), -b))
    differ = order_a != order_b
    mismatched = int(differ.sum())
    # How far apart (relative, in our float64 scores) the samples at differing positions are.
    gap = float(np.max(np.abs(b[order_a[differ]] - b[order_b[differ]]) / b[order_b[differ]])) if mismatched else 0.0
    top = {n: len(set(order_a[:n]) & set(order_b[:n])) / n for n in (rows // 100, rows * 16 // 100)}
    print(f"  k original {original['k']}, ours {mine['k']}; max relative score difference "
          f"{relative:.2e}; ranking positions that differ: {mismatched} of {rows} (largest "
          f"relative score gap between the samples swapped there {gap:.1e}); "
          f"top-N overlap {top}")
    print(f"  speed-up {original['seconds'] / mine['seconds']:.1f}x, peak RSS "
          f"{original['peak_rss_gib']:.2f} GiB vs {mine['peak_rss_gib']:.2f} GiB; "
          f"load after {load_average()}")


def large(tmp: Path, rows: int, dim: int) -> None:
    shard = tmp / "large/shard-0-of-1"
    size = rows * dim * 4
    free = shutil.disk_usage(tmp).free
    if free < size * 1.2:
        raise SystemExit(f"need {size * 1.2 / 2**30:.1f} GiB free in {tmp}, have {free / 2**30:.1f}")
    start = time.perf_counter()
    write_synthetic_shard(shard, rows, dim, seed=1)
    print(f"large: {rows} x {dim} float32 ({size / 2**30:.1f} GiB on disk, written in "
          f"{time.perf_counter() - start:.0f} s), load {load_average()}")
    result = measure("cli", shard, tmp / "large/importance_scores.jsonl")
    print("  ours, python -m scalselect score (memory-mapped shard):", result)
    print(f"  original recipe: not run (an N x d SVD of {size / 2**30:.1f} GiB float32 needs "
          f"several times that in RAM); load after {load_average()}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, shard, out, threshold = sys.argv[2:6]
        report = CHILDREN[kind](Path(shard), Path(out), float(threshold))
        print(json.dumps({**report, "peak_rss_gib": round(peak_rss_gib(), 2)}))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("small", "large", "both"), default="both")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--rows-small", type=int, default=30_000)
    parser.add_argument("--rows-large", type=int, default=665_000)
    parser.add_argument("--dim", type=int, default=4096)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-score-", dir=args.tmp))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}")
    try:
        if args.part in ("small", "both"):
            small(tmp, args.rows_small, args.dim)
        if args.part in ("large", "both"):
            large(tmp, args.rows_large, args.dim)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
