"""``python -m scalselect validate-merge``: the validation report from the parts of every
shard (``validate --shard``), with the duplicate-id check over the whole dataset."""

from __future__ import annotations

import argparse
import sys

from scalselect.cli.validate import add_check_arguments

HELP = "Merge the shards' validation parts into the report (duplicate ids checked across shards)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_check_arguments(parser)
    parser.add_argument("--index", required=True, help="The dataset's index (validate-index).")
    parser.add_argument("--parts", nargs="+", required=True, help="The shards' parts, in order.")
    parser.add_argument("--out", required=True, help="Report file (JSON).")


def run(args: argparse.Namespace) -> int:
    from scalselect.cli.validate import settings_of
    from scalselect.data.index import DatasetIndex
    from scalselect.data.validation import format_summary, merge_parts
    from scalselect.data.validation_part import Part
    from scalselect.io import write_json

    index = DatasetIndex.load(args.index)
    index.check(args.dataset)
    report = merge_parts(args.dataset, index, [Part.load(p) for p in args.parts],
                         args.image_root, settings_of(args), fmt=args.format)
    write_json(args.out, report)
    print(format_summary(report), file=sys.stderr)
    return 0
