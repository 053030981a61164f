"""``score-apply``: the leverage scores of one shard's rows (the scoring map step)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scalselect.cli.score import add_compute_arguments, block_rows

if TYPE_CHECKING:
    import pandas as pd

    from scalselect.score.leverage import Model

HELP = "Scoring, per shard: leverage scores of its rows under the fitted model."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features", nargs="+", required=True, metavar="PATH",
        help="Shard directory (or several, or an extraction directory).",
    )
    parser.add_argument("--model", required=True, type=Path, help="Model written by score-fit.")
    parser.add_argument(
        "--out", required=True, type=Path,
        help="Scores of these rows (.parquet: index, id, importance).",
    )
    add_compute_arguments(parser)


def shard_scores(
    paths: list[str], model: Model, args: argparse.Namespace
) -> pd.DataFrame:
    """The scores of the rows under ``paths`` (shards, or an extraction directory), in
    their order: columns ``index``, ``id``, ``importance``."""
    import pandas as pd

    from scalselect.progress import Progress
    from scalselect.score import leverage

    backend = leverage.Backend(args.backend)
    sources = leverage.open_sources(paths)
    with Progress(sum(source.rows for source in sources), "rows") as progress:
        parts = [leverage.score_source(source, model, backend, block_rows(args), progress)
                 for source in sources]
    return pd.concat(parts, ignore_index=True)


def run(args: argparse.Namespace) -> int:
    from scalselect.io import atomic_write
    from scalselect.score import leverage

    model = leverage.Model.load(args.model)
    with atomic_write(args.out, "wb") as handle:
        shard_scores(args.features, model, args).to_parquet(handle, index=False)
    return 0
