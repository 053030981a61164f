"""Derived files are bound to the dataset they index, and ids read as users expect:
real shard directories, real scoring and selection through the command line."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalselect.cli import main
from scalselect.data.writers import write_records
from scalselect.extract import features

# Ids as real datasets have them: zero-padded COCO strings, ints, and an int and a string
# that print the same.
IDS = ["000000000017", 93, 7, "7", "gqa_1", 12, "000000000040", 5]


def records(ids: list) -> list[dict]:
    return [
        {"id": i, "messages": [{"role": "user", "content": f"<image>\nQ{n}"},
                               {"role": "assistant", "content": f"A{n}"}],
         "images": [f"coco/{n}.jpg"]}
        for n, i in enumerate(ids)
    ]


def write_extraction(out: Path, dataset: Path, shards: int = 2, seed: int = 0) -> Path:
    """Shard directories of ``dataset`` as extract writes them, with known features."""
    data = json.loads(dataset.read_text())
    matrix = np.random.default_rng(seed).normal(size=(len(data), 6)).astype(np.float32)
    digest = hashlib.sha256(dataset.read_bytes()).hexdigest()
    bounds = np.linspace(0, len(data), shards + 1).astype(int)
    for shard, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = pd.DataFrame({
            "index": np.arange(start, stop, dtype=np.int64),
            "id": [features.encode_id(r["id"]) for r in data[start:stop]],
            "status": "ok", "n_vision": 4, "n_kept": 2, "seq_len": 9,
            "truncated": False, "detail": "",
        })
        features.write_shard(out / f"shard-{shard}-of-{shards}", rows, matrix[start:stop],
                             {"dataset_sha256": digest})
    return out


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, Path]:
    dataset = tmp_path / "filtered.json"
    write_records(dataset, records(IDS))
    extraction = write_extraction(tmp_path / "extract", dataset)
    out = tmp_path / "score/importance_scores.jsonl"
    assert main(["score", "--features", str(extraction), "--out", str(out)]) == 0
    return dataset, out.with_name("scores.parquet")


def test_scores_parquet_ids_compare_directly_in_pandas(scored: tuple[Path, Path]) -> None:
    _, parquet = scored
    table = pd.read_parquet(parquet)
    assert list(table.columns) == ["index", "id", "id_type", "importance", "rank"]
    assert table[table.id == "000000000017"]["index"].tolist() == [0]
    assert table[table.id == "93"]["index"].tolist() == [1]
    # The int 7 and the string "7" stay two samples, told apart by id_type.
    sevens = table[table.id == "7"].sort_values("index")
    assert sevens["index"].tolist() == [2, 3] and sevens["id_type"].tolist() == ["int", "str"]


def test_load_rows_gives_the_ids_as_given(tmp_path: Path) -> None:
    dataset = tmp_path / "d.json"
    write_records(dataset, records(IDS))
    rows = features.load_rows(write_extraction(tmp_path / "x", dataset))
    assert rows["id"].tolist() == IDS
    assert rows[rows.id == "000000000017"]["index"].tolist() == [0]


def test_select_refuses_scores_of_the_same_records_in_another_order(
    scored: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset, parquet = scored
    out = tmp_path / "top-3.json"
    assert main(["select", "--dataset", str(dataset), "--scores", str(parquet),
                 "--num", "3", "--out", str(out)]) == 0
    ranked = pd.read_parquet(parquet).sort_values("rank")
    expected = sorted(ranked["index"].tolist()[:3])
    assert json.loads(out.read_text()) == [records(IDS)[i] for i in expected]

    shuffled = tmp_path / "shuffled.json"
    write_records(shuffled, records(IDS)[::-1])
    assert main(["select", "--dataset", str(shuffled), "--scores", str(parquet),
                 "--num", "3", "--out", str(tmp_path / "wrong.json")]) == 2
    assert re.search(
        f"{re.escape(str(parquet))} does not belong to {re.escape(str(shuffled))}: dataset"
        r" index \d+ holds id .* but the scores have id .* there", caplog.text
    )
    assert not (tmp_path / "wrong.json").exists()


def test_shards_of_different_datasets_are_not_scored_or_exported_together(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    write_records(first, records(IDS))
    write_records(second, records(IDS[::-1]))
    a = write_extraction(tmp_path / "a", first)
    b = write_extraction(tmp_path / "b", second)
    mixed = [str(a / "shard-0-of-2"), str(b / "shard-1-of-2")]
    out = tmp_path / "mixed.npz"
    assert main(["export-npz", "--features", *mixed, "--out", str(out)]) == 2
    assert f"{mixed[0]} and {mixed[1]} were extracted from different datasets" in caplog.text
    assert not out.exists()
    caplog.clear()
    assert main(["score", "--features", *mixed, "--out", str(tmp_path / "s.jsonl")]) == 2
    assert "were extracted from different datasets" in caplog.text


def test_export_npz_writes_string_ids_as_the_original_tool(tmp_path: Path) -> None:
    dataset = tmp_path / "d.json"
    write_records(dataset, records([17, 93, 7, 12]))
    out = tmp_path / "all_representations.npz"
    assert main(["export-npz", "--features", str(write_extraction(tmp_path / "x", dataset)),
                 "--out", str(out)]) == 0
    with np.load(out) as npz:
        ids = npz["sample_ids"]
        assert ids.dtype.kind == "U" and ids.tolist() == ["17", "93", "7", "12"]
        # What the original cur.py does with each id.
        assert all(i.isdigit() for i in ids)
