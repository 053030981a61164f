"""Rebuilding a selection from any copy of its dataset (``python -m scalselect apply``).

The copy may be a JSON array, JSON Lines or parquet, in any record format and any order:
its records are matched to the card's by content digest
(:mod:`scalselect.select.digests`), never by position or id. A record selected twice
(two identical records) is matched twice, to the first two copies met.

Two passes over the copy, each streaming it: the first digests every record (and the
copy's fingerprint), finds the selected ones and checks their images (embedded bytes
always; image files under ``image_root`` when given) against the card's digests; the
second writes the matched records unchanged, in the copy's order and file format
(:func:`scalselect.data.writers.copy_records`). Nothing is written when a selected
record is missing, changed (its id is in the copy with other content) or has other
image bytes, unless ``allow_missing``: then the intact records are written and the
others listed in ``<out>.missing.json``. Memory: the card's selected records and the
matched positions, never the copy's records.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from scalselect.data.readers import iter_inspected
from scalselect.data.records import Sample
from scalselect.data.writers import copy_records
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.io import write_json
from scalselect.locations import as_location
from scalselect.progress import Progress
from scalselect.select.card import CardError, data_fingerprints, read_card
from scalselect.select.digests import (
    BATCH,
    Fingerprint,
    digest_of,
    sample_image_digests,
)

MISSING_SUFFIX = ".missing.json"
# Ids named in a message, per kind of problem.
SHOWN = 10


class ApplyRefused(UserError):
    """Selected records missing or changed in the copy: nothing was written."""


def missing_report_path(out: str | os.PathLike) -> Path:
    """The report of ``apply --allow-missing`` beside its output: ``<out>.missing.json``."""
    return Path(f"{out}{MISSING_SUFFIX}")


@dataclass
class Match:
    """What the first pass found: the copy positions to write, the selected records it
    lacks or holds with other content, image mismatches, and the copy's fingerprint."""

    keep: array = field(default_factory=lambda: array("q"))
    missing: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: Fingerprint = field(default_factory=Fingerprint)

    @property
    def problems(self) -> int:
        """Selected records that are not written intact."""
        return len(self.missing) + len(self.changed) + len(self.images)


class _Matcher:
    """The first pass: selected records by content digest, their images checked."""

    def __init__(self, card: Mapping[str, Any], image_root: str | os.PathLike | None) -> None:
        self.wanted: dict[str, list[dict[str, Any]]] = {}
        for record in card["selection"]["records"]:
            self.wanted.setdefault(record["digest"], []).append(record)
        self.ids = {features.id_text(r["id"]) for r in card["selection"]["records"]}
        self.seen_ids: set[str | None] = set()
        self.image_root = image_root
        self.pending: list[tuple[Sample, dict[str, Any]]] = []
        self.match = Match()

    def add(self, record: Any, sample: Sample | None) -> None:
        """One record of the copy."""
        digest = digest_of(record, sample)
        self.match.fingerprint.add(digest)
        entries = self.wanted.get(digest)
        if sample is not None and entries:
            self.pending.append((sample, entries.pop(0)))
            if not entries:
                del self.wanted[digest]
            if len(self.pending) == BATCH:
                self.check_images()
        elif sample is not None and features.id_text(sample.id) in self.ids:
            self.seen_ids.add(features.id_text(sample.id))

    def check_images(self) -> None:
        """Compare the pending matches' image bytes with the card's digests."""
        samples = [sample for sample, _ in self.pending]
        for (sample, entry), found in zip(self.pending, sample_image_digests(
                samples, self.image_root), strict=True):
            bad = [(path, want, got) for path, want, got in
                   zip(sample.images, entry["images"], found, strict=True)
                   if want is not None and (got is not None or self.image_root is not None)
                   and got != want]
            if bad:
                path, want, got = bad[0]
                self.match.images.append({"id": entry["id"], "digest": entry["digest"],
                                          "image": path, "expected": want, "found": got})
            else:
                self.match.keep.append(sample.index)
        self.pending = []

    def finish(self) -> Match:
        """The match, once every record of the copy was added."""
        self.check_images()
        for entries in self.wanted.values():
            for entry in entries:
                changed = features.id_text(entry["id"]) in self.seen_ids
                (self.match.changed if changed else self.match.missing).append(
                    {"id": entry["id"], "digest": entry["digest"]})
        return self.match


def _listing(kind: str, items: list[dict[str, Any]]) -> str:
    shown = ", ".join(repr(item["id"]) for item in items[:SHOWN])
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{len(items)} {kind} (ids {shown}{more})"


def _refusal(card: Mapping[str, Any], dataset: Path, out: Path, match: Match) -> str:
    kinds = [(label, items) for label, items in (
        ("missing", match.missing), ("changed (their id is there with other content)",
                                     match.changed),
        ("with other image bytes", match.images)) if items]
    total = card["selection"]["n"]
    return (f"{dataset} does not hold {match.problems} of the {total} selected records: "
            + "; ".join(_listing(label, items) for label, items in kinds)
            + f". Nothing written; --allow-missing writes the {len(match.keep)} intact records"
            f" to {out} and lists the others in {missing_report_path(out)}")


def report(card: Mapping[str, Any], dataset: Path, match: Match) -> dict[str, Any]:
    """The content of ``<out>.missing.json``."""
    facts = card["dataset"]
    return {
        "card": {"dataset": facts["name"], "selection": card["selection"]["fingerprint"]},
        "copy": {"name": PurePosixPath(str(dataset)).name, "records": match.fingerprint.count,
                 "fingerprint": match.fingerprint.hex,
                 "same_as_card": match.fingerprint.hex in data_fingerprints(card)},
        "selected": card["selection"]["n"], "written": len(match.keep),
        "missing": match.missing, "changed": match.changed, "images": match.images,
    }


def apply_card(card_path: str | os.PathLike, dataset: str | os.PathLike,
               out: str | os.PathLike, *, fmt: str = "auto",
               image_root: str | os.PathLike | None = None,
               allow_missing: bool = False) -> dict[str, Any]:
    """Write the card's selected records found in ``dataset`` to ``out`` (module
    docstring); returns :func:`report`.

    Raises
    ------
    CardError
        A malformed card, or a dataset that holds none of its selected records and has
        another fingerprint than the card's dataset (a card of another dataset).
    ApplyRefused
        Selected records missing or changed, without ``allow_missing``.
    """
    card = read_card(card_path)
    dataset, out = as_location(dataset), Path(out)
    matcher = _Matcher(card, image_root)
    with Progress(None, "records") as progress:  # the first pass: match by digest
        for _, record, sample, _ in iter_inspected(dataset, fmt):
            matcher.add(record, sample)
            progress.update(1)
    match = matcher.finish()
    facts = card["dataset"]
    if (not len(match.keep) and not match.images and card["selection"]["n"]
            and match.fingerprint.hex not in data_fingerprints(card)):
        raise CardError(
            f"{card_path} is the card of another dataset: {facts['name']} ({facts['records']}"
            f" records, fingerprint {facts['fingerprint'][:16]}...), but {dataset} holds"
            f" {match.fingerprint.count} records (fingerprint {match.fingerprint.hex[:16]}...)"
            " and none of the selected ones")
    if match.problems and not allow_missing:
        raise ApplyRefused(_refusal(card, dataset, out, match))
    with Progress(match.fingerprint.count, "records") as progress:  # the second: write
        copy_records(dataset, out, keep=np.sort(np.array(match.keep, dtype=np.int64)),
                     progress=progress)
    content = report(card, dataset, match)
    if allow_missing:
        write_json(missing_report_path(out), content)
    return content
