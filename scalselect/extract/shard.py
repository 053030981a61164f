"""Running stage 1 over one shard of a dataset: reading, reuse, batching, checkpoints, ranks.

The model math (rendering, the first decoder layer, the kept vision tokens) lives in
:mod:`scalselect.extract.representation`; where results are kept lives in
:mod:`scalselect.extract.store`; this module feeds the one and fills the other.

How a shard is processed
------------------------
1. Shard ``i`` of ``n`` is a contiguous range of dataset indices
   (:func:`scalselect.data.index.shard_range`).
   Only its records are read (:func:`read_shard_records`): ``filter`` writes the
   filtered dataset's index (where each record starts), so a job seeks to its records
   and reads nothing else; its time and memory grow with the shard, not with the
   dataset. Without an index, a file with one record per line is scanned for line
   starts (parsing nothing else).
2. Every sample gets its store key (:func:`scalselect.extract.store.sample_key`: normalised
   messages and image bytes; not id, position, shard or chunk size). Rank 0 looks the
   keys up in the feature store of the run's model and settings; identical samples
   are one key, so they are computed once.
3. The missing samples are ordered by an estimate of their sequence length
   (:func:`length_estimate`) and cut into *chunks* of ``chunk_size``, each cut into
   batches of ``batch_size`` (:func:`plan_chunks`), so a batch holds samples of similar
   length and needs little left padding.
4. DataLoader workers decode the images with Pillow and encode the samples (chat
   template, processor) while the model runs; batches arrive in plan order.
5. Each finished chunk is stored as a new immutable *pack* (matrix and row table,
   failures with their reason included). A killed job loses at most the chunk it was
   working on; a rerun finds the stored packs and computes the rest.
6. The shard directory is assembled from the stored rows in dataset order
   (:func:`assemble_shard`) in the :mod:`scalselect.extract.features` format; its
   ``manifest.json`` (written last) says how many samples were computed in this job and
   how many were reused (and how many were computed again because their stored copy was
   damaged), and names the packs it used (``cache prune`` keeps those). A job that
   finds many packs no index covers then indexes the store (:mod:`scalselect.extract.store_index`).

A reused row holds the bits stored when it was computed: a reassembled shard equals
the shard it was taken from bit for bit; against a cold run with a different batch
layout it differs by the float rounding of padded batches only (≤ 1e-5). Batch size,
workers and the number of processes are not part of any key.

Under ``accelerate launch`` with several processes, the chunks to compute are dealt
round-robin to the ranks; rank 0 keys the samples, waits for the others and assembles
the shard. The output does not depend on the number of ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from PIL import Image
from torch.utils.data import DataLoader

from scalselect.data.index import DatasetIndex, shard_range
from scalselect.data.readers import build_index, file_kind, iter_records
from scalselect.data.records import (
    DatasetError,
    Sample,
    ShardInput,
    detect_format,
    resolve_image,
)
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.extract.packs import PACK_COLUMNS
from scalselect.extract.representation import (
    SampleFailure,
    collate,
    load_model,
    resolve_dtype,
)
from scalselect.extract.store import (
    COMPACT_AFTER,
    FeatureStore,
    Location,
    model_digest,
    resolve_model_dir,
    settings_key,
    shard_keys,
    spooled,
)
from scalselect.io import atomic_write, file_digest, kill_point, write_json
from scalselect.locations import LocationError, image_source, is_url, redact
from scalselect.progress import Progress
from scalselect.settings import ExtractSettings, declared

log = logging.getLogger(__name__)

# A job's speed settings default to their declarations (the workflow's `extract` section).
_SPEED = declared(ExtractSettings)
# How long ranks wait for each other (the slowest rank's share of a shard, at most).
RANK_TIMEOUT = timedelta(hours=48)
# A job's private store in its output folder, used when no cache directory can be written.
SCRATCH_DIR = ".store"
# Images fetched from URLs by the key pass, for the model pass (removed when done).
SPOOL_DIR = ".images"

OK = "ok"
# Failure reasons recorded by this module (the model side adds its own).
MALFORMED_RECORD = "malformed_record"
IMAGE_UNREADABLE = "image_unreadable"
ENCODE_ERROR = "encode_error"
OUT_OF_MEMORY = "out_of_memory"

# Characters per text token in the length estimate (only the order of samples uses it).
_CHARS_PER_TOKEN = 4
ROW_TYPES = {"index": "int64", "id": "str", "status": "str", "n_vision": "int64",
             "n_kept": "int64", "seq_len": "int64", "truncated": "bool", "detail": "str"}


def length_estimate(sample: Sample | None, image_tokens: int) -> int:
    """A cheap estimate of a sample's rendered length in tokens, for ordering only.

    Parameters
    ----------
    sample : Sample or None
        The normalised sample; ``None`` (a malformed record) counts as length 0.
    image_tokens : int
        Vision tokens assumed per image.

    Examples
    --------
    >>> from scalselect.data.records import Message
    >>> s = Sample(0, 0, (Message("user", "x" * 40),), ("a.jpg",), "(root)")
    >>> length_estimate(s, 576)
    586
    """
    if sample is None:
        return 0
    chars = sum(len(message.content) for message in sample.messages)
    return chars // _CHARS_PER_TOKEN + image_tokens * len(sample.images)


def plan_chunks(estimates: Sequence[int], chunk_size: int) -> list[np.ndarray]:
    """Positions grouped into chunks of similar estimated length.

    Positions are sorted by estimate (ties by position) and cut into consecutive pieces
    of ``chunk_size``; each chunk lists its positions in that processing order.

    Examples
    --------
    >>> [c.tolist() for c in plan_chunks([5, 1, 3, 1], 3)]
    [[1, 3, 2], [0]]
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    order = np.argsort(np.asarray(estimates, dtype=np.int64), kind="stable")
    return [order[i : i + chunk_size] for i in range(0, len(order), chunk_size)]


def split_batches(chunk: np.ndarray, batch_size: int) -> list[list[int]]:
    """A chunk's positions (in processing order) as batches of at most ``batch_size``.

    Examples
    --------
    >>> split_batches(np.array([4, 2, 7]), 2)
    [[4, 2], [7]]
    """
    return [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]


def _record_offsets(path: Path) -> array | None:
    """Byte offsets of the record lines of a one-record-per-line file.

    ``filter`` writes a JSON array with one record per line (and JSON Lines for JSON
    Lines input); both are read here without parsing a single record. Returns ``None``
    when the file is laid out otherwise (records spanning lines, several on a line).
    """
    offsets = array("q")
    layout = None
    position = 0
    closed = False
    with open(path, "rb") as handle:
        for line in handle:
            text = line.strip()
            if position == 0:
                text = text.removeprefix(b"\xef\xbb\xbf")
            if not text:
                position += len(line)
                continue
            if layout is None:
                layout = "array" if text == b"[" else "lines"
                if layout == "array":
                    position += len(line)
                    continue
            if closed:
                return None
            if layout == "array" and text == b"]":
                closed = True
            elif text[:1] == b"{" and text.rstrip(b",")[-1:] == b"}":
                offsets.append(position)
            else:
                return None
            position += len(line)
    if layout is None or (layout == "array") != closed:
        return None
    return offsets


def read_shard_records(
    path: str | os.PathLike, shard: int, num_shards: int, index: DatasetIndex | None = None
) -> tuple[range, list[Any]]:
    """The dataset indices of a shard and its records, reading only the shard's records
    (or, parquet, its row groups).

    With the file's ``index`` (``filter --index``) the job seeks to its first record:
    time and memory in proportion to the shard. Without it, a file written by ``filter``
    (one record per line, or parquet) is scanned for line starts (8 bytes a record),
    any other layout is streamed twice (once to index it), never held whole. Raises
    ``DatasetError`` for an unreadable file, invalid JSON, an empty dataset, or an index
    of another file.
    """
    path = Path(path)
    if index is not None:
        index.check(path)
        indices = shard_range(index.count, shard, num_shards)
        return indices, [r for _, r in iter_records(path, indices.start, indices.stop, index=index)]
    offsets = None
    if file_kind(path) != "parquet":
        try:
            offsets = _record_offsets(path)
        except OSError as error:
            raise DatasetError(f"cannot read dataset {path}: {error.strerror or error}") from None
        if offsets is None:
            log.info("%s is not one record per line: indexing it first", path)
    if offsets is None:
        index = build_index(path)
        indices = shard_range(index.count, shard, num_shards)
        return indices, [r for _, r in iter_records(path, indices.start, indices.stop, index=index)]
    if not offsets:
        raise DatasetError(f"{path}: the dataset is empty (no records)")
    indices = shard_range(len(offsets), shard, num_shards)
    records = []
    with open(path, "rb") as handle:
        handle.seek(offsets[indices.start])
        for index in indices:
            line = handle.readline().strip().removeprefix(b"\xef\xbb\xbf")
            while not line:  # blank lines between records (JSON Lines)
                line = handle.readline().strip()
            try:
                records.append(json.loads(line.removesuffix(b",")))
            except ValueError as error:
                raise DatasetError(f"{path}: record {index} is not valid JSON ({error})") from None
    return indices, records


# ---------------------------------------------------------------------------------------
# Assembling a shard from the store


def assemble_shard(
    store: FeatureStore,
    locations: Sequence[Location],
    shard: ShardInput,
    out_dir: str | os.PathLike,
    manifest: dict[str, Any],
) -> pd.DataFrame:
    """Write the shard directory from stored rows: ``locations[p]`` holds position ``p``.

    The matrix is filled pack by pack into a memory-mapped temporary file (never held
    in memory) and renamed into place; the manifest, naming the packs used, is written
    last. Returns the row table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A previous manifest would mark the directory complete while it is being rewritten.
    with contextlib.suppress(FileNotFoundError):
        (out_dir / features.MANIFEST).unlink()
    by_pack: dict[str, list[int]] = {}
    for position, location in enumerate(locations):
        by_pack.setdefault(location.pack, []).append(position)
    columns: dict[str, list[Any]] = {c: [None] * len(locations) for c in PACK_COLUMNS}
    dim = 0
    tmp = out_dir / f".{features.FEATURES}.{os.getpid()}.tmp"
    try:
        matrix = None
        for pack, positions in sorted(by_pack.items()):
            table, stored = store.read_pack(pack)
            if matrix is None:
                dim = int(stored.shape[1])
                matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                   shape=(len(locations), dim))
            rows = np.array([locations[p].row for p in positions])
            matrix[positions] = stored[rows]
            for column in PACK_COLUMNS:
                for position, value in zip(positions, table[column].to_numpy()[rows], strict=True):
                    columns[column][position] = value
        matrix.flush()
        del matrix
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out_dir / features.FEATURES)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    columns["index"] = list(range(shard.start, shard.start + len(locations)))
    columns["id"] = [features.encode_id(i) for i in shard.ids]
    rows = pd.DataFrame({c: columns[c] for c in features.ROW_COLUMNS}).astype(ROW_TYPES)
    with atomic_write(out_dir / features.ROWS, "wb") as handle:
        rows.to_parquet(handle, index=False)
    store.discard_scratch()
    write_json(out_dir / features.MANIFEST,
               {"rows": len(rows), "dim": dim, **manifest,
                "store": {"settings_key": store.key, "packs": sorted(by_pack)}})
    return rows


# ---------------------------------------------------------------------------------------
# Loading and encoding in DataLoader workers


@dataclasses.dataclass
class Item:
    """One sample after loading: its encoding, or the reason it failed."""

    position: int
    encoded: Any = None
    status: str = OK
    detail: str = ""


@dataclasses.dataclass
class LoadedBatch:
    """A batch as the DataLoader delivers it: the encoded samples collated, and failures."""

    items: list[Item]
    batch: Any

    def pin_memory(self) -> LoadedBatch:
        """Pinned copy of the tensors (DataLoader calls this with ``pin_memory=True``)."""
        return LoadedBatch(self.items, None if self.batch is None else self.batch.pin_memory())

    @property
    def encoded(self) -> list[Item]:
        """The items that reached the model, in batch order."""
        return [item for item in self.items if item.status == OK]


class ShardSamples:
    """Map-style dataset over a shard's positions: decode the images, encode the sample.

    Per-sample problems become failed :class:`Item` s (never exceptions), so one bad
    file cannot stop a batch.
    """

    def __init__(self, shard: ShardInput, image_root: str, encoder: Any,
                 spool: Path | None = None) -> None:
        self.shard = shard
        self.image_root = image_root
        self.encoder = encoder
        self.spool = spool

    def __len__(self) -> int:
        return len(self.shard.samples)

    def __getitem__(self, position: int) -> Item:
        sample = self.shard.samples[position]
        if sample is None:
            return Item(position, status=MALFORMED_RECORD, detail=self.shard.problems[position])
        images = []
        for number, path in enumerate(sample.images):
            data = sample.image_bytes(number)
            file = resolve_image(self.image_root, path) if data is None else path
            try:
                with Image.open(self._source(file, data)) as image:
                    images.append(image.convert("RGB"))
            except LocationError as error:  # names the URL and what went wrong
                return Item(position, status=IMAGE_UNREADABLE, detail=str(error))
            except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad files
                return Item(position, status=IMAGE_UNREADABLE,
                            detail=f"{redact(file)}: {error}")
        try:
            return Item(position, encoded=self.encoder.encode(sample, images))
        except SampleFailure as failure:
            return Item(position, status=failure.reason, detail=failure.detail)
        except Exception as error:  # noqa: BLE001 - recorded per sample, with its type
            return Item(position, status=ENCODE_ERROR, detail=f"{type(error).__name__}: {error}")


    def _source(self, file: str | Path, data: bytes | None) -> Any:
        """What Pillow opens: embedded bytes, a local file, or an object at a URL as
        the key pass kept it in the spool (fetched now when it is not there)."""
        if data is not None:
            return io.BytesIO(data)
        if not is_url(file):
            return file
        if self.spool is not None and spooled(self.spool, str(file)).exists():
            return spooled(self.spool, str(file))
        return image_source(file)


def collate_items(items: list[Item]) -> LoadedBatch:
    """DataLoader ``collate_fn``: collate the encoded items (left padding), keep failures."""
    encoded = [item.encoded for item in items if item.status == OK]
    return LoadedBatch(items, collate(encoded) if encoded else None)


# ---------------------------------------------------------------------------------------
# The model loop


class ChunkBuffer:
    """Results of one chunk, in chunk order, until the chunk is stored as a pack."""

    def __init__(self, positions: np.ndarray, dim: int) -> None:
        self.slot = {int(p): i for i, p in enumerate(np.sort(positions))}
        self.matrix = np.zeros((len(positions), dim), dtype=np.float32)
        self.columns: dict[str, list[Any]] = {c: [None] * len(positions) for c in PACK_COLUMNS}
        self.filled = 0

    def put(self, key: str, position: int, **values: Any) -> None:
        """Record the row of the sample at ``position`` (store key ``key``) and its
        vector, if any."""
        slot = self.slot[position]
        vector = values.pop("vector", None)
        if vector is not None:
            self.matrix[slot] = vector
        row = {"key": key, "n_vision": 0, "n_kept": 0, "seq_len": 0, "truncated": False,
               "detail": "", **values}
        for column in PACK_COLUMNS:
            self.columns[column][slot] = row[column]
        self.filled += 1

    @property
    def complete(self) -> bool:
        """Whether every sample of the chunk has its row."""
        return self.filled == len(self.slot)

    def table(self) -> pd.DataFrame:
        """The chunk's pack table."""
        return pd.DataFrame(self.columns, columns=list(PACK_COLUMNS))


def represent(model: Any, loaded: LoadedBatch) -> list[tuple[Item, Any]]:
    """Run the model on a loaded batch: ``(item, SampleResult or None)`` per encoded item.

    A batch that does not fit in GPU memory is split in halves; a single sample that
    does not fit gets ``None`` (recorded as ``out_of_memory``).
    """
    items = loaded.encoded
    if not items:
        return []
    try:
        return list(zip(items, model.represent(loaded.batch), strict=True))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        if len(items) == 1:
            return [(items[0], None)]
    half = len(items) // 2
    out = []
    for part in (items[:half], items[half:]):
        out += represent(model, LoadedBatch(part, collate([item.encoded for item in part])))
    return out


def run_chunks(
    model: Any,
    loader: Iterator[LoadedBatch],
    chunk_of_batch: Sequence[int],
    chunks: dict[int, np.ndarray],
    dim: int,
    keys: Sequence[str],
    store: FeatureStore,
    progress: Progress,
    images: Sequence[int],
) -> None:
    """Consume the loader's batches, storing each chunk as a pack as soon as it is full.

    ``chunks`` maps each chunk number to its positions, ``keys[p]`` is the store key of
    position ``p`` and ``images[p]`` its number of images; only the chunks in progress
    are held in memory. ``progress`` counts the samples and images of each batch and
    logs a line at each stored chunk.
    """
    buffers: dict[int, ChunkBuffer] = {}
    for chunk, loaded in zip(chunk_of_batch, loader, strict=True):
        if chunk not in buffers:
            buffers[chunk] = ChunkBuffer(chunks[chunk], dim)
        buffer = buffers[chunk]
        for item in loaded.items:
            if item.status != OK:
                buffer.put(keys[item.position], item.position, status=item.status,
                           detail=item.detail)
        for item, result in represent(model, loaded):
            if result is None:
                buffer.put(keys[item.position], item.position, status=OUT_OF_MEMORY,
                           detail="the sample alone does not fit in GPU memory")
                continue
            ok = result.status == OK
            buffer.put(keys[item.position], item.position,
                       vector=result.vector if ok else None,
                       status=result.status, detail=result.detail, n_vision=result.n_vision,
                       n_kept=result.n_kept, seq_len=result.seq_len,
                       truncated=bool(result.truncated))
        progress.update(len(loaded.items), images=sum(images[i.position] for i in loaded.items))
        if buffer.complete:
            name = store.write_pack(buffer.table(), buffer.matrix)
            del buffers[chunk]
            log.info("chunk %d stored (%d samples, pack %s)", chunk, len(buffer.slot), name)
            note_peak_memory(progress)
            progress.report()
            kill_point("SCALSELECT_TEST_KILL_AFTER_PACKS")


def note_peak_memory(progress: Progress) -> None:
    """On CUDA, the peak GPU memory allocated so far as the line's ``gpu-peak`` field."""
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
        progress.note("gpu-peak", f"{peak:.2f} GiB")


@dataclasses.dataclass(frozen=True)
class Job:
    """One extraction job: what to read, what to compute, where to write.

    ``settings`` are as requested (``dtype`` may be ``"auto"``); the job resolves them
    for its device. The other fields change speed, never results.
    """

    dataset: str
    image_root: str
    model: str
    out: str
    settings: ExtractSettings
    shard: int = 0
    num_shards: int = 1
    batch_size: int = _SPEED["batch_size"].default
    num_workers: int = _SPEED["num_workers"].default
    chunk_size: int = _SPEED["chunk_size"].default
    cache_dirs: tuple[str, ...] = _SPEED["cache_dirs"].default
    record_format: str = "auto"
    index: str | None = None

    def store(self, key: str) -> FeatureStore:
        """The job's view of the feature store of settings key ``key``: its cache
        directories, and a private folder in its output for when none can be written."""
        return FeatureStore(self.cache_dirs, key, scratch=Path(self.out) / SCRATCH_DIR)

    @property
    def spool(self) -> Path:
        """Where the shard's images fetched from URLs wait for the model pass."""
        return Path(self.out) / SPOOL_DIR


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Rank 0's plan of a shard: every position's store key, what the store holds, and
    the chunks of positions to compute (in plan order)."""

    store_key: str
    keys: list[str]
    found: dict[str, Location]
    scanned: list[str]  # the packs the look-up read
    pending: list[np.ndarray]
    damaged: int  # samples to compute because their only stored copies are damaged
    # What the store key digests: the model files' digest, the settings, the versions.
    description: dict[str, Any]


def extract_shard(job: Job) -> dict[str, int] | None:
    """Extract one shard (see the module docstring); every rank of a launch calls this.

    Returns the counts per status (and ``samples_computed`` / ``samples_reused``) on
    rank 0, ``None`` on the other ranks.
    """
    began = time.perf_counter()
    # A rank may wait long for slower ranks before rank 0 assembles the shard.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=RANK_TIMEOUT)
    settings = job.settings.resolved(
        str(resolve_dtype(job.settings.dtype, state.device)).removeprefix("torch."))
    shard, records, record_format = load_shard(job)
    model_dir = resolve_model_dir(job.model)
    plan = plan_shard(job, settings, shard, records, model_dir) if state.is_main_process else None
    # The other ranks need only the store, the keys and the chunks.
    shared = [plan.store_key, plan.keys, plan.pending] if plan else [None, None, None]
    if state.num_processes > 1:
        broadcast_object_list(shared, from_process=0)
    store_key, keys, pending = shared
    store = job.store(store_key)
    mine = list(enumerate(pending))[state.process_index :: state.num_processes]
    if mine:
        reused = 1 - sum(len(positions) for positions in pending) / len(keys)
        compute_chunks(job, settings, state, model_dir, shard, mine, keys, store, reused)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return finish_shard(job, settings, shard, record_format, plan, store, began)


def load_shard(job: Job) -> tuple[ShardInput, list[Any], str]:
    """The shard's normalised samples, its records as read and their record format.

    Raises ``UserError`` when the shard is empty (more shards than samples).
    """
    index = None if job.index is None else DatasetIndex.load(job.index)
    indices, records = read_shard_records(job.dataset, job.shard, job.num_shards, index)
    if not indices:
        count = (index if index is not None else build_index(job.dataset)).count
        raise UserError(
            f"shard {job.shard} of {job.num_shards} is empty: {job.dataset} holds only"
            f" {count} samples; use at most {count} shards (extract.shards, --num-shards)"
        )
    record_format = (detect_format(records, job.dataset) if job.record_format == "auto"
                     else job.record_format)
    return ShardInput.read(records, indices.start, record_format), records, record_format


def plan_shard(job: Job, settings: ExtractSettings, shard: ShardInput, records: Sequence[Any],
               model_dir: Path) -> ShardPlan:
    """Key every sample, look the keys up in the store, and chunk what is missing.

    Identical samples are one key, computed once: at the first position holding it.
    """
    hashed = time.perf_counter()
    model_key = model_digest(model_dir, Path(job.cache_dirs[0]) / "digests")
    store_key, description = settings_key(model_key, settings)
    store = job.store(store_key)
    store.describe({**description, "model_path": job.model})
    keys = shard_keys(shard, records, job.image_root, spool=job.spool)
    lookup = store.lookup(keys)
    found = lookup.found
    missing: dict[str, int] = {}
    for position, key in enumerate(keys):
        if key not in found:
            missing.setdefault(key, position)
    positions = np.asarray(list(missing.values()), dtype=np.int64)
    chunks = plan_chunks([length_estimate(shard.samples[p], settings.max_image_tokens)
                          for p in positions], job.chunk_size)
    pending = [positions[c] for c in chunks]
    log.info("shard %d of %d: samples %d-%d; %d stored, %d to compute in %d chunks;"
             " look-up in %d packs (%.1f s)", job.shard, job.num_shards, shard.start,
             shard.start + len(keys) - 1, len(keys) - len(positions), len(positions),
             len(pending), len(lookup.scanned), time.perf_counter() - hashed)
    if lookup.lost:
        log.warning("%d samples of this shard were stored only in damaged packs: computed again",
                    len(lookup.lost))
    return ShardPlan(store_key, keys, found, lookup.scanned, pending, len(lookup.lost),
                     description)


def dataset_digest(job: Job) -> str:
    """The SHA-256 of the dataset the shard's indices refer to: from the file's index
    (``filter`` hashed the bytes it wrote; the size is checked), else hashed now as a
    stream. With the index, no job reads more of the dataset than its shard."""
    if job.index is None:
        return file_digest(job.dataset)
    index = DatasetIndex.load(job.index)
    index.check(job.dataset)
    return index.sha256


def finish_shard(job: Job, settings: ExtractSettings, shard: ShardInput, record_format: str,
                 plan: ShardPlan, store: FeatureStore, began: float) -> dict[str, int]:
    """Find the computed samples, assemble the shard directory and count its statuses."""
    computed = sum(len(p) for p in plan.pending)
    found = dict(plan.found)
    if computed:
        found.update(store.lookup(set(plan.keys) - set(found), skip=plan.scanned).found)
    lost = len(set(plan.keys) - set(found))
    if lost:
        raise RuntimeError(f"{lost} computed samples are missing from the store"
                           f" {', '.join(map(str, store.roots))} (was it pruned while this job ran?)")
    reused = len(plan.keys) - computed
    manifest = {
        "shard": job.shard, "num_shards": job.num_shards,
        "start": shard.start, "stop": shard.start + len(plan.keys),
        "model": job.model, "settings": dataclasses.asdict(settings),
        "dataset_format": record_format,
        "samples_computed": computed, "samples_reused": reused,
        "samples_recomputed_damaged": plan.damaged,
        "dataset_sha256": dataset_digest(job),
        # For selection cards: the model's files and the libraries that computed it.
        "model_sha256": plan.description["model"],
        "versions": {name: plan.description[name] for name in ("torch", "transformers")},
    }
    shutil.rmtree(job.spool, ignore_errors=True)
    rows = assemble_shard(store, [found[k] for k in plan.keys], shard, job.out, manifest)
    try:
        store.compact(min_new=COMPACT_AFTER)
    except OSError as error:  # the index only saves later look-ups time
        log.warning("could not index the feature store: %s", error)
    counts = Counter(rows["status"])
    counts["truncated"] = int(rows["truncated"].sum())
    log.info("shard %d of %d done in %.1f s: %d samples computed, %d reused from the store;"
             " %s", job.shard, job.num_shards, time.perf_counter() - began, computed, reused,
             ", ".join(f"{status} {n}" for status, n in sorted(counts.items())))
    return {**counts, "samples_computed": computed, "samples_reused": reused}


def compute_chunks(
    job: Job,
    settings: ExtractSettings,
    state: Any,
    model_dir: Path,
    shard: ShardInput,
    mine: list[tuple[int, np.ndarray]],
    keys: Sequence[str],
    store: FeatureStore,
    reused: float,
) -> None:
    """Run the model over this rank's chunks ``mine`` (number, positions) into ``store``,
    reporting progress once the model is loaded (``reused``: the shard's share found
    in the store)."""
    encoder, model = load_model(str(model_dir), settings, device=state.device)
    dim = int(model.model.config.get_text_config().hidden_size)
    batches, chunk_of_batch = [], []
    for chunk, positions in mine:
        for batch in split_batches(positions, job.batch_size):
            batches.append(batch)
            chunk_of_batch.append(chunk)
    loader = DataLoader(
        ShardSamples(shard, job.image_root, encoder, job.spool), batch_sampler=batches,
        collate_fn=collate_items, num_workers=job.num_workers,
        pin_memory=state.device.type == "cuda",
    )
    log.info("rank %d: %d chunks, %d batches on %s (%s)", state.process_index, len(mine),
             len(batches), state.device, settings.dtype)
    images = [0 if sample is None else len(sample.images) for sample in shard.samples]
    with torch.inference_mode(), Progress(sum(len(p) for _, p in mine)) as progress:
        progress.note("reused", f"{100 * reused:.0f}%")
        run_chunks(model, iter(loader), chunk_of_batch, dict(mine), dim, keys, store,
                   progress, images)
