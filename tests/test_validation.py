"""validate: every check on a bad-input corpus of real files, in every record format."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO
from corpus import bad_corpus, to_llava, write_dataset
from PIL import Image

from scalselect.cli import main
from scalselect.data import images, validation
from scalselect.data.images import ImageCheck, check_image
from scalselect.data.readers import load_dataset, write_index
from scalselect.data.validation import (
    format_summary,
    validate_file,
    validate_part,
)
from scalselect.progress import parse_line
from scalselect.settings import ValidateSettings


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, dict, set]:
    root = tmp_path_factory.mktemp("corpus")
    records, expected, text_only = bad_corpus(root)
    return root, records, expected, text_only


def reasons_by_index(report: dict) -> dict[int, set[str]]:
    return {entry["index"]: set(entry["reasons"]) for entry in report["invalid"]}


def validate(root: Path, records: list, name: str = "d.json", **settings) -> dict:
    return validate_file(write_dataset(root / name, records), root, ValidateSettings(**settings),
                         progress=False)


def test_every_check_by_reason_and_index(corpus) -> None:
    root, records, expected, text_only = corpus
    report = validate(root, records)
    assert reasons_by_index(report) == expected
    assert set(report["text_only"]) == text_only
    assert report["counts"] == dict(Counter(r for reasons in expected.values() for r in reasons))
    assert report["num_samples"] == len(records)
    assert report["num_invalid"] == len(expected)
    assert report["num_valid"] == len(records) - len(expected)
    assert report["num_text_only"] == len(text_only)
    # Ids are reported exactly as given, None when absent.
    ids = {e["index"]: e["id"] for e in report["invalid"]}
    assert ids[4] is None and ids[5] is True and ids[7] == "dup"
    # 12 distinct files (two of them missing) for many more references: each checked once.
    assert report["num_image_files"] == 12
    assert report["image_files"]["ok"] == 2 and report["image_files"]["missing_image"] == 2
    assert report["sources"] == {"imgs": 6, "text-only": 2}
    assert report["text_only_sources"] == {"text-only": 2}


def test_details_name_the_fields(corpus) -> None:
    root, records, _, _ = corpus
    details = {e["index"]: e["details"] for e in validate(root, records)["invalid"]}
    assert details[14] == ['messages[1].role is "bot" (expected one of user, assistant, system)']
    assert details[22][0].startswith("images[0] 'imgs/no-such-file.jpg': No such file")
    assert details[37] == ["no 'id' field", details[37][1]] and "imgs/gone.jpg" in details[37][1]
    assert details[7] == ["id 'dup' is also used by record(s) 8"]


def test_header_checks_cannot_see_truncation(corpus) -> None:
    root, records, expected, _ = corpus
    report = validate(root, records, decode_images=False)
    assert reasons_by_index(report) == {i: r for i, r in expected.items() if r != {"corrupt_image"}}
    assert report["settings"]["decode_images"] is False


@pytest.mark.parametrize("images_key,fmt", [("image", "llava"), ("images", "llava_images")])
def test_llava_formats_get_the_same_findings_in_their_own_words(
    corpus, images_key: str, fmt: str
) -> None:
    root, records, expected, text_only = corpus
    converted = [to_llava(r, images_key) for r in records]
    report = validate(root, converted, name=f"{fmt}.json")
    assert report["format"] == fmt
    want = dict(expected)
    if fmt == "llava":
        del want[20]  # "image": "imgs/good.jpg" (a string) is how LLaVA writes one image
    assert reasons_by_index(report) == want
    assert set(report["text_only"]) == text_only
    details = {e["index"]: e["details"] for e in report["invalid"]}
    assert details[12] == ["conversations[0] has no 'from'"]
    assert details[14] == ['conversations[1].from is "bot" (expected one of human, gpt, system)']
    assert details[15] == ["no 'human' turn in 'conversations'"]
    assert details[9] == ["no 'conversations' field"]
    field = "image" if fmt == "llava" else "images[0]"
    assert details[23] == [f"{field} 'imgs/empty.jpg': zero bytes"]


def test_json_lines_give_the_same_report(corpus) -> None:
    root, records, _, _ = corpus
    as_json, as_lines = validate(root, records), validate(root, records, name="d.jsonl")
    for key in ("invalid", "text_only", "counts", "num_valid", "duplicate_ids"):
        assert as_json[key] == as_lines[key]


def test_duplicate_ids_every_occurrence_and_policy(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    chat = [{"role": "user", "content": "<image> q"}, {"role": "assistant", "content": "a"}]
    records = [{"id": i, "messages": chat, "images": ["a.png"]} for i in (5, 6, 5, "5", 5, 6)]
    report = validate(tmp_path, records)
    assert reasons_by_index(report) == {i: {"duplicate_id"} for i in (0, 1, 2, 4, 5)}
    assert report["duplicate_ids"] == [
        {"id": 5, "indices": [0, 2, 4]},
        {"id": 6, "indices": [1, 5]},
    ]
    allowed = validate(tmp_path, records, allow_duplicate_ids=True)
    assert allowed["invalid"] == [] and allowed["num_valid"] == 6
    assert allowed["duplicate_ids"] == report["duplicate_ids"]
    assert "repeated ids: 2 (kept: allow_duplicate_ids)" in format_summary(allowed)


def test_parallel_workers_give_the_same_report(corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    root, records, _, _ = corpus
    dataset = write_dataset(root / "p.json", records)
    serial = validate_file(dataset, root, progress=False)
    monkeypatch.setattr(images, "CHUNK", 3)  # several chunks for two processes
    parallel = validate_file(dataset, root, workers=2, progress=False)
    assert parallel == serial


def test_check_image_limits(tmp_path: Path) -> None:
    Image.new("RGB", (28, 5600)).save(tmp_path / "edge.png")  # exactly 200:1 and 28 px
    Image.new("RGB", (27, 40)).save(tmp_path / "narrow.png")
    assert check_image(tmp_path / "edge.png").reason is None
    assert check_image(tmp_path / "edge.png", max_aspect_ratio=199).reason == "extreme_aspect_ratio"
    check = check_image(tmp_path / "narrow.png")
    assert (check.reason, check.width, check.height) == ("image_too_small", 27, 40)
    assert check_image(tmp_path / "narrow.png", min_side=27).reason is None
    assert check_image(tmp_path).reason == "missing_image"  # a directory is not a file


def test_summary_lists_reasons_and_examples(corpus) -> None:
    root, records, _, _ = corpus
    summary = format_summary(validate(root, records), examples=3)
    assert "samples: 39; valid: 8 (text-only: 2); invalid: 31" in summary
    assert "  decompression_bomb       2" in summary
    assert "invalid samples (first 3):" in summary and "record 5 (id True)" in summary
    assert "record 6 " not in summary


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scalselect", *args], cwd=REPO, capture_output=True, text=True
    )


@pytest.mark.integration  # the command line in a fresh interpreter
def test_cli_writes_the_report_and_a_summary(corpus, tmp_path: Path) -> None:
    root, records, expected, _ = corpus
    dataset = write_dataset(tmp_path / "d.jsonl", records)
    out = tmp_path / "out" / "report.json"
    result = run_cli(
        "validate",
        "--dataset",
        str(dataset),
        "--image-root",
        str(root),
        "--out",
        str(out),
        "--no-decode-images",
        "--min-image-side",
        "10",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    want = {i: r for i, r in expected.items() if r not in ({"corrupt_image"}, {"image_too_small"})}
    want[28] = {"image_too_small"}  # 1x300 is still under 10 px; 10x10 is not
    assert reasons_by_index(report) == want
    assert report["settings"]["min_image_side"] == 10
    assert "invalid samples by reason" in result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["report.json"]


@pytest.mark.integration  # the command line in a fresh interpreter
def test_cli_fatal_error_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    dataset = tmp_path / "d.json"
    dataset.write_text('[{"id": 1},\n {"id": 2} {"id": 3}]')
    out = tmp_path / "report.json"
    result = run_cli(
        "validate", "--dataset", str(dataset), "--image-root", str(tmp_path), "--out", str(out)
    )
    assert result.returncode == 2
    assert "invalid JSON at line 2, column 12" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "text,message",
    [
        ('"just a string"', "top level is a JSON string, not a list"),
        ("[]", "the dataset is empty"),
        ('[{"id": 1, "text": "x"}]', "unknown record format"),
        ('[{"id": 1, "messages": []}, {"id": 2, "conversations": []}]', "mixed record formats"),
    ],
)
def test_fatal_errors_exit_2(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, message: str
) -> None:
    dataset = tmp_path / "d.json"
    dataset.write_text(text)
    out = tmp_path / "report.json"
    args = ["--dataset", str(dataset), "--image-root", str(tmp_path), "--out", str(out)]
    assert main(["validate", *args]) == 2
    assert message in caplog.text
    assert not out.exists()


def test_forced_format_and_source_field(corpus, tmp_path: Path) -> None:
    root, records, _, text_only = corpus
    path = write_dataset(tmp_path / "d.json", records)
    forced = validate_file(path, root, fmt="llava", progress=False)
    assert forced["format"] == "llava" and forced["num_valid"] == 0
    assert forced["counts"]["missing_messages"] == len(records) - 1  # record 3 is a string
    labelled = [
        dict(r, origin=f"part{i % 2}") if isinstance(r, dict) else r for i, r in enumerate(records)
    ]
    report = validate_file(
        write_dataset(tmp_path / "l.json", labelled), root, source_field="origin", progress=False
    )
    assert report["sources"] == {"part0": 6, "part1": 2}
    # The text-only samples among them, by source (the workflow's colours leave out those
    # that filter drops).
    assert report["text_only_sources"] == dict(Counter(f"part{i % 2}" for i in text_only))
    assert sum(report["text_only_sources"].values()) == 2


# --------------------------------------------------------------------------- exact findings
# (what the mutation run of bench/RESULTS.md showed no test pinned)


def test_check_image_outcomes_in_full(tmp_path: Path) -> None:
    from corpus import write_images

    images = {name: tmp_path / path for name, path in write_images(tmp_path).items()}
    assert check_image(images["good.jpg"]) == ImageCheck(None, "", 256, 256)
    assert check_image(images["line.png"]) == ImageCheck(
        "image_too_small", "1x300, a side under 28 px", 1, 300)
    assert check_image(images["wide.png"]) == ImageCheck(
        "extreme_aspect_ratio", "6100x30, aspect ratio 203:1 > 200:1", 6100, 30)
    assert check_image(images["text.jpg"]) == ImageCheck(
        "not_an_image", "not a recognised image format")
    assert check_image(images["empty.jpg"]) == ImageCheck("empty_image_file", "zero bytes")
    assert check_image(tmp_path) == ImageCheck("missing_image", f"not a regular file ({tmp_path})")
    # The defaults decode the pixels: a truncated file is caught, with Pillow's words.
    truncated = check_image(images["truncated.jpg"])
    assert truncated.reason == "corrupt_image"
    assert truncated.detail.startswith("image file is truncated")
    bomb = check_image(images["bomb.png"])
    assert bomb.reason == "decompression_bomb"
    assert bomb.detail.startswith("Image size (400000000 pixels) exceeds limit")


def test_default_aspect_limit_is_200_to_1(tmp_path: Path) -> None:
    Image.new("L", (28 * 201, 28)).save(tmp_path / "over.png")  # 201:1
    assert check_image(tmp_path / "over.png").reason == "extreme_aspect_ratio"
    assert check_image(tmp_path / "over.png", max_aspect_ratio=201).reason is None


def test_settings_reach_every_image_check(tmp_path: Path) -> None:
    Image.new("RGB", (600, 30)).save(tmp_path / "a.png")  # 20:1
    chat = [{"role": "user", "content": "<image> q"}, {"role": "assistant", "content": "a"}]
    records = [{"id": 0, "messages": chat, "images": ["a.png"]}]
    assert validate(tmp_path, records)["invalid"] == []
    report = validate(tmp_path, records, max_aspect_ratio=10)
    assert report["invalid"][0]["details"] == ["images[0] 'a.png': 600x30, aspect ratio 20:1 > 10:1"]


def test_the_same_id_as_int_and_as_text_is_no_duplicate(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    report = validate(tmp_path, [{"id": 7, "messages": chat}, {"id": "7", "messages": chat}])
    assert report["duplicate_ids"] == [] and report["num_valid"] == 2


def test_duplicate_lists_are_shortened_after_five() -> None:
    assert validation._short_list([3, 4, 5, 6, 7]) == "3, 4, 5, 6, 7"
    assert validation._short_list([3, 4, 5, 6, 7, 8, 9]) == "3, 4, 5, 6, 7 and 2 more"


def test_turn_and_tag_findings_name_the_fields(tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    records = [
        {"id": 0, "messages": [{"role": "user", "content": "<image> q"}], "images": ["a.png"]},
        {"id": 1, "messages": [{"role": "user", "content": "<image> <image> q"},
                               {"role": "assistant", "content": "a"}], "images": ["a.png"]},
    ]
    details = {e["index"]: e["details"] for e in validate(tmp_path, records)["invalid"]}
    assert details == {
        0: ["no 'assistant' turn in 'messages'"],
        1: ["2 <image> tag(s) in 'messages' but 1 image(s)"],
    }


def test_report_header_and_reason_order(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    records = [{"id": 0, "messages": chat}, {"messages": chat}, {"id": 2.5, "messages": chat},
               {"id": 3.5, "messages": chat}, {"messages": chat}]
    path = write_dataset(tmp_path / "d.json", records)
    dataset = load_dataset(path)
    report = validate_file(path, tmp_path / "images", progress=False)
    assert {k: report[k] for k in ("version", "dataset", "dataset_sha256", "format", "image_root")} == {
        "version": validation.REPORT_VERSION, "dataset": str(path), "dataset_sha256": dataset.sha256,
        "format": "sharegpt", "image_root": str(tmp_path / "images"),
    }
    # Most frequent reason first; equal counts by name.
    assert list(report["counts"].items()) == [("bad_id_type", 2), ("missing_id", 2)]


def test_a_terminal_gets_a_bar_of_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in "abc":
        Image.new("RGB", (32, 32)).save(tmp_path / f"{name}.png")
    chat = [{"role": "user", "content": "<image> q"}, {"role": "assistant", "content": "a"}]
    dataset = write_dataset(tmp_path / "d.json", [
        {"id": i, "messages": chat, "images": [f"{name}.png"]} for i, name in enumerate("abca")])
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with caplog.at_level(logging.INFO, logger="scalselect.progress"):
        validate_file(dataset, tmp_path)
    # Four records, no total known in advance (no index); a bar, not lines.
    assert "4record" in terminal.getvalue()
    assert not [r for r in caplog.records if r.name == "scalselect.progress"]
    terminal.truncate(0)
    validate_file(dataset, tmp_path, progress=False)
    assert terminal.getvalue().strip("\x00") == ""


def test_progress_counts_records_and_images(corpus, tmp_path: Path, caplog) -> None:
    root, records, _, _ = corpus
    dataset = write_dataset(root / "progress.json", records)
    images_named = sum(len(r["images"]) if isinstance(r, dict) and isinstance(r.get("images"), list)
                       else 0 for r in records)
    with caplog.at_level(logging.INFO, logger="scalselect.progress"):
        validate_file(dataset, root)
    lines = [r.getMessage() for r in caplog.records if r.name == "scalselect.progress"]
    # A test run is shorter than the interval: the one line is the last, at the end.
    assert len(lines) == 1
    reading = parse_line(lines[0])
    assert (reading.done, reading.total) == (len(records), None)  # no index: total unknown
    assert ("images" in reading.fields) == (images_named > 0)
    # A shard read through the index knows its total.
    index = write_index(dataset, tmp_path / "index.npz")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scalselect.progress"):
        validate_part(dataset, root, index=index)
    reading = parse_line(caplog.records[-1].getMessage())
    assert (reading.done, reading.total, reading.left) == (len(records), len(records), 0)
    caplog.clear()
    validate_file(dataset, root, progress=False)
    assert not [r for r in caplog.records if r.name == "scalselect.progress"]
