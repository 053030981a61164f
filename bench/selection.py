"""Benchmark of selection (METHOD.md stage 3) at LLaVA-665K scale.

Writes a synthetic ShareGPT dataset of 665,000 multi-turn records (~1 GB JSON, one
record per line as ``filter`` writes it) and a ``scores.parquet`` for it, then measures,
each in a fresh process:

1. the library in one process: read the dataset and the scores once, write the top-N
   selections of 5 budgets (7.5%, 16%, 30%, 45%, 60% of the scored samples: about
   50K, 100K, 200K, 300K, 400K);
2. one ``python -m scalselect select`` job (16%), as the workflow runs one per file.

Everything is written under ``--tmp`` and deleted afterwards. Usage::

    python bench/selection.py [--records 665000] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
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

from scalselect.data.writers import write_records  # noqa: E402
from scalselect.extract import features  # noqa: E402
from scalselect.score import leverage  # noqa: E402

# About 50K, 100K, 200K, 300K and 400K of LLaVA-665K (the paper's budgets).
BUDGETS = ["7.5%", "16%", "30%", "45%", "60%"]
WORDS = ("the a image shows person people table dog cat car street sky blue red green "
         "what where how many is are there on in of with left right top bottom small "
         "large wearing holding standing sitting next to behind front color").split()


def conversation_pool(rng: np.random.Generator, size: int = 4000) -> list[list[dict]]:
    """Distinct multi-turn conversations (~1.5 KB of JSON each, like LLaVA-665K)."""
    pool = []
    for _ in range(size):
        turns = []
        for turn in range(int(rng.integers(2, 5))):
            question = " ".join(rng.choice(WORDS, int(rng.integers(6, 16))))
            answer = " ".join(rng.choice(WORDS, int(rng.integers(30, 90))))
            prefix = "<image>\n" if turn == 0 else ""
            turns += [{"role": "user", "content": f"{prefix}{question}?"},
                      {"role": "assistant", "content": f"{answer}."}]
        pool.append(turns)
    return pool


def write_inputs(tmp: Path, records: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    pool = conversation_pool(rng)
    picks = rng.integers(0, len(pool), records)
    dataset = tmp / "dataset.json"
    write_records(dataset, (
        {"id": f"{i:012d}" if i % 3 else i, "messages": pool[picks[i]],
         "images": [f"coco/train2017/{i:012d}.jpg"]}
        for i in range(records)
    ))
    scored = np.flatnonzero(rng.random(records) > 0.01)  # ~1% extraction failures
    part = pd.DataFrame({"index": scored.astype(np.int64),
                         "id": [features.encode_id(int(i)) for i in scored],
                         "importance": rng.gamma(2.0, 1e-5, len(scored))})
    scores = leverage.write_scores(tmp / "importance_scores.jsonl", leverage.rank_scores([part]))
    return dataset, scores


def library_child(dataset: str, scores: str, out: str) -> dict:
    from scalselect.data.writers import copy_records
    from scalselect.select import selection

    timings = {}
    start = time.perf_counter()
    table = selection.read_scores(scores)
    timings["read"] = time.perf_counter() - start
    for budget in BUDGETS:
        begin = time.perf_counter()
        n = selection.resolve_budget(budget, len(table))
        copy_records(dataset, Path(out) / f"top-{n}.json", keep=selection.top_indices(table, n))
        timings[f"top-{n}"] = time.perf_counter() - begin
    return {key: round(value, 1) for key, value in timings.items()}


def cli_child(dataset: str, scores: str, out: str) -> dict:
    from scalselect.cli import main

    code = main(["select", "--dataset", dataset, "--scores", scores, "--num", "16%",
                 "--out", str(Path(out) / "cli-top-16pct.json")])
    return {"exit": code}


CHILDREN = {"library": library_child, "cli": cli_child}


def measure(kind: str, *args: Path) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)],
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-3000:]}")
    return {"seconds": round(seconds, 1), **json.loads(result.stdout.strip().splitlines()[-1])}


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        report = CHILDREN[sys.argv[2]](*sys.argv[3:6])
        print(json.dumps({**report, "peak_rss_gib": round(peak_rss_gib(), 2)}))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=665_000)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-select-", dir=args.tmp))
    load = lambda: " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: E731
    try:
        start = time.perf_counter()
        dataset, scores = write_inputs(tmp, args.records)
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.records} records, "
              f"{dataset.stat().st_size / 2**30:.2f} GiB JSON, written in "
              f"{time.perf_counter() - start:.0f} s; load {load()}")
        library = measure("library", dataset, scores, tmp)
        print(f"  5 budgets {BUDGETS}, one process: {library}", flush=True)
        cli = measure("cli", dataset, scores, tmp)
        print(f"  one `select` job (16%): {cli}; load {load()}")
        print(f"  target 30 s for 5 budgets: {'met' if library['seconds'] <= 30 else 'missed'}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
