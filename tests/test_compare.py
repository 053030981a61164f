"""`compare`: two selections (files or cards) of the same data, matched by content, on
real files in different formats and orders; cards built by the tests (card_helpers)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest
from card_helpers import as_llava_parquet, hand_card, shuffled, write_array, write_lines
from PIL import Image
from scipy.stats import spearmanr

from scalselect.cli import main

SOURCES = ("coco", "gqa", "vg")


@pytest.fixture
def data(tmp_path: Path) -> dict:
    images = tmp_path / "images"
    records = []
    for i in range(24):
        path = f"{SOURCES[i % 3]}/{i}.png"
        (images / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, i, i)).save(images / path)
        records.append({"id": i, "images": [path], "messages": [
            {"role": "user", "content": f"<image>\nQ{i}"}, {"role": "assistant", "content": f"A{i}"}]})
    dataset = tmp_path / "dataset.json"
    write_array(dataset, records)
    return {"records": records, "dataset": dataset, "images": images, "dir": tmp_path}


def run_compare(capsys: pytest.CaptureFixture, *args: str | Path) -> dict:
    capsys.readouterr()
    assert main(["compare", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def card_with_scores(data: dict, chosen: list[dict], scores: dict[int, float], name: str) -> Path:
    card = hand_card(data["dataset"], chosen)
    for entry in card["selection"]["records"]:
        entry["score"] = scores[entry["id"]]
    path = data["dir"] / f"{name}.card.json"
    path.write_text(json.dumps(card))
    return path


def test_files_from_different_copies_compare_by_content(data: dict, capsys) -> None:
    records = data["records"]
    a, b = records[:12], records[6:20]
    first = data["dir"] / "a.json"
    write_array(first, a)
    # B comes from another copy: LLaVA format, parquet, embedded images, shuffled.
    second = data["dir"] / "b.parquet"
    as_llava_parquet(second, shuffled(b), data["images"])
    result = run_compare(capsys, first, second)
    assert (result["overlap"], result["only_a"], result["only_b"]) == (6, 6, 8)
    assert result["jaccard"] == pytest.approx(6 / 20)
    assert result["a"]["records"] == 12 and result["b"]["records"] == 14
    source = lambda r: r["images"][0].split("/")[0]  # noqa: E731
    both = Counter(source(r) for r in records[6:12])
    expected = [{"source": s, "a": Counter(map(source, a))[s], "b": Counter(map(source, b))[s],
                 "both": both[s]} for s in sorted(SOURCES)]
    assert result["sources"] == expected
    assert result["rank_agreement"] is None and result["identical"] is False


def test_a_card_and_a_reordered_copy_of_its_selection_are_identical(data: dict, capsys) -> None:
    chosen = data["records"][3:15]
    card = data["dir"] / "top.card.json"
    card.write_text(json.dumps(hand_card(data["dataset"], chosen)))
    copy = data["dir"] / "mine.jsonl"
    write_lines(copy, shuffled(chosen))
    result = run_compare(capsys, card, copy)
    assert result["identical"] is True and result["jaccard"] == 1.0
    assert result["a"]["kind"] == "card" and result["a"]["method"] == "scalselect"
    assert result["b"]["kind"] == "file"


def test_rank_agreement_of_two_cards(data: dict, capsys) -> None:
    records = data["records"]
    a, b = records[:16], records[4:24]
    scores_a = {r["id"]: float((r["id"] * 7) % 11) for r in a}
    scores_b = {r["id"]: float((r["id"] * 5) % 13) + 0.5 for r in b}
    result = run_compare(capsys, card_with_scores(data, a, scores_a, "a"),
                         card_with_scores(data, b, scores_b, "b"))
    common = sorted(set(scores_a) & set(scores_b))
    rho = spearmanr([scores_a[i] for i in common], [scores_b[i] for i in common]).statistic
    assert result["rank_agreement"]["common"] == len(common) == 12
    assert result["rank_agreement"]["spearman"] == pytest.approx(rho, abs=1e-6)
    # The text form says the same.
    assert main(["compare", str(data["dir"] / "a.card.json"), str(data["dir"] / "b.card.json")]) == 0
    text = capsys.readouterr().out
    assert f"overlap 12, Jaccard {12 / 24:.4f}, only A 4, only B 8" in text
    assert f"Spearman {rho:.4f} over 12 common records" in text


def test_cards_of_different_datasets_are_refused(data: dict, capsys,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    chosen = data["records"][:5]
    first = data["dir"] / "first.card.json"
    first.write_text(json.dumps(hand_card(data["dataset"], chosen)))
    other = data["dir"] / "other.json"
    write_array(other, data["records"][:20])
    second = data["dir"] / "second.card.json"
    second.write_text(json.dumps(hand_card(other, chosen)))
    caplog.set_level(logging.ERROR)
    assert main(["compare", str(first), str(second)]) == 2
    assert "select from different datasets: dataset.json (24 records" in caplog.text
    assert "other.json (20 records" in caplog.text
    assert capsys.readouterr().out == ""
