"""filter: the valid samples, unchanged and in order, in every format; mismatched reports
are refused."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from corpus import bad_corpus, to_llava, write_dataset

from scalselect.cli import main
from scalselect.data.readers import load_dataset
from scalselect.data.records import DatasetError
from scalselect.data.validation import (
    check_report_matches,
    drop_indices,
    load_report,
    validate_file,
)
from scalselect.data.writers import write_records
from scalselect.io import write_json
from scalselect.progress import parse_line


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, dict, set]:
    root = tmp_path_factory.mktemp("corpus")
    records, expected, text_only = bad_corpus(root)
    return root, records, expected, text_only


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scalselect", *args], cwd=REPO, capture_output=True, text=True
    )


@pytest.mark.parametrize("keep_text_only", [False, True])
def test_keeps_valid_samples_in_order(corpus, keep_text_only: bool) -> None:
    root, records, expected, text_only = corpus
    report = validate_file(write_dataset(root / "d.json", records), root, progress=False)
    drop, removed = drop_indices(report, keep_text_only=keep_text_only)
    valid = [i for i in range(len(records)) if i not in expected]
    keep = [i for i in range(len(records)) if i not in set(drop.tolist())]
    assert keep == (valid if keep_text_only else [i for i in valid if i not in text_only])
    assert removed["duplicate_id"] == 2 and removed["missing_id"] == 2
    assert removed.get("text_only") == (None if keep_text_only else 2)


@pytest.mark.parametrize(
    "name,images_key",
    [
        ("sharegpt.json", None),
        ("sharegpt.jsonl", None),
        ("llava.json", "image"),
        ("llava.jsonl", "image"),
        ("llava_images.json", "images"),
    ],
)
def test_cli_round_trip_in_every_format(
    corpus, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
    name: str, images_key: str | None,
) -> None:
    root, records, _, _ = corpus
    source = records if images_key is None else [to_llava(r, images_key) for r in records]
    dataset = write_dataset(tmp_path / name, source)
    report, out = tmp_path / "report.json", tmp_path / "filtered.json"
    # In-process (the subprocess runs are in test_refuses_a_report_of_other_content and
    # tests/test_validation.py): a fresh interpreter costs seconds per call here.
    common = ["--image-root", str(root), "--out", str(report), "--workers", "1", "--no-progress"]
    assert main(["validate", "--dataset", str(dataset), *common]) == 0
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="scalselect.progress")
    assert (
        main(["filter", "--dataset", str(dataset), "--report", str(report), "--out", str(out)]) == 0
    )
    # Every record read is counted; the last line says so.
    progress = [parse_line(r.getMessage()) for r in caplog.records if r.name == "scalselect.progress"]
    assert (progress[-1].done, progress[-1].total) == (len(source), len(source))
    logged = capsys.readouterr().err
    valid = json.loads(report.read_text())
    drop = {e["index"] for e in valid["invalid"]} | set(valid["text_only"])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == [r for i, r in enumerate(source) if i not in drop]
    filtered = load_dataset(out)
    assert filtered.format == valid["format"] and filtered.records == written
    assert f"kept {len(written)} of {len(source)} samples" in logged
    assert "removed        2  duplicate_id" in logged
    assert "removed        2  text_only" in logged


@pytest.mark.parametrize(
    ("flag", "keeps_text_only"),
    [([], False), (["--keep-text-only"], True), (["--no-keep-text-only"], False)],
)
def test_cli_keep_text_only_flag(
    corpus, tmp_path: Path, capsys: pytest.CaptureFixture, flag: list[str], keeps_text_only: bool
) -> None:
    root, records, expected, text_only = corpus
    dataset = write_dataset(tmp_path / "d.json", records)
    report, out = tmp_path / "report.json", tmp_path / "filtered.json"
    assert main(["validate", "--dataset", str(dataset), "--image-root", str(root), "--out",
                 str(report), "--workers", "1", "--no-progress"]) == 0
    assert main(["filter", "--dataset", str(dataset), "--report", str(report), "--out",
                 str(out), *flag]) == 0
    assert len(text_only) == 2
    kept = [i for i in range(len(records))
            if i not in expected and (keeps_text_only or i not in text_only)]
    assert json.loads(out.read_text(encoding="utf-8")) == [records[i] for i in kept]
    assert ("removed        2  text_only" in capsys.readouterr().err) is not keeps_text_only


@pytest.mark.integration  # the command line in a fresh interpreter
def test_refuses_a_report_of_other_content(corpus, tmp_path: Path) -> None:
    root, records, _, _ = corpus
    path = write_dataset(tmp_path / "d.json", records)
    report = validate_file(path, root, progress=False)
    # Same number of samples, one answer edited.
    edited = json.loads(json.dumps(records))
    edited[0]["messages"][1]["content"] = "Another picture."
    write_dataset(path, edited)
    edited_dataset = load_dataset(path)
    with pytest.raises(DatasetError, match="does not match .* validate this dataset again"):
        check_report_matches(report, path, len(edited_dataset), edited_dataset.sha256)
    report_path = tmp_path / "report.json"
    write_json(report_path, report)
    result = run_cli(
        "filter",
        "--dataset",
        str(path),
        "--report",
        str(report_path),
        "--out",
        str(tmp_path / "out.json"),
    )
    assert result.returncode == 2 and "does not match" in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_refuses_what_is_not_a_report(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_records(path, [{"id": 1}])
    with pytest.raises(DatasetError, match="is not a validation report"):
        load_report(path)
    path.write_text("{")
    with pytest.raises(DatasetError, match="cannot read validation report"):
        load_report(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_json_lines_stay_json_lines(corpus, tmp_path: Path, suffix: str) -> None:
    _, records, _, _ = corpus
    out = tmp_path / f"kept{suffix}"
    write_records(out, records[:5])
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records[:5]
    assert load_dataset(out).records == records[:5]
    # Any other name is a JSON array.
    write_records(tmp_path / "kept.json", records[:5])
    assert json.loads((tmp_path / "kept.json").read_text(encoding="utf-8")) == records[:5]


def test_a_count_budget_above_the_kept_samples_fails_at_filter(
    corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, records, expected, text_only = corpus
    dataset = write_dataset(tmp_path / "d.json", records)
    report, out = tmp_path / "report.json", tmp_path / "filtered.json"
    common = ["--image-root", str(root), "--out", str(report), "--workers", "1", "--no-progress"]
    assert main(["validate", "--dataset", str(dataset), *common]) == 0
    kept = len(records) - len(expected) - len(text_only)
    args = ["filter", "--dataset", str(dataset), "--report", str(report), "--out", str(out)]
    assert main([*args, "--budgets", "2", str(kept + 1), "50%", str(kept + 7)]) == 2
    error = caplog.text
    assert (
        f"select.budgets: '{kept + 1}' asks for more samples than the {kept} that passed the"
        f" filter; '{kept + 7}' asks for more samples than the {kept} that passed the filter"
    ) in error
    assert not out.exists()
    assert main([*args, "--budgets", "2", str(kept), "100%"]) == 0
    assert len(json.loads(out.read_text())) == kept


def test_more_extract_shards_than_kept_samples_fails_at_filter(
    corpus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Empty shards would each fail as an extract job of their own: filter refuses them
    first, naming the shard count, the kept samples and the fix."""
    root, records, expected, text_only = corpus
    dataset = write_dataset(tmp_path / "d.json", records)
    report, out = tmp_path / "report.json", tmp_path / "filtered.json"
    common = ["--image-root", str(root), "--out", str(report), "--workers", "1", "--no-progress"]
    assert main(["validate", "--dataset", str(dataset), *common]) == 0
    kept = len(records) - len(expected) - len(text_only)
    args = ["filter", "--dataset", str(dataset), "--report", str(report), "--out", str(out)]
    assert main([*args, "--budgets", str(kept + 1), "--extract-shards", str(kept + 3)]) == 2
    assert (
        f"select.budgets: '{kept + 1}' asks for more samples than the {kept} that passed the"
        f" filter; extract.shards is {kept + 3} but only {kept} samples passed the filter: 3"
        f" of the shards would hold no sample; set extract.shards to at most {kept}"
    ) in caplog.text
    assert not out.exists()
    assert main([*args, "--budgets", "2", "--extract-shards", str(kept)]) == 0
    assert len(json.loads(out.read_text())) == kept


def test_a_report_missing_fields_is_refused_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"dataset": "d.json", "dataset_sha256": "0", "format": "sharegpt", "num_samples": 1})
    with pytest.raises(DatasetError, match=re.escape(f"{path} is not a validation report (no invalid, text_only)")):
        load_report(path)


def test_removed_samples_are_counted_most_frequent_reason_first(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    # The no-answer record comes first: ties are ordered by name, not as found.
    records = [{"id": 0, "messages": chat[:1]}, {"messages": chat}, {"messages": chat},
               {"id": 3.5, "messages": chat}, {"id": 4, "messages": chat}]
    report = validate_file(write_dataset(tmp_path / "d.json", records), tmp_path, progress=False)
    expected = [("missing_id", 2), ("bad_id_type", 1), ("no_assistant_turn", 1)]
    assert list(report["counts"].items()) == expected
    drop, removed = drop_indices(report)  # text-only samples dropped by default
    assert drop.tolist() == [0, 1, 2, 3, 4] and list(removed.items()) == [*expected, ("text_only", 1)]
    drop, removed = drop_indices(report, keep_text_only=True)
    assert drop.tolist() == [0, 1, 2, 3] and list(removed.items()) == expected
