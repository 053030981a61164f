"""``python -m scalselect export-npz``: the original tool's ``all_representations.npz``.

Reads shard directories (or extraction directories of ``shard-*`` subdirectories) and
writes one ``.npz`` with ``representations`` (float32 ``[N, d]``, dataset order, failed
samples left out) and ``sample_ids`` (the ids as strings, as the original tool writes
them), atomically.
"""

from __future__ import annotations

import argparse
import sys

HELP = "Write the original tool's all_representations.npz from extraction shards."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, nargs="+", help="Shard or extraction directories.")
    parser.add_argument("--out", required=True, help="Output .npz file.")


def run(args: argparse.Namespace) -> int:
    from scalselect.errors import UserError
    from scalselect.extract.features import export_npz

    try:
        count, dim = export_npz(args.features, args.out)
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None
    print(f"wrote {count} representations of dimension {dim} -> {args.out}", file=sys.stderr)
    return 0
