"""`apply`: a selection rebuilt from any copy of its dataset by the content digests of its
card, on real files (JSON, JSON Lines, parquet with embedded images, image folders).
The cards here are built by the tests from the digests' definitions (card_helpers)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from card_helpers import (
    as_llava_parquet,
    digest_of_record,
    hand_card,
    shuffled,
    write_array,
    write_lines,
)
from PIL import Image

from scalselect.cli import main

SOURCES = ("coco", "gqa", "ocr_vqa")


@pytest.fixture
def pool(tmp_path: Path) -> dict:
    """30 ShareGPT records with their image files; the card selects every third."""
    images = tmp_path / "images"
    records = []
    for i in range(30):
        path = f"{SOURCES[i % 3]}/{i:03d}.png"
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 16), (i * 8, 40, 200 - i)).save(images / path)
        records.append({
            "id": i if i % 2 else f"s-{i}",
            "messages": [{"role": "user", "content": f"<image>\nWhat is in picture {i}? é"},
                         {"role": "assistant", "content": f"Answer {i}."}],
            "images": [path], "meta": {"n": i},
        })
    dataset = tmp_path / "dataset.json"
    write_array(dataset, records)
    chosen = records[::3]
    card = tmp_path / "top-10.json.card.json"
    card.write_text(json.dumps(hand_card(dataset, chosen, images), indent=1))
    return {"records": records, "chosen": chosen, "dataset": dataset, "card": card,
            "images": images, "dir": tmp_path}


def apply(*args: str | Path) -> int:
    return main(["apply", *map(str, args)])


def lines(path: Path) -> list[str]:
    """The record lines of a JSON Lines file or of a JSON array written one per line."""
    text = path.read_text(encoding="utf-8").splitlines()
    return [line.rstrip(",") for line in text if line not in ("[", "]")]


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_a_shuffled_copy_gives_exactly_the_selection(pool: dict, kind: str) -> None:
    copy = pool["dir"] / f"copy.{kind}"
    order = shuffled(pool["records"])
    (write_lines if kind == "jsonl" else write_array)(copy, order)
    out = pool["dir"] / f"out.{kind}"
    assert apply(pool["card"], "--dataset", copy, "--out", out) == 0
    chosen = {json.dumps(r) for r in pool["chosen"]}
    # The selected records, each the same bytes as in the copy, in the copy's order.
    expected = [line for line in lines(copy) if json.dumps(json.loads(line)) in chosen]
    assert len(expected) == 10 and lines(out) == expected
    assert not Path(f"{out}.missing.json").exists()


def test_a_parquet_copy_with_embedded_images_in_llava_format(pool: dict) -> None:
    copy = pool["dir"] / "copy.parquet"
    as_llava_parquet(copy, shuffled(pool["records"], seed=5), pool["images"])
    out = pool["dir"] / "out.parquet"
    assert apply(pool["card"], "--dataset", copy, "--out", out) == 0
    wanted = {str(r["id"]) for r in pool["chosen"]}
    rows = pq.read_table(copy).to_pylist()
    assert pq.read_table(out).to_pylist() == [r for r in rows if r["id"] in wanted]
    assert pq.read_schema(out) == pq.read_schema(copy)


def test_missing_and_changed_records_are_refused_then_allowed(
        pool: dict, caplog: pytest.LogCaptureFixture) -> None:
    chosen = pool["chosen"]
    gone, edited = {chosen[0]["id"], chosen[4]["id"]}, chosen[7]["id"]
    copy_records = []
    for record in shuffled(pool["records"], seed=3):
        if record["id"] in gone:
            continue
        if record["id"] == edited:
            record = {**record, "messages": [record["messages"][0],
                                             {"role": "assistant", "content": "Edited."}]}
        copy_records.append(record)
    copy = pool["dir"] / "copy.jsonl"
    write_lines(copy, copy_records)
    out = pool["dir"] / "out.jsonl"
    caplog.set_level(logging.ERROR)
    assert apply(pool["card"], "--dataset", copy, "--out", out) == 1
    assert not out.exists() and not Path(f"{out}.missing.json").exists()
    message = caplog.text
    assert "does not hold 3 of the 10 selected records" in message
    assert f"2 missing (ids {chosen[0]['id']!r}, {chosen[4]['id']!r})" in message or \
        f"2 missing (ids {chosen[4]['id']!r}, {chosen[0]['id']!r})" in message
    assert f"1 changed (their id is there with other content) (ids {edited!r})" in message

    assert apply(pool["card"], "--dataset", copy, "--out", out, "--allow-missing") == 0
    intact = {json.dumps(r) for r in chosen if r["id"] not in gone | {edited}}
    assert lines(out) == [line for line in lines(copy) if json.dumps(json.loads(line)) in intact]
    report = json.loads(Path(f"{out}.missing.json").read_text())
    assert sorted(map(str, (m["id"] for m in report["missing"]))) == sorted(map(str, gone))
    assert [c["id"] for c in report["changed"]] == [edited]
    assert report["written"] == 7 and report["selected"] == 10
    assert report["copy"]["same_as_card"] is False and report["copy"]["records"] == 28


def test_image_bytes_are_checked_under_image_root(
        pool: dict, caplog: pytest.LogCaptureFixture) -> None:
    moved = pool["dir"] / "elsewhere"
    shutil.copytree(pool["images"], moved)
    chosen = pool["chosen"]
    Image.new("RGB", (24, 16), (1, 2, 3)).save(moved / chosen[2]["images"][0])
    (moved / chosen[5]["images"][0]).unlink()
    copy = pool["dir"] / "copy.jsonl"
    write_lines(copy, shuffled(pool["records"]))
    out = pool["dir"] / "out.jsonl"
    # The text matches: without the images' folder the copy is complete.
    assert apply(pool["card"], "--dataset", copy, "--out", out) == 0
    caplog.set_level(logging.ERROR)
    assert apply(pool["card"], "--dataset", copy, "--out", out, "--image-root", moved) == 1
    assert "2 with other image bytes" in caplog.text
    assert repr(chosen[2]["id"]) in caplog.text and repr(chosen[5]["id"]) in caplog.text
    assert apply(pool["card"], "--dataset", copy, "--out", out, "--image-root", moved,
                 "--allow-missing") == 0
    report = json.loads(Path(f"{out}.missing.json").read_text())
    bad = {item["id"]: item for item in report["images"]}
    assert set(bad) == {chosen[2]["id"], chosen[5]["id"]}
    assert bad[chosen[5]["id"]]["found"] is None  # the file is gone
    assert bad[chosen[2]["id"]]["image"] == chosen[2]["images"][0]
    assert len(lines(out)) == 8


def test_embedded_image_bytes_are_always_checked(
        pool: dict, caplog: pytest.LogCaptureFixture) -> None:
    target = pool["chosen"][3]
    Image.new("RGB", (24, 16), (9, 9, 9)).save(pool["images"] / target["images"][0])
    copy = pool["dir"] / "copy.parquet"
    as_llava_parquet(copy, pool["records"], pool["images"])
    caplog.set_level(logging.ERROR)
    assert apply(pool["card"], "--dataset", copy, "--out", pool["dir"] / "out.parquet") == 1
    assert f"1 with other image bytes (ids {target['id']!r})" in caplog.text


def test_a_record_selected_twice_needs_two_copies(pool: dict) -> None:
    twice = pool["records"][:4] + [pool["records"][1]]
    dataset = pool["dir"] / "twice.json"
    write_array(dataset, twice)
    card = pool["dir"] / "twice.card.json"
    card.write_text(json.dumps(hand_card(dataset, [twice[1], twice[4]])))
    out = pool["dir"] / "out.jsonl"
    copy = pool["dir"] / "copy.jsonl"
    write_lines(copy, shuffled(twice, seed=2))
    assert apply(card, "--dataset", copy, "--out", out) == 0
    assert [json.loads(line) for line in lines(out)] == [twice[1], twice[1]]
    write_lines(copy, twice[:4])
    assert apply(card, "--dataset", copy, "--out", out) == 1


def test_a_card_of_another_dataset_is_refused(
        pool: dict, caplog: pytest.LogCaptureFixture) -> None:
    other = pool["dir"] / "other.jsonl"
    write_lines(other, [{**r, "id": f"x{r['id']}"} for r in pool["records"]])
    out = pool["dir"] / "out.jsonl"
    caplog.set_level(logging.ERROR)
    assert apply(pool["card"], "--dataset", other, "--out", out) == 2
    assert "is the card of another dataset: dataset.json (30 records" in caplog.text
    assert not out.exists()


def _drop_digest(card: dict) -> None:
    del card["selection"]["records"][1]["digest"]


@pytest.mark.parametrize(("change", "message"), [
    (_drop_digest, "no field selection.records[1].digest"),
    (lambda c: c["dataset"].update(records="many"),
     'dataset.records is "many", expected a record count'),
    (lambda c: c["selection"]["records"][2].update(id=[1]),
     "selection.records[2].id is [1], expected an id"),
    (lambda c: c["selection"].update(fingerprint="0" * 64),
     "selection.fingerprint does not match selection.records"),
    (lambda c: c.update(card=7), "card is 7, expected card format version 1"),
    (lambda c: c.pop("dataset"), "no field dataset"),
])
def test_a_malformed_card_names_the_field(pool: dict, change, message: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    card = json.loads(pool["card"].read_text())
    change(card)
    pool["card"].write_text(json.dumps(card))
    out = pool["dir"] / "out.json"
    caplog.set_level(logging.ERROR)
    assert apply(pool["card"], "--dataset", pool["dataset"], "--out", out) == 2
    assert f"malformed card: {message}" in caplog.text or message in caplog.text
    assert not out.exists()


def test_a_card_that_is_not_json_is_named(pool: dict, caplog: pytest.LogCaptureFixture) -> None:
    pool["card"].write_text('{"card": 1,\n  "dataset": }')
    caplog.set_level(logging.ERROR)
    assert apply(pool["card"], "--dataset", pool["dataset"], "--out", pool["dir"] / "o.json") == 2
    assert "not a card: invalid JSON at line 2" in caplog.text


def test_the_hand_card_agrees_with_the_digests_module(pool: dict) -> None:
    """The definitions the tests use and the package's are the same (a guard for the
    other tests, whose cards come from card_helpers)."""
    from scalselect.data.readers import iter_samples
    from scalselect.select.digests import record_digest

    ours = [record_digest(s) for _, s, _ in iter_samples(pool["dataset"])]
    assert ours == [digest_of_record(r) for r in pool["records"]]


def test_both_passes_over_the_copy_report_progress(
    pool: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """apply reads the whole copy twice (match, then write): each pass logs its records."""
    copy = pool["dir"] / "copy.jsonl"
    write_lines(copy, shuffled(pool["records"]))
    with caplog.at_level("INFO", logger="scalselect.progress"):
        assert apply(pool["card"], "--dataset", copy, "--out", pool["dir"] / "out.jsonl") == 0
    found = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress: ")]
    n = len(pool["records"])
    assert any(line.startswith(f"progress: {n} records,") for line in found), found
    assert any(line.startswith(f"progress: {n}/{n} records (100.0%)") for line in found), found
