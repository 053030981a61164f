"""``apply``: rebuild a selection from any copy of its dataset, by the content digests
of its card. Exit status 1 when selected records are missing or changed (nothing is
written), 2 for bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.locations import as_location

HELP = (
    "Rebuild a selection from any copy of its dataset (JSON, JSON Lines or parquet, any"
    " order) by the content digests of its card."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.data.records import FORMAT_CHOICES

    parser.add_argument("card", type=Path, help="The selection's card (<selection>.card.json).")
    parser.add_argument("--dataset", required=True, type=as_location,
                        help="Your copy of the dataset (any order, any of the three file formats).")
    parser.add_argument("--out", required=True, type=Path,
                        help="The selection to write: the matched records unchanged, in the"
                        " copy's order and file format (.parquet from a parquet copy).")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                        help="Record format of the copy (default: detected).")
    parser.add_argument("--image-root", type=as_location,
                        help="Also check each selected sample's image files under this folder"
                        " against the card (embedded images are always checked).")
    parser.add_argument("--allow-missing", action="store_true",
                        help="Write the intact selected records even when others are missing or"
                        " changed, and list those in <out>.missing.json.")


def run(args: argparse.Namespace) -> int:
    import logging

    from scalselect.select.apply import ApplyRefused, apply_card

    log = logging.getLogger(__name__)
    try:
        report = apply_card(args.card, args.dataset, args.out, fmt=args.format,
                            image_root=args.image_root, allow_missing=args.allow_missing)
    except ApplyRefused as refusal:
        log.error("%s", refusal)
        return 1
    copy = report["copy"]
    log.info("%d of %d selected records -> %s; the copy holds %d records, %s the card's"
             " dataset", report["written"], report["selected"], args.out, copy["records"],
             "the same as" if copy["same_as_card"] else "not the same records as")
    return 0
