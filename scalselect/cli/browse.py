"""``python -m scalselect browse``: a run's selection browser, ``results/<run>/browse``
(:mod:`scalselect.report.browse`): every scored sample in rank order with its images,
conversation, score, source and the selections that keep it; a static page that opens
from the filesystem."""

from __future__ import annotations

import argparse
from pathlib import Path

from scalselect.cli.plot import add_sources_argument
from scalselect.locations import as_location

HELP = "Write a run's selection browser: a static page of kept and dropped samples."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.data.records import FORMAT_CHOICES

    parser.add_argument("--dataset", required=True, type=as_location, help="filter/dataset.json")
    parser.add_argument("--format", default="auto",
                        choices=FORMAT_CHOICES, help="Record format.")
    parser.add_argument("--source-field", default=None, help="Record field of the source label.")
    parser.add_argument("--image-root", required=True, type=as_location, help="The run's image root.")
    parser.add_argument("--scores", required=True, type=Path, help="score/scores.parquet")
    parser.add_argument("--budgets", nargs="+", required=True, help="Budgets as configured.")
    parser.add_argument("--random-seeds", nargs="*", type=int, default=[],
                        help="Seeds of the random subsets.")
    parser.add_argument("--picks", nargs="*", default=[], type=Path,
                        help="Baseline picks, select/<method>-<N>.<ext>.picks.parquet.")
    add_sources_argument(parser)
    parser.add_argument("--run", required=True, help="The run's name (the page's title).")
    parser.add_argument("--thumbnails", type=int, default=None,
                        help="Samples per thumbnail group: best ranked, worst ranked, and each"
                        " difference view (default 500).")
    parser.add_argument("--out", required=True, type=Path, help="The browser's folder.")


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from scalselect.report import browse, composition
    from scalselect.select import baselines, selection

    began = time.perf_counter()
    scores = selection.read_scores(args.scores)
    picks = baselines.read_picks(args.picks)
    subsets = browse.run_subsets(scores, args.budgets, args.random_seeds, picks)
    stats = browse.build_browser(
        args.dataset, scores, subsets, args.out, image_root=args.image_root, run=args.run,
        fmt=args.format, source_field=args.source_field,
        order=None if args.sources is None else composition.read_sources(args.sources),
        thumbnails=browse.THUMBNAILS if args.thumbnails is None else args.thumbnails,
    )
    logging.getLogger("scalselect.report.browse").info(
        "%s: %d samples (%d unscored left out), %d selections, %d page files, %d thumbnails"
        " (%d images unreadable) in %.1f s", args.out, stats["samples"], stats["unscored"],
        len(subsets), stats["pages"], stats["thumbnails"], stats["thumbnails_failed"],
        time.perf_counter() - began)
    return 0
