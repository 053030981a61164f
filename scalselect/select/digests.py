"""Content digests: what a selection card records and ``apply`` matches, whatever the
file format, the record format, the position or the order of the records.

Definitions (hex SHA-256 throughout):

- A record's **content digest** is the SHA-256 of the canonical JSON (keys sorted, no
  spaces, UTF-8 unescaped) of its normalised sample (:mod:`scalselect.data.records`)::

      {"id": <id as text, or null>, "images": [<image paths as written>, ...],
       "messages": [[<role>, <content>], ...]}

  Roles are the normalised ones (``user``/``assistant``/``system``), so the LLaVA
  (``conversations``/``from``/``value``), LLaVA-images and ShareGPT forms of one sample,
  in a JSON array, JSON Lines or parquet, have one digest. The id is text (``7`` and
  ``"7"`` are one id: parquet copies often store ids as strings); other record fields
  do not count. An embedded image counts by its stored path (``embedded`` without one);
  image **bytes** are digested separately (:func:`sample_image_digests`), so a copy whose
  image folder moved still matches. A record that cannot be normalised is digested as
  ``{"record": <the record>}`` (bytes values as their SHA-256): it counts in the
  dataset fingerprint only.
- An **image digest** is the SHA-256 of the image file's bytes, or of the embedded bytes.
- A **dataset fingerprint** is the sum modulo 2**256 of the content digests of all its
  records, read as big-endian integers, written as 64 hex digits: independent of order,
  computed in one pass in constant memory, and unlike XOR it counts a repeated record
  twice. It recognises a reordered copy; it is not a defence against forged data (the
  file's SHA-256 is).
- A **selection fingerprint** is the SHA-256 of the selected records' content digests,
  sorted, each followed by a newline.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from scalselect.data.readers import ReadStats, file_kind, iter_inspected
from scalselect.data.records import FormatVote, Sample, resolve_image
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.extract.store import image_digests
from scalselect.io import atomic_write
from scalselect.progress import Progress

# The key of the digests table's parquet metadata holding the dataset's facts.
TABLE_META = b"scalselect.dataset"
TABLE_COLUMNS = ("index", "id", "digest", "images", "source")
# Records per batch of the digests table (their images are hashed on threads together).
BATCH = 2048
_MODULUS = 1 << 256


class DigestError(UserError):
    """An image that cannot be read for its digest, or a digests table that does not fit."""


def _canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
        default=lambda data: hashlib.sha256(data).hexdigest(),
    ).encode("utf-8")


def record_digest(sample: Sample) -> str:
    """The content digest of a normalised record (module docstring).

    Examples
    --------
    >>> from scalselect.data.records import Message
    >>> a = Sample(0, 7, (Message("user", "<image>\\nHi"),), ("coco/1.jpg",), "coco")
    >>> b = Sample(9, "7", (Message("user", "<image>\\nHi"),), ("coco/1.jpg",), "x")
    >>> record_digest(a) == record_digest(b)
    True
    """
    return hashlib.sha256(_canonical({
        "id": features.id_text(sample.id),
        "images": list(sample.images),
        "messages": [[m.role, m.content] for m in sample.messages],
    })).hexdigest()


def digest_of(record: Any, sample: Sample | None) -> str:
    """The content digest of a record, normalised (``sample``) or not."""
    return record_digest(sample) if sample is not None else hashlib.sha256(
        _canonical({"record": record})).hexdigest()


class Fingerprint:
    """The order-independent fingerprint of a multiset of content digests, added one at
    a time (module docstring), and how many were added."""

    def __init__(self) -> None:
        self.count = 0
        self._total = 0

    def add(self, digest: str) -> None:
        """Count one record's content digest."""
        self.count += 1
        self._total = (self._total + int(digest, 16)) % _MODULUS

    @property
    def hex(self) -> str:
        """The fingerprint as 64 hex digits."""
        return f"{self._total:064x}"


def selection_fingerprint(digests: Iterable[str]) -> str:
    """The fingerprint of a selection: SHA-256 of its sorted digests, one per line.

    >>> selection_fingerprint(["b", "a"]) == selection_fingerprint(["a", "b"])
    True
    """
    digest = hashlib.sha256()
    for value in sorted(digests):
        digest.update(value.encode("ascii") + b"\n")
    return digest.hexdigest()


def sample_image_digests(
    samples: Sequence[Sample], image_root: str | os.PathLike | None
) -> list[list[str | None]]:
    """The image digests of each sample, in its image order: embedded bytes hashed from
    the record, files under ``image_root`` on threads. A file that cannot be read, or any
    file when ``image_root`` is ``None``, gives ``None``."""
    paths = [] if image_root is None else [
        resolve_image(image_root, path) for sample in samples
        for n, path in enumerate(sample.images) if sample.image_bytes(n) is None
    ]
    hashed = iter(image_digests(paths))
    out = []
    for sample in samples:
        digests: list[str | None] = []
        for n in range(len(sample.images)):
            data = sample.image_bytes(n)
            if data is not None:
                digests.append(hashlib.sha256(data).hexdigest())
            elif image_root is None:
                digests.append(None)
            else:
                value = next(hashed)
                # image_digests marks an unreadable file with a text that is no digest.
                digests.append(value if len(value) == 64 else None)
        out.append(digests)
    return out


def dataset_facts(
    path: str | os.PathLike, fmt: str = "auto", source_field: str | None = None
) -> dict[str, Any]:
    """What identifies a dataset file, in one streaming pass: its name (not its folder),
    file and record formats, record count, SHA-256 and content fingerprint."""
    vote, stats, fingerprint = FormatVote(path), ReadStats(), Fingerprint()
    with Progress(None, "records") as progress:
        for _, record, sample, _ in iter_inspected(path, fmt, source_field=source_field,
                                                   vote=vote, stats=stats):
            fingerprint.add(digest_of(record, sample))
            progress.update(1)
    return {
        "name": PurePosixPath(str(path)).name,
        "file_format": file_kind(path),
        "record_format": vote.result() if fmt == "auto" else fmt,
        "records": fingerprint.count,
        "sha256": stats.digest(path),
        "fingerprint": fingerprint.hex,
    }


def _table_batches(
    path: Path, fmt: str, image_root: str | os.PathLike, source_field: str | None,
    stats: ReadStats, fingerprint: Fingerprint,
) -> Iterator[pd.DataFrame]:
    """The digests table of a (filtered) dataset, a batch of records at a time."""
    samples: list[Sample] = []

    def batch() -> pd.DataFrame:
        digests = [record_digest(s) for s in samples]
        for digest in digests:
            fingerprint.add(digest)
        images = sample_image_digests(samples, image_root)
        for sample, found in zip(samples, images, strict=True):
            if None in found:
                bad = sample.images[found.index(None)]
                raise DigestError(f"{path}: record {sample.index} (id {sample.id!r}): image"
                                  f" {bad} cannot be read under {image_root}")
        return pd.DataFrame({
            "index": np.asarray([s.index for s in samples], np.int64),
            "id": [features.encode_id(s.id) for s in samples],
            "digest": digests, "images": images, "source": [s.source for s in samples],
        })

    for number, _, sample, problems in iter_inspected(path, fmt, source_field=source_field,
                                                      stats=stats):
        if sample is None:
            details = "; ".join(p.detail for p in problems)
            raise DigestError(f"{path}: record {number} is malformed ({details}): digests"
                              " are made of a filtered dataset")
        samples.append(sample)
        if len(samples) == BATCH:
            yield batch()
            samples = []
    if samples:
        yield batch()


def write_digest_table(
    dataset: str | os.PathLike, filtered: str | os.PathLike, out: str | os.PathLike, *,
    fmt: str = "auto", image_root: str | os.PathLike = ".", source_field: str | None = None,
) -> dict[str, Any]:
    """Write the digests table of a run (``select/digests.parquet``): one row per record
    of the ``filtered`` dataset (:data:`TABLE_COLUMNS`: its index there, id JSON-encoded,
    content digest, image digests, source label) and, in its metadata, the facts of the
    configured ``dataset`` (:func:`dataset_facts`) and of the filtered pool (records,
    SHA-256, fingerprint). Streams both files; memory is one batch. Returns the metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("index", pa.int64()), ("id", pa.string()), ("digest", pa.string()),
                        ("images", pa.list_(pa.string())), ("source", pa.string())])
    facts = {"dataset": dataset_facts(dataset, fmt, source_field)}
    stats, fingerprint = ReadStats(), Fingerprint()
    with atomic_write(out, "wb") as handle, Progress(None, "records") as progress:
        with pq.ParquetWriter(handle, schema) as writer:
            for table in _table_batches(Path(filtered), fmt, image_root, source_field, stats,
                                        fingerprint):
                writer.write_table(pa.Table.from_pandas(table, schema, preserve_index=False))
                progress.update(len(table), images=int(table["images"].map(len).sum()))
            facts["pool"] = {"records": fingerprint.count, "sha256": stats.digest(filtered),
                             "fingerprint": fingerprint.hex, "source_field": source_field}
            writer.add_key_value_metadata({TABLE_META: json.dumps(facts, sort_keys=True)})
    return facts


def table_facts(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a digests table (:func:`write_digest_table`)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata.metadata or {}
    if TABLE_META not in meta:
        raise DigestError(f"{path}: not a digests table (no {TABLE_META.decode()} metadata)")
    return json.loads(meta[TABLE_META])


def table_rows(path: str | os.PathLike, indices: np.ndarray) -> pd.DataFrame:
    """The rows of a digests table at the dataset ``indices`` (read by row batches),
    in index order. Raises ``DigestError`` when an index has no row."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = pa.array(np.unique(np.asarray(indices, np.int64)))
    parts = [batch.filter(pc.is_in(batch["index"], value_set=wanted))
             for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 16)]
    rows = (pa.Table.from_batches(parts).to_pandas() if parts
            else pd.DataFrame(columns=list(TABLE_COLUMNS)))
    rows = rows.sort_values("index", kind="stable").reset_index(drop=True)
    if len(rows) != len(wanted):
        absent = np.setdiff1d(wanted.to_numpy(), rows["index"].to_numpy())
        raise DigestError(f"{path} has no row for dataset index {int(absent[0])}: digests of"
                          " another dataset?")
    return rows
