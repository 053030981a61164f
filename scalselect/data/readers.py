"""Reading dataset files as streams of records, whatever their size.

A file is a JSON array of records, JSON Lines (one record per line; blank lines are
skipped and do not count as records) or parquet (one row per record). JSON Lines is
recognised by the ``.jsonl`` / ``.ndjson`` extension or, whatever the name, by a file
holding several top-level objects; parquet by ``.parquet``.

Records stream (:func:`iter_records`): JSON Lines line by line, a JSON array record by
record with ``json.JSONDecoder.raw_decode`` over blocks of the file, parquet by row
batches with only the columns asked for. :func:`build_index` and :func:`write_index`
record every record's byte offset once (:mod:`scalselect.data.index`), so that jobs seek
to their part of the file. :func:`iter_samples` gives the normalised view of each record
(:mod:`scalselect.data.records`); :func:`load_dataset` holds a whole file, for small
files and tests.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import hashlib
import json
import os
import re
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalselect.data.index import DatasetIndex, OffsetSpill, write_index_file
from scalselect.data.records import (
    FORMATS,
    DatasetError,
    FormatVote,
    Problem,
    RecordFormat,
    Sample,
    check_format_name,
    detect_format,
    inspect_record,
    json_type,
    unreadable,
)
from scalselect.io import file_digest
from scalselect.locations import (
    LocationError,
    ResumingFile,
    as_location,
    is_url,
    open_binary,
    size,
)

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
        path: str | Path,
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
    path = as_location(path)
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

    offsets: array | OffsetSpill | None = None
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
    path = as_location(path)
    stats = ReadStats() if stats is None else stats
    kind = file_kind(path)
    if kind == "parquet":
        yield from _parquet_records(path, start, stop, columns, stats)
    else:
        yield from _json_records(path, kind, start, stop, index, stats)


def _json_records(
    path: str | Path,
    kind: str,
    start: int,
    stop: int | None,
    index: DatasetIndex | None,
    stats: ReadStats,
) -> Iterator[tuple[int, Any]]:
    """:func:`iter_records` of a JSON or JSON Lines file (``kind``)."""
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

    def __init__(self, path: str | Path, offset: int) -> None:
        self.path = path
        self.position = offset
        self.from_start = offset == 0
        self.digest = hashlib.sha256() if self.from_start else None
        self._stack = contextlib.ExitStack()
        try:
            self.handle = self._stack.enter_context(open_binary(path))
            self.handle.seek(offset)
        except OSError as error:
            raise unreadable(path, error) from None

    def __enter__(self) -> _ByteReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read(self, size: int = READ_BLOCK) -> bytes:
        """The next block (at least ``size`` bytes unless at the end of the file)."""
        try:
            block = self.handle.read(size)
        except OSError as error:
            raise unreadable(self.path, error) from None
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
        with open_binary(self.path) as handle:
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


def _json_layout(path: str | Path) -> str:
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
        f"{path}: the top level is a JSON {json_type(value)}, not a list of records"
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


def parquet_file(path: str | Path) -> Any:
    """The parquet file at ``path`` (a URL is read in ranged requests, see
    :func:`scalselect.locations.open_binary`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = ResumingFile(path) if is_url(path) else path
        # Without pre-buffering: pyarrow's read-ahead cache kept every row group read
        # (memory grew with the file: 122 -> 286 MB over 600K rows, 1 MB with it off).
        return pq.ParquetFile(source, pre_buffer=False, buffer_size=1 << 20)
    except OSError as error:
        missing = not is_url(path) and not os.path.exists(path)
        if isinstance(error, (FileNotFoundError, LocationError)) or missing:
            raise unreadable(path, error) from None
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None
    except pa.ArrowException as error:
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None


def parquet_batches(
    path: str | Path, start: int, stop: int | None, columns: Sequence[str] | None
) -> Iterator[tuple[int, Any]]:
    """``(dataset index of the first row, arrow record batch)`` of the row groups that
    hold rows ``start`` to ``stop``, projected on ``columns``."""
    import pyarrow as pa

    file = parquet_file(path)
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
    path: str | Path, start: int, stop: int | None, columns: Sequence[str] | None, stats: ReadStats
) -> Iterator[tuple[int, Any]]:
    """Rows of a parquet file as dicts."""
    for first, batch in parquet_batches(path, start, stop, columns):
        for number, record in enumerate(batch.to_pylist(), first):
            if number < start:
                continue
            if stop is not None and number >= stop:
                return
            stats.count += 1
            yield number, record


def parquet_columns(path: str | os.PathLike) -> list[str]:
    """The column names of a parquet dataset file."""
    return list(parquet_file(as_location(path)).schema_arrow.names)


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
    count, sha256, layout = _scan(as_location(path), offsets)
    found = np.frombuffer(offsets, dtype=np.int64) if len(offsets) else np.zeros(0, np.int64)
    return DatasetIndex(count, sha256, size(path), layout, found)


def write_index(path: str | os.PathLike, out: str | os.PathLike) -> DatasetIndex:
    """Index a dataset file as :func:`build_index` does and save the index at ``out``,
    the offsets spilled to a temporary file as they come (memory bounded whatever the
    number of records). Returns the saved index, its offsets memory-mapped."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out.parent) as handle:
        offsets = OffsetSpill(handle)
        count, sha256, layout = _scan(as_location(path), offsets)
        write_index_file(out, count, sha256, size(path), layout, offsets.count,
                     offsets.chunks())
    return DatasetIndex.load(out)


def _scan(path: str | Path, offsets: array | OffsetSpill) -> tuple[int, str, str]:
    """Read ``path`` once, its records' byte offsets appended to ``offsets``:
    ``(count, sha256, layout)``."""
    stats = ReadStats(offsets=offsets)
    if file_kind(path) == "parquet":
        count = parquet_file(path).metadata.num_rows
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
    for number, _, sample, problems in iter_inspected(
        path, fmt, source_field=source_field, start=start, stop=stop
    ):
        yield number, sample, problems


def iter_inspected(
    path: str | os.PathLike,
    fmt: str = "auto",
    *,
    source_field: str | None = None,
    start: int = 0,
    stop: int | None = None,
    vote: FormatVote | None = None,
    stats: ReadStats | None = None,
) -> Iterator[tuple[int, Any, Sample | None, list[Problem]]]:
    """:func:`iter_samples` with each record as parsed: ``(index, record, sample,
    problems)`` (parquet: the record holds only the columns a sample needs). With
    ``fmt="auto"``, ``vote`` (when given) receives the records' votes: its
    :meth:`FormatVote.result` is the file's format once the stream ends; ``stats``
    is filled as by :func:`iter_records`."""
    check_format_name(fmt)
    vote = FormatVote(path) if vote is None else vote
    forced = None if fmt == "auto" else FORMATS[fmt]
    columns = ["id", "messages", "conversations", "image", "images", source_field]
    for number, record in iter_records(path, start, stop, columns=columns, stats=stats):
        spec = forced
        if spec is None:
            formats = vote.add(number, record)
            spec = FORMATS[min(formats) if formats else "sharegpt"]
        sample, problems = inspect_record(record, number, spec, source_field)
        yield number, record, sample, problems
