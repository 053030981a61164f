"""Running stage 1 over one shard of a dataset: batching, checkpointing, caching, ranks.

The model math (rendering, the first decoder layer, the kept vision tokens) lives in
:mod:`scalselect.representation`; this module feeds it and stores what it returns.

How a shard is processed
------------------------
1. Shard ``i`` of ``n`` is a contiguous range of dataset indices (:func:`shard_range`).
2. Its samples are ordered by an estimate of their sequence length
   (:func:`length_estimate`) and cut, in that order, into *chunks* of ``chunk_size``
   samples; each chunk is cut into batches of ``batch_size`` (:func:`plan_chunks`), so
   a batch holds samples of similar length and needs little left padding. Chunk
   membership does not depend on the batch size.
3. DataLoader workers decode the images with Pillow and encode the samples (chat
   template, processor) while the model runs; batches arrive in plan order.
4. Each finished chunk is written to the *cache entry* of the shard — a directory named
   by the shard's content key (:func:`content_key`) under the cache directory — as
   ``chunk-NNNNNN.npy`` (float32 rows) and then ``chunk-NNNNNN.parquet`` (the row
   table; its presence marks the chunk as done). A killed job loses at most the chunk
   it was working on; a rerun skips the done chunks.
5. When every chunk is done, the shard directory is assembled from the chunks in
   dataset order (:func:`assemble_shard`) in the :mod:`scalselect.features` format,
   ``manifest.json`` last.

The cache entry outlives the shard directory (Snakemake deletes a job's output before
rerunning it), so a rerun whose inputs are unchanged in content — the shard's records,
its images' bytes, the model's files, the settings that change results — only
reassembles the shard. Batch size, workers and the number of processes are not part
of the key: they do not change results beyond float rounding of padded batches.

Under ``accelerate launch`` with several processes, the pending chunks are dealt
round-robin to the ranks; rank 0 computes the content key, waits for the others and
assembles the shard. The output does not depend on the number of ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scalselect import features
from scalselect.dataset import Dataset, Sample, resolve_image
from scalselect.io import atomic_write, write_json

log = logging.getLogger(__name__)

# Bump when a change of this package changes the numbers a cache entry holds.
CACHE_VERSION = 1
DEFAULT_CACHE_DIR = "results/.cache/extract"
DEFAULT_CHUNK_SIZE = 512
# How long ranks wait for each other (the slowest rank's share of a shard, at most).
RANK_TIMEOUT = timedelta(hours=48)

OK = "ok"
# Failure reasons recorded by this module (the model side adds its own).
MALFORMED_RECORD = "malformed_record"
IMAGE_UNREADABLE = "image_unreadable"
ENCODE_ERROR = "encode_error"
OUT_OF_MEMORY = "out_of_memory"

# Characters per text token in the length estimate (only the order of samples uses it).
_CHARS_PER_TOKEN = 4
_HASH_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings that determine a shard's numbers (and hence its cache key).

    ``dtype`` is resolved (never ``"auto"``): the same configuration gives bfloat16 on a
    GPU and float32 on a CPU, which are different results.
    """

    model_type: str
    attention_threshold: float
    dtype: str
    max_length: int
    min_image_tokens: int
    max_image_tokens: int
    trust_remote_code: bool


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
    >>> from scalselect.dataset import Message
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


# ---------------------------------------------------------------------------------------
# Content key


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _image_digest(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as error:
        # An unreadable image is a recorded failure; its key part says so.
        return f"unreadable:{type(error).__name__}:{error.errno}"


def image_digests(paths: Sequence[Path], threads: int = 8) -> list[str]:
    """Digests of image files, in order, hashed on ``threads`` threads (hashlib releases
    the GIL); a file that cannot be read gets a marker naming the error instead."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(_image_digest, paths))


def resolve_model_dir(model: str) -> Path:
    """The local directory of a model: ``model`` itself, or its Hugging Face cache snapshot.

    Raises ``UserError`` when the model is neither a directory nor in the local cache.
    """
    from scalselect.cli import UserError

    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any lookup failure means "not available"
        raise UserError(
            f"model {model!r} is not a local directory nor in the local Hugging Face cache"
            f" ({type(error).__name__}); download it first"
        ) from None


def model_digest(model_dir: Path, memo_dir: Path) -> str:
    """Digest of every file of a model directory (names and bytes; dot-files skipped).

    Each file's digest is memoised in ``memo_dir`` under its real path, size and
    modification time, so multi-gigabyte weights are read once, not on every job.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        stat = path.stat()
        stamp = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
        memo = memo_dir / hashlib.sha256(stamp.encode()).hexdigest()
        try:
            value = memo.read_text().strip()
        except FileNotFoundError:
            value = file_digest(path)
            with atomic_write(memo) as handle:
                handle.write(value + "\n")
        digest.update(f"{relative.as_posix()}\0{value}\n".encode())
    return digest.hexdigest()


def content_key(
    records: Sequence[Any],
    record_format: str,
    start: int,
    image_keys: Sequence[str],
    model_key: str,
    settings: Settings,
    chunk_size: int,
) -> str:
    """The cache key of a shard: a digest of everything that determines its output.

    Parameters
    ----------
    records : sequence
        The shard's records, exactly as in the dataset.
    record_format : str
        The dataset's record format (it decides how records are read).
    start : int
        Dataset index of the shard's first record (the row table stores indices).
    image_keys : sequence of str
        Digests of the shard's image files, in sample order (:func:`image_digests`).
    model_key : str
        :func:`model_digest` of the model directory.
    settings : Settings
    chunk_size : int
        Chunk size of the cache entry's layout.
    """
    digest = hashlib.sha256()
    header = {
        "cache_version": CACHE_VERSION,
        "format": record_format,
        "start": start,
        "count": len(records),
        "model": model_key,
        "settings": dataclasses.asdict(settings),
        "chunk_size": chunk_size,
        # Other library versions may round differently.
        "torch": version("torch"),
        "transformers": version("transformers"),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for record in records:
        digest.update(b"\n")
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
    for key in image_keys:
        digest.update(f"\n{key}".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Cache entries (chunk files)


class CacheEntry:
    """The chunk files of one content key: ``<cache_dir>/<key>/chunk-NNNNNN.{npy,parquet}``."""

    def __init__(self, cache_dir: str | os.PathLike, key: str) -> None:
        self.path = Path(cache_dir) / key

    def _stem(self, chunk: int) -> Path:
        return self.path / f"chunk-{chunk:06d}"

    def is_done(self, chunk: int) -> bool:
        """Whether chunk ``chunk`` was written completely (its table is written last)."""
        return self._stem(chunk).with_suffix(".parquet").exists()

    def write(self, chunk: int, rows: pd.DataFrame, matrix: np.ndarray) -> None:
        """Store one chunk: the matrix, then the row table."""
        with atomic_write(self._stem(chunk).with_suffix(".npy"), "wb") as handle:
            np.save(handle, np.ascontiguousarray(matrix, dtype=np.float32))
        with atomic_write(self._stem(chunk).with_suffix(".parquet"), "wb") as handle:
            rows.to_parquet(handle, index=False)

    def read(self, chunk: int) -> tuple[pd.DataFrame, np.ndarray]:
        """The row table and the memory-mapped matrix of a done chunk."""
        stem = self._stem(chunk)
        return pd.read_parquet(stem.with_suffix(".parquet")), np.load(
            stem.with_suffix(".npy"), mmap_mode="r"
        )


def assemble_shard(
    entry: CacheEntry, num_chunks: int, out_dir: str | os.PathLike, manifest: dict[str, Any]
) -> pd.DataFrame:
    """Write the shard directory from the chunks of ``entry``, rows in dataset order.

    The matrix is filled chunk by chunk into a memory-mapped temporary file (never held
    in memory) and renamed into place; the manifest is written last. Returns the rows.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A previous manifest would mark the directory complete while it is being rewritten.
    with contextlib.suppress(FileNotFoundError):
        (out_dir / features.MANIFEST).unlink()
    tables = [entry.read(c)[0] for c in range(num_chunks)]
    rows = pd.concat(tables, ignore_index=True)
    start = int(rows["index"].min())
    dim = int(entry.read(0)[1].shape[1])
    tmp = out_dir / f".{features.FEATURES}.{os.getpid()}.tmp"
    try:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(rows), dim))
        for chunk, table in enumerate(tables):
            matrix[table["index"].to_numpy() - start] = entry.read(chunk)[1]
        matrix.flush()
        del matrix
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out_dir / features.FEATURES)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    rows = rows.sort_values("index", kind="stable", ignore_index=True)
    with atomic_write(out_dir / features.ROWS, "wb") as handle:
        rows.to_parquet(handle, index=False)
    write_json(out_dir / features.MANIFEST, {"rows": len(rows), "dim": dim, **manifest})
    return rows


# ---------------------------------------------------------------------------------------
# Loading and encoding in DataLoader workers


@dataclasses.dataclass(frozen=True)
class ShardInput:
    """The samples of one shard, by position in the shard (dataset index = start + position).

    ``samples[p]`` is ``None`` for a record that cannot be normalised, ``problems[p]``
    then says why; ``ids[p]`` is the record's id as given.
    """

    start: int
    samples: list[Sample | None]
    problems: list[str]
    ids: list[Any]

    @classmethod
    def read(cls, dataset: Dataset, indices: range) -> ShardInput:
        """The records ``indices`` of ``dataset``, normalised."""
        samples, problems, ids = [], [], []
        for index in indices:
            sample, found = dataset.inspect(index)
            samples.append(sample)
            problems.append("; ".join(p.detail for p in found))
            record = dataset.records[index]
            ids.append(record.get("id") if isinstance(record, dict) else None)
        return cls(indices.start, samples, problems, ids)


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

    def __init__(self, shard: ShardInput, image_root: str, encoder: Any) -> None:
        self.shard = shard
        self.image_root = image_root
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.shard.samples)

    def __getitem__(self, position: int) -> Item:
        from PIL import Image

        from scalselect.representation import SampleFailure

        sample = self.shard.samples[position]
        if sample is None:
            return Item(position, status=MALFORMED_RECORD, detail=self.shard.problems[position])
        images = []
        for path in sample.images:
            file = resolve_image(self.image_root, path)
            try:
                with Image.open(file) as image:
                    images.append(image.convert("RGB"))
            except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad files
                return Item(position, status=IMAGE_UNREADABLE, detail=f"{file}: {error}")
        try:
            return Item(position, encoded=self.encoder.encode(sample, images))
        except SampleFailure as failure:
            return Item(position, status=failure.reason, detail=failure.detail)
        except Exception as error:  # noqa: BLE001 - recorded per sample, with its type
            return Item(position, status=ENCODE_ERROR, detail=f"{type(error).__name__}: {error}")


def collate_items(items: list[Item]) -> LoadedBatch:
    """DataLoader ``collate_fn``: collate the encoded items (left padding), keep failures."""
    from scalselect.representation import collate

    encoded = [item.encoded for item in items if item.status == OK]
    return LoadedBatch(items, collate(encoded) if encoded else None)


# ---------------------------------------------------------------------------------------
# The model loop


class ChunkBuffer:
    """Results of one chunk, in chunk order, until the chunk is written."""

    def __init__(self, positions: np.ndarray, dim: int) -> None:
        self.slot = {int(p): i for i, p in enumerate(np.sort(positions))}
        self.matrix = np.zeros((len(positions), dim), dtype=np.float32)
        self.columns: dict[str, list[Any]] = {c: [None] * len(positions) for c in features.ROW_COLUMNS}
        self.filled = 0

    def put(self, shard: ShardInput, position: int, **values: Any) -> None:
        """Record the row of the sample at ``position`` of ``shard`` (and its vector, if any)."""
        slot = self.slot[position]
        vector = values.pop("vector", None)
        if vector is not None:
            self.matrix[slot] = vector
        row = {"index": shard.start + position, "id": features.encode_id(shard.ids[position]),
               "n_vision": 0, "n_kept": 0,
               "seq_len": 0, "truncated": False, "detail": "", **values}
        for column in features.ROW_COLUMNS:
            self.columns[column][slot] = row[column]
        self.filled += 1

    @property
    def complete(self) -> bool:
        """Whether every sample of the chunk has its row."""
        return self.filled == len(self.slot)

    def table(self) -> pd.DataFrame:
        """The chunk's row table with the column types of :mod:`scalselect.features`."""
        table = pd.DataFrame(self.columns, columns=list(features.ROW_COLUMNS))
        return table.astype({"index": "int64", "n_vision": "int64", "n_kept": "int64",
                             "seq_len": "int64", "truncated": "bool", "id": "str",
                             "status": "str", "detail": "str"})


def represent(model: Any, loaded: LoadedBatch) -> list[tuple[Item, Any]]:
    """Run the model on a loaded batch: ``(item, SampleResult or None)`` per encoded item.

    A batch that does not fit in GPU memory is split in halves; a single sample that
    does not fit gets ``None`` (recorded as ``out_of_memory``).
    """
    import torch

    from scalselect.representation import collate

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
    shard: ShardInput,
    entry: CacheEntry,
) -> None:
    """Consume the loader's batches, writing each chunk to ``entry`` as soon as it is full.

    ``chunks`` maps each chunk number to its positions; only the chunks in progress are
    held in memory.
    """
    buffers: dict[int, ChunkBuffer] = {}
    for chunk, loaded in zip(chunk_of_batch, loader, strict=True):
        if chunk not in buffers:
            buffers[chunk] = ChunkBuffer(chunks[chunk], dim)
        buffer = buffers[chunk]
        for item in loaded.items:
            if item.status != OK:
                buffer.put(shard, item.position, status=item.status, detail=item.detail)
        for item, result in represent(model, loaded):
            if result is None:
                buffer.put(shard, item.position, status=OUT_OF_MEMORY,
                           detail="the sample alone does not fit in GPU memory")
                continue
            ok = result.status == OK
            buffer.put(shard, item.position, vector=result.vector if ok else None,
                       status=result.status, detail=result.detail, n_vision=result.n_vision,
                       n_kept=result.n_kept, seq_len=result.seq_len,
                       truncated=bool(result.truncated))
        if buffer.complete:
            entry.write(chunk, buffer.table(), buffer.matrix)
            del buffers[chunk]
            log.info("chunk %d written (%d samples)", chunk, len(buffer.slot))


@dataclasses.dataclass(frozen=True)
class Job:
    """One extraction job: what to read, what to compute, where to write."""

    dataset: str
    image_root: str
    model: str
    out: str
    settings_requested: dict[str, Any]
    shard: int = 0
    num_shards: int = 1
    batch_size: int = 8
    num_workers: int = 2
    chunk_size: int = DEFAULT_CHUNK_SIZE
    cache_dir: str = DEFAULT_CACHE_DIR


def extract_shard(job: Job) -> dict[str, int] | None:
    """Extract one shard (see the module docstring); every rank of a launch calls this.

    Returns the counts per status on rank 0, ``None`` on the other ranks.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    from scalselect.dataset import load_dataset
    from scalselect.representation import resolve_dtype

    began = time.perf_counter()
    # A rank may wait long for slower ranks before rank 0 assembles the shard.
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=RANK_TIMEOUT)
    requested = job.settings_requested
    settings = Settings(
        model_type=requested["model_type"],
        attention_threshold=float(requested["attention_threshold"]),
        dtype=str(resolve_dtype(requested["dtype"], state.device)).removeprefix("torch."),
        max_length=int(requested["max_length"]),
        min_image_tokens=int(requested["min_image_tokens"]),
        max_image_tokens=int(requested["max_image_tokens"]),
        trust_remote_code=bool(requested["trust_remote_code"]),
    )
    dataset = load_dataset(job.dataset)
    indices = shard_range(len(dataset), job.shard, job.num_shards)
    if not indices:
        from scalselect.cli import UserError

        raise UserError(
            f"shard {job.shard} of {job.num_shards} is empty: the dataset has only"
            f" {len(dataset)} samples; use fewer shards"
        )
    shard = ShardInput.read(dataset, indices)
    model_dir = resolve_model_dir(job.model)

    # Rank 0 hashes the inputs once and tells the others the key and the pending chunks.
    chunks = plan_chunks([length_estimate(s, settings.max_image_tokens) for s in shard.samples],
                         job.chunk_size)
    shared: list[Any] = [None, None]
    if state.is_main_process:
        hashed = time.perf_counter()
        paths = [resolve_image(job.image_root, p) for s in shard.samples if s for p in s.images]
        model_key = model_digest(model_dir, Path(job.cache_dir) / "digests")
        key = content_key([dataset.records[i] for i in indices], dataset.format, indices.start,
                          image_digests(paths), model_key, settings, job.chunk_size)
        entry = CacheEntry(job.cache_dir, key)
        pending = [c for c in range(len(chunks)) if not entry.is_done(c)]
        log.info("shard %d of %d: samples %d-%d, %d chunks, %d to compute; key %s (%.1f s)",
                 job.shard, job.num_shards, indices.start, indices.stop - 1, len(chunks),
                 len(pending), key[:16], time.perf_counter() - hashed)
        shared = [key, pending]
    if state.num_processes > 1:
        broadcast_object_list(shared, from_process=0)
    key, pending = shared
    entry = CacheEntry(job.cache_dir, key)
    mine = pending[state.process_index :: state.num_processes]
    if mine:
        _compute(job, settings, state, model_dir, shard, [(c, chunks[c]) for c in mine], entry)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    manifest = {
        "shard": job.shard,
        "num_shards": job.num_shards,
        "start": indices.start,
        "stop": indices.stop,
        "content_key": key,
        "model": job.model,
        "settings": dataclasses.asdict(settings),
        "chunk_size": job.chunk_size,
        "dataset_format": dataset.format,
        # The fingerprint of the dataset the shard's indices refer to (issue 11).
        "dataset_sha256": dataset.sha256,
    }
    rows = assemble_shard(entry, len(chunks), job.out, manifest)
    counts = Counter(rows["status"])
    counts["truncated"] = int(rows["truncated"].sum())
    log.info("shard %d of %d done in %.1f s: %s", job.shard, job.num_shards,
             time.perf_counter() - began,
             ", ".join(f"{status} {n}" for status, n in sorted(counts.items())))
    return dict(counts)


def _compute(
    job: Job,
    settings: Settings,
    state: Any,
    model_dir: Path,
    shard: ShardInput,
    mine: list[tuple[int, np.ndarray]],
    entry: CacheEntry,
) -> None:
    """Run the model over this rank's chunks ``mine`` (number, positions) into ``entry``."""
    import torch
    from torch.utils.data import DataLoader

    from scalselect.representation import Encoder, FirstLayerModel

    encoder = Encoder(str(model_dir), settings.model_type, max_length=settings.max_length,
                      min_image_tokens=settings.min_image_tokens,
                      max_image_tokens=settings.max_image_tokens,
                      trust_remote_code=settings.trust_remote_code)
    model = FirstLayerModel(str(model_dir), settings.model_type, dtype=settings.dtype,
                            device=state.device, attention_threshold=settings.attention_threshold,
                            trust_remote_code=settings.trust_remote_code)
    dim = int(model.model.config.get_text_config().hidden_size)
    batches, chunk_of_batch = [], []
    for chunk, positions in mine:
        for batch in split_batches(positions, job.batch_size):
            batches.append(batch)
            chunk_of_batch.append(chunk)
    loader = DataLoader(
        ShardSamples(shard, job.image_root, encoder), batch_sampler=batches,
        collate_fn=collate_items, num_workers=job.num_workers,
        pin_memory=state.device.type == "cuda",
    )
    log.info("rank %d: %d chunks, %d batches on %s (%s)", state.process_index, len(mine),
             len(batches), state.device, settings.dtype)
    with torch.inference_mode():
        run_chunks(model, iter(loader), chunk_of_batch, dict(mine), dim, shard, entry)
