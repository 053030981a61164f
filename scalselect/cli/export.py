"""``export``: a selection in a trainer's record format (LLaVA JSON, ShareGPT messages
JSON Lines with a LLaMA-Factory entry, or a plain id list)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "Write a selection for training: LLaVA JSON, ShareGPT messages JSON Lines (LLaMA-Factory,"
    " ms-swift) or a plain id list, into a folder."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.data.records import FORMAT_CHOICES
    from scalselect.select.export import EXPORTS

    parser.add_argument("selection", type=Path,
                        help="A selection (JSON, JSON Lines or parquet; any record format).")
    parser.add_argument("--to", required=True, choices=EXPORTS, help="The format to write.")
    parser.add_argument("--out", required=True, type=Path,
                        help="The folder to write (replaced as a whole): the file, images/ for"
                        " images embedded in the selection, dataset_info.json (sharegpt).")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                        help="Record format of the selection (default: detected).")
    parser.add_argument("--name", help="File and dataset name (default: the selection's name).")


def run(args: argparse.Namespace) -> int:
    import logging

    from scalselect.select.export import export_selection

    count = export_selection(args.selection, args.out, args.to, fmt=args.format, name=args.name)
    logging.getLogger(__name__).info("%d records as %s -> %s", count, args.to, args.out)
    return 0
