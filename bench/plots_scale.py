"""Figures at LLaVA-665K scale: time and file size of each `plot` group.

Writes synthetic inputs in the workflow's formats — 665,298 scores (log-normal, summing to
k = 9 like leverage scores), a 4096-value spectrum, a selection summary of five budgets
and a ShareGPT dataset with LLaVA-665K's five image sources — then runs
``python -m scalselect plot scores|budgets|composition`` on them, one process each as
the workflow does, and prints wall time, peak RSS and the size of every file written.

    .venv/bin/python bench/plots_scale.py [--n 665298] [--work /tmp/plots-scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.data.writers import write_records  # noqa: E402
from scalselect.io import write_json  # noqa: E402
from scalselect.select import selection  # noqa: E402

SOURCES = ("coco", "gqa", "ocr_vqa", "textvqa", "vg")
# Approximate shares of the image samples of LLaVA-665K.
SHARES = (0.59, 0.12, 0.13, 0.03, 0.13)
BUDGETS = ["50000", "100000", "200000", "300000", "400000"]


def write_inputs(work: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    importance = np.sort(rng.lognormal(0, 1.2, n))[::-1]
    importance *= 9 / importance.sum()
    scores = pd.DataFrame({
        "index": rng.permutation(n).astype(np.int64),
        "id": [json.dumps(i) for i in range(n)],
        "importance": importance,
        "rank": np.arange(1, n + 1, dtype=np.int64),
    })
    (work / "score").mkdir(parents=True, exist_ok=True)
    scores.to_parquet(work / "score" / "scores.parquet", index=False)
    energy = np.cumsum(np.sort(rng.pareto(1.0, 4096))[::-1] ** 2)
    write_json(work / "score" / "spectrum.json", {
        "cumulative_energy": (energy / energy[-1]).tolist(), "k": 9, "sv_threshold": 0.9,
    })
    selection.write_summary(work / "select" / "summary.csv",
                            selection.summary(selection.read_scores(work / "score" / "scores.parquet"), BUDGETS))
    sources = rng.choice(SOURCES, n, p=SHARES)
    records = [
        {"id": i, "messages": [{"role": "user", "content": "<image>\nWhat is shown?"},
                               {"role": "assistant", "content": "A scene."}],
         "images": [f"{source}/images/{i:012d}.jpg"]}
        for i, source in enumerate(sources)
    ]
    write_records(work / "filter" / "dataset.json", records)


def timed(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one `python -m scalselect` process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scalselect", *args], cwd=REPO, check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - start, usage.ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=665_298)
    parser.add_argument("--work", type=Path, default=Path("/tmp/plots-scale"))
    args = parser.parse_args()
    work = args.work
    start = time.perf_counter()
    write_inputs(work, args.n)
    print(f"inputs: {args.n} samples, {time.perf_counter() - start:.1f} s")
    out = work / "plots"
    common = ["--out-dir", str(out), "--formats", "pdf", "png", "--dpi", "300"]
    scores, summary = str(work / "score" / "scores.parquet"), str(work / "select" / "summary.csv")
    groups = {
        "scores": ["plot", "scores", "--scores", scores,
                   "--spectrum", str(work / "score" / "spectrum.json"), *common],
        "budgets": ["plot", "budgets", "--scores", scores, "--summary", summary, *common],
        "composition": ["plot", "composition", "--dataset", str(work / "filter" / "dataset.json"),
                        "--scores", scores, "--summary", summary, *common],
    }
    for name, command in groups.items():
        seconds, rss = timed(command)
        print(f"plot {name}: {seconds:.1f} s (peak RSS of the children so far {rss:.2f} GiB)")
    for path in sorted(out.iterdir()):
        print(f"  {path.name}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
