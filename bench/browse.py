"""The selection browser at LLaVA-665K scale: build time, peak memory, size on disk, and
how long the page takes to open and to filter in headless Chromium.

Writes synthetic inputs in the workflow's formats: a 665,298-record ShareGPT dataset
(one record per line, as `filter` writes it; LLaVA-665K's five sources, 1 to 8 question
and answer turns of LLaVA-like length) whose images are a few distinct 640x480 JPEGs,
scores (`leverage.write_scores`), and picks of k-center and k-means at the paper's five
budgets (random indices: only their membership matters here). Then runs
``python -m scalselect browse`` as the workflow does (ScalSelect, random seed 0, k-center,
k-means at 5 budgets: 20 selections) and prints wall time, peak RSS and sizes; times
thumbnailing on distinct images (the build's images repeat, so its thumbnails are
few); and opens the page with ``chromium --headless --dump-dom`` (minus the same on an
empty page: the browser's own start).

    .venv/bin/python bench/browse.py [--n 665298] [--work /tmp/browse-scale]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.data.writers import write_records  # noqa: E402
from scalselect.methods import PICKS_SUFFIX, picks_name  # noqa: E402
from scalselect.report import browse  # noqa: E402
from scalselect.score import leverage  # noqa: E402

SOURCES = ("coco", "gqa", "ocr_vqa", "textvqa", "vg")
SHARES = (0.59, 0.12, 0.13, 0.03, 0.13)
# The paper's budgets at 665,298 samples; scaled with --n.
BUDGETS = (50_000, 100_000, 200_000, 300_000, 400_000)
FULL = 665_298
IMAGES_PER_SOURCE = 10
WORDS = ("the", "a", "man", "woman", "dog", "sign", "red", "blue", "table", "is", "on",
         "standing", "near", "what", "color", "of", "picture", "two", "street", "car")


def image(rng: np.random.Generator) -> Image.Image:
    """A 640x480 photo-like JPEG content (smooth gradients plus noise)."""
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([(x * rng.uniform(0.1, 0.4) + y * rng.uniform(0.1, 0.4)) % 256] * 3, -1)
    noisy = base + rng.normal(0, 20, base.shape) + rng.uniform(0, 120, 3)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, words)).capitalize() + "."


def budgets(n: int) -> list[str]:
    return [str(max(1, b * n // FULL)) for b in BUDGETS]


def write_inputs(work: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for source in SOURCES:
        (work / "images" / source).mkdir(parents=True, exist_ok=True)
        for k in range(IMAGES_PER_SOURCE):
            image(rng).save(work / "images" / source / f"{k:012d}.jpg", quality=90)
    sources = rng.choice(len(SOURCES), n, p=SHARES)
    pictures = rng.integers(0, IMAGES_PER_SOURCE, n)
    turns = rng.integers(1, 9, n)

    def record(i: int) -> dict:
        messages = []
        for t in range(turns[i]):
            question = sentence(rng, int(rng.integers(5, 15))).rstrip(".") + "?"
            messages.append({"role": "user", "content": ("<image>\n" if t == 0 else "") + question})
            messages.append({"role": "assistant", "content": " ".join(
                sentence(rng, int(rng.integers(6, 25))) for _ in range(int(rng.integers(1, 4))))})
        return {"id": f"{i:012d}", "messages": messages,
                "images": [f"{SOURCES[sources[i]]}/{pictures[i]:012d}.jpg"]}

    write_records(work / "filter" / "dataset.json", (record(i) for i in range(n)))
    importance = rng.lognormal(0, 1.2, n)
    part = pd.DataFrame({"index": np.arange(n, dtype=np.int64),
                         "id": [json.dumps(f"{i:012d}") for i in range(n)],
                         "importance": importance * 9 / importance.sum()})
    leverage.write_scores(work / "score" / "importance_scores.jsonl", leverage.rank_scores([part]))
    for method in ("kcenter", "kmeans"):
        for budget in budgets(n):
            picks = np.sort(rng.choice(n, int(budget), replace=False))
            path = work / "select" / picks_name(method, int(budget), "json")
            pd.DataFrame({"index": picks}).to_parquet(path)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def chromium_seconds(url: str, profile: Path, repeats: int = 3) -> float:
    """Best wall time of ``chromium --headless --dump-dom url`` (fresh profile each)."""
    best = float("inf")
    for attempt in range(repeats):
        shutil.rmtree(profile, ignore_errors=True)
        start = time.perf_counter()
        out = subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
             "--dump-dom", url], capture_output=True, text=True, check=True).stdout
        best = min(best, time.perf_counter() - start)
        count = re.search(r'<span id="count">([\d,]+) samples match', out)
        if "empty" not in url and not count:
            raise SystemExit(f"the page did not render: {out[:2000]}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=FULL)
    parser.add_argument("--work", type=Path, default=Path("/tmp/browse-scale"))
    parser.add_argument("--reuse", action="store_true", help="Reuse the inputs of an earlier run in --work.")
    args = parser.parse_args()
    work = args.work
    (work / "select").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not args.reuse:
        write_inputs(work, args.n)
    print(f"inputs: {time.perf_counter() - start:.1f} s; dataset "
          f"{size(work / 'filter/dataset.json') / 2**20:.0f} MiB")

    # Baseline: the dataset read whole (`load_dataset`, as other stages read it).
    start = time.perf_counter()
    baseline_rss = float(subprocess.run(
        [sys.executable, "-c", "import resource, sys; from scalselect.data.readers import load_dataset;"
         " load_dataset(sys.argv[1]); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
         str(work / "filter/dataset.json")], cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout) / 2**20
    print(f"baseline, load_dataset of the whole file: {time.perf_counter() - start:.1f} s wall,"
          f" peak RSS {baseline_rss:.2f} GiB")

    out = work / "browse"
    # `python -m scalselect browse ...`, reporting its own peak RSS.
    command = ["browse", "--dataset", str(work / "filter/dataset.json"),
               "--image-root", str(work / "images"), "--scores", str(work / "score/scores.parquet"),
               "--budgets", *budgets(args.n), "--random-seeds", "0",
               "--picks", *map(str, sorted((work / "select").glob(f"*{PICKS_SUFFIX}"))),
               "--run", "bench", "--out", str(out)]
    start = time.perf_counter()
    rss = float(subprocess.run(
        [sys.executable, "-c", "import resource, sys; from scalselect.cli import main; main(sys.argv[1:]);"
         " print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)", *command],
        cwd=REPO, check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1]) / 2**20
    wall = time.perf_counter() - start
    pages = list((out / "data").glob("page-*.js"))
    print(f"browse: {wall:.1f} s wall, peak RSS {rss:.2f} GiB"
          f" ({rss / baseline_rss:.2f}x the baseline's)")
    print(f"on disk: total {size(out) / 2**20:.1f} MiB; samples.js {size(out / 'data/samples.js') / 2**20:.2f} MiB;"
          f" ids.js {size(out / 'data/ids.js') / 2**20:.2f} MiB; {len(pages)} page files"
          f" {sum(map(size, pages)) / 2**20:.1f} MiB (largest {max(map(size, pages)) / 2**10:.0f} KiB);"
          f" thumbs {len(list((out / 'thumbs').iterdir()))} files {size(out / 'thumbs') / 2**10:.0f} KiB;"
          f" index.html {size(out / 'index.html') / 2**10:.1f} KiB")

    # Thumbnails of distinct images, as the bounded set costs on a real dataset.
    distinct = work / "distinct"
    distinct.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    files = []
    for k in range(100):
        files.append(distinct / f"{k}.jpg")
        image(rng).save(files[-1], quality=90)
    (work / "thumbs").mkdir(exist_ok=True)
    thumbs = browse.Thumbnails(work / "thumbs")
    start = time.perf_counter()
    for k, file in enumerate(files):
        thumbs.get(file, k)
    per = (time.perf_counter() - start) / len(files)
    bound = 2 * browse.THUMBNAILS + 2 * browse.THUMBNAILS * len(BUDGETS)
    print(f"thumbnails: {per * 1000:.1f} ms each (640x480 JPEG -> {browse.THUMB_SIDE} px);"
          f" at most {bound} samples here (1 random seed, {len(BUDGETS)} budgets): <= {bound * per:.0f} s")

    # Opening the page: Chromium's start alone (an empty page), then the browser.
    (work / "empty.html").write_text("<!doctype html><title>empty</title>")
    profile = work / "chromium-profile"
    empty = chromium_seconds((work / "empty.html").as_uri(), profile)
    index = (out / "index.html").as_uri()
    opened = chromium_seconds(index, profile)
    budget = budgets(args.n)[1]
    filtered = chromium_seconds(index + f"#view=kept&budget={budget}&method=scalselect&source=1", profile)
    searched = chromium_seconds(index + "#id=000000000017", profile)
    print(f"chromium: empty page {empty:.2f} s; browser opened {opened:.2f} s (+{opened - empty:.2f} s);"
          f" kept by ScalSelect {budget}, one source {filtered:.2f} s (+{filtered - empty:.2f} s);"
          f" search by id (loads ids.js) {searched:.2f} s (+{searched - empty:.2f} s)")


if __name__ == "__main__":
    main()
