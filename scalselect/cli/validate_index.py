"""``python -m scalselect validate-index``: index a dataset file once (the byte offset of
every record, its count and digest) so that validate's shards seek to their records."""

from __future__ import annotations

import argparse
import sys

HELP = "Index a dataset file: where each record starts (for sharded validation)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, help="Dataset file (JSON array, JSON Lines or parquet)."
    )
    parser.add_argument("--out", required=True, help="Index file (.npz).")


def run(args: argparse.Namespace) -> int:
    from scalselect.data.readers import write_index

    index = write_index(args.dataset, args.out)
    print(f"{args.dataset}: {index.count} records ({index.layout}), sha256 {index.sha256}",
          file=sys.stderr)
    return 0
