"""The validation of one shard of a dataset (a *part*): what it found, and its file.

:func:`scalselect.data.validation.validate_part` makes a part; ``validate-merge`` reads
every shard's part back and merges them into the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scalselect.data.records import DatasetError, Problem
from scalselect.io import atomic_write

# Image outcomes in a part (codes are positions).
# New codes go last: a part written before keeps its meaning.
OUTCOMES = ("ok", "missing_image", "empty_image_file", "not_an_image", "corrupt_image",
            "decompression_bomb", "image_too_small", "extreme_aspect_ratio",
            "unreachable_image")
# Per-record flags of a part.
INVALID, TEXT_ONLY = 1, 2


@dataclass
class Finding:
    """The defects of one record of a part: those found before the id check across the
    whole dataset (``before``) and after it (``after``: its images), its id as reported,
    and, for a record whose defects depend on the file's format while this part could
    not tell it, the defects under each format (``by_format``)."""

    id: Any = None
    before: list[Problem] = field(default_factory=list)
    after: list[Problem] = field(default_factory=list)
    by_format: dict[str, list[Problem]] | None = None

    def problems(self, fmt: str) -> list[Problem]:
        """The defects, ``duplicate_id`` aside, once the format is known."""
        before = self.by_format[fmt] if self.by_format is not None else self.before
        return before + self.after


# The per-record and per-image arrays of a part, read one at a time by the merge.
PART_ARRAYS = ("flags", "sources", "id_hashes", "id_indices", "image_keys", "image_outcomes")


@dataclass
class Part:
    """The validation of one shard of a dataset (made by :func:`validate_part`, merged
    into the report by :func:`merge_parts`, both in :mod:`scalselect.data.validation`):
    its range of records, format vote, source labels, the findings of its defective
    records and, by :meth:`array`, per record a flag (uint8: ``INVALID``, ``TEXT_ONLY``)
    and a source (int32: position in ``labels``, -1 without a sample), per record with a
    well-typed id its 64-bit digest (uint64) and dataset index (int64), per distinct
    image checked its 16-byte key (sorted) and outcome (uint8: position in
    ``OUTCOMES``). About 21 bytes per record and 17 per image, never a record.

    A part read by :meth:`load` keeps only its metadata in memory: each array is read
    from the file when asked for, so a merge holds one part's arrays at a time.
    """

    start: int
    stop: int
    vote: dict[str, Any]
    findings: dict[int, Finding]
    labels: list[str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    path: Path | None = None

    def array(self, name: str) -> np.ndarray:
        """One of ``PART_ARRAYS``: held, or read from the part's file."""
        if name in self.arrays:
            return self.arrays[name]
        try:
            with np.load(self.path) as data:
                return data[name]
        except (OSError, ValueError, KeyError) as error:
            raise DatasetError(f"cannot read {name!r} of validation part {self.path}: {error}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the part (``.npz``), atomically."""
        meta = {
            "start": self.start, "stop": self.stop, "vote": self.vote, "labels": self.labels,
            "findings": [
                [index, f.id, [asdict(p) for p in f.before], [asdict(p) for p in f.after],
                 None if f.by_format is None
                 else {k: [asdict(p) for p in v] for k, v in f.by_format.items()}]
                for index, f in sorted(self.findings.items())
            ],
        }
        with atomic_write(path, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta, ensure_ascii=False)),
                     **{name: self.array(name) for name in PART_ARRAYS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Part:
        """The part written by :meth:`save` at ``path``, its arrays left in the file."""
        try:
            with np.load(path) as data:
                missing = sorted(set(PART_ARRAYS) - set(data.files))
                if missing:
                    raise ValueError(f"no {', '.join(missing)} (written by another version?)")
                meta = json.loads(str(data["meta"]))
        except (OSError, ValueError, KeyError) as error:
            raise DatasetError(f"cannot read validation part {path}: {error}") from None

        def problems(items: list[dict[str, str]]) -> list[Problem]:
            return [Problem(**p) for p in items]

        findings = {
            index: Finding(value, problems(before), problems(after),
                           None if alt is None else {k: problems(v) for k, v in alt.items()})
            for index, value, before, after, alt in meta["findings"]
        }
        return cls(meta["start"], meta["stop"], meta["vote"], findings, meta["labels"],
                   path=Path(path))
