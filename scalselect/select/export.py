"""A selection written for a trainer, in another record format than the dataset's.

Formats (:data:`EXPORTS`), each written into one folder (atomically, as a whole):

- ``llava``: ``<name>.json``, a JSON array of ``{"id", "image", "conversations":
  [{"from": "human" | "gpt" | "system", "value"}]}`` as LLaVA's training code reads it;
  ``image`` is a path (a list for several images, absent for a text-only sample).
- ``sharegpt``: ``<name>.jsonl``, JSON Lines of ``{"id", "messages": [{"role",
  "content"}], "images": [paths]}`` as LLaMA-Factory and ms-swift read them, and
  ``dataset_info.json`` with the LLaMA-Factory entry describing the file (``formatting:
  sharegpt``, ``columns``, ``tags``).
- ``ids``: ``<name>.ids.txt``, one id per line, as written.

Conversations are written as the dataset holds them (``<image>`` tags included). An
image embedded in the record (a parquet pool) is written to ``images/<sha256>.<ext>``
in the folder and referenced by that path, relative to the folder; an image given as a
path keeps it as written (relative to the dataset's image root). Records stream; memory
is one record.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scalselect.data.readers import iter_inspected
from scalselect.data.records import Sample
from scalselect.data.writers import RecordWriter
from scalselect.errors import UserError
from scalselect.io import atomic_directory, write_json
from scalselect.settings import SelectSettings, declared

# The formats, as declared for `select.export`.
EXPORTS = declared(SelectSettings)["export"].choices
IMAGES_DIR = "images"
LLAVA_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}
# LLaMA-Factory's description of a messages file (its dataset_info.json entry).
LLAMA_FACTORY_ENTRY = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
             "assistant_tag": "assistant", "system_tag": "system"},
}


class ExportError(UserError):
    """A selection that cannot be written in the asked format."""


def _image_name(data: bytes, path: str) -> str:
    """``images/<sha256>.<ext>``: the extension of the stored path, else Pillow's name
    of the format."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        from PIL import Image, UnidentifiedImageError

        try:
            suffix = "." + (Image.open(io.BytesIO(data)).format or "img").lower()
        except UnidentifiedImageError:
            suffix = ".img"
    return f"{IMAGES_DIR}/{hashlib.sha256(data).hexdigest()}{suffix}"


def _images(sample: Sample, folder: Path) -> list[str]:
    """The sample's image paths in the export, embedded images written to ``folder``."""
    paths = []
    for number, path in enumerate(sample.images):
        data = sample.image_bytes(number)
        if data is None:
            paths.append(path)
            continue
        name = _image_name(data, path)
        target = folder / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        paths.append(name)
    return paths


def llava_record(sample: Sample, images: list[str]) -> dict[str, Any]:
    """A sample as LLaVA's training JSON holds it."""
    record: dict[str, Any] = {"id": sample.id}
    if images:
        record["image"] = images[0] if len(images) == 1 else images
    record["conversations"] = [{"from": LLAVA_ROLES[m.role], "value": m.content}
                               for m in sample.messages]
    return record


def sharegpt_record(sample: Sample, images: list[str]) -> dict[str, Any]:
    """A sample as LLaMA-Factory's and ms-swift's messages format holds it."""
    return {"id": sample.id,
            "messages": [{"role": m.role, "content": m.content} for m in sample.messages],
            "images": images}


def _id_line(sample: Sample) -> str:
    if sample.id is None or "\n" in str(sample.id):
        raise ExportError(f"record {sample.index} has id {sample.id!r}: an id list cannot"
                          " name it")
    return f"{sample.id}\n"


def _samples(selection: Path, fmt: str) -> Iterator[Sample]:
    for number, _, sample, problems in iter_inspected(selection, fmt):
        if sample is None:
            details = "; ".join(p.detail for p in problems)
            raise ExportError(f"{selection}: record {number} is malformed: {details}")
        yield sample


def export_selection(selection: str | os.PathLike, out: str | os.PathLike, to: str, *,
                     fmt: str = "auto", name: str | None = None) -> int:
    """Write the selection file ``selection`` (any record and file format) into the
    folder ``out`` in the format ``to`` (:data:`EXPORTS`); ``name`` (default: the
    selection's name without its extension) names the file and the LLaMA-Factory
    dataset. Returns the number of records written."""
    if to not in EXPORTS:
        raise ExportError(f"unknown export format {to!r}; expected one of {', '.join(EXPORTS)}")
    selection = Path(selection)
    name = name or selection.stem
    count = 0
    with atomic_directory(out) as folder:
        if to == "ids":
            with open(folder / f"{name}.ids.txt", "w", encoding="utf-8") as handle:
                for count, sample in enumerate(_samples(selection, fmt), 1):
                    handle.write(_id_line(sample))
            return count
        convert: Callable[[Sample, list[str]], dict[str, Any]] = (
            llava_record if to == "llava" else sharegpt_record)
        data = folder / f"{name}.{'json' if to == 'llava' else 'jsonl'}"
        with RecordWriter(data) as writer:
            for sample in _samples(selection, fmt):
                writer.write(convert(sample, _images(sample, folder)))
            count = writer.count
        if to == "sharegpt":
            write_json(folder / "dataset_info.json",
                       {name: {"file_name": data.name, **LLAMA_FACTORY_ENTRY}})
    return count

