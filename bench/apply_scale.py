"""Memory and time of ``python -m scalselect apply`` against the size of the copy.

For each pool size, a synthetic LLaVA-style pool (JSON Lines, unique ids, one image path
each, 1-3 rounds of question and answer; records made from their number, so any order
can be written) is written streaming, once in order (the card's dataset) and once in a
seeded shuffled order (the copy). A card selects ``--select`` records (a count, or a
percentage of the pool) spread evenly through it; it is built here from the digests
(``scalselect.select.digests``) and the required card fields, not by the workflow (no
model runs). Then ``apply CARD --dataset COPY --out OUT`` runs as its own process under
``/usr/bin/time -v``: peak RSS and wall time. The output is checked to hold exactly the
selected records. Results are appended to ``--out`` (JSON Lines) as they come.

    python bench/apply_scale.py --work /tmp/apply --sizes 100000 1000000 \\
        --select 16000 16% --out apply_scale.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scalselect.budgets import Budget  # noqa: E402
from scalselect.data.readers import iter_inspected  # noqa: E402
from scalselect.select import card as cards  # noqa: E402
from scalselect.select import digests  # noqa: E402

WORDS = ("the a an image shows of and in to is on with what color how many people this that"
         " there are picture man woman dog cat car street table red blue green white black"
         " sitting standing holding near next left right top bottom background front").split()


def record(number: int) -> dict:
    """Record ``number`` of the pool, the same whatever the order it is written in."""
    rng = random.Random(number)
    turns = []
    for r in range(rng.choice((1, 1, 2, 3))):
        question = " ".join(rng.choices(WORDS, k=rng.randint(6, 25)))
        turns.append({"from": "human", "value": ("<image>\n" if r == 0 else "") + question + "?"})
        turns.append({"from": "gpt", "value": " ".join(rng.choices(WORDS, k=rng.randint(10, 120)))})
    return {"id": f"{number:012d}", "image": f"coco/train2017/{number % 64:012d}.jpg",
            "conversations": turns}


def write_pool(path: Path, order: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for number in order:
            handle.write(json.dumps(record(int(number)), ensure_ascii=False) + "\n")


def write_card(pool: Path, chosen: set[int], out: Path) -> None:
    """A card of the records numbered ``chosen`` (their ids), with the required fields."""
    facts = digests.dataset_facts(pool)
    entries = [{"digest": digests.record_digest(sample), "id": sample.id, "images": [None],
                "score": None, "source": sample.source}
               for number, _, sample, _ in iter_inspected(pool) if number in chosen]
    entries.sort(key=lambda e: e["digest"])
    card = {"card": cards.CARD_VERSION, "dataset": facts, "selection": {
        "method": "scalselect", "budget": str(len(entries)), "n": len(entries),
        "fingerprint": digests.selection_fingerprint(e["digest"] for e in entries),
        "records": entries}}
    cards.write_card(out, cards.check_card(card))


def measure(command: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of a command under /usr/bin/time -v."""
    began = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    wall = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    return rss / 1024, wall


def run_size(work: Path, size: int, select: str, out: Path) -> None:
    folder = work / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    pool, copy = folder / "pool.jsonl", folder / "copy.jsonl"
    if not pool.exists():
        write_pool(pool, np.arange(size))
        write_pool(copy, np.random.default_rng(0).permutation(size))
    n = Budget.parse(select).resolve(size)
    chosen = set(np.linspace(0, size - 1, n).round().astype(int).tolist())
    card = folder / f"select-{n}.card.json"
    write_card(pool, chosen, card)
    selection = folder / f"select-{n}.jsonl"
    rss, wall = measure([sys.executable, "-m", "scalselect", "apply", str(card),
                         "--dataset", str(copy), "--out", str(selection)])
    with open(selection, encoding="utf-8") as handle:
        ids = {json.loads(line)["id"] for line in handle}
    assert ids == {f"{number:012d}" for number in chosen}, "apply wrote other records"
    entry = {"records": size, "selected": len(chosen), "pool_mb": copy.stat().st_size / 2**20,
             "card_mb": card.stat().st_size / 2**20, "rss_mb": round(rss, 1),
             "wall_s": round(wall, 1)}
    print(json.dumps(entry), flush=True)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--select", nargs="+", default=["16000"],
                        help="Selected records: counts or percentages of the pool.")
    parser.add_argument("--out", type=Path, default=Path("apply_scale.jsonl"))
    parser.add_argument("--keep", action="store_true", help="Keep the pools.")
    args = parser.parse_args()
    for size in args.sizes:
        for select in args.select:
            run_size(args.work, size, select, args.out)
        if not args.keep:
            shutil.rmtree(args.work / str(size))


if __name__ == "__main__":
    main()
