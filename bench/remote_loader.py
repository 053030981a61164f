"""Images per second of extraction's image path from a slow remote store (issue 31).

An extract job reads each image once from its store: the key pass fetches it
(``FETCH_THREADS`` at a time), hashes it and keeps it in the job's spool; the model pass
decodes it from there in the DataLoader's workers. This script measures both stages on
``--images`` JPEGs served over HTTP with ``--latency`` seconds added to every request
(``scalselect.demo.servers.FileServer``, in a process of its own so that it does not
share this one's interpreter lock), beside:

- the original recipe: the same images read from local disk (hash, then decode), as
  every job read them before; and
- one request at a time from the same slow server (what a loader without concurrency
  would get).

The ratios printed are against the local-disk run of the same repeat. Each figure is the
median of ``--repeats`` runs; the spool is emptied between runs.

Usage::

    python bench/remote_loader.py --images 1200 --latency 0.05 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect import locations  # noqa: E402
from scalselect.demo.servers import FileServer  # noqa: E402
from scalselect.extract.store import image_digests, spooled  # noqa: E402


def make_images(folder: Path, count: int, side: int) -> list[str]:
    """``count`` distinct JPEGs of ``side`` px (smooth gradients plus noise, ~30-60 KB)."""
    rng = np.random.default_rng(0)
    names = []
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for number in range(count):
        base = (ramp[None, :, None] * rng.uniform(0.3, 1.0, 3) + ramp[:, None, None] * 0.3)
        pixels = np.clip(base + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8)
        name = f"images/{number // 100:03d}/{number:05d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name, quality=85)
        names.append(name)
    return names


def decode(source: object) -> None:
    with Image.open(source) as image:  # type: ignore[arg-type]
        image.convert("RGB")


def local_run(paths: list[Path]) -> tuple[float, float]:
    """Seconds to hash every image from disk, then to decode every one."""
    began = time.perf_counter()
    image_digests(paths)
    hashed = time.perf_counter()
    for path in paths:
        decode(path)
    return hashed - began, time.perf_counter() - hashed


def remote_run(urls: list[str], spool: Path) -> tuple[float, float]:
    """Seconds of the key pass (concurrent fetch, hash, spool), then of decoding every
    image from the spool."""
    shutil.rmtree(spool, ignore_errors=True)
    began = time.perf_counter()
    digests = image_digests(urls, spool=spool)
    fetched = time.perf_counter()
    assert all(len(d) == 64 for d in digests), "an image failed to arrive"
    for url in urls:
        decode(spooled(spool, url))
    return fetched - began, time.perf_counter() - fetched


def sequential_run(urls: list[str]) -> float:
    """Seconds to fetch ``urls`` one request at a time."""
    began = time.perf_counter()
    for url in urls:
        Image.open(io.BytesIO(locations.read_bytes(url))).close()
    return time.perf_counter() - began


def serve(root: Path, latency: float, urls: multiprocessing.Queue) -> None:
    """Run the slow file server until the process is terminated."""
    with FileServer(root, latency=latency) as server:
        urls.put(server.url)
        threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--side", type=int, default=336, help="Image side in pixels.")
    parser.add_argument("--latency", type=float, default=0.05, help="Seconds per request.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=100,
                        help="Images fetched one at a time (a sample of them).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        names = make_images(root, args.images, args.side)
        size = sum((root / n).stat().st_size for n in names) / len(names) / 1024
        print(f"{args.images} JPEGs of {args.side} px, {size:.0f} KiB on average;"
              f" {locations.FETCH_THREADS} fetches in flight; {args.latency * 1000:.0f} ms"
              " per request")
        queue: multiprocessing.Queue = multiprocessing.Queue()
        server = multiprocessing.Process(target=serve, args=(root, args.latency, queue),
                                         daemon=True)
        server.start()
        try:
            base = queue.get(timeout=30)
            urls = [f"{base}/{n}" for n in names]
            paths = [root / n for n in names]
            rows: dict[str, list[float]] = {k: [] for k in
                                            ("local_hash", "local_decode", "fetch", "spool_decode")}
            for _ in range(args.repeats):
                for key, value in zip(("local_hash", "local_decode"), local_run(paths)):
                    rows[key].append(value)
                for key, value in zip(("fetch", "spool_decode"),
                                      remote_run(urls, Path(tmp) / "spool")):
                    rows[key].append(value)
            one_by_one = sequential_run(urls[: args.sequential])
        finally:
            server.terminate()
    rate = {k: args.images / statistics.median(v) for k, v in rows.items()}
    local_total = args.images / (statistics.median(rows["local_hash"])
                                 + statistics.median(rows["local_decode"]))
    remote_total = args.images / (statistics.median(rows["fetch"])
                                  + statistics.median(rows["spool_decode"]))
    print(f"local disk (original recipe): hash {rate['local_hash']:.0f}/s,"
          f" decode {rate['local_decode']:.0f}/s, both {local_total:.0f}/s")
    print(f"remote, key pass (fetch + hash + spool): {rate['fetch']:.0f} images/s"
          f" (ratio to local hash {rate['fetch'] / rate['local_hash']:.3f})")
    print(f"remote, decode from the spool: {rate['spool_decode']:.0f}/s; both passes"
          f" {remote_total:.0f}/s (ratio to local {remote_total / local_total:.3f})")
    print(f"remote, one request at a time: {args.sequential / one_by_one:.1f} images/s")


if __name__ == "__main__":
    main()
