"""``python -m scalselect filter``: keep the valid samples of a validated dataset.

Streams the dataset and writes the valid records as they come, unchanged and in
dataset order, in the input's record format (JSON Lines when ``--out`` ends in
``.jsonl``, parquet with the dataset's schema for a parquet dataset, else a JSON array;
text-only samples only with ``--keep-text-only``), and logs the removed counts per
reason. Memory holds the removed indices, never the records. A count in
``--budgets`` above the kept samples, or ``--extract-shards`` above them, fails before
anything is written (and so before any extract job). Refuses a report
made from different dataset content (its ``dataset_sha256`` and ``num_samples`` must
match).
"""

from __future__ import annotations

import argparse
import sys

from scalselect import settings
from scalselect.settings import FilterSettings

HELP = "Keep the valid samples of a dataset, using its validation report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="Dataset file the report was made from.")
    parser.add_argument("--report", required=True, help="Report of `validate` for this dataset.")
    parser.add_argument("--out", required=True, help="Filtered dataset (JSON Lines if named *.jsonl, parquet for a parquet "
                        "dataset, else a JSON array).")
    parser.add_argument("--index", help="Also write the filtered dataset's index here (extract jobs seek"
                        " to their shard's records with it).")
    settings.add_arguments(parser, FilterSettings)
    parser.add_argument(
        "--budgets", nargs="*", default=[], metavar="BUDGET",
        help="Selection budgets to check against the kept samples: a count larger than "
        "them fails here, before extraction (percentages always fit).",
    )
    parser.add_argument(
        "--extract-shards", type=int, default=None, metavar="N",
        help="Extract shards the workflow will run on the kept samples: more shards than "
        "kept samples fails here, before extraction (a shard would hold no sample).",
    )


def run(args: argparse.Namespace) -> int:
    from scalselect.config import count_budget_problems, shard_count_problems
    from scalselect.data.readers import file_kind
    from scalselect.data.validation import (
        check_report_matches,
        drop_indices,
        load_report,
    )
    from scalselect.data.writers import copy_records
    from scalselect.errors import UserError
    from scalselect.io import file_digest
    from scalselect.progress import Progress

    keep = settings.from_arguments(FilterSettings, args)
    report = load_report(args.report)
    drop, removed = drop_indices(report, keep_text_only=keep.keep_text_only)
    kept = report["num_samples"] - len(drop)
    budgets = count_budget_problems(args.budgets, kept)
    problems = ["select.budgets: " + "; ".join(budgets)] if budgets else []
    if args.extract_shards is not None:
        problems += shard_count_problems(args.extract_shards, kept)
    if problems:
        raise UserError(f"{args.dataset}: " + "; ".join(problems) + " (nothing was written)")
    # A parquet file is hashed first; a JSON stream hashes the bytes as it reads them.
    digest = file_digest(args.dataset) if file_kind(args.dataset) == "parquet" else None

    def matches(count: int, sha256: str | None) -> None:
        check_report_matches(report, args.dataset, count, digest or sha256)

    with Progress(report["num_samples"], "records") as progress:
        copy_records(args.dataset, args.out, drop=drop, finish=matches, index=args.index,
                     progress=progress)
    print(f"kept {kept} of {report['num_samples']} samples -> {args.out}", file=sys.stderr)
    for reason, count in removed.items():
        print(f"  removed {count:>8}  {reason}", file=sys.stderr)
    return 0
