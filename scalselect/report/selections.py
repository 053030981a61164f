"""Comparing two selections of the same data (``python -m scalselect compare``), each a
selection file or a card, from any copy, run or version.

Records are matched by content digest (:mod:`scalselect.select.digests`), so two
selections written from differently ordered copies, in other file or record formats,
compare as what they hold; a record selected twice counts twice (multiset overlap). Two
cards that share no data fingerprint (neither the dataset's nor the valid records') are
refused before anything is compared.

Measures: the sizes, the overlap ``|A ∩ B|``, Jaccard ``|A ∩ B| / |A ∪ B|``, the
records only one holds, per-source counts (a record's source in a card is the card's, in
a file its image folder or ``source_field``), and, when both are cards (which hold each
selected record's importance), the rank agreement of the common records' scores
(Spearman's ρ, :func:`scalselect.report.comparison.spearman`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scalselect.data.readers import iter_inspected
from scalselect.report.comparison import spearman
from scalselect.select.card import CARD_SUFFIX, CardError, data_fingerprints, read_card
from scalselect.select.digests import record_digest


@dataclass(frozen=True)
class Side:
    """One selection to compare: its records' digests, sources and (cards) scores."""

    name: str
    card: dict[str, Any] | None
    digests: list[str]
    sources: list[str]
    scores: list[float | None]

    def describe(self) -> dict[str, Any]:
        """What the selection is: its file, and a card's method, budget and fingerprints."""
        facts: dict[str, Any] = {"name": self.name, "kind": "card" if self.card else "file",
                                 "records": len(self.digests)}
        if self.card is not None:
            selection = self.card["selection"]
            facts.update({key: selection.get(key) for key in ("method", "budget", "n", "seed")})
            facts["fingerprint"] = selection["fingerprint"]
            facts["dataset"] = self.card["dataset"]["name"]
        return facts


def read_side(path: str | os.PathLike, fmt: str = "auto",
              source_field: str | None = None) -> Side:
    """A selection file or, named ``*.card.json``, a card."""
    path = Path(path)
    if path.name.endswith(CARD_SUFFIX):
        card = read_card(path)
        records = card["selection"]["records"]
        return Side(str(path), card, [r["digest"] for r in records],
                    [r["source"] for r in records], [r["score"] for r in records])
    digests, sources = [], []
    for number, _, sample, problems in iter_inspected(path, fmt, source_field=source_field):
        if sample is None:
            details = "; ".join(p.detail for p in problems)
            raise CardError(f"{path}: record {number} is malformed: {details}")
        digests.append(record_digest(sample))
        sources.append(sample.source)
    return Side(str(path), None, digests, sources, [None] * len(digests))


def check_same_data(a: Side, b: Side) -> None:
    """Refuse two cards that share no fingerprint: neither their datasets' nor the valid
    records' (:func:`scalselect.select.card.data_fingerprints`)."""
    if a.card is None or b.card is None:
        return
    da, db = a.card["dataset"], b.card["dataset"]
    if not data_fingerprints(a.card) & data_fingerprints(b.card):
        raise CardError(
            f"{a.name} and {b.name} select from different datasets: {da['name']} ({da['records']}"
            f" records, fingerprint {da['fingerprint'][:16]}...) and {db['name']}"
            f" ({db['records']} records, fingerprint {db['fingerprint'][:16]}...)")


def _per_source(a: Side, b: Side, common: Counter) -> list[dict[str, Any]]:
    count_a, count_b = Counter(a.sources), Counter(b.sources)
    left = Counter(common)
    both: Counter = Counter()
    for digest, source in zip(a.digests, a.sources, strict=True):
        if left[digest] > 0:
            left[digest] -= 1
            both[source] += 1
    return [{"source": source, "a": count_a[source], "b": count_b[source], "both": both[source]}
            for source in sorted(count_a.keys() | count_b.keys())]


def _rank_agreement(a: Side, b: Side, common: Counter) -> dict[str, Any] | None:
    if a.card is None or b.card is None:
        return None
    score_a = dict(zip(a.digests, a.scores, strict=True))
    score_b = dict(zip(b.digests, b.scores, strict=True))
    pairs = [(score_a[d], score_b[d]) for d in sorted(common)
             if score_a[d] is not None and score_b[d] is not None]
    if len(pairs) < 2:
        return {"common": len(pairs), "spearman": None}
    x, y = np.asarray(pairs, dtype=float).T
    rho = spearman(x, y)
    return {"common": len(pairs), "spearman": None if np.isnan(rho) else round(rho, 6)}


def compare(a: Side, b: Side) -> dict[str, Any]:
    """The measures of the module docstring, as JSON-ready data."""
    check_same_data(a, b)
    ca, cb = Counter(a.digests), Counter(b.digests)
    common = ca & cb
    overlap = sum(common.values())
    union = len(a.digests) + len(b.digests) - overlap
    return {
        "a": a.describe(), "b": b.describe(),
        "overlap": overlap,
        "jaccard": round(overlap / union, 6) if union else None,
        "only_a": len(a.digests) - overlap, "only_b": len(b.digests) - overlap,
        "identical": ca == cb,
        "sources": _per_source(a, b, common),
        "rank_agreement": _rank_agreement(a, b, common),
    }


def render_text(result: dict[str, Any]) -> str:
    """The comparison for people: what each side is, the overlap, the sources."""
    lines = []
    for side in ("a", "b"):
        facts = result[side]
        what = (f"card, {facts['method']} budget {facts['budget']} (n={facts['n']})"
                if facts["kind"] == "card" else "selection file")
        lines.append(f"{side.upper()}: {facts['name']} ({what}): {facts['records']} records")
    jaccard = "n/a" if result["jaccard"] is None else f"{result['jaccard']:.4f}"
    lines.append(f"overlap {result['overlap']}, Jaccard {jaccard}, only A {result['only_a']},"
                 f" only B {result['only_b']}" + (" (identical)" if result["identical"] else ""))
    rank = result["rank_agreement"]
    if rank is not None:
        rho = "n/a" if rank["spearman"] is None else f"{rank['spearman']:.4f}"
        lines.append(f"rank agreement: Spearman {rho} over {rank['common']} common records")
    width = max([6, *(len(row["source"]) for row in result["sources"])])
    lines.append(f"{'source':<{width}} {'A':>8} {'B':>8} {'both':>8}")
    lines += [f"{row['source']:<{width}} {row['a']:>8} {row['b']:>8} {row['both']:>8}"
              for row in result["sources"]]
    return "\n".join(lines)
