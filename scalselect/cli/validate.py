"""``python -m scalselect validate``: check every sample and image, write a JSON report.

The report (written atomically) holds ``dataset``, ``dataset_sha256``, ``format``,
``image_root``, ``settings``, ``num_samples``, ``num_valid``, ``num_invalid``,
``num_text_only``, ``counts`` (invalid samples per reason), ``sources`` (valid samples
per source label), ``num_image_files`` and ``image_files`` (distinct image files per
outcome), ``duplicate_ids`` (``[{"id", "indices"}]``), ``invalid``
(``[{"index", "id", "reasons", "details"}]``, in dataset order) and ``text_only``
(indices of valid samples without images). A readable summary goes to stderr.

With ``--shard I --num-shards N --index FILE`` it checks one shard and writes that
shard's part (``.npz``) instead; ``validate-merge`` makes the report of all parts
(``validate-index`` writes the index). The report is the same either way.

Exit code 0 whenever the dataset could be read (invalid samples are findings); 2 with a
message for unreadable files, invalid JSON, a top level that is not a list, an empty
dataset, or mixed/unknown record formats.
"""

from __future__ import annotations

import argparse
import os
import sys

from scalselect import settings
from scalselect.settings import ValidateSettings

HELP = "Check every sample and image of a dataset; write a JSON report (or one shard's part)."


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset, its image root and the checks' settings (shared with
    ``validate-merge``, whose report records them)."""
    from scalselect.data.records import FORMAT_CHOICES

    parser.add_argument(
        "--dataset", required=True, help="Dataset file (JSON array, JSON Lines or parquet)."
    )
    parser.add_argument(
        "--image-root", default=".", help="Directory relative image paths are joined to."
    )
    parser.add_argument(
        "--format",
        default="auto",
        choices=FORMAT_CHOICES,
        help="Record format (default: detected from the records).",
    )
    settings.add_arguments(parser, ValidateSettings)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_check_arguments(parser)
    parser.add_argument(
        "--out", required=True, help="Report file (JSON); with --shard, the shard's part (.npz)."
    )
    parser.add_argument(
        "--source-field", default=None, help="Record field used as the source label."
    )
    parser.add_argument("--index", default=None, help="The dataset's index (validate-index).")
    parser.add_argument("--shard", type=int, default=None, help="Check only this shard.")
    parser.add_argument("--num-shards", type=int, default=1, help="Number of shards.")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="Processes checking images (default: the available cores).",
    )
    parser.add_argument("--no-progress", action="store_true",
                        help="No progress lines (in a log) or bar (on a terminal).")


def settings_of(args: argparse.Namespace) -> ValidateSettings:
    """The checks' settings from the command line; ``UserError`` for a bad value or a
    missing image root."""
    from scalselect.errors import UserError
    from scalselect.locations import check

    checks = settings.from_arguments(ValidateSettings, args)
    problem = check(args.image_root, folder=True)
    if problem:
        raise UserError(f"image root: {problem}")
    return checks


def run(args: argparse.Namespace) -> int:
    from scalselect.data.index import DatasetIndex
    from scalselect.data.validation import format_summary, validate_file, validate_part
    from scalselect.errors import UserError
    from scalselect.io import write_json

    checks = settings_of(args)
    workers, progress = max(1, args.workers), not args.no_progress
    if args.shard is None:
        report = validate_file(args.dataset, args.image_root, checks, fmt=args.format,
                               source_field=args.source_field, workers=workers,
                               progress=progress)
        write_json(args.out, report)
        print(format_summary(report), file=sys.stderr)
        return 0
    if args.index is None or not 0 <= args.shard < args.num_shards:
        raise UserError("--shard needs --index and 0 <= --shard < --num-shards")
    part = validate_part(args.dataset, args.image_root, checks, fmt=args.format,
                         source_field=args.source_field, index=DatasetIndex.load(args.index),
                         shard=args.shard, num_shards=args.num_shards, workers=workers,
                         progress=progress)
    part.save(args.out)
    print(f"shard {args.shard} of {args.num_shards}: records {part.start}-{part.stop - 1},"
          f" {len(part.findings)} with defects found so far", file=sys.stderr)
    return 0
