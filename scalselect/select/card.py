"""Selection cards: what was selected, from what, by what, in one file beside the
selection (``<selection>.card.json``), enough to verify and rebuild it anywhere.

A card holds (digests as :mod:`scalselect.select.digests` defines them):

- ``card``: the card format's version (:data:`CARD_VERSION`).
- ``dataset``: the configured dataset file's name (no folder), file and record format,
  record count, SHA-256 and content fingerprint; ``pool``: the same for the valid
  samples the selection was drawn from (``filter``'s output), with the source field.
- ``model``: its name as configured (an absolute path is reduced to its last folder),
  the digest of its files (weights, config, processor), family, decoder layer and the
  feature store's settings key.
- ``settings``: every setting that changes results, per stage (``validate`` without its
  speed keys, ``filter``, ``extract`` as the shards ran it, ``score`` as fitted,
  ``select`` for the method's own settings).
- ``scoring``: the rank ``k``, the numerical rank and the number of scored samples.
- ``selection``: the method, the budget as asked (``"16%"``) and as resolved (``n``), the
  seed (random) or null, the selection file (name, format, SHA-256), the selection
  fingerprint, the count per source, and the selected ``records`` sorted by content
  digest, each with its id, image digests, importance score and source.
- ``software``: the package version (``scalselect.__version__``, pyproject's), the git
  commit of the checkout it ran from (null outside a git checkout), and the versions of
  the libraries that compute results.

Nothing that varies between identical runs: no time, no host, no absolute path; keys are
sorted and the text is laid out by :func:`render`, so two runs on the same inputs write
the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import scalselect
from scalselect.budgets import Budget
from scalselect.data.readers import file_kind
from scalselect.errors import UserError
from scalselect.extract import features
from scalselect.io import atomic_write, file_digest
from scalselect.select import digests

CARD_VERSION = 1
CARD_SUFFIX = ".card.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CardError(UserError):
    """A card that is malformed, or inputs of a card that do not belong together."""


def card_path(selection: str | os.PathLike) -> Path:
    """The card of a selection file: beside it, ``<selection>.card.json``.

    >>> card_path("results/run/select/top-32.json").name
    'top-32.json.card.json'
    """
    return Path(f"{selection}{CARD_SUFFIX}")


def git_commit() -> str | None:
    """The commit of the git checkout this package runs from, else ``None``."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out if re.fullmatch(r"[0-9a-f]{40,64}", out) else None


@dataclass(frozen=True)
class CardInputs:
    """What a card is made from besides the selection: the run's digests table,
    ``spectrum.json``, the extraction shards (their manifests) and the data stages'
    result settings (``{"validate": {...}, "filter": {...}}``)."""

    digests: Path
    spectrum: Path
    shards: Sequence[Path]
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class Choice:
    """One selection: its method, budget as asked, resolved size, seed (random only)
    and the method's own result settings."""

    method: str
    budget: str
    n: int
    seed: int | None = None
    settings: Mapping[str, Any] | None = None


def _manifest_facts(shards: Sequence[Path], pool_sha256: str) -> dict[str, Any]:
    """The model and extraction settings the shards agree on."""
    seen: dict[str, Any] | None = None
    for shard in shards:
        manifest = json.loads((Path(shard) / features.MANIFEST).read_text(encoding="utf-8"))
        missing = [key for key in ("model", "model_sha256", "settings", "versions", "store")
                   if key not in manifest]
        if missing:
            raise CardError(
                f"{shard}/{features.MANIFEST} has no {', '.join(missing)} (written by an older"
                " version): rerun its extract job (`--forcerun extract`; the feature store"
                " makes it cheap)")
        if manifest.get("dataset_sha256") != pool_sha256:
            raise CardError(f"{shard} was extracted from another dataset than the digests"
                            f" table's (dataset sha256 {manifest.get('dataset_sha256')})")
        facts = {"model": manifest["model"], "sha256": manifest["model_sha256"],
                 "settings": manifest["settings"], "versions": manifest["versions"],
                 "store_key": manifest["store"]["settings_key"]}
        if seen is not None and facts != seen:
            raise CardError(f"{shard} was extracted with another model or settings than"
                            f" {shards[0]}")
        seen = facts
    if seen is None:
        raise CardError("a card needs the run's extraction shards")
    return seen


def _model_name(name: str) -> str:
    """The model as configured; an absolute path reduced to its last folder."""
    return Path(name).name if os.path.isabs(name) else name


def _records(rows: pd.DataFrame, scores: pd.Series) -> list[dict[str, Any]]:
    """The selected records' entries, sorted by content digest (then by their text)."""
    entries = [{
        "digest": digest, "id": features.decode_id(encoded), "images": list(images),
        "score": float(scores[index]) if index in scores.index else None, "source": source,
    } for index, encoded, digest, images, source in zip(
        rows["index"], rows["id"], rows["digest"], rows["images"], rows["source"], strict=True)]
    return sorted(entries, key=lambda e: (e["digest"], json.dumps(e, sort_keys=True)))


def build_card(selection: str | os.PathLike, indices: np.ndarray, scores: pd.Series,
               choice: Choice, inputs: CardInputs) -> dict[str, Any]:
    """The card of the selection file ``selection``, made of the records at the
    (filtered) dataset ``indices``; ``scores``: importance by dataset index."""
    facts = digests.table_facts(inputs.digests)
    model = _manifest_facts(inputs.shards, facts["pool"]["sha256"])
    spectrum = json.loads(Path(inputs.spectrum).read_text(encoding="utf-8"))
    if Budget.parse(choice.budget).resolve(spectrum["n"]) != choice.n:
        raise CardError(f"budget {choice.budget!r} of {spectrum['n']} scored samples is not"
                        f" {choice.n} samples")
    records = _records(digests.table_rows(inputs.digests, indices), scores)
    settings = {**inputs.settings, "extract": model["settings"],
                "score": {key: spectrum[key] for key in
                          ("sv_threshold", "center", "standardize", "l2_normalize")},
                "select": dict(choice.settings or {})}
    software = {"scalselect": scalselect.__version__, "commit": git_commit(),
                "numpy": np.__version__, **model["versions"]}
    if choice.method == "kmeans":
        software["scikit-learn"] = version("scikit-learn")
    return {
        "card": CARD_VERSION,
        "dataset": facts["dataset"],
        "pool": facts["pool"],
        "model": {"name": _model_name(model["model"]), "sha256": model["sha256"],
                  "family": model["settings"]["model_type"], "layer": model["settings"]["layer"],
                  "store_key": model["store_key"]},
        "settings": settings,
        "scoring": {"k": spectrum["k"], "rank": spectrum["rank"], "scored": spectrum["n"]},
        "selection": {
            "method": choice.method, "budget": choice.budget, "n": choice.n,
            "seed": choice.seed,
            "file": {"name": Path(selection).name, "file_format": file_kind(selection),
                     "sha256": file_digest(selection)},
            "fingerprint": digests.selection_fingerprint(r["digest"] for r in records),
            "sources": dict(sorted(Counter(r["source"] for r in records).items())),
            "records": records,
        },
        "software": software,
    }


def render(card: Mapping[str, Any]) -> str:
    """The card's text: sorted keys, two-space indents, one selected record per line."""
    selection = card["selection"]
    marker = f"@records-{uuid.uuid4().hex}@"
    body = json.dumps({**card, "selection": {**selection, "records": marker}}, indent=2,
                      sort_keys=True, ensure_ascii=False)
    lines = ",\n".join("      " + json.dumps(r, sort_keys=True, ensure_ascii=False)
                       for r in selection["records"])
    listing = f"[\n{lines}\n    ]" if lines else "[]"
    return body.replace(json.dumps(marker), listing, 1) + "\n"


def write_card(path: str | os.PathLike, card: Mapping[str, Any]) -> None:
    """Write a card, atomically."""
    with atomic_write(path) as handle:
        handle.write(render(card))


# ---------------------------------------------------------------------------------------
# Reading a card


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The fields apply and compare rely on: dotted path -> (test, what it must be).
_FIELDS = {
    "card": (lambda v: v == CARD_VERSION, f"card format version {CARD_VERSION}"),
    "dataset": (lambda v: isinstance(v, dict), "an object"),
    "dataset.name": (lambda v: isinstance(v, str), "a file name"),
    "dataset.records": (lambda v: _is_int(v) and v >= 0, "a record count"),
    "dataset.sha256": (_is_hex, "a SHA-256 hex digest"),
    "dataset.fingerprint": (_is_hex, "a 64-digit hex fingerprint"),
    "selection": (lambda v: isinstance(v, dict), "an object"),
    "selection.method": (lambda v: isinstance(v, str), "a method name"),
    "selection.budget": (lambda v: isinstance(v, str), "a budget as asked"),
    "selection.n": (lambda v: _is_int(v) and v >= 0, "a sample count"),
    "selection.fingerprint": (_is_hex, "a 64-digit hex fingerprint"),
    "selection.records": (lambda v: isinstance(v, list), "a list of records"),
}
_RECORD_FIELDS = {
    "digest": (_is_hex, "a SHA-256 hex digest"),
    "id": (lambda v: v is None or _is_int(v) or isinstance(v, str), "an id (int, string or null)"),
    "images": (lambda v: isinstance(v, list) and all(d is None or _is_hex(d) for d in v),
               "a list of SHA-256 hex digests (or nulls)"),
    "score": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
              "a number or null"),
    "source": (lambda v: isinstance(v, str), "a source label"),
}


def _lookup(card: Any, path: str) -> Any:
    value = card
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(path)
        value = value[part]
    return value


def check_card(card: Any, name: str = "card") -> dict[str, Any]:
    """``card`` when it has every field :data:`_FIELDS` names, with the right types, and
    its selection fingerprint and size agree with its records; else ``CardError`` naming
    the first field that does not."""
    for path, (test, expected) in _FIELDS.items():
        try:
            value = _lookup(card, path)
        except KeyError:
            raise CardError(f"{name}: malformed card: no field {path}") from None
        if not test(value):
            raise CardError(f"{name}: malformed card: {path} is {json.dumps(value)[:80]},"
                            f" expected {expected}")
    records = card["selection"]["records"]
    for number, record in enumerate(records):
        for key, (test, expected) in _RECORD_FIELDS.items():
            where = f"selection.records[{number}].{key}"
            if not isinstance(record, dict) or key not in record:
                raise CardError(f"{name}: malformed card: no field {where}")
            if not test(record[key]):
                raise CardError(f"{name}: malformed card: {where} is"
                                f" {json.dumps(record[key])[:80]}, expected {expected}")
    selection = card["selection"]
    if selection["n"] != len(records):
        raise CardError(f"{name}: malformed card: selection.n is {selection['n']} but"
                        f" selection.records holds {len(records)}")
    if digests.selection_fingerprint(r["digest"] for r in records) != selection["fingerprint"]:
        raise CardError(f"{name}: selection.fingerprint does not match selection.records:"
                        " the card was edited or damaged")
    return card


def data_fingerprints(card: Mapping[str, Any]) -> set[str]:
    """The fingerprints of the data a card selects from: its dataset's and (workflow
    cards) its pool's, the valid records, which a copy in another format shares."""
    pool = card.get("pool")
    found = {card["dataset"]["fingerprint"]}
    if isinstance(pool, dict) and _is_hex(pool.get("fingerprint")):
        found.add(pool["fingerprint"])
    return found


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """A card from its file, checked (:func:`check_card`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CardError(f"cannot read card {path}: {error}") from None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as error:
        raise CardError(f"{path}: not a card: invalid JSON at line {error.lineno}, column"
                        f" {error.colno}: {error.msg}") from None
    return check_card(card, str(path))


# ---------------------------------------------------------------------------------------
# The options of the commands that write selections (select, select-baseline)

_NEEDED = {"card_digests": "--card-digests", "card_spectrum": "--card-spectrum",
           "card_shards": "--card-shards", "card_settings": "--card-settings"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a selection's card (all needed with ``--card``)."""
    group = parser.add_argument_group("selection card (each option needed with --card)")
    group.add_argument("--card", type=Path,
                       help="Write the selection's card here (<out>.card.json).")
    group.add_argument("--card-digests", type=Path,
                       help="The run's digests table (python -m scalselect digests).")
    group.add_argument("--card-spectrum", type=Path, help="score/spectrum.json.")
    group.add_argument("--card-shards", nargs="+", type=Path,
                       help="The extraction shard directories (their manifests).")
    group.add_argument("--card-settings",
                       help='JSON: the result settings of validate and filter, and the'
                       ' method\'s own: {"validate": {...}, "filter": {...}, "select": {...}}.')
    group.add_argument("--card-budget",
                       help="The budget as asked (16%%), when --num is its resolved count.")


def from_arguments(args: argparse.Namespace, indices: np.ndarray, scores: pd.Series | None,
                   method: str, n: int, seed: int | None = None) -> None:
    """Write the card of ``args.out`` when ``args.card`` is given (``scores``:
    importance by dataset index, needed then)."""
    if args.card is None:
        return
    if scores is None:
        raise ValueError("a card needs the scores of the selected samples")
    missing = [flag for dest, flag in _NEEDED.items() if getattr(args, dest) is None]
    if missing:
        raise CardError(f"--card needs {', '.join(missing)}")
    try:
        settings = json.loads(args.card_settings)
    except json.JSONDecodeError as error:
        raise CardError(f"--card-settings is not JSON: {error}") from None
    if not isinstance(settings, dict):
        raise CardError("--card-settings must be a JSON object")
    choice = Choice(method, str(args.card_budget or args.num).strip(), n, seed,
                    settings.pop("select", {}))
    inputs = CardInputs(args.card_digests, args.card_spectrum, args.card_shards, settings)
    write_card(args.card, build_card(args.out, indices, scores, choice, inputs))
