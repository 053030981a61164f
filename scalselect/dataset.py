"""Reading visual-instruction datasets: one normalised view of three record formats.

Supported record formats (auto-detected per file from the records' keys, or forced):

- ``sharegpt``: ``{"id", "messages": [{"role", "content"}], "images": [path, ...]}``
  (the original ScalSelect tool's format); roles ``user``, ``assistant``, ``system``.
- ``llava``: ``{"id", "conversations": [{"from", "value"}], "image": path | [path, ...]}``
  (LLaVA-665K as downloaded; text-only records have no ``image``); ``from`` is
  ``human`` (user), ``gpt`` (assistant) or ``system``.
- ``llava_images``: the same conversations with an ``images`` list (LLaMA-Factory's
  sharegpt style).

A file is a JSON array of records, JSON Lines (one record per line; blank lines are
skipped and do not count as records) or parquet (one row per record; an image may be a
``{"bytes", "path"}`` struct holding its bytes, as Hugging Face datasets write it).
JSON Lines is recognised by the ``.jsonl`` / ``.ndjson`` extension or, whatever the name,
by a file holding several top-level objects; parquet by ``.parquet``.

Records stream (:func:`iter_records`): JSON Lines line by line, a JSON array record by
record with ``json.JSONDecoder.raw_decode`` over blocks of the file, parquet by row
batches with only the columns asked for. :func:`build_index` records every record's byte
offset once, so that jobs seek to their part of the file. The stages write as they read
(:func:`copy_records`). :func:`load_dataset` holds a whole file, for small files and tests.

Records are kept exactly as read and written back unchanged; every stage keys samples by
their position in the file, never by id, so repeated ids neither merge nor lose samples.
:func:`inspect_record` gives the normalised view (:class:`Sample`). It keeps each
message's text as written, ``<image>`` tags included: moving all image placeholders to
the start of the first user turn (and removing the ``<image>``/``<img>`` tags there), as
the original tool did, is the extractor's job. Content given as a list of typed parts
(``{"type": "text", "text": ...}`` and ``{"type": "image"}``) is flattened into one
string, parts concatenated as they are, image parts written as ``<image>``. A ``null``
image field counts as no image.

The source label of a sample (for figures and summaries) is the first folder of its
first image path (``coco/train2017/1.jpg`` -> ``coco``; ``(root)`` for an image directly
under the image root), ``text-only`` without images, or the value of a configured record
field (``source_field``) when the record has it as a string or an integer.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalselect.errors import UserError
from scalselect.io import atomic_write, file_digest

TEXT_ONLY = "text-only"
# The path of an embedded image stored without one.
EMBEDDED = "embedded"
IMAGE_TAG = "<image>"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
NON_SPACE = re.compile(r"[^ \t\n\r]")
BOM = b"\xef\xbb\xbf"
# Bytes read at a time from a JSON file.
READ_BLOCK = 1 << 22
# A JSON parse error this close to the end of the text read so far may only mean that
# the value goes on in the next block (the longest literal, -Infinity, has 9 characters).
_CUT_MARGIN = 16
# Rows per parquet batch (rows may embed images of a few hundred kilobytes).
PARQUET_BATCH = 256
# Bytes of rows buffered per row group of a parquet file written here.
ROW_GROUP_BYTES = 64 << 20


class DatasetError(UserError):
    """A dataset file that cannot be read, or a record that cannot be normalised."""


@dataclass(frozen=True)
class RecordFormat:
    """The field names and role vocabulary of one record format."""

    name: str
    messages_key: str
    role_key: str
    content_key: str
    images_key: str
    # Input role -> normalised role.
    roles: dict[str, str]
    # Whether the image field may also be a single path string (LLaVA's ``image``).
    single_image: bool

    def describe(self) -> str:
        """How the format looks, for error messages."""
        return f"{self.name} ('{self.messages_key}' with '{self.images_key}')"


FORMATS: dict[str, RecordFormat] = {
    "sharegpt": RecordFormat(
        "sharegpt",
        "messages",
        "role",
        "content",
        "images",
        {"user": "user", "assistant": "assistant", "system": "system"},
        False,
    ),
    "llava": RecordFormat(
        "llava",
        "conversations",
        "from",
        "value",
        "image",
        {"human": "user", "gpt": "assistant", "system": "system"},
        True,
    ),
    "llava_images": RecordFormat(
        "llava_images",
        "conversations",
        "from",
        "value",
        "images",
        {"human": "user", "gpt": "assistant", "system": "system"},
        False,
    ),
}


@dataclass(frozen=True, slots=True)
class Message:
    """One turn: ``role`` is ``"system"``, ``"user"`` or ``"assistant"``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sample:
    """The normalised view of one record.

    ``index`` is the record's position in the file, ``id`` its id exactly as given
    (``None`` when absent), ``images`` the image paths as written (relative to the image
    root unless absolute) and ``source`` its source label. ``embedded`` holds, for a
    record that embeds image bytes (parquet), each image's bytes (``None`` for an image
    given as a path) and is empty otherwise; an embedded image's path is the one stored
    with it, or :data:`EMBEDDED` when there is none.
    """

    index: int
    id: int | str | None
    messages: tuple[Message, ...]
    images: tuple[str, ...]
    source: str
    embedded: tuple[bytes | None, ...] = ()

    def image_bytes(self, number: int) -> bytes | None:
        """The embedded bytes of image ``number``; ``None`` when it is a file."""
        return self.embedded[number] if self.embedded else None


@dataclass(frozen=True, slots=True)
class Problem:
    """A structural defect of a record: a reason code and a message naming the field."""

    reason: str
    detail: str


class Dataset:
    """The records of one dataset file, with their format.

    Attributes
    ----------
    path : Path
        The file read.
    format : str
        ``"sharegpt"``, ``"llava"`` or ``"llava_images"``.
    records : list
        The records exactly as parsed.
    sha256 : str
        Hex digest of the file's bytes (ties a validation report to its dataset).
    source_field : str or None
        Record field used as the source label, if configured.
    """

    def __init__(
        self,
        path: Path,
        format: str,
        records: list[Any],
        sha256: str,
        source_field: str | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.records = records
        self.sha256 = sha256
        self.source_field = source_field

    @property
    def spec(self) -> RecordFormat:
        """Field names of this dataset's record format."""
        return FORMATS[self.format]

    def __len__(self) -> int:
        return len(self.records)

    def inspect(self, index: int) -> tuple[Sample | None, list[Problem]]:
        """Normalise record ``index``; the sample is ``None`` when problems were found."""
        return inspect_record(self.records[index], index, self.spec, self.source_field)

    def sample(self, index: int) -> Sample:
        """The normalised record at ``index``.

        Raises ``DatasetError`` naming the record and its defects when it cannot be
        normalised (validate and filter remove such records).
        """
        sample, problems = self.inspect(index)
        if sample is None:
            details = "; ".join(p.detail for p in problems)
            raise DatasetError(f"{self.path}: record {index} is malformed: {details}")
        return sample

    def __iter__(self) -> Iterator[Sample]:
        return (self.sample(i) for i in range(len(self.records)))


def load_dataset(
    path: str | os.PathLike, fmt: str = "auto", *, source_field: str | None = None
) -> Dataset:
    """Read a whole dataset file into memory and determine its record format.

    For small files, tests and benchmarks; the workflow's stages stream the records
    (:func:`iter_records`) and never hold them all.

    Parameters
    ----------
    path : str or PathLike
        The dataset file: a JSON array, JSON Lines or parquet (see :func:`file_kind`).
    fmt : str
        ``"auto"`` (detect from the records' keys) or one of :data:`FORMATS`.
    source_field : str, optional
        Record field used as the source label.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        As :func:`iter_records`; an empty dataset; or (``fmt="auto"``) records of mixed
        or unknown formats.
    """
    path = Path(path)
    check_format_name(fmt)
    stats = ReadStats()
    # Millions of new containers would trigger many pointless garbage collections.
    collecting = gc.isenabled()
    gc.disable()
    try:
        records = [record for _, record in iter_records(path, stats=stats)]
    finally:
        if collecting:
            gc.enable()
    if not records:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    name = detect_format(records, path) if fmt == "auto" else fmt
    return Dataset(path, name, records, stats.digest(path), source_field)


# The values of a `--format` option: a record format, or "auto" (detected from the records).
FORMAT_CHOICES = ("auto", *FORMATS)


def check_format_name(fmt: str) -> None:
    """Raise ``DatasetError`` unless ``fmt`` is ``"auto"`` or one of :data:`FORMATS`."""
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(
            f"unknown dataset format {fmt!r}; expected auto or one of {', '.join(FORMATS)}"
        )


# ---------------------------------------------------------------------------------------
# Streaming the records of a file


def file_kind(path: str | os.PathLike) -> str:
    """How a dataset file is read, from its name: ``"jsonl"`` (``.jsonl``, ``.ndjson``),
    ``"parquet"`` (``.parquet``) or ``"json"`` (anything else: a JSON array, or JSON
    Lines under another name).

    Examples
    --------
    >>> file_kind("a.JSONL"), file_kind("b.parquet"), file_kind("c.json")
    ('jsonl', 'parquet', 'json')
    """
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return "parquet" if suffix in PARQUET_SUFFIXES else "json"


@dataclass
class ReadStats:
    """What a stream learns about its file as it reads it.

    ``offsets`` (when given an array or an offset spill) receives the byte offset of
    every record read (JSON and JSON Lines; parquet rows are found by number), ``count``
    the number of records read, ``sha256`` the digest of the file's bytes once a stream
    from the first byte reached the end (JSON and JSON Lines), ``layout`` ``"array"``
    or ``"lines"``.
    """

    offsets: array | _OffsetSpill | None = None
    count: int = 0
    sha256: str | None = None
    layout: str = "lines"

    def digest(self, path: str | os.PathLike) -> str:
        """The file's SHA-256: as streamed, else read now (parquet)."""
        if self.sha256 is None:
            self.sha256 = file_digest(path)
        return self.sha256


def iter_records(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    *,
    index: DatasetIndex | None = None,
    columns: Sequence[str] | None = None,
    stats: ReadStats | None = None,
) -> Iterator[tuple[int, Any]]:
    """The records of a dataset file, one at a time, with their dataset index.

    JSON Lines are read line by line (blank lines are no records), a JSON array by an
    incremental parser (``json.JSONDecoder.raw_decode``) over blocks of the file,
    parquet by row batches. Memory is one block (or row batch) and the record being
    read, whatever the size of the file.

    Parameters
    ----------
    path : str or PathLike
        The dataset file (:func:`file_kind`).
    start, stop : int
        The range of dataset indices to read (``stop=None``: to the end).
    index : DatasetIndex, optional
        The file's index (:func:`build_index`): a JSON or JSON Lines stream then starts
        at the byte offset of record ``start`` instead of parsing the records before it.
    columns : sequence of str, optional
        Parquet: read only these columns (those the file lacks are left out).
    stats : ReadStats, optional
        Filled as the stream goes.

    Yields
    ------
    index : int
    record : object
        The record as parsed (parquet: the row as a dict, binary values as bytes).

    Raises
    ------
    DatasetError
        Unreadable file, text that is not UTF-8, invalid JSON, a truncated JSON array, a
        top level that is not a list, an unreadable parquet file; the message names the
        file and the record (JSON: line and column, or the byte offset when the stream
        started at an index; parquet: the row).
    """
    path = Path(path)
    stats = ReadStats() if stats is None else stats
    kind = file_kind(path)
    if kind == "parquet":
        yield from _parquet_records(path, start, stop, columns, stats)
        return
    offset, layout = 0, "lines" if kind == "jsonl" else None
    if index is not None and start:
        if start >= index.count:
            return
        offset, layout = int(index.offsets[start]), index.layout
    if layout is None:
        layout = _json_layout(path)
    stats.layout = layout
    with _ByteReader(path, offset) as reader:
        # Numbered from `start` when seeking to it, else from 0 and skipped up to it.
        first = start if offset else 0
        records = (_json_lines if layout == "lines" else _json_array)(reader, first, stats)
        for number, record in records:
            if stop is not None and number >= stop:
                return
            if number >= start:
                yield number, record
        if reader.digest is not None:
            stats.sha256 = reader.digest.hexdigest()


class _ByteReader:
    """A dataset file read block by block from ``offset``: the position, and the digest
    of the bytes when reading from the first one."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.position = offset
        self.from_start = offset == 0
        self.digest = hashlib.sha256() if self.from_start else None
        try:
            self.handle = open(path, "rb")
            self.handle.seek(offset)
        except OSError as error:
            raise DatasetError(f"cannot read dataset {path}: {error.strerror or error}") from None

    def __enter__(self) -> _ByteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def read(self, size: int = READ_BLOCK) -> bytes:
        """The next block (at least ``size`` bytes unless at the end of the file)."""
        try:
            block = self.handle.read(size)
        except OSError as error:
            raise DatasetError(
                f"cannot read dataset {self.path}: {error.strerror or error}"
            ) from None
        if self.digest is not None:
            self.digest.update(block)
        self.position += len(block)
        return block

    def where(self, byte: int, characters: bool = False) -> str:
        """``line L, column C`` of a byte offset (C counts bytes, or ``characters`` as
        ``json`` does), or ``byte B`` when the stream did not start at the beginning of
        the file (its line is not known). Reads the file up to ``byte`` again: for error
        messages only."""
        if not self.from_start:
            return f"byte {byte}"
        line, line_start, done = 1, 0, 0
        with open(self.path, "rb") as handle:
            while done < byte:
                block = handle.read(min(READ_BLOCK, byte - done))
                if not block:
                    break
                if b"\n" in block:
                    line += block.count(b"\n")
                    line_start = done + block.rfind(b"\n") + 1
                done += len(block)
            handle.seek(line_start)
            head = handle.read(byte - line_start)
        if line_start == 0:
            head = head.removeprefix(BOM)
        column = len(head.decode("utf-8", "replace")) if characters else len(head)
        return f"line {line}, column {column + 1}"

    def not_utf8(self, byte: int) -> DatasetError:
        """The error for bytes that are not UTF-8 at offset ``byte``."""
        return DatasetError(f"{self.path}: not UTF-8 text at {self.where(byte)} (byte {byte})")


def _json_lines(
    reader: _ByteReader, start: int, stats: ReadStats, parse: bool = True
) -> Iterator[tuple[int, Any]]:
    """Records of JSON Lines: one per non-blank line (``parse=False``: ``None`` for each,
    the lines are only counted)."""
    decode = json.JSONDecoder().decode
    offsets = stats.offsets
    number = start
    position = reader.position
    lineno = 0 if reader.from_start else None
    rest = b""
    while True:
        block = reader.read()
        lines = (rest + block).split(b"\n") if block else [rest]
        rest = lines.pop() if block else b""
        for line in lines:
            at, position = position, position + len(line) + 1
            if lineno is not None:
                lineno += 1
            skipped = 0
            if at == 0 and line.startswith(BOM):
                line, skipped = line[len(BOM):], len(BOM)
            if not line.strip():
                continue
            if not parse:
                if offsets is not None:
                    offsets.append(at + skipped)
                stats.count += 1
                yield number, None
                number += 1
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise reader.not_utf8(at + skipped + error.start) from None
            try:
                record = decode(text)
            except json.JSONDecodeError as error:
                where = f"line {lineno}" if lineno is not None else f"byte {at}"
                raise DatasetError(
                    f"{reader.path}: invalid JSON Lines record at {where}, column"
                    f" {error.colno}: {error.msg} (record {number})"
                ) from None
            if offsets is not None:
                offsets.append(at + skipped)
            stats.count += 1
            yield number, record
            number += 1
        if not block:
            return


class _JsonText:
    """The decoded text of a JSON file read block by block: the unparsed part, the
    parse position, and the byte offset in the file of any position in it."""

    def __init__(self, reader: _ByteReader) -> None:
        self.reader = reader
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.eof = False
        # A position of `text` and its byte offset in the file (moved forward as needed).
        self.mark_pos, self.mark_byte = 0, reader.position
        self.more()

    def more(self, minimum: int = READ_BLOCK) -> bool:
        """Drop the consumed text and append at least ``minimum`` bytes' worth; False
        at the end of the file."""
        if self.eof:
            return False
        left = self.text[self.pos :]
        # Bytes read so far, less those not decoded yet and those of the text kept.
        self.mark_byte = (
            self.reader.position - len(self.decoder.getstate()[0]) - _utf8_length(left)
        )
        block_start = self.reader.position
        block = self.reader.read(max(minimum, READ_BLOCK))
        if block_start == 0 and block.startswith(BOM):
            block, block_start = block[len(BOM) :], len(BOM)
            self.mark_byte = block_start
        try:
            new = self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as error:
            raise self.reader.not_utf8(block_start + error.start) from None
        self.text = left + new
        self.pos = self.mark_pos = 0
        self.eof = not block
        return True

    def byte(self, position: int) -> int:
        """The byte offset in the file of ``text[position]`` (``position`` never goes
        back before the last one asked for since the last block)."""
        if self.text.isascii():
            self.mark_byte += position - self.mark_pos
        else:
            self.mark_byte += _utf8_length(self.text[self.mark_pos : position])
        self.mark_pos = position
        return self.mark_byte

    def where(self, position: int) -> str:
        """Where ``text[position]`` is in the file, for messages."""
        return self.reader.where(self.byte(position), characters=True)

    def next_char(self) -> str:
        """Move to the next non-space character and return it ('' at the end)."""
        while True:
            found = NON_SPACE.search(self.text, self.pos)
            if found:
                self.pos = found.start()
                return found.group()
            self.pos = len(self.text)
            if not self.more():
                return ""

    def value(self, number: int, decode: Callable[[str, int], tuple[Any, int]]) -> Any:
        """Parse the JSON value at the position (record ``number``), reading more text
        while it is cut off by the end of the block."""
        while True:
            try:
                value, end = decode(self.text, self.pos)
            except json.JSONDecodeError as error:
                # Cut off by the end of the text read so far, or a real error?
                cut = error.msg.startswith("Unterminated string") or error.pos >= len(
                    self.text
                ) - _CUT_MARGIN
                if cut and self.more(2 * (len(self.text) - self.pos)):
                    continue
                # The whole file is read: cut off only if the error is at its very end.
                if error.msg.startswith("Unterminated string") or error.pos >= len(
                    self.text.rstrip(" \t\n\r")
                ):
                    raise DatasetError(
                        f"{self.reader.path}: the file ends inside record {number}, which"
                        f" starts at {self.where(self.pos)}: truncated?"
                    ) from None
                raise DatasetError(
                    f"{self.reader.path}: invalid JSON at {self.where(error.pos)}:"
                    f" {error.msg} (record {number})"
                ) from None
            self.pos = end
            return value


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _json_layout(path: Path) -> str:
    """``"array"`` for a JSON array, ``"lines"`` for several JSON objects one after
    another (JSON Lines under another name); ``DatasetError`` for anything else."""
    with _ByteReader(path, 0) as reader:
        text = _JsonText(reader)
        first = text.next_char()
        if first == "[":
            return "array"
        if first == "":
            raise DatasetError(f"{path}: the dataset is empty (no records)")
        value = text.value(0, json.JSONDecoder().raw_decode)
        if first == "{" and text.next_char():
            return "lines"
    raise DatasetError(
        f"{path}: the top level is a JSON {_json_type(value)}, not a list of records"
        + (" (a JSON Lines file must be named *.jsonl)" if isinstance(value, dict) else "")
    )


def _json_array(reader: _ByteReader, start: int, stats: ReadStats) -> Iterator[tuple[int, Any]]:
    """Records of a JSON array, parsed one at a time; the reader is at the opening
    bracket, or (reading from an index) at record ``start``."""
    decode = json.JSONDecoder().raw_decode
    offsets = stats.offsets
    text = _JsonText(reader)
    if reader.from_start:
        text.next_char()
        text.pos += 1  # the opening bracket (checked by _json_layout)
    number = start
    while True:
        char = text.next_char()
        if char == "]":
            text.pos += 1
            if text.next_char():
                raise DatasetError(
                    f"{reader.path}: invalid JSON at {text.where(text.pos)}: extra data after"
                    " the array"
                )
            return
        if char == "":
            raise DatasetError(
                f"{reader.path}: the file ends inside the array, after {number} records:"
                " truncated?"
            )
        if number != start:
            if char != ",":
                raise DatasetError(
                    f"{reader.path}: invalid JSON at {text.where(text.pos)}: expecting ',' or"
                    f" ']' after record {number - 1}"
                )
            text.pos += 1
            text.next_char()
        if offsets is not None:
            offsets.append(text.byte(text.pos))
        stats.count += 1
        yield number, text.value(number, decode)
        number += 1


def _parquet_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Without pre-buffering: pyarrow's read-ahead cache kept every row group read
        # (memory grew with the file: 122 -> 286 MB over 600K rows, 1 MB with it off).
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except OSError as error:
        if isinstance(error, FileNotFoundError) or not path.exists():
            raise DatasetError(f"cannot read dataset {path}: {error.strerror or error}") from None
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None
    except pa.ArrowException as error:
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None


def _parquet_batches(
    path: Path, start: int, stop: int | None, columns: Sequence[str] | None
) -> Iterator[tuple[int, Any]]:
    """``(dataset index of the first row, arrow record batch)`` of the row groups that
    hold rows ``start`` to ``stop``, projected on ``columns``."""
    import pyarrow as pa

    file = _parquet_file(path)
    names = file.schema_arrow.names
    wanted = None if columns is None else [c for c in columns if c in names]
    groups, first, row = [], None, 0
    for group in range(file.metadata.num_row_groups):
        rows = file.metadata.row_group(group).num_rows
        if row + rows > start and (stop is None or row < stop):
            groups.append(group)
            first = row if first is None else first
        row += rows
    if not groups:
        return
    row = first
    batches = file.iter_batches(
        batch_size=PARQUET_BATCH, row_groups=groups, columns=wanted, use_threads=False
    )
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as error:
            raise DatasetError(f"{path}: cannot read the rows from row {row} on: {error}") from None
        yield row, batch
        row += batch.num_rows


def _parquet_records(
    path: Path, start: int, stop: int | None, columns: Sequence[str] | None, stats: ReadStats
) -> Iterator[tuple[int, Any]]:
    """Rows of a parquet file as dicts."""
    for first, batch in _parquet_batches(path, start, stop, columns):
        for number, record in enumerate(batch.to_pylist(), first):
            if number < start:
                continue
            if stop is not None and number >= stop:
                return
            stats.count += 1
            yield number, record


def parquet_columns(path: str | os.PathLike) -> list[str]:
    """The column names of a parquet dataset file."""
    return list(_parquet_file(Path(path)).schema_arrow.names)


@dataclass(frozen=True)
class DatasetIndex:
    """Where every record of a dataset file starts, found once (:func:`build_index`) so
    that later jobs seek to their records instead of parsing the ones before them.

    ``offsets[i]`` is the byte offset of record ``i`` (JSON, JSON Lines; empty for
    parquet, whose rows are found by number); ``sha256`` and ``size`` identify the
    file's content; ``layout`` is ``"array"`` or ``"lines"``.
    """

    count: int
    sha256: str
    size: int
    layout: str
    offsets: np.ndarray

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetIndex:
        """Read an index written by :func:`write_index`; the offsets are memory-mapped (a job
        reads the few it needs, not 8 bytes for every record of the dataset)."""
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
            offsets = _npz_memmap(path, "offsets")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise DatasetError(f"cannot read dataset index {path}: {error}") from None
        return cls(meta["count"], meta["sha256"], meta["size"], meta["layout"], offsets)

    def check(self, path: str | os.PathLike) -> None:
        """Raise ``DatasetError`` when ``path`` no longer has the indexed size."""
        try:
            size = os.stat(path).st_size
        except OSError as error:
            raise DatasetError(f"cannot read dataset {path}: {error.strerror or error}") from None
        if size != self.size:
            raise DatasetError(
                f"{path} changed since it was indexed ({self.size} bytes then, {size} now)"
            )


# Offsets moved at a time when an index is written (8 MiB).
_OFFSETS_CHUNK = 1 << 20


def _write_index(
    path: str | os.PathLike, count: int, sha256: str, size: int, layout: str,
    num_offsets: int, chunks: Iterable[bytes],
) -> None:
    """Write a :class:`DatasetIndex` file atomically, its offsets (``num_offsets``
    little-endian int64, in ``chunks``) streamed: an ``.npz`` as ``np.savez`` writes it,
    without holding the offsets."""
    meta = io.BytesIO()
    np.lib.format.write_array(meta, np.array(json.dumps(
        {"count": count, "sha256": sha256, "size": size, "layout": layout})))
    header = {"descr": "<i8", "fortran_order": False, "shape": (num_offsets,)}
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
        with archive.open("offsets.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for chunk in chunks:
                member.write(chunk)
        archive.writestr("meta.npy", meta.getvalue())


def _npz_memmap(path: str | os.PathLike, name: str) -> np.ndarray:
    """Array ``name`` of an ``.npz`` file (``np.savez`` stores members uncompressed) as
    a read-only memory map of its bytes in the file."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{name} is compressed")
        with archive.open(info) as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(member)
            header = member.tell()
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)
        # The local file header: 30 bytes, then the name and the extra field.
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(
            local[28:30], "little"
        )
    if not shape[0]:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + header, shape=shape,
                     order="F" if fortran else "C")


def build_index(path: str | os.PathLike) -> DatasetIndex:
    """Index a dataset file in one pass: the byte offset of every record, the count and
    the SHA-256 of its bytes.

    JSON Lines are scanned for line starts without parsing a record (their records are
    parsed, and bad lines found, by whoever reads them); a JSON array is parsed once,
    which finds its syntax errors; a parquet file gives its row count from its metadata.
    Memory: 8 bytes per record (:func:`write_index` saves an index in constant memory).

    Raises ``DatasetError`` as :func:`iter_records`, or for an empty dataset.
    """
    offsets = array("q")
    count, sha256, layout = _scan(Path(path), offsets)
    found = np.frombuffer(offsets, dtype=np.int64) if len(offsets) else np.zeros(0, np.int64)
    return DatasetIndex(count, sha256, os.stat(path).st_size, layout, found)


def write_index(path: str | os.PathLike, out: str | os.PathLike) -> DatasetIndex:
    """Index a dataset file as :func:`build_index` does and save the index at ``out``,
    the offsets spilled to a temporary file as they come (memory bounded whatever the
    number of records). Returns the saved index, its offsets memory-mapped."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent) as handle:
        offsets = _OffsetSpill(handle)
        count, sha256, layout = _scan(Path(path), offsets)
        _write_index(out, count, sha256, os.stat(path).st_size, layout, offsets.count,
                     offsets.chunks())
    return DatasetIndex.load(out)


def _scan(path: Path, offsets: array | _OffsetSpill) -> tuple[int, str, str]:
    """Read ``path`` once, its records' byte offsets appended to ``offsets``:
    ``(count, sha256, layout)``."""
    stats = ReadStats(offsets=offsets)
    if file_kind(path) == "parquet":
        count = _parquet_file(path).metadata.num_rows
    else:
        stats.layout = "lines" if file_kind(path) == "jsonl" else _json_layout(path)
        with _ByteReader(path, 0) as reader:
            records = (_json_lines(reader, 0, stats, parse=False) if stats.layout == "lines"
                       else _json_array(reader, 0, stats))
            for _ in records:
                pass
            stats.sha256 = reader.digest.hexdigest()
        count = stats.count
    if not count:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    return count, stats.digest(path), stats.layout


class _OffsetSpill:
    """Byte offsets appended one by one and moved to ``handle`` (a temporary file)
    every :data:`_OFFSETS_CHUNK`, so that an index is written in bounded memory."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._held = array("q")
        self.count = 0

    def append(self, offset: int) -> None:
        self._held.append(offset)
        self.count += 1
        if len(self._held) == _OFFSETS_CHUNK:
            self._handle.write(self._held.tobytes())
            del self._held[:]

    def chunks(self) -> Iterator[bytes]:
        """Every offset so far, as little-endian int64 bytes, in order."""
        self._handle.write(self._held.tobytes())
        del self._held[:]
        self._handle.seek(0)
        return iter(lambda: self._handle.read(8 * _OFFSETS_CHUNK), b"")


# A job's records: light enough for the data stages (extraction imports torch).
def shard_range(num_samples: int, shard: int, num_shards: int) -> range:
    """Dataset indices of shard ``shard`` of ``num_shards``: contiguous, sizes within one.

    Examples
    --------
    >>> [list(shard_range(5, i, 2)) for i in range(2)]
    [[0, 1], [2, 3, 4]]
    >>> shard_range(2, 2, 3)
    range(1, 2)
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards} does not exist")
    return range(shard * num_samples // num_shards, (shard + 1) * num_samples // num_shards)


# ---------------------------------------------------------------------------------------
# Writing records


class RecordWriter:
    """Writes records, unchanged and atomically, in the file format of ``path``'s name:
    JSON Lines (``.jsonl``, ``.ndjson``), a JSON array with one record per line (as
    ``filter`` writes it; extraction finds a shard's lines without parsing the others),
    or parquet with the schema of the parquet dataset ``schema_of``.

    With ``index``, the :class:`DatasetIndex` of the file written is saved there too
    (what :func:`build_index` of the file gives, without reading it again): the byte
    offsets go to a temporary file as they come, so memory stays bounded.

    Use as a context manager; the file appears complete or not at all.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        schema_of: str | os.PathLike | None = None,
        index: str | os.PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind = file_kind(path)
        if self.kind == "parquet" and schema_of is None:
            raise DatasetError(f"{path}: parquet is written from a parquet dataset only")
        self.schema_of = schema_of
        self.index = None if index is None else Path(index)
        self.count = 0
        self._stack = contextlib.ExitStack()
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._position = 0
        self._digest = hashlib.sha256()

    def __enter__(self) -> RecordWriter:
        self.handle = self._stack.enter_context(atomic_write(self.path, "wb"))
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            schema = _parquet_file(Path(self.schema_of)).schema_arrow
            self._parquet = self._stack.enter_context(pq.ParquetWriter(self.handle, schema))
            return self
        if self.index is not None:
            self.index.parent.mkdir(parents=True, exist_ok=True)
            self._offsets = _OffsetSpill(
                self._stack.enter_context(tempfile.TemporaryFile(dir=self.index.parent)))
        if self.kind == "json":
            self._emit(b"[")
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool | None:
        if kind is not None:
            return self._stack.__exit__(kind, error, traceback)
        with self._stack:
            if self.kind == "parquet":
                self._flush()
            elif self.kind == "json":
                self._emit(b"\n]\n")
            if self.index is not None and self.kind != "parquet":
                _write_index(self.index, self.count, self._digest.hexdigest(), self._position,
                             "lines" if self.kind == "jsonl" else "array", self.count,
                             self._offsets.chunks())
        if self.index is not None and self.kind == "parquet":
            write_index(self.path, self.index)
        return None

    def write(self, record: Any) -> None:
        """Append one record (JSON kinds)."""
        if self.kind == "parquet":
            raise DatasetError(f"{self.path}: rows of a parquet file are written by batch")
        if self.kind == "json":
            self._emit(b",\n" if self.count else b"\n")
        if self.index is not None:
            self._offsets.append(self._position)
        self._emit(json.dumps(record, ensure_ascii=False).encode("utf-8")
                   + (b"\n" if self.kind == "jsonl" else b""))
        self.count += 1

    def _emit(self, data: bytes) -> None:
        self.handle.write(data)
        if self.index is not None:
            self._digest.update(data)
        self._position += len(data)

    def write_rows(self, batch: Any) -> None:
        """Append the rows of an arrow record batch (parquet), in row groups of about
        :data:`ROW_GROUP_BYTES`."""
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.count += batch.num_rows
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._parquet.write_table(pa.Table.from_batches(self._pending), row_group_size=None)
            self._pending, self._pending_bytes = [], 0


def write_records(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write records, unchanged, atomically: JSON Lines when ``path`` ends in ``.jsonl``
    or ``.ndjson``, parquet (schema inferred from the records) when it ends in
    ``.parquet``, else a JSON array (one record per line)."""
    if file_kind(path) == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_write(path, "wb") as handle:
            pq.write_table(pa.Table.from_pylist(list(records)), handle)
        return
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def copy_records(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    keep: Sequence[int] | np.ndarray | None = None,
    drop: Sequence[int] | np.ndarray | None = None,
    check: Callable[[int, Any], None] | None = None,
    finish: Callable[[int, str | None], None] | None = None,
    index: str | os.PathLike | None = None,
) -> int:
    """Stream ``source`` and write some of its records to ``out`` as they come,
    unchanged and in dataset order: those at the dataset indices ``keep``, or all but
    those at ``drop`` (sorted, distinct). Returns the number of records of ``source``.

    ``check(index, id)`` sees the id of every record of ``source`` (``None`` when it has
    none), ``finish(count, sha256)`` the number of records and the digest of the bytes
    (``None`` for parquet) once all were read; either may raise to refuse the copy, and
    nothing is written then. A parquet ``source`` gives a parquet ``out`` with the same
    schema; JSON kinds may be written as either JSON kind. With ``index``, the
    :class:`DatasetIndex` of ``out`` is written there (:class:`RecordWriter`). Memory:
    one block or row batch, and the indices.

    Raises ``DatasetError`` when ``keep`` names an index beyond the records of
    ``source``, or for parquet written from (or to) another kind.
    """
    if (keep is None) == (drop is None):
        raise ValueError("give exactly one of keep and drop")
    chosen = np.asarray(keep if drop is None else drop, dtype=np.int64)
    wanted = drop is None
    if (file_kind(source) == "parquet") != (file_kind(out) == "parquet"):
        raise DatasetError(
            f"{out}: a parquet dataset is written as parquet, and only a parquet dataset"
            f" (the dataset is {source})"
        )
    stats = ReadStats()
    count = 0
    with RecordWriter(out, schema_of=source, index=index) as writer:
        if writer.kind == "parquet":
            for first, batch in _parquet_batches(Path(source), 0, None, None):
                rows = batch.num_rows
                if check is not None:
                    ids = (batch.column("id").to_pylist() if "id" in batch.schema.names
                           else [None] * rows)
                    for number, value in enumerate(ids, first):
                        check(number, value)
                lo, hi = np.searchsorted(chosen, [first, first + rows])
                mask = np.full(rows, not wanted)
                mask[chosen[lo:hi] - first] = wanted
                if mask.any():
                    writer.write_rows(batch.filter(mask))
                count = first + rows
        else:
            position = 0
            for number, record in iter_records(source, stats=stats):
                if check is not None:
                    check(number, record.get("id") if isinstance(record, dict) else None)
                listed = position < len(chosen) and chosen[position] == number
                position += listed
                if listed == wanted:
                    writer.write(record)
                count = number + 1
        if finish is not None:
            finish(count, stats.sha256)
        if len(chosen) and (chosen[0] < 0 or chosen[-1] >= count):
            outside = chosen[0] if chosen[0] < 0 else chosen[-1]
            raise DatasetError(
                f"dataset index {outside} is not in {source}, which has {count} records"
            )
    return count


def iter_samples(
    path: str | os.PathLike,
    fmt: str = "auto",
    *,
    source_field: str | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[int, Sample | None, list[Problem]]]:
    """The normalised view of each record as the file streams by.

    With ``fmt="auto"`` each record is read in the format its keys fit (every format a
    record fits reads it the same way) and a :class:`FormatVote` refuses files mixing
    formats; a record that does not vote is read as ShareGPT (it has no sample either
    way). Parquet files are read with only the columns a sample needs.

    Raises ``DatasetError`` as :func:`iter_records` and :class:`FormatVote`.
    """
    check_format_name(fmt)
    vote = FormatVote(path)
    forced = None if fmt == "auto" else FORMATS[fmt]
    columns = ["id", "messages", "conversations", "image", "images", source_field]
    for number, record in iter_records(path, start, stop, columns=columns):
        spec = forced
        if spec is None:
            formats = vote.add(number, record)
            spec = FORMATS[min(formats) if formats else "sharegpt"]
        sample, problems = inspect_record(record, number, spec, source_field)
        yield number, sample, problems


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
             bytes: "bytes"}
    return names.get(type(value), "number")


def _record_formats(record: dict) -> set[str]:
    """Formats a record's keys are compatible with (empty: contradictory keys)."""
    if "messages" in record:
        return set() if "conversations" in record else {"sharegpt"}
    has_image, has_images = "image" in record, "images" in record
    if has_image and has_images:
        return set()
    if has_image:
        return {"llava"}
    if has_images:
        return {"llava_images"}
    # A text-only conversations record fits both LLaVA variants.
    return {"llava", "llava_images"}


def detect_format(records: Iterable[Any], path: str | os.PathLike = "dataset") -> str:
    """The one record format that all records' keys agree on (:class:`FormatVote` over
    ``records``).

    Records that are not objects or have neither ``messages`` nor ``conversations`` do
    not vote (validation reports them). A file of text-only conversations records is
    ``llava``.

    Raises ``DatasetError`` naming the first record that contradicts the earlier ones,
    or when no record has a known format.
    """
    vote = FormatVote(path)
    for index, record in enumerate(records):
        vote.add(index, record)
    return vote.result()


class FormatVote:
    """The record format of a file, decided record by record as the records stream by.

    Each record votes with the formats its keys fit (:meth:`add`); the votes of the
    parts of a file (shards) combine with :meth:`join`; :meth:`result` gives the
    format. State: ``candidates`` (formats all votes so far fit), ``first`` (the record
    that last narrowed them, named by later conflicts), ``opening`` (the first record
    seen and its keys, named when no record votes).
    """

    def __init__(self, path: str | os.PathLike = "dataset") -> None:
        self.path = path
        self.candidates: frozenset[str] | None = None
        self.first: int | None = None
        self.opening: tuple[int, Any] | None = None

    def add(self, index: int, record: Any) -> frozenset[str] | None:
        """Vote with record ``index``; returns the formats it fits (``None``: a record
        that does not vote). Raises ``DatasetError`` for a record mixing the keys of
        several formats or contradicting the earlier records."""
        if self.opening is None:
            self.opening = (
                index, sorted(record) if isinstance(record, dict) else _json_type(record)
            )
        if not isinstance(record, dict) or (
            "messages" not in record and "conversations" not in record
        ):
            return None
        formats = _record_formats(record)
        if not formats:
            keys = sorted(
                k for k in ("messages", "conversations", "image", "images") if k in record
            )
            raise DatasetError(
                f"{self.path}: record {index} mixes the keys of several formats"
                f" ({', '.join(keys)})"
            )
        self._narrow(frozenset(formats), index)
        return frozenset(formats)

    def _narrow(self, formats: frozenset[str], index: int) -> None:
        if self.candidates is None:
            self.candidates, self.first = formats, index
        elif not self.candidates & formats:
            raise DatasetError(
                f"{self.path}: mixed record formats: record {index} is {_describe(formats)}"
                f" but record {self.first} is {_describe(self.candidates)}; a dataset file"
                " must use one format"
            )
        elif not self.candidates <= formats:
            # This record narrows the format down: later conflicts name it.
            self.candidates, self.first = self.candidates & formats, index

    def join(self, later: FormatVote) -> None:
        """Add the votes of a later part of the file."""
        if self.opening is None:
            self.opening = later.opening
        if later.candidates is not None:
            self._narrow(later.candidates, later.first)

    def result(self) -> str:
        """The format; ``DatasetError`` when no record voted."""
        if self.candidates is None:
            keys = "no records" if self.opening is None else f"record {self.opening[0]}: {self.opening[1]}"
            raise DatasetError(
                f"{self.path}: unknown record format: no record has 'messages' or"
                f" 'conversations' ({keys}); expected one of {', '.join(FORMATS)}"
            )
        return "llava" if self.candidates == {"llava", "llava_images"} else min(self.candidates)

    def state(self) -> dict[str, Any]:
        """The vote as JSON-ready data (:meth:`from_state` reads it back)."""
        return {
            "candidates": None if self.candidates is None else sorted(self.candidates),
            "first": self.first,
            "opening": self.opening,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], path: str | os.PathLike) -> FormatVote:
        """A vote from :meth:`state`."""
        vote = cls(path)
        if state["candidates"] is not None:
            vote.candidates, vote.first = frozenset(state["candidates"]), state["first"]
        vote.opening = None if state["opening"] is None else tuple(state["opening"])
        return vote


def _describe(formats: set[str]) -> str:
    if formats == {"llava", "llava_images"}:
        return "a text-only 'conversations' record"
    return " or ".join(FORMATS[name].describe() for name in sorted(formats))


def inspect_record(
    record: Any, index: int, spec: RecordFormat, source_field: str | None = None
) -> tuple[Sample | None, list[Problem]]:
    """Normalise one record, collecting its structural defects.

    Defects (reason codes): ``not_an_object``, ``missing_messages``,
    ``messages_not_a_list``, ``empty_messages``, ``message_not_an_object``,
    ``missing_role``, ``unknown_role``, ``missing_content``, ``bad_content``,
    ``images_malformed``, ``image_path_not_a_string``. Details use the input's own
    field names (``conversations[2].from``). Ids are not checked here.

    Returns
    -------
    sample : Sample or None
        ``None`` when there is any defect.
    problems : list of Problem
    """
    if not isinstance(record, dict):
        return None, [
            Problem("not_an_object", f"record is a JSON {_json_type(record)}, not an object")
        ]
    problems: list[Problem] = []
    messages = _messages(record, spec, problems)
    images, embedded = _images(record, spec, problems)
    if problems:
        return None, problems
    source = _source(record, images, source_field)
    return Sample(index, record.get("id"), messages, images, source, embedded), problems


def _messages(record: dict, spec: RecordFormat, problems: list[Problem]) -> tuple[Message, ...]:
    key = spec.messages_key
    if key not in record:
        problems.append(Problem("missing_messages", f"no '{key}' field"))
        return ()
    turns = record[key]
    if not isinstance(turns, list):
        problems.append(
            Problem("messages_not_a_list", f"'{key}' is a JSON {_json_type(turns)}, not a list")
        )
        return ()
    if not turns:
        problems.append(Problem("empty_messages", f"'{key}' is empty"))
        return ()
    messages = []
    roles = spec.roles
    for position, turn in enumerate(turns):
        if type(turn) is dict:
            # Fast path for the well-formed turn (the vast majority).
            role, content = turn.get(spec.role_key), turn.get(spec.content_key)
            if type(role) is str and type(content) is str and role in roles:
                messages.append(Message(roles[role], content))
                continue
        where = f"{key}[{position}]"
        if not isinstance(turn, dict):
            problems.append(
                Problem(
                    "message_not_an_object", f"{where} is a JSON {_json_type(turn)}, not an object"
                )
            )
            continue
        role = _role(turn, where, spec, problems)
        content = _content(turn, where, spec, problems)
        if role is not None and content is not None:
            messages.append(Message(role, content))
    return tuple(messages)


def _role(turn: dict, where: str, spec: RecordFormat, problems: list[Problem]) -> str | None:
    if spec.role_key not in turn:
        problems.append(Problem("missing_role", f"{where} has no '{spec.role_key}'"))
        return None
    role = turn[spec.role_key]
    if not isinstance(role, str) or role not in spec.roles:
        problems.append(
            Problem(
                "unknown_role",
                f"{where}.{spec.role_key} is {json.dumps(role, ensure_ascii=False)}"
                f" (expected one of {', '.join(spec.roles)})",
            )
        )
        return None
    return spec.roles[role]


def _content(turn: dict, where: str, spec: RecordFormat, problems: list[Problem]) -> str | None:
    key = spec.content_key
    if key not in turn:
        problems.append(Problem("missing_content", f"{where} has no '{key}'"))
        return None
    content = turn[key]
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for number, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image":
                texts.append(IMAGE_TAG)
            else:
                problems.append(
                    Problem(
                        "bad_content",
                        f"{where}.{key}[{number}] is not a text part"
                        " ({'type': 'text', 'text': str}) or an image part ({'type': 'image'})",
                    )
                )
                return None
        return "".join(texts)
    problems.append(
        Problem(
            "bad_content",
            f"{where}.{key} is a JSON {_json_type(content)}, not a string or a list of typed parts",
        )
    )
    return None


def _images(
    record: dict, spec: RecordFormat, problems: list[Problem]
) -> tuple[tuple[str, ...], tuple[bytes | None, ...]]:
    """The image paths of a record and, when it embeds any, the bytes of each image."""
    key = spec.images_key
    value = record.get(key)
    if value is None:
        return (), ()
    if (isinstance(value, str) or _is_image_struct(value)) and spec.single_image:
        items, names = [value], [key]
    elif isinstance(value, list):
        items, names = value, [f"{key}[{i}]" for i in range(len(value))]
    else:
        expected = "a path or a list of paths" if spec.single_image else "a list of paths"
        problems.append(
            Problem("images_malformed", f"'{key}' is a JSON {_json_type(value)}, not {expected}")
        )
        return (), ()
    ok = True
    paths, embedded = [], []
    for name, item in zip(names, items):
        data = None
        if _is_image_struct(item):
            # {"bytes", "path"}, as Hugging Face datasets store an image.
            data, item = item.get("bytes"), item.get("path")
            if isinstance(data, bytes):
                item = item if isinstance(item, str) and item.strip() else EMBEDDED
            elif data is not None or not isinstance(item, str):
                problems.append(
                    Problem(
                        "images_malformed",
                        f"{name} holds neither image bytes nor a path",
                    )
                )
                ok = False
                continue
        if not isinstance(item, str):
            problems.append(
                Problem(
                    "image_path_not_a_string", f"{name} is a JSON {_json_type(item)}, not a path"
                )
            )
            ok = False
        elif not item.strip():
            problems.append(Problem("images_malformed", f"{name} is an empty path"))
            ok = False
        paths.append(item)
        embedded.append(data)
    if not ok:
        return (), ()
    return tuple(paths), (tuple(embedded) if any(d is not None for d in embedded) else ())


def _is_image_struct(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and value.keys() <= {"bytes", "path"}


def _source(record: dict, images: tuple[str, ...], source_field: str | None) -> str:
    if source_field is not None:
        label = record.get(source_field)
        if isinstance(label, (str, int)) and not isinstance(label, bool):
            return str(label)
    return image_source(images)


def image_source(images: Sequence[str]) -> str:
    """Source label from image paths: the first folder of the first path.

    Examples
    --------
    >>> image_source(["coco/train2017/1.jpg"])
    'coco'
    >>> image_source(["1.jpg"])
    '(root)'
    >>> image_source([])
    'text-only'
    """
    if not images:
        return TEXT_ONLY
    # Plain string splitting: pathlib is far slower, and this runs for every sample.
    parts = [p for p in images[0].replace("\\", "/").split("/") if p not in ("", ".")]
    return parts[0] if len(parts) > 1 else "(root)"


def resolve_image(root: str | os.PathLike, path: str) -> Path:
    """The file of an image path: ``path`` itself when absolute, else ``root / path``."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(root) / candidate
