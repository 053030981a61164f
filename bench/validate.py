"""Benchmark: validate's image checks on 100K distinct small JPEG files.

Writes the images once (kept under --work for reruns), a ShareGPT dataset with one image
per sample, then times reading the dataset plus validating it (header checks, as
``--no-decode-images``; ``--decode`` for full decodes) and prints samples/s.

    .venv/bin/python bench/validate.py --samples 100000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scalselect.data.validation import validate_file
from scalselect.settings import ValidateSettings


def make_images(folder: Path, count: int) -> list[str]:
    """``count`` distinct small JPEGs (64x48, random pixels) in 100 subfolders."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        rel = f"part{i % 100:02d}/{i:07d}.jpg"
        target = folder / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(target, quality=75)
        paths.append(rel)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the image-check workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--decode", action="store_true", help="Full decode instead of header checks."
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/scalselect-bench-validate"))
    args = parser.parse_args()

    started = time.perf_counter()
    paths = make_images(args.work / "images", args.samples)
    chat = [
        {"role": "user", "content": "<image>\nWhat is shown?"},
        {"role": "assistant", "content": "Random pixels."},
    ]
    dataset_path = args.work / f"dataset-{args.samples}.json"
    dataset_path.write_text(
        json.dumps([{"id": i, "messages": chat, "images": [p]} for i, p in enumerate(paths)])
    )
    print(f"prepared {args.samples} images in {time.perf_counter() - started:.1f} s")

    started, cpu = time.perf_counter(), cpu_seconds()
    settings = ValidateSettings(decode_images=args.decode)
    report = validate_file(dataset_path, args.work / "images", settings, workers=args.workers)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert (
        report["num_valid"] == args.samples and report["num_image_files"] == args.samples
    ), report["counts"]
    mode = "full decode" if args.decode else "header checks"
    print(
        f"validate ({mode}, {args.workers} workers): {args.samples} samples with distinct images"
        f" in {elapsed:.2f} s = {args.samples / elapsed:,.0f} samples/s (CPU {cpu:.1f} s in all"
        f" processes = {args.samples / cpu:,.0f} samples per CPU-second)"
    )


if __name__ == "__main__":
    main()
