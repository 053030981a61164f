"""Benchmark: reading a LLaVA-665K-sized dataset file (665,298 records, about 1 GB).

Generates a file in the LLaVA format with LLaVA-665K's mix of sources (coco, vg, gqa,
ocr_vqa, textvqa, text-only) and multi-turn conversations of realistic length, then, in
a fresh process, times ``load_dataset`` (read, hash, parse, detect the format) and the
normalisation of every sample, and reports the peak resident memory. The file is deleted
afterwards unless --keep.

    .venv/bin/python bench/read_dataset.py
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from scalselect.data.readers import load_dataset

# LLaVA-665K's samples per source (issue 7).
SOURCES = {
    "coco": 364_100,
    "vg": 86_417,
    "gqa": 72_140,
    "ocr_vqa": 80_000,
    "textvqa": 21_953,
    "text-only": 40_688,
}
WORDS = (
    "the a of man woman bus red white blue sky car dog cat table people street sign left right"
    " image picture shows standing sitting holding wearing color what is are there how many"
    " which where why does this that two three large small near behind front top bottom"
).split()


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def generate(path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    labels = [s for s, n in SOURCES.items() for _ in range(n)]
    rng.shuffle(labels)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("[")
        for index, source in enumerate(labels):
            turns = []
            for turn in range(rng.choice((1, 1, 2, 3, 5, 8, 12))):
                question = sentence(rng, 5, 20)
                if turn == 0 and source != "text-only":
                    question = "<image>\n" + question
                turns += [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": sentence(rng, 4, 60)},
                ]
            record = {"id": f"{index:012d}"}
            if source != "text-only":
                record["image"] = f"{source}/images/{index:012d}.jpg"
            record["conversations"] = turns
            handle.write(("," if index else "") + "\n" + json.dumps(record))
        handle.write("\n]\n")


def clocks() -> tuple[float, float]:
    """Wall-clock and CPU seconds (the CPU figure is less affected by busy cores)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> str:
    wall, cpu = clocks()
    return f"{wall - start[0]:.1f} s (CPU {cpu - start[1]:.1f} s)"


def measure(path: Path) -> None:
    start = clocks()
    dataset = load_dataset(path)
    loaded = since(start)
    start = clocks()
    sources = Counter(sample.source for sample in dataset)
    normalised = since(start)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    assert dict(sources) == SOURCES, sources
    print(
        f"{len(dataset)} records ({dataset.format}), {path.stat().st_size / 1e9:.2f} GB:"
        f" load_dataset {loaded}, normalising every sample {normalised},"
        f" peak RSS {peak_gib:.1f} GiB"
    )


def measure_plain(path: Path) -> None:
    """The reference: a plain ``json.load`` of the file, as the original scripts read it."""
    start = clocks()
    with path.open(encoding="utf-8") as handle:
        records = json.load(handle)
    loaded = since(start)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{len(records)} records: plain json.load {loaded}, peak RSS {peak_gib:.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", type=Path, default=Path("/tmp/scalselect-bench-665k.json"))
    parser.add_argument("--keep", action="store_true", help="Keep the generated file.")
    parser.add_argument("--measure", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        (measure if args.measure == "ours" else measure_plain)(args.path)
        return
    try:
        if not args.path.exists():
            started = time.perf_counter()
            generate(args.path)
            print(f"generated {args.path} in {time.perf_counter() - started:.0f} s")
        # Fresh processes, so that each peak memory is the reader's alone.
        for mode in ("plain", "ours"):
            command = [sys.executable, __file__, "--path", str(args.path), "--measure", mode]
            subprocess.run(command, check=True)
    finally:
        if not args.keep:
            args.path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
