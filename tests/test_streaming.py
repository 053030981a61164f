"""Streaming the records of a dataset file: JSON arrays parsed record by record (with
their byte offsets), JSON Lines line by line, parquet by row batches; seeking through an
index; the bad inputs a stream must name (file and record); writing records back."""

from __future__ import annotations

import hashlib
import json
import random
from array import array
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import demo_parquet

from scalselect.data import readers
from scalselect.data.readers import ReadStats, build_index, iter_records, load_dataset
from scalselect.data.records import DatasetError
from scalselect.data.writers import copy_records


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.3:
        return rng.choice([1, -2.5, True, None, "x", "é😀\u2028", 'a"b\\', 1e300, 10**30])
    if roll < 0.6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"{rng.choice('aüi')}{i}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 3))}


@pytest.mark.parametrize("block", [1, 3, 64, 1 << 20])
def test_json_array_streams_the_records_json_load_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    # Blocks as small as one byte cut every token, escape and multi-byte character.
    monkeypatch.setattr(readers, "READ_BLOCK", block)
    rng = random.Random(block)
    for trial in range(40):
        records = [_random_value(rng) for _ in range(rng.randint(1, 8))]
        text = json.dumps(records, ensure_ascii=trial % 3 == 0, indent=trial % 3 or None)
        path = tmp_path / "d.json"
        path.write_bytes((b"\xef\xbb\xbf" if trial % 4 == 0 else b"") + text.encode())
        stats = ReadStats(offsets=array("q"))
        assert [r for _, r in iter_records(path, stats=stats)] == json.loads(text)
        raw = path.read_bytes()
        assert stats.sha256 == hashlib.sha256(raw).hexdigest()
        # Every recorded offset is where its record starts.
        decoder = json.JSONDecoder()
        for offset, record in zip(stats.offsets, records, strict=True):
            assert decoder.raw_decode(raw[offset:].decode())[0] == record
        index = build_index(path)
        assert index.count == len(records) and index.sha256 == stats.sha256
        for start in range(len(records)):
            part = [r for _, r in iter_records(path, start, start + 2, index=index)]
            assert part == records[start : start + 2]


def test_json_lines_stream_and_seek(tmp_path: Path) -> None:
    rng = random.Random(0)
    records = [{"id": i, "v": _random_value(rng)} for i in range(30)]
    path = tmp_path / "d.jsonl"
    ends = ["\n", "\r\n", "\n\n  \n"]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + ends[i % 3] for i, r in enumerate(records)),
                    encoding="utf-8")
    assert [(i, r) for i, r in iter_records(path)] == list(enumerate(records))
    index = build_index(path)
    assert index.count == 30 and index.layout == "lines"
    raw = path.read_bytes()
    assert [json.loads(raw[o:].split(b"\n")[0]) for o in index.offsets] == records
    assert list(iter_records(path, 17, 20, index=index)) == [(i, records[i]) for i in (17, 18, 19)]
    assert list(iter_records(path, 28)) == [(28, records[28]), (29, records[29])]


def test_truncated_json_array_names_the_record(tmp_path: Path) -> None:
    # indent=1: "[" on line 1, then four lines per record: record 3 starts on line 14.
    text = json.dumps([{"id": i, "text": "é" * i} for i in range(4)], indent=1)
    path = tmp_path / "d.json"
    path.write_text(text[: text.index('"id": 3') + 4], encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        list(iter_records(path))
    assert str(error.value) == (
        f"{path}: the file ends inside record 3, which starts at line 14, column 2: truncated?"
    )
    path.write_text(text[: text.rindex("}") + 1], encoding="utf-8")  # the closing ] lost
    with pytest.raises(DatasetError, match="ends inside the array, after 4 records: truncated"):
        list(iter_records(path))
    # validate finds it before anything else runs.
    from scalselect.data.validation import validate_file

    with pytest.raises(DatasetError, match="after 4 records"):
        validate_file(path, tmp_path, workers=1, progress=False)


def test_json_lines_line_that_is_not_json_names_line_and_record(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": 0}\n\n{"id": 1}\n{"id": 2, oops}\n{"id": 3}\n')
    with pytest.raises(DatasetError) as error:
        list(iter_records(path))
    assert str(error.value) == (
        f"{path}: invalid JSON Lines record at line 4, column 11: Expecting property name"
        " enclosed in double quotes (record 2)"
    )
    # Reading from the index (a validate shard) names the byte offset instead of the line.
    index = build_index(path)
    with pytest.raises(DatasetError, match=r"at byte 21, column 11: .* \(record 2\)"):
        list(iter_records(path, 2, index=index))
    from scalselect.data.validation import validate_file

    with pytest.raises(DatasetError, match=r"line 4, column 11: .* \(record 2\)"):
        validate_file(path, tmp_path, workers=1, progress=False)


def test_json_array_with_a_bad_record_names_line_column_and_record(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n {"id": 0},\n {"id": "é", "x": tru},\n {"id": 2}\n]\n', encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        list(iter_records(path))
    assert str(error.value) == f"{path}: invalid JSON at line 3, column 19: Expecting value (record 1)"
    path.write_text('[{"id": 0} {"id": 1}]')
    with pytest.raises(DatasetError, match=r"line 1, column 12: expecting ',' or '\]' after record 0"):
        list(iter_records(path))
    path.write_text('[{"id": 0}] [')
    with pytest.raises(DatasetError, match="extra data after the array"):
        list(iter_records(path))


def _llava_rows(images: list[Any]) -> list[dict[str, Any]]:
    return [
        {"id": f"s{i}", "image": image, "data_source": "ocr" if i % 2 else "chart",
         "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                           {"from": "gpt", "value": f"Answer {i}."}]}
        for i, image in enumerate(images)
    ]


def test_parquet_rows_stream_by_batch_with_projection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "PARQUET_BATCH", 3)
    rows = _llava_rows([{"bytes": bytes([i]) * 5, "path": f"{i}.png"} for i in range(10)])
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    assert [r for _, r in iter_records(path)] == rows
    assert list(iter_records(path, 5, 7)) == [(5, rows[5]), (6, rows[6])]
    projected = [r for _, r in iter_records(path, columns=["id", "nope"])]
    assert projected == [{"id": r["id"]} for r in rows]
    index = build_index(path)
    assert index.count == 10 and index.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    sample = load_dataset(path).sample(3)
    assert sample.images == ("3.png",) and sample.embedded == (bytes([3]) * 5,)


def test_parquet_without_a_conversations_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    rows = [{"id": "a", "image": {"bytes": b"x", "path": None}, "text": "hi"}] * 3
    pq.write_table(pa.Table.from_pylist(rows), path)
    from scalselect.data.validation import validate_file

    with pytest.raises(DatasetError) as error:
        validate_file(path, tmp_path, workers=1, progress=False)
    assert str(error.value) == (
        f"{path}: no column 'messages' or 'conversations' (columns: id, image, text); every"
        " row needs one"
    )
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="not a readable parquet file"):
        list(iter_records(path))


def test_copy_records_keeps_parquet_schema_and_bytes(tmp_path: Path) -> None:
    rows = _llava_rows([{"bytes": bytes([i]) * 3, "path": None} for i in range(7)])
    source = tmp_path / "d.parquet"
    schema = pa.Table.from_pylist(rows).schema.with_metadata({b"huggingface": b"{}"})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), source, row_group_size=3)
    out = tmp_path / "out.parquet"
    assert copy_records(source, out, keep=[0, 4, 5]) == 7
    written = pq.read_table(out)
    assert written.schema == schema and written.schema.metadata == schema.metadata
    assert written.to_pylist() == [rows[0], rows[4], rows[5]]
    with pytest.raises(DatasetError, match="dataset index 9 is not in"):
        copy_records(source, tmp_path / "bad.parquet", keep=[1, 9])
    assert not (tmp_path / "bad.parquet").exists()
    with pytest.raises(DatasetError, match="a parquet dataset is written as parquet"):
        copy_records(source, tmp_path / "x.json", keep=[1])


# ------------------------------------------------------ the stages on the demo, byte for byte


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scalselect.demo.build import build_dataset

    root = tmp_path_factory.mktemp("demo")
    build_dataset(root)
    records = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    (root / "dataset.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    return root


def _expected_bytes(records: list[Any], suffix: str) -> bytes:
    """A dataset file as the stages write one, from plain json."""
    texts = [json.dumps(r, ensure_ascii=False) for r in records]
    if suffix == ".jsonl":
        return "".join(t + "\n" for t in texts).encode()
    return ("[" + "".join(("," if i else "") + "\n" + t for i, t in enumerate(texts)) + "\n]\n").encode()


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_filter_and_select_write_what_plain_json_gives(demo: Path, tmp_path: Path, suffix: str) -> None:
    import numpy as np
    import pandas as pd

    from scalselect.cli import main

    source = demo / f"dataset{suffix}"
    text = source.read_text(encoding="utf-8")
    records = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    report = tmp_path / "report.json"
    assert main(["validate", "--dataset", str(source), "--image-root", str(demo / "images"),
                 "--out", str(report), "--no-progress", "--workers", "1"]) == 0
    findings = json.loads(report.read_text())
    dropped = {e["index"] for e in findings["invalid"]} | set(findings["text_only"])
    kept = [r for i, r in enumerate(records) if i not in dropped]
    filtered = tmp_path / f"filtered{suffix}"
    assert main(["filter", "--dataset", str(source), "--report", str(report),
                 "--out", str(filtered)]) == 0
    assert filtered.read_bytes() == _expected_bytes(kept, suffix)
    # Scores with a tie, as scoring writes them (ranked by importance, then index).
    importance = np.random.default_rng(5).random(len(kept))
    importance[3] = importance[7]
    ranked = sorted(range(len(kept)), key=lambda i: (-importance[i], i))
    scores = tmp_path / "scores.parquet"
    pd.DataFrame({
        "index": ranked, "id": [str(kept[i]["id"]) for i in ranked],
        "id_type": ["int" if isinstance(kept[i]["id"], int) else "str" for i in ranked],
        "importance": importance[ranked], "rank": range(1, len(kept) + 1),
    }).to_parquet(scores)
    for n in (1, 32, 200):
        out = tmp_path / f"top-{n}{suffix}"
        assert main(["select", "--dataset", str(filtered), "--scores", str(scores),
                     "--num", str(n), "--out", str(out)]) == 0
        assert out.read_bytes() == _expected_bytes([kept[i] for i in sorted(ranked[:n])], suffix)
        out = tmp_path / f"random-{n}{suffix}"
        assert main(["select", "--dataset", str(filtered), "--scores", str(scores),
                     "--num", str(n), "--random", "--seed", "3", "--out", str(out)]) == 0
        drawn = np.random.default_rng(3).permutation(len(kept))[:n]
        assert out.read_bytes() == _expected_bytes([kept[i] for i in sorted(drawn)], suffix)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_filter_index_lets_an_extract_shard_seek_to_its_records(
    demo: Path, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import pyarrow.parquet as pq

    import scalselect.data.index
    from scalselect.cli import main
    from scalselect.data.index import DatasetIndex
    from scalselect.extract.shard import read_shard_records

    # Offsets spill to the temporary file many times over (as at 10M records).
    monkeypatch.setattr(scalselect.data.index, "OFFSETS_CHUNK", 16)
    source = demo_parquet(demo) if suffix == ".parquet" else demo / f"dataset{suffix}"
    report = tmp_path / "report.json"
    assert main(["validate", "--dataset", str(source), "--image-root", str(demo / "images"),
                 "--out", str(report), "--no-progress", "--workers", "1"]) == 0
    filtered, index_file = tmp_path / f"filtered{suffix}", tmp_path / "index.npz"
    assert main(["filter", "--dataset", str(source), "--report", str(report),
                 "--out", str(filtered), "--index", str(index_file)]) == 0
    data = filtered.read_bytes()
    if suffix == ".parquet":
        kept = pq.read_table(filtered).to_pylist()
    else:
        kept = json.loads(data) if suffix == ".json" else [json.loads(x) for x in data.splitlines()]
    index = DatasetIndex.load(index_file)
    assert (index.count, index.size, index.sha256) == (
        len(kept), len(data), hashlib.sha256(data).hexdigest())
    if suffix != ".parquet":
        assert index.layout == ("lines" if suffix == ".jsonl" else "array")
        decoder = json.JSONDecoder()
        assert [decoder.raw_decode(data[int(o):].decode())[0] for o in index.offsets] == kept
    for n in (1, 4, 7):
        got = [read_shard_records(filtered, i, n, index) for i in range(n)]
        assert [r for _, records in got for r in records] == kept
        assert [list(indices) for indices, _ in got] == [
            list(read_shard_records(filtered, i, n)[0]) for i in range(n)]


@pytest.mark.integration  # the stages in a fresh interpreter
def test_data_stages_never_load_torch(demo: Path, tmp_path: Path) -> None:
    """validate (all three steps), filter and select run without torch: importing it
    costs ~0.6 GB in every data job (and in each of validate's image workers)."""
    import subprocess
    import sys

    dataset, images = demo / "dataset.jsonl", demo / "images"
    out = tmp_path
    steps = [
        ["validate-index", "--dataset", dataset, "--out", out / "index.npz"],
        ["validate", "--dataset", dataset, "--image-root", images, "--index", out / "index.npz",
         "--shard", "0", "--num-shards", "2", "--out", out / "p0.npz", "--no-progress"],
        ["validate", "--dataset", dataset, "--image-root", images, "--index", out / "index.npz",
         "--shard", "1", "--num-shards", "2", "--out", out / "p1.npz", "--no-progress"],
        ["validate-merge", "--dataset", dataset, "--image-root", images, "--index",
         out / "index.npz", "--parts", out / "p0.npz", out / "p1.npz", "--out", out / "report.json"],
        ["filter", "--dataset", dataset, "--report", out / "report.json", "--out",
         out / "kept.jsonl", "--index", out / "kept.index.npz"],
    ]
    script = ("import sys\nfrom scalselect.cli import main\n"
              "for args in {steps!r}:\n    assert main(args) == 0, args\n"
              "assert 'torch' not in sys.modules, 'a data stage imported torch'\n")
    commands = [[str(part) for part in step] for step in steps]
    result = subprocess.run([sys.executable, "-c", script.format(steps=commands)],
                            capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", ["dataset.json", "dataset.jsonl", "parquet"])
def test_sharded_validation_gives_the_same_report_bytes(
    demo: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scalselect.data.index
    import scalselect.data.validation
    from scalselect.cli import main
    from scalselect.data.index import DatasetIndex

    # As at 10M records: the index's offsets spill to a temporary file many times over,
    # and repeated ids are searched for in 8 buckets of digests.
    monkeypatch.setattr(scalselect.data.index, "OFFSETS_CHUNK", 16)
    monkeypatch.setattr(scalselect.data.validation, "_DIGESTS_AT_ONCE", 40)
    source = demo_parquet(demo) if name == "parquet" else demo / name
    common = ["--dataset", str(source), "--image-root", str(demo / "images")]
    whole = tmp_path / "whole.json"
    assert main(["validate", *common, "--out", str(whole), "--no-progress", "--workers", "1"]) == 0
    index = tmp_path / "index.npz"
    assert main(["validate-index", "--dataset", str(source), "--out", str(index)]) == 0
    if name != "parquet":
        data = source.read_bytes()
        records = json.loads(data) if name.endswith(".json") else [
            json.loads(line) for line in data.splitlines() if line.strip()]
        decoder = json.JSONDecoder()
        offsets = DatasetIndex.load(index).offsets
        assert [decoder.raw_decode(data[int(o):].decode())[0] for o in offsets] == records
    parts = [str(tmp_path / f"part-{i}.npz") for i in range(3)]
    for i, part in enumerate(parts):
        assert main(["validate", *common, "--index", str(index), "--shard", str(i),
                     "--num-shards", "3", "--out", part, "--no-progress", "--workers", "2"]) == 0
    merged = tmp_path / "merged.json"
    # Parts named in any order (a shell glob sorts part-10 before part-2).
    assert main(["validate-merge", *common, "--index", str(index), "--parts", *parts[::-1],
                 "--out", str(merged)]) == 0
    assert merged.read_bytes() == whole.read_bytes()
    report = json.loads(merged.read_text())
    # The repeated id sits in two shards (records 4 and 127 of 266 in the JSON files).
    assert report["duplicate_ids"] and report["counts"]["duplicate_id"] == 2
    if name != "parquet":
        assert report["duplicate_ids"] == [{"id": 227, "indices": [4, 127]}]


def test_merged_source_counts_order_ties_by_first_valid_record(tmp_path: Path) -> None:
    """Sources with equal counts are listed by their first *valid* record over the
    whole dataset, whichever shard holds it."""
    from scalselect.cli import main

    def record(number: int, source: str) -> dict:
        return {"id": f"r{number}", "src": source, "conversations": [
            {"from": "human", "value": "Say something."}, {"from": "gpt", "value": "Something."}]}

    # Shards of 3: [b (no id: invalid), a, c], [b, b, a]. a and b have two valid records
    # each; a's first valid record (1) comes before b's (3), though b's first record is 0.
    records = [record(n, s) for n, s in enumerate("bacbba")]
    del records[0]["id"]
    dataset = tmp_path / "pool.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    common = ["--dataset", str(dataset), "--image-root", str(tmp_path)]
    index = tmp_path / "index.npz"
    assert main(["validate-index", "--dataset", str(dataset), "--out", str(index)]) == 0
    parts = [str(tmp_path / f"part-{i}.npz") for i in range(2)]
    for i, part in enumerate(parts):
        assert main(["validate", *common, "--source-field", "src", "--index", str(index),
                     "--shard", str(i), "--num-shards", "2", "--out", part, "--no-progress",
                     "--workers", "1"]) == 0
    report = tmp_path / "report.json"
    assert main(["validate-merge", *common, "--index", str(index), "--parts", *parts,
                 "--out", str(report)]) == 0
    assert list(json.loads(report.read_text())["sources"].items()) == [("a", 2), ("b", 2), ("c", 1)]


def test_parquet_dataset_through_validate_filter_and_select(demo: Path, tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from scalselect.cli import main

    source = demo_parquet(demo)
    rows = pq.read_table(source).to_pylist()
    report_path = tmp_path / "report.json"
    assert main(["validate", "--dataset", str(source), "--image-root", str(demo / "images"),
                 "--out", str(report_path), "--no-progress", "--workers", "1"]) == 0
    report = json.loads(report_path.read_text())
    assert report["format"] == "llava" and report["num_samples"] == len(rows)
    # Embedded images are checked like their files: the same defects, found in the bytes.
    json_report = tmp_path / "json-report.json"
    assert main(["validate", "--dataset", str(demo / "dataset_llava.json"), "--image-root",
                 str(demo / "images"), "--out", str(json_report), "--no-progress",
                 "--workers", "1"]) == 0
    json_reasons = {str(e["id"]): e["reasons"] for e in json.loads(json_report.read_text())["invalid"]}
    for entry in report["invalid"]:
        assert entry["reasons"] == json_reasons[entry["id"]], entry
    embedded_failures = [e for e in report["invalid"] if rows[e["index"]]["image"]
                         and rows[e["index"]]["image"]["bytes"] is not None
                         and {"corrupt_image", "not_an_image"} & set(e["reasons"])]
    assert embedded_failures
    filtered = tmp_path / "filtered.parquet"
    assert main(["filter", "--dataset", str(source), "--report", str(report_path),
                 "--out", str(filtered)]) == 0
    dropped = {e["index"] for e in report["invalid"]} | set(report["text_only"])
    kept = [r for i, r in enumerate(rows) if i not in dropped]
    table = pq.read_table(filtered)
    assert table.schema == pq.read_schema(source) and table.to_pylist() == kept
    importance = np.random.default_rng(2).random(len(kept))
    ranked = sorted(range(len(kept)), key=lambda i: (-importance[i], i))
    scores = tmp_path / "scores.parquet"
    pd.DataFrame({"index": ranked, "id": [kept[i]["id"] for i in ranked], "id_type": "str",
                  "importance": importance[ranked], "rank": range(1, len(kept) + 1)}).to_parquet(scores)
    out = tmp_path / "top-20.parquet"
    assert main(["select", "--dataset", str(filtered), "--scores", str(scores), "--num", "20",
                 "--out", str(out)]) == 0
    assert pq.read_table(out).to_pylist() == [kept[i] for i in sorted(ranked[:20])]


def test_an_index_is_the_same_bytes_whenever_it_is_written(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same dataset gives the same index file at any hour (zip members carry a time
    stamp: a run's outputs must not depend on when it ran)."""
    import time

    from scalselect.data.readers import write_index

    write_index(demo / "dataset.json", tmp_path / "first.npz")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 86_400 * 3 + 7)
    write_index(demo / "dataset.json", tmp_path / "later.npz")
    assert (tmp_path / "first.npz").read_bytes() == (tmp_path / "later.npz").read_bytes()
