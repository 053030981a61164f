"""A bad-input corpus built on disk by the tests: real image files written with Pillow
(good and broken) and a ShareGPT dataset with one sample per defect, plus conversions of
its records to the two LLaVA formats."""

from __future__ import annotations

import copy
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROLE_TO_LLAVA = {"user": "human", "assistant": "gpt", "system": "system"}


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data: tiny on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def write_images(root: Path) -> dict[str, str]:
    """Write the corpus images under ``root/imgs``; returns name -> path relative to root."""
    folder = root / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    noise.save(folder / "good.jpg", quality=90)
    Image.new("RGB", (40, 40), (10, 200, 30)).save(folder / "good.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image\n")
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    # Over twice Pillow's MAX_IMAGE_PIXELS (an error in Pillow) and between once and
    # twice (only a warning in Pillow).
    _png_header_only(folder / "bomb.png", 20000, 20000)
    _png_header_only(folder / "bomb-warning.png", 10000, 10000)
    Image.new("L", (1, 300), 128).save(folder / "line.png")
    Image.new("RGB", (10, 10), (0, 0, 255)).save(folder / "tiny.png")
    Image.new("L", (6100, 30), 128).save(folder / "wide.png")
    return {p.name: f"imgs/{p.name}" for p in folder.iterdir()}


def _chat(question: str = "<image>\nWhat is shown?", answer: str = "A picture.") -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def bad_corpus(root: Path) -> tuple[list[Any], dict[int, set[str]], set[int]]:
    """Write images under ``root``; return ShareGPT records, the expected reasons of each
    invalid record (by index), and the indices of the valid text-only records."""
    img = write_images(root)
    cases: list[tuple[Any, set[str]]] = [
        ({"id": 0, "messages": _chat(), "images": [img["good.jpg"]]}, set()),
        ({"id": 1, "messages": _chat("Describe it."), "images": [img["good.png"]]}, set()),
        ({"id": 2, "messages": _chat("What is 2+2?", "4.")}, set()),  # text-only
        ("a string, not a record", {"not_an_object"}),
        ({"messages": _chat(), "images": [img["good.jpg"]]}, {"missing_id"}),
        ({"id": True, "messages": _chat(), "images": [img["good.jpg"]]}, {"bad_id_type"}),
        ({"id": 1.5, "messages": _chat(), "images": [img["good.jpg"]]}, {"bad_id_type"}),
        ({"id": "dup", "messages": _chat(), "images": [img["good.jpg"]]}, {"duplicate_id"}),
        ({"id": "dup", "messages": _chat(), "images": [img["good.jpg"]]}, {"duplicate_id"}),
        ({"id": 9, "images": [img["good.jpg"]]}, {"missing_messages"}),
        ({"id": 10, "messages": [], "images": [img["good.jpg"]]}, {"empty_messages"}),
        ({"id": 11, "messages": "hello", "images": [img["good.jpg"]]}, {"messages_not_a_list"}),
        (
            {
                "id": 12,
                "messages": [{"content": "<image>\nHi"}, {"role": "assistant", "content": "Hello"}],
                "images": [img["good.jpg"]],
            },
            {"missing_role"},
        ),
        (
            {
                "id": 13,
                "messages": [{"role": "user", "content": "<image>\nHi"}, {"role": "assistant"}],
                "images": [img["good.jpg"]],
            },
            {"missing_content"},
        ),
        (
            {
                "id": 14,
                "messages": [
                    {"role": "user", "content": "<image>\nHi"},
                    {"role": "bot", "content": "x"},
                ],
                "images": [img["good.jpg"]],
            },
            {"unknown_role"},
        ),
        (
            {
                "id": 15,
                "messages": [{"role": "assistant", "content": "<image> x"}],
                "images": [img["good.jpg"]],
            },
            {"no_user_turn"},
        ),
        (
            {
                "id": 16,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "<image>\nHi"},
                ],
                "images": [img["good.jpg"]],
            },
            {"no_assistant_turn"},
        ),
        (
            {
                "id": 17,
                "messages": [
                    {"role": "user", "content": 42},
                    {"role": "assistant", "content": "x"},
                ],
                "images": [img["good.jpg"]],
            },
            {"bad_content"},
        ),
        (
            {
                "id": 18,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": "Hi"}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                ],
                "images": [img["good.jpg"]],
            },
            set(),
        ),
        (
            {
                "id": 19,
                "messages": [
                    {"role": "user", "content": [{"type": "video"}]},
                    {"role": "assistant", "content": "x"},
                ],
                "images": [img["good.jpg"]],
            },
            {"bad_content"},
        ),
        ({"id": 20, "messages": _chat(), "images": img["good.jpg"]}, {"images_malformed"}),
        ({"id": 21, "messages": _chat(), "images": [7]}, {"image_path_not_a_string"}),
        ({"id": 22, "messages": _chat(), "images": ["imgs/no-such-file.jpg"]}, {"missing_image"}),
        ({"id": 23, "messages": _chat(), "images": [img["empty.jpg"]]}, {"empty_image_file"}),
        ({"id": 24, "messages": _chat(), "images": [img["text.jpg"]]}, {"not_an_image"}),
        ({"id": 25, "messages": _chat(), "images": [img["truncated.jpg"]]}, {"corrupt_image"}),
        ({"id": 26, "messages": _chat(), "images": [img["bomb.png"]]}, {"decompression_bomb"}),
        (
            {"id": 27, "messages": _chat(), "images": [img["bomb-warning.png"]]},
            {"decompression_bomb"},
        ),
        ({"id": 28, "messages": _chat(), "images": [img["line.png"]]}, {"image_too_small"}),
        ({"id": 29, "messages": _chat(), "images": [img["tiny.png"]]}, {"image_too_small"}),
        ({"id": 30, "messages": _chat(), "images": [img["wide.png"]]}, {"extreme_aspect_ratio"}),
        (
            {"id": 31, "messages": _chat("<image><image>\nCompare."), "images": [img["good.jpg"]]},
            {"image_tag_mismatch"},
        ),
        (
            {
                "id": 32,
                "messages": _chat("<image>\n<image>\nCompare."),
                "images": [img["good.jpg"], img["good.png"]],
            },
            set(),
        ),
        ({"id": 7, "messages": _chat(), "images": [img["good.jpg"]]}, set()),
        ({"id": "7", "messages": _chat(), "images": [img["good.jpg"]]}, set()),
        (
            {
                "id": 35,
                "messages": [["user", "hi"], {"role": "assistant", "content": "x"}],
                "images": [img["good.jpg"]],
            },
            {"message_not_an_object"},
        ),
        (
            {"id": 36, "messages": _chat("No image here.", "Right."), "images": None},
            set(),
        ),  # text-only
        ({"messages": _chat(), "images": ["imgs/gone.jpg"]}, {"missing_id", "missing_image"}),
        ({"id": 38, "messages": _chat("<image>\nHow many?"), "images": []}, {"image_tag_mismatch"}),
    ]
    records = [record for record, _ in cases]
    expected = {i: reasons for i, (_, reasons) in enumerate(cases) if reasons}
    text_only = {2, 36}
    return records, expected, text_only


def to_llava(record: Any, images_key: str = "image") -> Any:
    """The same record in the LLaVA format (``image``: one path as a string) or, with
    ``images_key="images"``, in the llava_images format. Keys are renamed and values kept,
    so malformed records stay malformed in the same way."""
    if not isinstance(record, dict):
        return copy.deepcopy(record)
    out = {}
    for key, value in copy.deepcopy(record).items():
        if key == "messages":
            out["conversations"] = (
                [_to_llava_turn(t) for t in value] if isinstance(value, list) else value
            )
        elif key == "images":
            single = images_key == "image" and isinstance(value, list) and len(value) == 1
            out[images_key] = value[0] if single and isinstance(value[0], str) else value
        else:
            out[key] = value
    return out


def _to_llava_turn(turn: Any) -> Any:
    if not isinstance(turn, dict):
        return turn
    names = {"role": "from", "content": "value"}
    return {
        names.get(k, k): ROLE_TO_LLAVA.get(v, v) if k == "role" and isinstance(v, str) else v
        for k, v in turn.items()
    }


def write_dataset(path: Path, records: list[Any]) -> Path:
    """Write records as JSON Lines when ``path`` ends in .jsonl, else as a JSON array."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1))
    return path
