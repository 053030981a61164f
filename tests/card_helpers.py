"""The definitions of the selection cards' digests, written out independently of
``scalselect.select.digests`` (the tests' expected values), and small builders of
datasets, copies and cards."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def canonical_digest(sample_id: Any, messages: list[tuple[str, str]], images: list[str]) -> str:
    """SHA-256 of ``{"id": text, "images": [...], "messages": [[role, content]]}``, keys
    sorted, no spaces, UTF-8 (README, "Sharing a selection")."""
    content = {"id": None if sample_id is None else str(sample_id), "images": images,
               "messages": [[role, text] for role, text in messages]}
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_of_record(record: dict) -> str:
    """:func:`canonical_digest` of a ShareGPT or LLaVA record with string contents."""
    if "messages" in record:
        messages = [(m["role"], m["content"]) for m in record["messages"]]
        images = record.get("images") or []
    else:
        messages = [(ROLES[t["from"]], t["value"]) for t in record["conversations"]]
        image = record.get("image", record.get("images"))
        images = [] if image is None else [image] if isinstance(image, str) else image
        images = [i["path"] if isinstance(i, dict) else i for i in images]
    return canonical_digest(record.get("id"), messages, images)


def fingerprint(digests: list[str]) -> str:
    """Sum modulo 2**256 of the digests, 64 hex digits."""
    return f"{sum(int(d, 16) for d in digests) % (1 << 256):064x}"


def selection_fingerprint(digests: list[str]) -> str:
    """SHA-256 of the sorted digests, one per line."""
    return hashlib.sha256("".join(d + "\n" for d in sorted(digests)).encode()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_lines(path: Path, records: list) -> None:
    """JSON Lines, one record per line as the workflow's writers write it."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")


def write_array(path: Path, records: list) -> None:
    """A JSON array with one record per line, as the workflow's writers write it."""
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
    path.write_text(f"[\n{body}\n]\n", encoding="utf-8")


def shuffled(records: list, seed: int = 1) -> list:
    copy = list(records)
    random.Random(seed).shuffle(copy)
    return copy


def as_llava_parquet(path: Path, records: list[dict], image_root: Path) -> None:
    """ShareGPT records as LLaVA-OneVision-style parquet rows, images embedded
    (``{"bytes", "path"}``); ids as strings, as parquet pools often store them."""
    rows = []
    for record in records:
        images = record.get("images") or []
        rows.append({
            "id": str(record["id"]),
            "image": {"bytes": (image_root / images[0]).read_bytes(), "path": images[0]}
            if images else None,
            "conversations": [{"from": {v: k for k, v in ROLES.items()}[m["role"]],
                               "value": m["content"]} for m in record["messages"]],
        })
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)


def hand_card(dataset: Path, chosen: list[dict], image_root: Path | None = None) -> dict:
    """A card with the fields apply and compare need, built from the definitions above
    (not by the code under test): the dataset's facts and the ``chosen`` records."""
    records = json.loads(dataset.read_text()) if dataset.suffix == ".json" else [
        json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
    entries = sorted(({
        "digest": digest_of_record(r), "id": r.get("id"),
        "images": [sha256(image_root / p) if image_root else None for p in r.get("images", [])],
        "score": None, "source": (r.get("images") or ["text-only"])[0].split("/")[0],
    } for r in chosen), key=lambda e: e["digest"])
    return {
        "card": 1,
        "dataset": {"name": dataset.name, "file_format": dataset.suffix[1:],
                    "record_format": "sharegpt", "records": len(records),
                    "sha256": sha256(dataset),
                    "fingerprint": fingerprint([digest_of_record(r) for r in records])},
        "selection": {"method": "scalselect", "budget": str(len(entries)), "n": len(entries),
                      "fingerprint": selection_fingerprint([e["digest"] for e in entries]),
                      "records": entries},
    }
