"""Reading datasets: JSON and JSON Lines, the three record formats, fatal errors, the
normalised view and unchanged write-back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus import to_llava, write_dataset

from scalselect.data.readers import load_dataset
from scalselect.data.records import (
    DatasetError,
    Message,
    detect_format,
    image_source,
    resolve_image,
)
from scalselect.data.writers import write_records

SHAREGPT = [
    {
        "id": 0,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "<image>\nWhat is it?"},
            {"role": "assistant", "content": "A bus."},
            {"role": "user", "content": "Colour?"},
            {"role": "assistant", "content": "Red."},
        ],
        "images": ["coco/train2017/1.jpg"],
    },
    {
        "id": "000000033471",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    },
    {
        "id": 7,
        "messages": [
            {"role": "user", "content": "<image><image> Compare."},
            {"role": "assistant", "content": "Same."},
        ],
        "images": ["vg/VG_100K/2.jpg", "gqa/images/3.jpg"],
        "source": "mixed",
    },
    {
        "id": "7",
        "messages": [
            {"role": "user", "content": "<image>\nx"},
            {"role": "assistant", "content": "y"},
        ],
        "images": ["4.jpg"],
    },
]


@pytest.mark.parametrize("name", ["data.json", "data.jsonl", "data.ndjson", "lines-named.json"])
def test_json_and_json_lines_read_the_same_records(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "data.json":
        path.write_text(json.dumps(SHAREGPT, indent=2))
    else:  # JSON Lines, with a blank line that is not a record
        lines = [json.dumps(r) for r in SHAREGPT]
        path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    dataset = load_dataset(path)
    assert dataset.records == SHAREGPT
    assert dataset.format == "sharegpt" and len(dataset) == 4


def test_sharegpt_normalised_view(tmp_path: Path) -> None:
    dataset = load_dataset(write_dataset(tmp_path / "d.json", SHAREGPT))
    first = dataset.sample(0)
    assert first.index == 0 and first.id == 0
    assert first.messages[0] == Message("system", "Be brief.")
    # Text is kept as written, <image> tags included (the extractor moves them).
    assert first.messages[1] == Message("user", "<image>\nWhat is it?")
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert first.images == ("coco/train2017/1.jpg",) and first.source == "coco"
    samples = list(dataset)
    assert [s.id for s in samples] == [0, "000000033471", 7, "7"]
    assert samples[1].images == () and samples[1].source == "text-only"
    assert samples[2].source == "vg" and samples[3].source == "(root)"


def test_source_field_overrides_the_image_folder(tmp_path: Path) -> None:
    dataset = load_dataset(write_dataset(tmp_path / "d.json", SHAREGPT), source_field="source")
    assert [s.source for s in dataset] == ["coco", "text-only", "mixed", "(root)"]


@pytest.mark.parametrize("images_key,fmt", [("image", "llava"), ("images", "llava_images")])
def test_llava_formats_normalise_like_sharegpt(tmp_path: Path, images_key: str, fmt: str) -> None:
    records = [to_llava(r, images_key) for r in SHAREGPT]
    assert "conversations" in records[0] and images_key in records[0]
    dataset = load_dataset(write_dataset(tmp_path / "d.json", records))
    assert dataset.format == fmt
    reference = load_dataset(write_dataset(tmp_path / "s.json", SHAREGPT))
    assert list(dataset) == list(reference)


def test_llava_image_as_a_list_and_text_only_files(tmp_path: Path) -> None:
    record = to_llava(SHAREGPT[2])
    assert isinstance(record["image"], list)
    assert load_dataset(write_dataset(tmp_path / "a.json", [record])).sample(0).images == tuple(
        record["image"]
    )
    text_only = [to_llava(SHAREGPT[1])]
    assert load_dataset(write_dataset(tmp_path / "b.json", text_only)).format == "llava"
    forced = load_dataset(tmp_path / "b.json", "llava_images")
    assert forced.format == "llava_images" and forced.sample(0).images == ()


def test_typed_parts_are_flattened(tmp_path: Path) -> None:
    record = {
        "id": 1,
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat?"}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            },
        ],
        "images": ["x/1.jpg"],
    }
    sample = load_dataset(write_dataset(tmp_path / "d.json", [record])).sample(0)
    assert sample.messages == (Message("user", "<image>\nWhat?"), Message("assistant", "AB"))


def test_mixed_formats_name_the_record(tmp_path: Path) -> None:
    records = [SHAREGPT[0], SHAREGPT[1], to_llava(SHAREGPT[0])]
    with pytest.raises(DatasetError, match=r"record 2 is llava .* but record 0 is sharegpt"):
        load_dataset(write_dataset(tmp_path / "d.json", records))
    llava_variants = [
        to_llava(SHAREGPT[1]),
        to_llava(SHAREGPT[0], "image"),
        to_llava(SHAREGPT[0], "images"),
    ]
    with pytest.raises(DatasetError, match=r"record 2 is llava_images .* but record 1 is llava "):
        detect_format(llava_variants)
    both = dict(SHAREGPT[0], conversations=[])
    with pytest.raises(
        DatasetError,
        match=r"record 1 mixes the keys of several formats \(conversations, images, messages\)",
    ):
        detect_format([SHAREGPT[1], both])


def test_unknown_format_is_fatal(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d.json", [{"id": 1, "text": "hi"}, {"id": 2, "text": "ho"}])
    with pytest.raises(DatasetError, match=r"unknown record format.*record 0: \['id', 'text'\]"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="unknown dataset format 'alpaca'"):
        load_dataset(path, "alpaca")


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("bad.json", '[\n  {"id": 1},\n  {"id": 2,, }\n]', r"invalid JSON at line 3, column 12"),
        ("bad.jsonl", '{"id": 1}\n\n{"id": 2\n', r"invalid JSON Lines record at line 3, column 9"),
        (
            "lines.json",
            '{"id": 1}\n{"id": 2}\n{"id" 3}\n',
            r"invalid JSON Lines record at line 3, column 7",
        ),
        ("dict.json", '{"data": []}', "top level is a JSON object, not a list"),
        ("empty.json", "[]", "empty"),
        ("blank.json", "  \n", "empty"),
        ("blank.jsonl", "\n\n", "empty"),
    ],
)
def test_fatal_file_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[\n{"id": "caf\xe9"}]')
    with pytest.raises(DatasetError, match="not UTF-8 text at line 2, column 12"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="cannot read dataset"):
        load_dataset(tmp_path / "nope.json")


def test_malformed_record_cannot_be_normalised(tmp_path: Path) -> None:
    records = [SHAREGPT[0], {"id": 9, "messages": [{"role": "robot", "content": "x"}]}]
    dataset = load_dataset(write_dataset(tmp_path / "d.json", records))
    with pytest.raises(
        DatasetError, match=r"record 1 is malformed: messages\[0\]\.role is \"robot\""
    ):
        dataset.sample(1)


@pytest.mark.parametrize("images_key", [None, "image", "images"])
def test_write_records_round_trip(tmp_path: Path, images_key: str | None) -> None:
    records = SHAREGPT if images_key is None else [to_llava(r, images_key) for r in SHAREGPT]
    records = records + [{"id": "ünï", "extra": {"nested": [1.5, None, True]}}]
    out = tmp_path / "out.json"
    write_records(out, records)
    assert json.loads(out.read_text(encoding="utf-8")) == records
    assert load_dataset(out).records == records
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_hash_identifies_content(tmp_path: Path) -> None:
    a = load_dataset(write_dataset(tmp_path / "a.json", SHAREGPT))
    b = load_dataset(write_dataset(tmp_path / "b.json", SHAREGPT))
    c = load_dataset(write_dataset(tmp_path / "c.json", SHAREGPT[:3]))
    assert a.sha256 == b.sha256 != c.sha256


def test_image_paths() -> None:
    assert resolve_image("/data", "coco/1.jpg") == Path("/data/coco/1.jpg")
    assert resolve_image("/data", "/abs/1.jpg") == Path("/abs/1.jpg")
    assert image_source(["./ocr_vqa/images/1.jpg", "coco/2.jpg"]) == "ocr_vqa"
    assert image_source(["/abs/coco/1.jpg"]) == "abs"


def test_json_lines_keep_raw_line_separators_inside_strings(tmp_path: Path) -> None:
    records = [
        {"id": 1, "messages": [{"role": "user", "content": "a\u2028b\u0085c"}], "images": []},
        {"id": 2, "messages": [], "images": []},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in records))
    assert "\u2028" in path.read_text(encoding="utf-8")
    assert load_dataset(path).records == records
