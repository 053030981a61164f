"""Cost of extraction's progress lines (issue 30): extract on the demo with and without.

Each repeat extracts the demo's Qwen3-VL dataset (one shard, a fresh feature store, so
every sample is computed) twice in this process: as shipped (a ``Progress`` counting
every batch, a line per stored chunk and every 30 s) and with ``Progress`` replaced by a
stand-in that does nothing. Modes alternate so that load on the machine hits both
alike (after one warm-up run); the median wall time of each and their ratio are printed,
with the cost of one ``Progress.update`` call measured apart.

Usage::

    python bench/progress_overhead.py --repeats 5 --chunk-size 16
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.demo.build import build_demo  # noqa: E402
from scalselect.extract import shard  # noqa: E402
from scalselect.progress import Progress  # noqa: E402
from scalselect.settings import ExtractSettings  # noqa: E402


class Silent:
    """A Progress that counts nothing and writes nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def note(self, name: str, value: str) -> None:
        pass

    def update(self, done: int = 0, images: int = 0) -> None:
        pass

    def report(self) -> None:
        pass


def extract_once(demo: Path, work: Path, chunk_size: int) -> float:
    """Wall seconds of one cold extraction of the demo's dataset."""
    job = shard.Job(
        dataset=str(demo / "dataset.json"), image_root=str(demo / "images"),
        model=str(demo / "models" / "tiny-qwen3-vl"), out=str(work / "out"),
        settings=ExtractSettings(model_type="qwen", dtype="float32", min_image_tokens=4,
                                 max_image_tokens=48),
        cache_dirs=(str(work / "cache"),), chunk_size=chunk_size, num_workers=0,
    )
    began = time.perf_counter()
    shard.extract_shard(job)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        build_demo(demo)
        extract_once(demo, Path(tmp) / "warm-up", args.chunk_size)  # imports, caches
        walls: dict[str, list[float]] = {"lines": [], "none": []}
        for repeat in range(args.repeats):
            for mode in ("lines", "none"):
                shard.Progress = Progress if mode == "lines" else Silent
                walls[mode].append(extract_once(demo, Path(tmp) / f"{mode}-{repeat}",
                                                args.chunk_size))
        shard.Progress = Progress
    clock = Progress(10**9, bar=False)
    per_update = timeit.timeit(lambda: clock.update(8, images=8), number=100_000) / 100_000
    lines, none = statistics.median(walls["lines"]), statistics.median(walls["none"])
    print(f"with progress: {lines:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls['lines'])})")
    print(f"without:       {none:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls['none'])})")
    print(f"ratio: {lines / none:.3f}; one Progress.update: {per_update * 1e6:.2f} us")


if __name__ == "__main__":
    main()
