"""``compare``: two selections (files or cards) of the same data, matched by content."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "Compare two selections (selection files or *.card.json cards) of the same data, from"
    " any copies, runs or versions: sizes, overlap, Jaccard, sources, rank agreement."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.data.records import FORMAT_CHOICES

    parser.add_argument("a", type=Path, help="A selection file, or a card (*.card.json).")
    parser.add_argument("b", type=Path, help="Another one.")
    parser.add_argument("--json", action="store_true", help="Print the comparison as JSON.")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                        help="Record format of selection files (default: detected).")
    parser.add_argument("--source-field",
                        help="Record field of selection files holding the source label.")


def run(args: argparse.Namespace) -> int:
    import json

    from scalselect.report.selections import compare, read_side, render_text

    sides = [read_side(path, args.format, args.source_field) for path in (args.a, args.b)]
    result = compare(*sides)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else render_text(result))
    return 0
