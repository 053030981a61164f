"""Extraction at LLaVA-665K scale: per-job memory, store look-up, cost of a re-shard.

Writes a 665,298-record LLaVA-format file with LLaVA-665K's source mix (coco, gqa,
ocr_vqa, textvqa, vg and text-only, in the published counts) laid out as ``filter``
writes it (one record per line), its images cycling over a few hundred real JPEG files,
then, with a tiny LLaVA on the CPU (2 DataLoader workers), as ``python -m scalselect
extract`` processes in a fresh process each:

1. shard 0 of 64 of the whole file, cold store: peak RSS and PSS of the job (the
   process and its workers, from /proc every 0.2 s);
2. the same records given as their own dataset (shard 0 of 1), cold store: the same;
3. the store of run 1 filled with synthetic packs up to 665,298 keys (as if all 64
   shards were done), then shard 0 of 80 (a re-shard 64 -> 80; its records lie inside
   shard 0 of 64): samples computed (target 0) and the look-up time from the job's log.

Usage::

    python bench/extract_scale.py --tmp /tmp/extract-scale
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scalselect.data.readers import load_dataset  # noqa: E402
from scalselect.data.writers import write_records  # noqa: E402
from scalselect.demo.tinymodels import build_tiny_model  # noqa: E402
from scalselect.extract.shard import read_shard_records, shard_range  # noqa: E402
from scalselect.extract.store import FeatureStore  # noqa: E402

# LLaVA-665K (llava_v1_5_mix665k.json): records per source.
SOURCES = {"coco": 364_100, "gqa": 72_140, "ocr_vqa": 80_000, "textvqa": 21_953,
           "vg": 86_417, None: 40_688}
PACK_ROWS = 512


def write_images(root: Path, count: int) -> list[str]:
    """``count`` small real JPEGs (varied sizes) in ``root/pool``, each source folder a
    link to it; returns the file names."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "pool").mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        if source and not (root / source).exists():
            (root / source).symlink_to("pool")
    names = []
    for i in range(count):
        height, width = (int(v) for v in rng.integers(48, 160, 2))
        name = f"{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "pool" / name)
        names.append(name)
    return names


def write_dataset(path: Path, image_root: Path, images: int, fraction: float) -> int:
    """The LLaVA-format file (sources interleaved as in the real file); returns its size."""
    pool = write_images(image_root, images)
    rng = np.random.default_rng(1)
    labels = np.concatenate([np.full(round(n * fraction), i) for i, n in enumerate(SOURCES.values())])
    rng.shuffle(labels)
    names = list(SOURCES)
    records = []
    for index, label in enumerate(labels.tolist()):
        source = names[label]
        turns = 1 + index % 4
        conversation = []
        for turn in range(turns):
            question = f"Question {index}.{turn}: what does the picture show near the middle?"
            conversation += [
                {"from": "human", "value": ("<image>\n" if turn == 0 and source else "") + question},
                {"from": "gpt", "value": f"Answer {index}.{turn}: a few objects on a table."},
            ]
        record = {"id": f"{index:09d}", "conversations": conversation}
        if source:
            record["image"] = f"{source}/{pool[index % len(pool)]}"
        records.append(record)
    write_records(path, records)
    return len(records)


def peak_memory(pid: int, stop: threading.Event, out: dict) -> None:
    """Poll the process tree of ``pid``: peak of the summed RSS and PSS (bytes)."""
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        rss = pss = 0
        try:
            for process in [root, *root.children(recursive=True)]:
                try:
                    info = process.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += info.pss
        except psutil.NoSuchProcess:
            break
        out["rss"] = max(out.get("rss", 0), rss)
        out["pss"] = max(out.get("pss", 0), pss)
        time.sleep(0.2)


def extract(model: Path, dataset: Path, image_root: Path, out: Path, cache: Path,
            shard: int, shards: int, package: Path = REPO) -> dict:
    command = [sys.executable, "-m", "scalselect", "extract", "--model", str(model),
               "--model-type", "llava", "--dataset", str(dataset), "--image-root", str(image_root),
               "--out", str(out), "--cache-dir", str(cache), "--shard", str(shard),
               "--num-shards", str(shards), "--num-workers", "2", "--batch-size", "8"]
    env = {**os.environ, "PYTHONPATH": str(package)}
    began = time.perf_counter()
    # `-m` puts the working directory first on sys.path: run in the package's parent.
    process = subprocess.Popen(command, env=env, cwd=package, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    memory: dict = {}
    stop = threading.Event()
    monitor = threading.Thread(target=peak_memory, args=(process.pid, stop, memory))
    monitor.start()
    _, log = process.communicate()
    stop.set()
    monitor.join()
    if process.returncode:
        raise SystemExit(f"extract failed:\n{log[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    lookup = re.search(r"look-up in (\d+) packs \(([\d.]+) s\)", log)
    statuses = pd.read_parquet(out / "rows.parquet")["status"].value_counts().to_dict()
    return {"wall_s": round(time.perf_counter() - began, 1), "rss_gb": round(memory["rss"] / 1e9, 3),
            "pss_gb": round(memory["pss"] / 1e9, 3), "rows": manifest["rows"], "status": statuses,
            "computed": manifest.get("samples_computed"), "reused": manifest.get("samples_reused"),
            "lookup_packs": int(lookup.group(1)) if lookup else None,
            "lookup_s": float(lookup.group(2)) if lookup else None}


def fill_store(cache: Path, total: int) -> int:
    """Add synthetic packs (random keys, zero rows) until the store holds ``total`` keys."""
    folder = next((cache / "features").iterdir())
    store = FeatureStore(cache, folder.name)
    table, matrix = store.read_pack(store.pack_names()[0])
    held = sum(len(store.read_pack(n)[0]) for n in store.pack_names())
    rng = np.random.default_rng(2)
    added = 0
    while held + added < total:
        rows = min(PACK_ROWS, total - held - added)
        keys = [bytes(k).hex() for k in rng.integers(0, 256, (rows, 32), dtype=np.uint8)]
        fake = table.iloc[np.zeros(rows, dtype=int)].reset_index(drop=True)
        fake["key"] = keys
        store.write_pack(fake, np.zeros((rows, matrix.shape[1]), np.float32))
        added += rows
    return held + added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/extract-scale"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--baseline", type=Path, help="A directory holding an earlier `scalselect` package (e.g. `git archive COMMIT scalselect | tar -x -C DIR`): its shard 0 of 64 is measured too, as the before.")
    parser.add_argument("--fraction", type=float, default=1.0, help="Scale the record counts (quick checks).")
    args = parser.parse_args()
    tmp = args.tmp
    tmp.mkdir(parents=True, exist_ok=True)
    images = tmp / "images"
    dataset = tmp / "llava665k.json"
    began = time.perf_counter()
    total = write_dataset(dataset, images, args.images, args.fraction)
    print(f"dataset: {total} records, {dataset.stat().st_size / 1e9:.2f} GB,"
          f" written in {time.perf_counter() - began:.1f} s", flush=True)
    model = build_tiny_model("llava", tmp / "tiny-llava")

    began = time.perf_counter()
    indices, records = read_shard_records(dataset, 0, 64)
    print(f"read shard 0 of 64 ({len(indices)} records): {time.perf_counter() - began:.2f} s;", end=" ")
    began = time.perf_counter()
    whole = load_dataset(dataset)
    print(f"whole file with load_dataset: {time.perf_counter() - began:.2f} s", flush=True)
    assert whole.records[indices.start : indices.stop] == records
    assert indices == shard_range(len(whole), 0, 64)
    del whole
    alone = tmp / "shard0-alone.json"
    write_records(alone, records)

    results = {}
    if args.baseline:
        results["before: shard 0 of 64"] = extract(model, dataset, images, tmp / "out/before",
                                                   tmp / "store-before", 0, 64, args.baseline)
        print("before (shard 0 of 64):", results["before: shard 0 of 64"], flush=True)
    results["shard 0 of 64"] = extract(model, dataset, images, tmp / "out/shard-0-of-64",
                                       tmp / "store-a", 0, 64)
    print("shard 0 of 64:", results["shard 0 of 64"], flush=True)
    results["same records alone"] = extract(model, alone, images, tmp / "out/alone",
                                            tmp / "store-b", 0, 1)
    print("same records alone:", results["same records alone"], flush=True)
    held = fill_store(tmp / "store-a", total)
    results["re-shard: shard 0 of 80"] = extract(model, dataset, images, tmp / "out/shard-0-of-80",
                                                 tmp / "store-a", 0, 80)
    print(f"store filled to {held} keys; re-shard shard 0 of 80:",
          results["re-shard: shard 0 of 80"], flush=True)
    a, b = results["shard 0 of 64"], results["same records alone"]
    print(f"ratio shard job / alone: RSS {a['rss_gb'] / b['rss_gb']:.2f}x,"
          f" PSS {a['pss_gb'] / b['pss_gb']:.2f}x")
    if args.baseline:
        before = results["before: shard 0 of 64"]
        print(f"before / now (shard 0 of 64): RSS {before['rss_gb'] / a['rss_gb']:.2f}x,"
              f" PSS {before['pss_gb'] / a['pss_gb']:.2f}x")
    (tmp / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
