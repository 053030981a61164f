"""`export`: a selection written for a trainer (LLaVA JSON, ShareGPT messages JSON Lines with
its LLaMA-Factory entry, an id list), read back with the package's readers and checked
against the selected records, their conversations and their image bytes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from card_helpers import as_llava_parquet, write_array
from PIL import Image

from scalselect.cli import main
from scalselect.data.readers import load_dataset
from scalselect.data.records import resolve_image

LLAVA_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


@pytest.fixture
def selection(tmp_path: Path) -> dict:
    """Eight ShareGPT records (one text-only, one with a system turn) and their images."""
    images = tmp_path / "images"
    records = []
    for i in range(8):
        messages = [{"role": "user", "content": f"<image>\nWhat is {i}? ü"},
                    {"role": "assistant", "content": f"It is {i}."}]
        record = {"id": f"r{i}" if i % 2 else i, "messages": messages, "images": []}
        if i == 3:
            record["messages"] = [{"role": "user", "content": "Text only?"},
                                  {"role": "assistant", "content": "Yes."}]
        else:
            path = f"coco/{i}.png"
            (images / path).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 6), (30 * i, 0, 0)).save(images / path)
            record["images"] = [path]
        if i == 5:
            record["messages"].insert(0, {"role": "system", "content": "Be brief."})
        records.append(record)
    path = tmp_path / "top-8.json"
    write_array(path, records)
    return {"records": records, "path": path, "images": images, "dir": tmp_path}


def export(*args: str | Path) -> int:
    return main(["export", *map(str, args)])


def image_bytes(root: Path, paths: tuple[str, ...]) -> list[bytes]:
    return [resolve_image(root, p).read_bytes() for p in paths]


def test_llava_export_holds_the_selected_conversations(selection: dict) -> None:
    out = selection["dir"] / "llava"
    assert export(selection["path"], "--to", "llava", "--out", out) == 0
    written = json.loads((out / "top-8.json").read_text())
    for record, exported in zip(selection["records"], written, strict=True):
        assert list(exported) == (["id", "image", "conversations"] if record["images"]
                                  else ["id", "conversations"])
        assert exported["id"] == record["id"]
        assert exported["conversations"] == [
            {"from": LLAVA_FROM[m["role"]], "value": m["content"]} for m in record["messages"]]
    # Read back as LLaVA by the package: the same samples, the same image bytes.
    back = load_dataset(out / "top-8.json", "llava")
    for record, sample in zip(selection["records"], back, strict=True):
        assert [(m.role, m.content) for m in sample.messages] == [
            (m["role"], m["content"]) for m in record["messages"]]
        assert image_bytes(selection["images"], sample.images) == [
            (selection["images"] / p).read_bytes() for p in record["images"]]
    assert not (out / "images").exists()  # image files keep their paths


def test_sharegpt_export_of_a_parquet_pool_writes_its_images(selection: dict) -> None:
    pool = selection["dir"] / "top-8.parquet"
    as_llava_parquet(pool, selection["records"], selection["images"])
    out = selection["dir"] / "sharegpt"
    assert export(pool, "--to", "sharegpt", "--out", out, "--name", "scal_top8") == 0
    assert json.loads((out / "dataset_info.json").read_text()) == {"scal_top8": {
        "file_name": "scal_top8.jsonl", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}}}
    rows = pq.read_table(pool).to_pylist()
    back = load_dataset(out / "scal_top8.jsonl", "sharegpt")
    assert len(back) == len(rows) == 8
    for row, sample in zip(rows, back, strict=True):
        assert sample.id == row["id"]
        assert [(LLAVA_FROM[m.role], m.content) for m in sample.messages] == [
            (t["from"], t["value"]) for t in row["conversations"]]
        embedded = [] if row["image"] is None else [row["image"]["bytes"]]
        # Embedded images are files under the export folder, referenced relative to it.
        assert all(p.startswith("images/") for p in sample.images)
        assert image_bytes(out, sample.images) == embedded


def test_id_list(selection: dict) -> None:
    out = selection["dir"] / "ids"
    assert export(selection["path"], "--to", "ids", "--out", out) == 0
    assert (out / "top-8.ids.txt").read_text().splitlines() == [
        str(r["id"]) for r in selection["records"]]


def test_a_selection_without_ids_cannot_be_an_id_list(
        selection: dict, caplog: pytest.LogCaptureFixture) -> None:
    records = [{k: v for k, v in r.items() if k != "id"} if i == 2 else r
               for i, r in enumerate(selection["records"])]
    write_array(selection["path"], records)
    caplog.set_level(logging.ERROR)
    out = selection["dir"] / "ids"
    assert export(selection["path"], "--to", "ids", "--out", out) == 2
    assert "record 2 has id None: an id list cannot name it" in caplog.text
    assert not out.exists()
