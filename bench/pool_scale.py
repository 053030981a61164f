"""Data stages on 10M-sample pools: peak memory and wall time of validate, filter, select,
the random baseline and one extract job at 1M, 3M and 10M records, in JSON Lines, a JSON
array and parquet; the pre-change code (another checkout, ``--old``) measured in the same
run.

Synthetic LLaVA-style pools, written streaming under ``--work``: ids unique, one image
per record drawn from a few distinct files (``--images``; checking images is not what
grows with the pool: see bench/validate.py for image throughput), 1-3 question/answer
rounds with text lengths like LLaVA-665K's (about 1 KB a record as JSON; LLaVA-665K's
file holds 1.5 KB a record). The parquet
pool embeds the images' bytes (``{"bytes", "path"}`` structs, as Hugging Face datasets
write them). Each stage runs as its own process under ``/usr/bin/time -v`` (peak RSS,
wall time), as the workflow runs it: ``validate-index``, ``validate --shard 0
--num-shards S`` and ``validate-merge`` (validate's figure is the largest of the three
and their summed time), ``filter`` (which writes the filtered file's index),
``select --num 16%``, ``select --random`` and ``extract`` of shard 0 of the filtered
pool cut in shards of ``--extract-records`` records (a tiny LLaVA on the CPU, no
DataLoader workers, a fresh feature store): with the index as the workflow runs it
(``new``), and without it (``scan``: every job scanned the whole filtered file for
line starts, as before the index). Validation reads image headers only
(``--no-decode-images``) unless ``--decode``.

The free disk space is checked before each pool: a size that does not fit (pool,
filtered copy and selections) is skipped and said so. Every measurement is appended to
``--out`` (JSON Lines) as it is taken; ``--table`` prints the Markdown table with the
growth ratios from that file.

    python bench/pool_scale.py --work /tmp/pools --sizes 1000000 3000000 10000000 \\
        --old /work/main --old-sizes 1000000 --out pool_scale.jsonl
    python bench/pool_scale.py --table pool_scale.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scalselect.demo.tinymodels import build_tiny_model  # noqa: E402

WORDS = ("the a an image shows of and in to is on with what color how many people this that"
         " there are picture man woman dog cat car street table red blue green white black"
         " sitting standing holding near next left right top bottom background front large"
         " small two three building sign text written bus train plate food water sky").split()
FORMATS = ("jsonl", "json", "parquet")
STAGES = ("validate", "filter", "select", "random", "extract")
BATCH = 50_000


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def records(n: int, images: int, seed: int = 0):
    """LLaVA-665K-like records: question 6-25 words, answer 10-120, 1-3 rounds."""
    rng = random.Random(seed)
    for i in range(n):
        turns = []
        for r in range(rng.choice((1, 1, 2, 3))):
            turns.append({"from": "human",
                          "value": ("<image>\n" if r == 0 else "") + text(rng, 6, 25) + "?"})
            turns.append({"from": "gpt", "value": text(rng, 10, 120) + "."})
        yield {"id": f"{i:012d}", "image": f"coco/train2017/{i % images:012d}.jpg",
               "conversations": turns}


def write_images(root: Path, images: int) -> dict[str, bytes]:
    """Few distinct small JPEGs under ``root/coco/train2017``; their bytes by path."""
    folder = root / "coco" / "train2017"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    data = {}
    for k in range(images):
        path = folder / f"{k:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, quality=70)
        data[f"coco/train2017/{k:012d}.jpg"] = path.read_bytes()
    return data


def write_pool(path: Path, fmt: str, n: int, images: int, data: dict[str, bytes]) -> None:
    """Write a pool of ``n`` records, streaming (a batch of rows at a time)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    if fmt == "parquet":
        writer = None
        batch = []
        for record in records(n, images):
            batch.append(dict(record, image={"bytes": data[record["image"]], "path": record["image"]}))
            if len(batch) == BATCH:
                table = pa.Table.from_pylist(batch)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table, row_group_size=BATCH)
                batch = []
        if batch:
            table = pa.Table.from_pylist(batch)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        writer.close()
    else:
        with open(tmp, "w", encoding="utf-8") as handle:
            if fmt == "json":
                handle.write("[")
            for i, record in enumerate(records(n, images)):
                line = json.dumps(record, ensure_ascii=False)
                if fmt == "json":
                    handle.write((",\n" if i else "\n") + line)
                else:
                    handle.write(line + "\n")
            if fmt == "json":
                handle.write("\n]\n")
    os.replace(tmp, path)


def write_scores(path: Path, n: int) -> None:
    """scores.parquet for ``n`` filtered records (ids as the pool's), ranked."""
    importance = np.random.default_rng(1).random(n)
    order = np.lexsort((np.arange(n), -importance))
    ids = pa.array(np.char.zfill(order.astype(str), 12))
    pq.write_table(pa.table({"index": order, "id": ids, "id_type": pa.array(["str"] * n),
                             "importance": importance[order],
                             "rank": np.arange(1, n + 1, dtype=np.int64)}), path)


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``command`` under /usr/bin/time -v: (peak RSS in MB, wall seconds)."""
    began = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], cwd=cwd, capture_output=True,
                            text=True)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return peak / 1024, wall


def stages(python: str, pool: Path, images: Path, work: Path, old: bool, decode: bool,
           shards: int, model: Path, extract_shards: int) -> dict[str, list[tuple[str, list[str]]]]:
    """The commands of each stage (several for validate)."""
    ext = pool.suffix
    module = [python, "-m", "scalselect"]
    check = ["--image-root", str(images), "--dataset", str(pool)]
    check += [] if decode else ["--no-decode-images"]
    report, filtered = work / "report.json", work / f"filtered{ext}"
    if old:
        validate = [("validate", [*module, "validate", *check, "--out", str(report),
                                  "--no-progress", "--workers", "2"])]
    else:
        index = work / "index.npz"
        parts = [work / f"part-{i}.npz" for i in range(shards)]
        validate = [("index", [*module, "validate-index", "--dataset", str(pool), "--out", str(index)])]
        validate += [(f"shard {i}", [*module, "validate", *check, "--index", str(index),
                                     "--shard", str(i), "--num-shards", str(shards),
                                     "--out", str(part), "--no-progress", "--workers", "2"])
                     for i, part in enumerate(parts)]
        validate.append(("merge", [*module, "validate-merge", *check, "--index", str(index),
                                   "--parts", *map(str, parts), "--out", str(report)]))
    scores = work / "scores.parquet"
    index = work / f"filtered{ext}.index.npz"
    extract = [*module, "extract", "--model", str(model), "--model-type", "llava", "--dataset",
               str(filtered), "--image-root", str(images), "--shard", "0", "--num-shards",
               str(extract_shards), "--num-workers", "0"]
    commands = {
        "validate": validate,
        "filter": [("filter", [*module, "filter", "--dataset", str(pool), "--report", str(report),
                               "--out", str(filtered), *([] if old else ["--index", str(index)])])],
        "select": [("select", [*module, "select", "--dataset", str(filtered), "--scores",
                               str(scores), "--num", "16%", "--out", str(work / f"top{ext}")])],
        "random": [("random", [*module, "select", "--dataset", str(filtered), "--scores",
                               str(scores), "--num", "16%", "--random", "--seed", "0",
                               "--out", str(work / f"random{ext}")])],
    }
    if not old:
        commands["extract"] = [("extract", [*extract, "--index", str(index), "--out",
                                            str(work / "shard"), "--cache-dir", str(work / "store")])]
        commands["extract-scan"] = [("extract", [*extract, "--out", str(work / "shard-scan"),
                                                 "--cache-dir", str(work / "store-scan")])]
    return commands


def measure(args: argparse.Namespace) -> None:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = write_images(work / "images", args.images)
    model = work / "tiny-llava"
    if "extract" in args.stages and not model.exists():
        build_tiny_model("llava", model)
    for n in args.sizes:
        for fmt in args.formats:
            pool = work / f"pool-{n}.{fmt}"
            free = shutil.disk_usage(work).free
            # Measured on small pools: JSON ~0.96 KB a record (JSONL the same), parquet
            # with the embedded images ~0.32 KB; the filtered copy is as big again and
            # the selections a third of that.
            need = n * (1000 if fmt != "parquet" else 350) * 2.4
            if need > free - args.reserve * 2**30:
                note = (f"skipped {fmt} at {n:,}: needs about {need / 2**30:.1f} GiB,"
                        f" {free / 2**30:.1f} GiB free (keeping {args.reserve} GiB)")
                print(note, flush=True)
                append(args.out, {"records": n, "format": fmt, "skipped": note})
                continue
            began = time.perf_counter()
            write_pool(pool, fmt, n, args.images, data)
            print(f"{fmt} pool of {n:,}: {pool.stat().st_size / 2**30:.2f} GiB written in"
                  f" {time.perf_counter() - began:.0f} s", flush=True)
            runs = [("new", sys.executable, REPO)]
            if args.old and n in args.old_sizes and fmt != "parquet":
                runs.append(("old", str(args.old / ".venv/bin/python"), args.old))
            shards = max(1, round(n / args.shard_size)) if args.shard_size else 1
            for code, python, cwd in runs:
                out = work / f"out-{code}"
                out.mkdir(exist_ok=True)
                for stage, commands in stages(python, pool, work / "images", out, code == "old",
                                              args.decode, shards, model,
                                              max(1, n // args.extract_records)).items():
                    stage, variant = stage.removesuffix("-scan"), ("scan" if stage.endswith("-scan")
                                                                      else code)
                    if stage not in args.stages:
                        continue
                    if stage in ("select", "random") and not (out / "scores.parquet").exists():
                        kept = json.loads((out / "report.json").read_text())["num_valid"]
                        write_scores(out / "scores.parquet", kept)
                    steps = []
                    for name, command in commands:
                        steps.append((name, *timed(command, cwd)))
                    entry = {"records": n, "format": fmt, "code": variant, "stage": stage,
                             "shards": shards if stage == "validate" and code == "new" else None,
                             "peak_mb": round(max(s[1] for s in steps), 1),
                             "wall_s": round(sum(s[2] for s in steps), 1),
                             "steps": [[s[0], round(s[1], 1), round(s[2], 1)] for s in steps],
                             "bytes": pool.stat().st_size}
                    append(args.out, entry)
                    print(json.dumps(entry), flush=True)
            if {"validate", "filter", "select", "random"} <= set(args.stages):
                compare_outputs(work, pool.suffix)
            for code, _, _ in runs:
                shutil.rmtree(work / f"out-{code}")
            pool.unlink()


def compare_outputs(work: Path, ext: str) -> None:
    """The old and the new code wrote the same bytes (when both ran)."""
    old, new = work / "out-old", work / "out-new"
    if not old.exists():
        return
    for name in ("report.json", f"filtered{ext}", f"top{ext}", f"random{ext}"):
        same = (old / name).read_bytes() == (new / name).read_bytes()
        print(f"  {name}: {'identical' if same else 'DIFFERENT'} (old vs new code)", flush=True)
        if not same:
            raise SystemExit(f"{name} differs between the old and the new code")


def append(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def table(path: Path) -> None:
    """The Markdown table of a results file, with the growth ratios 1M -> 10M."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for note in (r["skipped"] for r in rows if "skipped" in r):
        print(f"- {note}")
    rows = [r for r in rows if "skipped" not in r]
    sizes = sorted({r["records"] for r in rows})
    print("| stage | format | code | " + " | ".join(f"{n / 1e6:g}M: RSS MB, s" for n in sizes)
          + " | RSS ratio | time ratio |")
    print("|---" * (5 + len(sizes)) + "|")
    keys = sorted({(r["stage"], r["format"], r["code"]) for r in rows},
                  key=lambda k: (STAGES.index(k[0]),
                                 FORMATS.index(k[1]), k[2]))
    for stage, fmt, code in keys:
        found = {r["records"]: r for r in rows
                 if (r["stage"], r["format"], r["code"]) == (stage, fmt, code)}
        cells = [f"{found[n]['peak_mb']:,.0f}, {found[n]['wall_s']:,.1f}" if n in found else ""
                 for n in sizes]
        lo, hi = min(found), max(found)
        ratios = (f"{found[hi]['peak_mb'] / found[lo]['peak_mb']:.2f}",
                  f"{found[hi]['wall_s'] / found[lo]['wall_s']:.2f}") if hi > lo else ("", "")
        print(f"| {stage} | {fmt} | {code} | " + " | ".join(cells) + f" | {ratios[0]} | {ratios[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/scalselect-pools"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--images", type=int, default=64, help="Distinct image files.")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="Stages to run (each needs those before it).")
    parser.add_argument("--extract-records", type=int, default=2000,
                        help="Records of the extract job's shard.")
    parser.add_argument("--decode", action="store_true", help="Decode every image in validate.")
    parser.add_argument("--shard-size", type=int, default=0,
                        help="Records per validate shard (0: one shard).")
    parser.add_argument("--old", type=Path, help="A checkout of the pre-change code (its .venv).")
    parser.add_argument("--old-sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--reserve", type=float, default=15.0, help="GiB of disk left free.")
    parser.add_argument("--out", type=Path, default=Path("pool_scale.jsonl"))
    parser.add_argument("--table", type=Path, help="Print the table of a results file.")
    args = parser.parse_args()
    if args.table:
        table(args.table)
    else:
        measure(args)


if __name__ == "__main__":
    main()
