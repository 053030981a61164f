"""Validation of a dataset before any model sees it: every sample and every image.

A sample is *invalid* when any of these reason codes applies to it (the report counts
samples per reason, and lists every invalid sample with all its reasons):

- structure (see :func:`scalselect.dataset.inspect_record`): ``not_an_object``,
  ``missing_messages``, ``messages_not_a_list``, ``empty_messages``,
  ``message_not_an_object``, ``missing_role``, ``unknown_role``, ``missing_content``,
  ``bad_content``, ``images_malformed``, ``image_path_not_a_string``;
- ids: ``missing_id``, ``bad_id_type`` (neither an integer nor a string; booleans and
  floats are not integers), ``duplicate_id``;
- turns: ``no_user_turn``, ``no_assistant_turn``; ``image_tag_mismatch`` when the
  messages hold ``<image>`` tags but not one per image (no tags at all is fine);
- images (paths joined to the image root): ``missing_image``, ``empty_image_file``,
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

Each distinct image file is checked once, however many samples use it, in parallel over
worker processes that receive paths and send back small results.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import stat
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from scalselect.dataset import (
    IMAGE_TAG,
    Dataset,
    DatasetError,
    Problem,
    RecordFormat,
    resolve_image,
)

REPORT_VERSION = 1
# Fields `filter` relies on.
REPORT_KEYS = ("dataset", "dataset_sha256", "format", "num_samples", "invalid", "text_only")
# Paths per task sent to a worker: large enough to amortise the inter-process traffic.
CHUNK = 256


@dataclass(frozen=True)
class Settings:
    """What a sample must satisfy; ``allow_duplicate_ids`` keeps repeated ids valid."""

    decode_images: bool = True
    min_image_side: int = 28
    max_aspect_ratio: float = 200.0
    allow_duplicate_ids: bool = False


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of checking one image file: ``reason`` is ``None`` when it is usable."""

    reason: str | None
    detail: str = ""
    width: int = 0
    height: int = 0


@dataclass
class Finding:
    """The defects of one sample, in the order found."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, reason: str, detail: str) -> None:
        self.problems.append(Problem(reason, detail))


def check_image(
    path: str | os.PathLike,
    decode: bool = True,
    min_side: int = 28,
    max_aspect_ratio: float = 200.0,
) -> ImageCheck:
    """Check one image file.

    Parameters
    ----------
    path : str or PathLike
        The file.
    decode : bool
        Fully decode the pixels (finds truncated and corrupt files); otherwise only
        the header is read.
    min_side : int
        Smallest acceptable width and height, in pixels.
    max_aspect_ratio : float
        Largest acceptable long side / short side.

    Returns
    -------
    ImageCheck
        ``reason`` is one of ``missing_image``, ``empty_image_file``, ``not_an_image``,
        ``corrupt_image``, ``decompression_bomb``, ``image_too_small``,
        ``extreme_aspect_ratio``, or ``None``.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        return ImageCheck("missing_image", f"{error.strerror} ({path})")
    if not stat.S_ISREG(status.st_mode):
        return ImageCheck("missing_image", f"not a regular file ({path})")
    if status.st_size == 0:
        return ImageCheck("empty_image_file", "zero bytes")
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; both are bombs here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if decode:
                    image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            return ImageCheck("decompression_bomb", str(error))
        except UnidentifiedImageError:
            return ImageCheck("not_an_image", "not a recognised image format")
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            return ImageCheck("corrupt_image", str(error) or type(error).__name__)
    short, long = min(width, height), max(width, height)
    if short < min_side:
        return ImageCheck(
            "image_too_small", f"{width}x{height}, a side under {min_side} px", width, height
        )
    if long / short > max_aspect_ratio:
        return ImageCheck(
            "extreme_aspect_ratio",
            f"{width}x{height}, aspect ratio {long / short:.0f}:1 > {max_aspect_ratio:g}:1",
            width,
            height,
        )
    return ImageCheck(None, "", width, height)


def _check_chunk(task: tuple[list[str], Settings]) -> list[ImageCheck]:
    paths, settings = task
    return [
        check_image(p, settings.decode_images, settings.min_image_side, settings.max_aspect_ratio)
        for p in paths
    ]


def check_images(
    paths: list[str], settings: Settings, workers: int = 1, progress: bool = True
) -> dict[str, ImageCheck]:
    """Check distinct image files in parallel; returns path -> :class:`ImageCheck`."""
    chunks = [(paths[i : i + CHUNK], settings) for i in range(0, len(paths), CHUNK)]
    results: dict[str, ImageCheck] = {}
    bar = tqdm(
        total=len(paths),
        desc="images",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        mininterval=1.0,
    )
    with bar, contextlib.ExitStack() as stack:
        mapper: Callable[..., Iterable[list[ImageCheck]]] = map
        if workers > 1 and len(chunks) > 1:
            # spawn: forked children would copy the parent's (possibly huge) record list
            # page by page as their garbage collector touches it.
            context = multiprocessing.get_context("spawn")
            mapper = stack.enter_context(context.Pool(min(workers, len(chunks)))).imap
        for (chunk, _), checks in zip(chunks, mapper(_check_chunk, chunks)):
            results.update(zip(chunk, checks))
            bar.update(len(chunk))
    return results


def _id_key(value: Any) -> tuple[str, Any]:
    # 7 and "7" are different ids.
    return (type(value).__name__, value)


def validate_dataset(
    dataset: Dataset,
    image_root: str | os.PathLike,
    settings: Settings = Settings(),
    *,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Check every sample of ``dataset``; returns the report (see the CLI for its fields)."""
    spec = dataset.spec
    findings: dict[int, Finding] = defaultdict(Finding)
    # Index -> (image paths, source label) of the readable samples; the messages are
    # not kept, which matters at LLaVA-665K scale.
    readable: dict[int, tuple[tuple[str, ...], str]] = {}
    id_positions: dict[tuple[str, Any], list[int]] = defaultdict(list)
    for index, record in enumerate(dataset.records):
        sample, problems = dataset.inspect(index)
        if problems:
            findings[index].problems.extend(problems)
        if isinstance(record, dict):
            _check_id(record, index, findings, id_positions)
        if sample is None:
            continue
        readable[index] = (sample.images, sample.source)
        roles = {m.role for m in sample.messages}
        if "user" not in roles:
            findings[index].add(
                "no_user_turn", f"no '{_role_name(spec, 'user')}' turn in '{spec.messages_key}'"
            )
        if "assistant" not in roles:
            findings[index].add(
                "no_assistant_turn",
                f"no '{_role_name(spec, 'assistant')}' turn in '{spec.messages_key}'",
            )
        tags = sum(m.content.count(IMAGE_TAG) for m in sample.messages)
        if tags and tags != len(sample.images):
            findings[index].add(
                "image_tag_mismatch",
                f"{tags} {IMAGE_TAG} tag(s) in '{spec.messages_key}'"
                f" but {len(sample.images)} image(s)",
            )

    duplicates = [(key, positions) for key, positions in id_positions.items() if len(positions) > 1]
    if not settings.allow_duplicate_ids:
        for (_, value), positions in duplicates:
            for index in positions:
                others = [p for p in positions if p != index]
                findings[index].add(
                    "duplicate_id", f"id {value!r} is also used by record(s) {_short_list(others)}"
                )

    files = {
        path: str(resolve_image(image_root, path))
        for images, _ in readable.values()
        for path in images
    }
    distinct = sorted(set(files.values()))
    checks = check_images(distinct, settings, workers=workers, progress=progress)
    for index, (images, _) in readable.items():
        for number, path in enumerate(images):
            check = checks[files[path]]
            if check.reason is not None:
                findings[index].add(
                    check.reason,
                    f"{_image_field(spec, dataset.records[index], number)} {path!r}: {check.detail}",
                )

    invalid = sorted(i for i, f in findings.items() if f.problems)
    counts = Counter(reason for i in invalid for reason in {p.reason for p in findings[i].problems})
    invalid_set = set(invalid)
    valid = [i for i in range(len(dataset)) if i not in invalid_set]
    text_only = [i for i in valid if not readable[i][0]]
    image_counts = Counter(c.reason or "ok" for c in checks.values())
    return {
        "version": REPORT_VERSION,
        "dataset": str(dataset.path),
        "dataset_sha256": dataset.sha256,
        "format": dataset.format,
        "image_root": str(image_root),
        "settings": asdict(settings),
        "num_samples": len(dataset),
        "num_valid": len(valid),
        "num_invalid": len(invalid),
        "num_text_only": len(text_only),
        "counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sources": dict(Counter(readable[i][1] for i in valid).most_common()),
        "num_image_files": len(distinct),
        "image_files": dict(sorted(image_counts.items())),
        "duplicate_ids": [
            {"id": value, "indices": positions} for (_, value), positions in duplicates
        ],
        "invalid": [
            {
                "index": i,
                "id": _report_id(dataset.records[i]),
                "reasons": list(dict.fromkeys(p.reason for p in findings[i].problems)),
                "details": [p.detail for p in findings[i].problems],
            }
            for i in invalid
        ],
        "text_only": text_only,
    }


def _check_id(
    record: dict,
    index: int,
    findings: dict[int, Finding],
    id_positions: dict[tuple[str, Any], list[int]],
) -> None:
    if "id" not in record:
        findings[index].add("missing_id", "no 'id' field")
        return
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        findings[index].add("bad_id_type", f"'id' is {value!r}, neither an integer nor a string")
        return
    id_positions[_id_key(value)].append(index)


def _report_id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else None


def _role_name(spec: RecordFormat, role: str) -> str:
    return next(name for name, normal in spec.roles.items() if normal == role)


def _image_field(spec: RecordFormat, record: dict, number: int) -> str:
    # LLaVA's "image" may hold one path as a string: name it without a subscript.
    if isinstance(record[spec.images_key], str):
        return spec.images_key
    return f"{spec.images_key}[{number}]"


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


def filter_indices(
    report: dict[str, Any], dataset: Dataset, keep_text_only: bool = False
) -> tuple[list[int], dict[str, int]]:
    """Positions of the samples to keep, and removed samples per reason.

    A removed sample counts once under each of its reasons; text-only samples that are
    not kept count under ``text_only``. Raises ``DatasetError`` when the report was made
    from other dataset content.
    """
    if report["dataset_sha256"] != dataset.sha256 or report["num_samples"] != len(dataset):
        raise DatasetError(
            f"the validation report ({report['dataset']}, {report['num_samples']} samples) does"
            f" not match {dataset.path} ({len(dataset)} samples, different content): validate"
            " this dataset again"
        )
    drop = {entry["index"] for entry in report["invalid"]}
    removed = Counter(reason for entry in report["invalid"] for reason in entry["reasons"])
    if not keep_text_only:
        drop.update(report["text_only"])
        if report["text_only"]:
            removed["text_only"] = len(report["text_only"])
    keep = [i for i in range(len(dataset)) if i not in drop]
    return keep, dict(sorted(removed.items(), key=lambda kv: (-kv[1], kv[0])))
