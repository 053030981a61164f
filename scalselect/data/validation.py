"""Validation of a dataset before any model sees it: every sample and every image.

A sample is *invalid* when any of these reason codes applies to it (the report counts
samples per reason, and lists every invalid sample with all its reasons):

- structure (see :func:`scalselect.data.records.inspect_record`): ``not_an_object``,
  ``missing_messages``, ``messages_not_a_list``, ``empty_messages``,
  ``message_not_an_object``, ``missing_role``, ``unknown_role``, ``missing_content``,
  ``bad_content``, ``images_malformed``, ``image_path_not_a_string``;
- ids: ``missing_id``, ``bad_id_type`` (neither an integer nor a string; booleans and
  floats are not integers), ``duplicate_id``;
- turns: ``no_user_turn``, ``no_assistant_turn``; ``image_tag_mismatch`` when the
  messages hold ``<image>`` tags but not one per image (no tags at all is fine);
- images (paths joined to the image root, a folder or a URL): ``missing_image``,
  ``unreachable_image`` (a URL whose fetch still failed after the retries, or was
  refused: the detail says which and names the URL), ``empty_image_file``,
  ``not_an_image``, ``corrupt_image`` (truncated or undecodable; found by the full
  decode of ``decode_images``, header checks alone cannot see it),
  ``decompression_bomb`` (more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS``: Pillow
  only warns between that limit and twice it; that zone is invalid here too),
  ``image_too_small`` (a side shorter than ``min_image_side``),
  ``extreme_aspect_ratio`` (long/short side above ``max_aspect_ratio``).

Duplicate ids: every occurrence of a repeated id is reported (``duplicate_ids`` in the
report). By default all occurrences are invalid, since an id that names two samples
makes the score file (keyed by ``sample_id``) ambiguous; with ``allow_duplicate_ids``
they are still reported but stay valid: every later stage keys samples by position, so
nothing merges.

Samples without images are *text-only*: counted and listed, not invalid (the filter
decides whether to keep them).

Images are files (paths joined to the image root) or bytes embedded in a record
(parquet datasets, :attr:`scalselect.data.records.Sample.embedded`); the same checks apply to
both. Each distinct image (a file, or embedded bytes by their digest) is checked once
per shard, however many samples use it, in parallel over worker processes that receive
paths or bytes and send back small results (:mod:`scalselect.data.images`).

The records stream (:func:`scalselect.data.readers.iter_records`): memory holds a few dozen
bytes per record (flags, source label, id digest) and the findings, never the records.
A dataset is validated in shards (:func:`validate_part`, one job each, seeking through
the file's :class:`~scalselect.data.index.DatasetIndex`), merged into one report by
:func:`merge_parts`; the duplicate-id check is global, on the shards' id digests. The
report is the same bytes whatever the number of shards; :func:`validate_file` is the
one-shard case.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalselect import locations
from scalselect.data.images import ImageChecker
from scalselect.data.index import DatasetIndex, shard_range
from scalselect.data.readers import ReadStats, file_kind, iter_records, parquet_columns
from scalselect.data.records import (
    FORMATS,
    IMAGE_TAG,
    DatasetError,
    FormatVote,
    Problem,
    RecordFormat,
    Sample,
    check_format_name,
    inspect_record,
    resolve_image,
)
from scalselect.data.validation_part import INVALID, OUTCOMES, TEXT_ONLY, Finding, Part
from scalselect.progress import Progress
from scalselect.settings import ValidateSettings

REPORT_VERSION = 1
# Fields `filter` relies on.
REPORT_KEYS = ("dataset", "dataset_sha256", "format", "num_samples", "invalid", "text_only")
# Records with images waiting for their checks, at most.
_WAITING = 1 << 16


def _id_key(value: Any) -> tuple[str, Any]:
    # 7 and "7" are different ids.
    return (type(value).__name__, value)


def _id_hash(value: int | str) -> int:
    """A 64-bit digest of an id (its type included), the same in every process."""
    text = f"{type(value).__name__}\0{value}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _image_key(target: str | bytes) -> bytes:
    """16 bytes naming a distinct image: a resolved file path, or embedded bytes' digest."""
    text = b"b:" + target if isinstance(target, bytes) else b"f:" + os.fsencode(target)
    return hashlib.blake2b(text, digest_size=16).digest()


# Embedded image bytes held before they are checked.
_EMBEDDED_BYTES = 64 << 20


def validate_part(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    settings: ValidateSettings = ValidateSettings(),
    *,
    fmt: str = "auto",
    source_field: str | None = None,
    index: DatasetIndex | None = None,
    shard: int = 0,
    num_shards: int = 1,
    workers: int = 1,
    progress: bool = True,
    stats: ReadStats | None = None,
) -> Part:
    """Check the records of shard ``shard`` of ``num_shards`` as they stream by.

    Every check that needs only the record (structure, id type, turns, tags) and its
    images runs here; the duplicate-id check needs every shard's ids and runs in
    :func:`merge_parts`. Each distinct image (a file, or embedded bytes by digest) is
    checked once per shard, in batches on ``workers`` processes as the records come;
    records wait for their images' checks in a bounded queue.

    Parameters
    ----------
    path, image_root
        The dataset file and the folder relative image paths are joined to.
    settings : ValidateSettings
    fmt : str
        ``"auto"`` or a record format; with ``"auto"`` each record is read in the format
        its keys fit (all formats a record fits read it the same way) and the part
        keeps the vote (:class:`scalselect.data.records.FormatVote`).
    source_field : str, optional
    index : DatasetIndex, optional
        The file's index; required for ``num_shards > 1``.
    shard, num_shards : int
    workers : int
        Processes checking images.
    progress : bool
        Report records checked and images/s (:class:`scalselect.progress.Progress`).
    stats : ReadStats, optional
        Filled by the stream (a one-shard validation builds the index from it).

    Returns
    -------
    Part

    Raises
    ------
    DatasetError
        The file cannot be read (as :func:`scalselect.data.readers.iter_records`), records
        mix formats, or a parquet file has no conversations column.
    """
    path = locations.as_location(path)
    start, stop, records = _shard_records(path, fmt, source_field, index, shard, num_shards,
                                          stats)
    forced, vote = None if fmt == "auto" else FORMATS[fmt], FormatVote(path)
    with _PartState(start, stop, image_root, settings, workers, progress) as state:
        for number, record in records:
            state.add(number, record, *_inspect(number, record, forced, vote, source_field))
    return state.part(vote)


def _shard_records(
    path: Path,
    fmt: str,
    source_field: str | None,
    index: DatasetIndex | None,
    shard: int,
    num_shards: int,
    stats: ReadStats | None,
) -> tuple[int, int | None, Iterator[tuple[int, Any]]]:
    """The first record number of a shard, the one after its last (``None`` without
    an index) and the stream of its records (parquet: only the columns validation
    reads), once the format name and the index are checked."""
    check_format_name(fmt)
    if index is None and num_shards > 1:
        raise ValueError("a sharded validation needs the dataset's index")
    start, stop = 0, None
    if index is not None:
        index.check(path)
        indices = shard_range(index.count, shard, num_shards)
        start, stop = indices.start, indices.stop
    columns = _parquet_columns(path, fmt, source_field) if file_kind(path) == "parquet" else None
    return start, stop, iter_records(path, start, stop, index=index, columns=columns, stats=stats)


def _inspect(
    number: int,
    record: Any,
    forced: RecordFormat | None,
    vote: FormatVote,
    source_field: str | None,
) -> tuple[Sample | None, list[Problem], RecordFormat | None, dict[str, list[Problem]] | None]:
    """A record's sample, defects and format (``forced``, or the format its keys fit,
    counted in ``vote``), and, while its format is undecided, its defects under each
    format."""
    spec, alternatives = forced, None
    if forced is None:
        formats = vote.add(number, record)
        if formats is not None:
            spec = FORMATS[min(formats)]
        elif isinstance(record, dict):
            # Its defects name the fields of the file's format, which other
            # parts may decide: keep them under each format.
            alternatives = {
                name: inspect_record(record, number, other, source_field)[1]
                for name, other in FORMATS.items()
            }
    sample, problems = inspect_record(record, number, spec or FORMATS["sharegpt"], source_field)
    return sample, problems, spec, alternatives


class _PartState:
    """What :func:`validate_part` keeps while the records stream by."""

    def __init__(
        self,
        start: int,
        stop: int | None,
        image_root: str | os.PathLike,
        settings: ValidateSettings,
        workers: int,
        progress: bool,
    ) -> None:
        self.start = start
        self.image_root = image_root
        self.checker = ImageChecker(
            workers, settings.decode_images, settings.min_image_side, settings.max_aspect_ratio
        )
        total = None if stop is None else stop - start
        self.progress = Progress(total, "records") if progress else None
        self.findings: dict[int, Finding] = {}
        self.flags, self.sources = array("B"), array("i")
        self.labels: dict[str, int] = {}
        self.id_hashes, self.id_indices = array("Q"), array("q")
        # Distinct images: written path (file) or digest (embedded) -> code; per code the
        # resolved file or digest, the outcome (-1: not checked yet) and a failure's detail.
        self.codes: dict[str | bytes, int] = {}
        self.code_of: dict[str | bytes, int] = {}
        self.targets: list[str | bytes] = []
        self.outcomes = array("b")
        self.details: dict[int, str] = {}
        # Images to check, and records waiting for them.
        self.unchecked: list[tuple[int, str | bytes]] = []
        self.unchecked_bytes = 0
        self.waiting: list[tuple[int, Any, list[tuple[str, str, int]]]] = []

    def __enter__(self) -> _PartState:
        self.checker.__enter__()
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            if self.progress is not None:
                self.progress.close()
            self.checker.__exit__()

    def add(
        self,
        number: int,
        record: Any,
        sample: Sample | None,
        problems: list[Problem],
        spec: RecordFormat | None,
        alternatives: dict[str, list[Problem]] | None,
    ) -> None:
        """Record what the checks of one record found; its images are queued."""
        if self.progress is not None:
            self.progress.update(1)
        finding = Finding(_report_id(record), problems)
        if isinstance(record, dict):
            self._check_id(record, number, finding)
        if alternatives is not None:
            extra = finding.before[len(problems) :]
            finding.by_format = {name: found + extra for name, found in alternatives.items()}
        if sample is None:
            self.flags.append(INVALID)
            self.sources.append(-1)
            self.findings[number] = finding
            return
        _check_turns(sample, spec, finding)
        self.sources.append(self.labels.setdefault(sample.source, len(self.labels)))
        self.flags.append((INVALID if finding.before else 0) | (0 if sample.images else TEXT_ONLY))
        if finding.before:
            self.findings[number] = finding
        if not sample.images:
            return
        # LLaVA's "image" may hold one image: name it without a subscript.
        single = not isinstance(record[spec.images_key], list)
        images = []
        for position, written in enumerate(sample.images):
            data = sample.image_bytes(position)
            key: str | bytes = written if data is None else hashlib.sha256(data).digest()
            code = self.codes.get(key)
            if code is None:
                target = str(resolve_image(self.image_root, written)) if data is None else key
                code = self.code_of.get(target)
                if code is None:
                    code = self.code_of[target] = len(self.targets)
                    self.targets.append(target)
                    self.outcomes.append(-1)
                    self.unchecked.append((code, target if data is None else data))
                    self.unchecked_bytes += 0 if data is None else len(data)
                self.codes[key] = code
            name = spec.images_key if single else f"{spec.images_key}[{position}]"
            images.append((name, written, code))
        self.waiting.append((number, finding, images))
        if (
            len(self.unchecked) >= self.checker.batch
            or self.unchecked_bytes >= _EMBEDDED_BYTES
            or len(self.waiting) >= _WAITING
        ):
            self.flush()

    def _check_id(self, record: dict, number: int, finding: Finding) -> None:
        if "id" not in record:
            finding.before.append(Problem("missing_id", "no 'id' field"))
            return
        value = record["id"]
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            finding.before.append(
                Problem("bad_id_type", f"'id' is {value!r}, neither an integer nor a string")
            )
            return
        self.id_hashes.append(_id_hash(value))
        self.id_indices.append(number)

    def flush(self) -> None:
        """Check the queued images and give the waiting records their outcomes."""
        if self.unchecked:
            sources = [source for _, source in self.unchecked]
            for (code, _), check in zip(self.unchecked, self.checker.check(sources, self.progress)):
                self.outcomes[code] = OUTCOMES.index(check.reason or "ok")
                if check.reason is not None:
                    self.details[code] = check.detail
            self.unchecked, self.unchecked_bytes = [], 0
        for number, finding, images in self.waiting:
            found = [
                Problem(OUTCOMES[self.outcomes[code]], f"{name} {written!r}: {self.details[code]}")
                for name, written, code in images
                if self.outcomes[code]
            ]
            if found:
                finding.after += found
                self.findings[number] = finding
                self.flags[number - self.start] |= INVALID
        self.waiting = []

    def part(self, vote: FormatVote) -> Part:
        """The part, once every record was added."""
        start = self.start
        order = sorted(range(len(self.targets)), key=lambda code: _image_key(self.targets[code]))
        return Part(
            start=start,
            stop=start + len(self.flags),
            vote=vote.state(),
            findings=self.findings,
            labels=list(self.labels),
            arrays={
                "flags": np.frombuffer(self.flags, dtype=np.uint8).copy(),
                "sources": np.frombuffer(self.sources, dtype=np.int32).copy(),
                "id_hashes": np.frombuffer(self.id_hashes, dtype=np.uint64).copy(),
                "id_indices": np.frombuffer(self.id_indices, dtype=np.int64).copy(),
                "image_keys": np.array([_image_key(self.targets[c]) for c in order], dtype="V16"),
                "image_outcomes": np.array([self.outcomes[c] for c in order], dtype=np.uint8),
            },
        )


def _check_turns(sample: Sample, spec: RecordFormat, finding: Finding) -> None:
    roles = {m.role for m in sample.messages}
    if "user" not in roles:
        finding.before.append(Problem(
            "no_user_turn", f"no '{_role_name(spec, 'user')}' turn in '{spec.messages_key}'"
        ))
    if "assistant" not in roles:
        finding.before.append(Problem(
            "no_assistant_turn",
            f"no '{_role_name(spec, 'assistant')}' turn in '{spec.messages_key}'",
        ))
    tags = sum(m.content.count(IMAGE_TAG) for m in sample.messages)
    if tags and tags != len(sample.images):
        finding.before.append(Problem(
            "image_tag_mismatch",
            f"{tags} {IMAGE_TAG} tag(s) in '{spec.messages_key}' but {len(sample.images)} image(s)",
        ))


def _parquet_columns(path: Path, fmt: str, source_field: str | None) -> list[str]:
    """The columns validation reads from a parquet dataset; ``DatasetError`` when it has
    no conversations column (of the forced format, or of any format)."""
    present = parquet_columns(path)
    wanted = [FORMATS[fmt].messages_key] if fmt != "auto" else ["messages", "conversations"]
    if not set(wanted) & set(present):
        raise DatasetError(
            f"{path}: no column {' or '.join(repr(w) for w in wanted)} (columns:"
            f" {', '.join(present)}); every row needs one"
        )
    keys = {"id", "messages", "conversations", "image", "images", source_field}
    return [name for name in present if name in keys]


def merge_parts(
    path: str | os.PathLike,
    index: DatasetIndex,
    parts: Sequence[Part],
    image_root: str | os.PathLike,
    settings: ValidateSettings = ValidateSettings(),
    *,
    fmt: str = "auto",
) -> dict[str, Any]:
    """The validation report of a dataset from the parts of all its shards, in order.

    Decides the format from the parts' votes, finds repeated ids across the whole
    dataset (by 64-bit digests, then the records holding a repeated digest are read
    again and their ids compared exactly), and counts the distinct images over all
    parts. The report is the same whatever the number of shards.

    Memory: the ids' digests of one bucket of them at a time (at most twice 32 MiB,
    :func:`_repeated_digests`), then the keys of the distinct images (17 bytes each),
    one part's arrays at a time, and what the report lists (its defective records and
    text-only indices).

    Raises ``DatasetError`` for parts that do not cover the dataset (in any order) or
    whose records mix formats.
    """
    path = locations.as_location(path)
    parts = sorted(parts, key=lambda part: part.start)
    vote = _joined_vote(path, index, parts)
    name = vote.result() if fmt == "auto" else fmt
    findings = {i: f for part in parts for i, f in part.findings.items()}
    duplicates = _duplicate_ids(path, index, parts)
    repeated = [] if settings.allow_duplicate_ids else _mark_duplicates(duplicates, findings, name)
    tally = _tally(parts, np.sort(np.array(repeated, dtype=np.int64)))
    return _report(path, index, image_root, settings, name, findings, duplicates, tally)


def _joined_vote(path: Path, index: DatasetIndex, parts: Sequence[Part]) -> FormatVote:
    """The format vote of all the parts (sorted); ``DatasetError`` unless they cover the
    dataset in order."""
    covered = 0
    vote = FormatVote(path)
    for part in parts:
        if part.start != covered:
            raise DatasetError(
                f"validation parts of {path} do not cover it in order: a part starts at record"
                f" {part.start}, expected {covered}"
            )
        covered = part.stop
        vote.join(FormatVote.from_state(part.vote, path))
    if covered != index.count:
        raise DatasetError(
            f"validation parts of {path} cover {covered} records, the dataset has {index.count}"
        )
    return vote


def _mark_duplicates(
    duplicates: list[tuple[Any, list[int]]], findings: dict[int, Finding], fmt: str
) -> list[int]:
    """Give every record of a repeated id a ``duplicate_id`` defect (its other defects
    taken in the file's format ``fmt``); their dataset indices."""
    repeated: list[int] = []
    for value, positions in duplicates:
        for position in positions:
            others = [p for p in positions if p != position]
            finding = findings.setdefault(position, Finding(value))
            finding.before = (finding.by_format or {}).get(fmt, finding.before)
            finding.by_format = None
            finding.before.append(Problem(
                "duplicate_id", f"id {value!r} is also used by record(s) {_short_list(others)}"
            ))
            repeated.append(position)
    return repeated


@dataclass
class _Tally:
    """The parts' records and images, merged: the invalid and the valid text-only
    records (dataset indices, ascending), valid samples per source and those of them
    without images (report order), and the outcome of each distinct image (by key)."""

    invalid: list[int]
    text_only: list[int]
    sources: dict[str, int]
    text_only_sources: dict[str, int]
    image_outcomes: np.ndarray


def _tally(parts: Sequence[Part], flagged: np.ndarray) -> _Tally:
    """Merge the parts' flags, sources and images, one part's arrays at a time; the
    records at ``flagged`` (sorted) count as invalid."""
    invalid_parts, text_only_parts = [], []
    sources, text_only_sources = _SourceCounts(), _SourceCounts()
    image_keys, image_outcomes = np.empty(0, "V16"), np.empty(0, np.uint8)
    for part in parts:
        flags = part.array("flags").copy()
        mine = flagged[(flagged >= part.start) & (flagged < part.stop)]
        flags[mine - part.start] |= INVALID
        valid = (flags & INVALID) == 0
        invalid_parts.append(np.flatnonzero(~valid) + part.start)
        text_only_parts.append(np.flatnonzero(valid & ((flags & TEXT_ONLY) != 0)) + part.start)
        sources.add(part, valid)
        text_only_sources.add(part, valid & ((flags & TEXT_ONLY) != 0))
        image_keys, image_outcomes = _union_images(
            image_keys, image_outcomes, part.array("image_keys"), part.array("image_outcomes")
        )
    return _Tally(np.concatenate(invalid_parts).tolist(), np.concatenate(text_only_parts).tolist(),
                  sources.result(), text_only_sources.result(), image_outcomes)


def _report(
    path: Path,
    index: DatasetIndex,
    image_root: str | os.PathLike,
    settings: ValidateSettings,
    fmt: str,
    findings: dict[int, Finding],
    duplicates: list[tuple[Any, list[int]]],
    tally: _Tally,
) -> dict[str, Any]:
    """The validation report (see :func:`merge_parts`), with the file's format ``fmt``."""
    invalid, text_only = tally.invalid, tally.text_only
    problems = {i: findings[i].problems(fmt) for i in invalid}
    counts = Counter(reason for found in problems.values() for reason in {p.reason for p in found})
    image_counts = np.bincount(tally.image_outcomes, minlength=len(OUTCOMES))
    return {
        "version": REPORT_VERSION,
        "dataset": str(path),
        "dataset_sha256": index.sha256,
        "format": fmt,
        "image_root": str(image_root),
        "settings": asdict(settings),
        "num_samples": index.count,
        "num_valid": index.count - len(invalid),
        "num_invalid": len(invalid),
        "num_text_only": len(text_only),
        "counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sources": tally.sources,
        # Those of them without images, which filter drops unless told to keep them.
        "text_only_sources": tally.text_only_sources,
        "num_image_files": len(tally.image_outcomes),
        "image_files": {OUTCOMES[o]: int(image_counts[o])
                        for o in sorted(range(len(OUTCOMES)), key=OUTCOMES.__getitem__)
                        if image_counts[o]},
        "duplicate_ids": [{"id": value, "indices": positions} for value, positions in duplicates],
        "invalid": [
            {
                "index": i,
                "id": findings[i].id,
                "reasons": list(dict.fromkeys(p.reason for p in found)),
                "details": [p.detail for p in found],
            }
            for i, found in problems.items()
        ],
        "text_only": text_only,
    }


def _duplicate_ids(
    path: Path, index: DatasetIndex, parts: Sequence[Part]
) -> list[tuple[Any, list[int]]]:
    """Every id held by several records, with their dataset indices, in the order of
    each id's first record."""
    repeated = _repeated_digests(parts, index.count)
    # Parts are in order and their indices ascending: the numbers come sorted.
    numbers = np.concatenate(
        [part.array("id_indices")[np.isin(part.array("id_hashes"), repeated)] for part in parts]
    )
    # Equal digests are equal ids but for a rare collision: compare the ids themselves.
    groups: dict[tuple[str, Any], list[int]] = {}
    for number, value in _ids_at(path, index, numbers):
        groups.setdefault(_id_key(value), []).append(number)
    found = [(key[1], members) for key, members in groups.items() if len(members) > 1]
    return sorted(found, key=lambda item: item[1][0])


# Id digests searched for repeats at a time (32 MiB): a larger dataset is searched in
# buckets of digests by their top bits, each bucket a pass over the parts.
_DIGESTS_AT_ONCE = 1 << 22


def _repeated_digests(parts: Sequence[Part], count: int) -> np.ndarray:
    """The id digests (sorted) that several of the ``count`` records' ids have.

    Memory: twice a bucket's digests, about ``min(count, _DIGESTS_AT_ONCE)`` each.
    """
    bits = max(0, math.ceil(math.log2(max(count, 1) / _DIGESTS_AT_ONCE)))
    found = []
    for bucket in range(1 << bits):
        chunks = []
        for part in parts:
            digests = part.array("id_hashes")
            chunks.append(digests[digests >> np.uint64(64 - bits) == bucket] if bits else digests)
        digests = np.concatenate(chunks)
        del chunks
        digests.sort()
        found.append(np.unique(digests[1:][digests[1:] == digests[:-1]]))
    return np.concatenate(found)


def _ids_at(path: Path, index: DatasetIndex, numbers: np.ndarray) -> Iterator[tuple[int, Any]]:
    """``(dataset index, id)`` of the records at ``numbers`` (sorted)."""
    if not len(numbers):
        return
    if file_kind(path) == "parquet":
        wanted = set(numbers.tolist())
        for number, record in iter_records(path, int(numbers[0]), int(numbers[-1]) + 1,
                                           columns=["id"]):
            if number in wanted:
                yield number, record.get("id")
        return
    for number in numbers.tolist():
        for _, record in iter_records(path, number, number + 1, index=index):
            yield number, record["id"]


class _SourceCounts:
    """Valid samples per source label over the parts, in order: most frequent first,
    ties by the index of the label's first valid sample."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, int] = {}

    def add(self, part: Part, valid: np.ndarray) -> None:
        """Count a part's valid samples (``valid``: a mask of its records)."""
        positions = np.flatnonzero(valid)
        code = part.array("sources")[positions]  # a valid record has a sample: code >= 0
        if not len(code):
            return
        counts = np.bincount(code, minlength=len(part.labels))
        seen, first = np.unique(code, return_index=True)
        for label_code, at in zip(seen.tolist(), first.tolist(), strict=True):
            label = part.labels[label_code]
            self.counts[label] += int(counts[label_code])
            self.first.setdefault(label, part.start + int(positions[at]))

    def result(self) -> dict[str, int]:
        """``{label: valid samples}``, in report order."""
        order = sorted(self.counts, key=lambda label: (-self.counts[label], self.first[label]))
        return {label: self.counts[label] for label in order}


def _union_images(
    keys: np.ndarray, outcomes: np.ndarray, more_keys: np.ndarray, more_outcomes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct image keys (and outcomes) of ``keys`` and ``more_keys`` (both
    sorted and distinct); a key in both keeps its outcome in ``keys``."""
    at = np.searchsorted(keys, more_keys)
    known = at < len(keys)
    known[known] = keys[at[known]] == more_keys[known]
    new = ~known
    return np.insert(keys, at[new], more_keys[new]), np.insert(outcomes, at[new], more_outcomes[new])


def validate_file(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    settings: ValidateSettings = ValidateSettings(),
    *,
    fmt: str = "auto",
    source_field: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate a whole dataset file in one stream (one part, merged): the report.

    The stream also records the records' byte offsets, so the merge reads records
    again (repeated ids) without a second pass over the file.
    """
    path = locations.as_location(path)
    stats = ReadStats(offsets=array("q"))
    part = validate_part(path, image_root, settings, fmt=fmt, source_field=source_field,
                         workers=workers, progress=progress, stats=stats)
    if part.stop == 0:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    index = DatasetIndex(
        count=part.stop,
        sha256=stats.digest(path),
        size=locations.size(path),
        layout=stats.layout,
        offsets=np.frombuffer(stats.offsets, dtype=np.int64) if stats.count else np.zeros(0, np.int64),
    )
    return merge_parts(path, index, [part], image_root, settings, fmt=fmt)


def _report_id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else None


def _role_name(spec: RecordFormat, role: str) -> str:
    return next(name for name, normal in spec.roles.items() if normal == role)


def _short_list(values: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def format_summary(report: dict[str, Any], examples: int = 20) -> str:
    """A readable summary of a validation report (for the rule's log)."""
    lines = [
        f"dataset {report['dataset']} ({report['format']} format),"
        f" image root {report['image_root']}",
        f"samples: {report['num_samples']}; valid: {report['num_valid']}"
        f" (text-only: {report['num_text_only']}); invalid: {report['num_invalid']}",
        f"image files: {report['num_image_files']} distinct"
        + "".join(f", {k}: {v}" for k, v in report["image_files"].items()),
    ]
    if report["counts"]:
        lines.append("invalid samples by reason (a sample may have several):")
        width = max(map(len, report["counts"]))
        lines += [f"  {reason:<{width}}  {n}" for reason, n in report["counts"].items()]
    if report["duplicate_ids"]:
        kept = " (kept: allow_duplicate_ids)" if report["settings"]["allow_duplicate_ids"] else ""
        lines.append(f"repeated ids: {len(report['duplicate_ids'])}{kept}")
    if report["invalid"]:
        lines.append(f"invalid samples (first {min(examples, len(report['invalid']))}):")
        for entry in report["invalid"][:examples]:
            lines.append(
                f"  record {entry['index']} (id {entry['id']!r}): {'; '.join(entry['details'])}"
            )
    if report["sources"]:
        lines.append(
            "valid samples by source: "
            + ", ".join(f"{k} {v}" for k, v in report["sources"].items())
        )
    return "\n".join(lines)


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read a validation report; ``DatasetError`` when it is unreadable or not a report."""
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot read validation report {path}: {error}") from None
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise DatasetError(f"{path} is not a validation report (no {', '.join(missing)})")
    return report


def drop_indices(
    report: dict[str, Any], keep_text_only: bool = False
) -> tuple[np.ndarray, dict[str, int]]:
    """The dataset indices ``filter`` removes (sorted), and removed samples per reason.

    A removed sample counts once under each of its reasons; text-only samples that are
    not kept count under ``text_only``.
    """
    drop = [entry["index"] for entry in report["invalid"]]
    removed = Counter(reason for entry in report["invalid"] for reason in entry["reasons"])
    if not keep_text_only:
        drop += report["text_only"]
        if report["text_only"]:
            removed["text_only"] = len(report["text_only"])
    indices = np.unique(np.asarray(drop, dtype=np.int64))
    return indices, dict(sorted(removed.items(), key=lambda kv: (-kv[1], kv[0])))


def check_report_matches(
    report: dict[str, Any], path: str | os.PathLike, count: int, sha256: str
) -> None:
    """Raise ``DatasetError`` unless the report was made from this content of ``path``
    (``count`` records, digest ``sha256``)."""
    if report["dataset_sha256"] != sha256 or report["num_samples"] != count:
        raise DatasetError(
            f"the validation report ({report['dataset']}, {report['num_samples']} samples) does"
            f" not match {path} ({count} samples, different content): validate"
            " this dataset again"
        )
