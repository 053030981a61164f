"""``digests``: the content digests of a run's records, for its selection cards."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.locations import as_location

HELP = (
    "Digest every record of the filtered dataset (content and image bytes) and fingerprint"
    " the configured dataset, for the run's selection cards."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.data.records import FORMAT_CHOICES

    parser.add_argument("--dataset", required=True, type=as_location,
                        help="The dataset as configured (its fingerprint goes into the cards).")
    parser.add_argument("--filtered", required=True, type=Path,
                        help="The filtered dataset the selections are drawn from.")
    parser.add_argument("--image-root", default=".", help="Relative image paths are joined to it.")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                        help="Record format (default: detected).")
    parser.add_argument("--source-field", help="Record field holding the source label.")
    parser.add_argument("--out", required=True, type=Path, help="The table (parquet).")


def run(args: argparse.Namespace) -> int:
    import logging

    from scalselect.select.digests import write_digest_table

    facts = write_digest_table(args.dataset, args.filtered, args.out, fmt=args.format,
                               image_root=args.image_root, source_field=args.source_field)
    logging.getLogger(__name__).info(
        "%s: %d records, fingerprint %s; %d filtered records digested -> %s",
        args.dataset, facts["dataset"]["records"], facts["dataset"]["fingerprint"][:16],
        facts["pool"]["records"], args.out)
    return 0
