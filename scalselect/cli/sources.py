"""``python -m scalselect sources``: the data sources of every run of a configuration,
most frequent first, from their validation reports (``results/sources.json``). The order
fixes each source's colour in every figure and browser of the runs
(:func:`scalselect.report.style.source_colors`), so that a source looks the same in all of them."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "List the sources of a configuration's runs, most frequent first: their colours."
TEXT_ONLY_CHOICES = ("keep", "drop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", required=True, nargs=2, action="append", metavar=("REPORT", "TEXT_ONLY"),
        help="A run's validation report, and whether its filter keeps or drops text-only "
        "samples (keep|drop); once per run.")
    parser.add_argument("--out", required=True, type=Path, help="sources.json to write.")


def run(args: argparse.Namespace) -> int:
    from scalselect.data.validation import load_report
    from scalselect.errors import UserError
    from scalselect.io import write_json
    from scalselect.report import composition, style

    bad = [text_only for _, text_only in args.run if text_only not in TEXT_ONLY_CHOICES]
    if bad:
        raise UserError(f"--run REPORT TEXT_ONLY: TEXT_ONLY must be keep or drop, not {bad[0]!r}")
    order = composition.config_sources(
        (load_report(report), text_only == "keep") for report, text_only in args.run)
    write_json(args.out, {"sources": order, "colors": style.source_colors(order)})
    return 0
