"""``score``: importance scores of the representations in one process (METHOD.md stage 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scalselect import settings
from scalselect.settings import ScoreSettings

if TYPE_CHECKING:
    from scalselect.score.leverage import Preprocessing

HELP = (
    "Importance scores: exact rank-k leverage scores of the representations "
    "(moments, spectrum and scores in one process)."
)


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that change the scores: rank threshold and preprocessing switches."""
    settings.add_arguments(parser, ScoreSettings)


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that do not change the scores (beyond float64 rounding)."""
    parser.add_argument(
        "--backend", choices=("auto", "numpy", "torch"), default="auto",
        help="Linear algebra: auto = torch on a GPU when present, NumPy otherwise.",
    )
    parser.add_argument(
        "--block-rows", type=int, default=None, metavar="N",
        help="Rows per streamed block (default 4096).",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--features", nargs="+", required=True, metavar="PATH",
        help="Extraction shard directories, extraction directories (shard-*), or the "
        "original tool's all_representations.npz.",
    )
    parser.add_argument(
        "--out", required=True, type=Path,
        help="importance_scores.jsonl; spectrum.json and scores.parquet go next to it.",
    )
    add_preprocessing_arguments(parser)
    add_compute_arguments(parser)


def score_options(args: argparse.Namespace) -> tuple[Preprocessing, float]:
    """The preprocessing and the rank threshold the options ask for (range-checked)."""
    from scalselect.score.leverage import Preprocessing

    chosen = settings.from_arguments(ScoreSettings, args)
    prep = Preprocessing(chosen.center, chosen.standardize, chosen.l2_normalize)
    return prep, chosen.sv_threshold


def block_rows(args: argparse.Namespace) -> int:
    """Rows per streamed block: the option, else the library's default."""
    from scalselect.score.leverage import BLOCK_ROWS

    return args.block_rows or BLOCK_ROWS


def run(args: argparse.Namespace) -> int:
    from scalselect.score import leverage

    sources = leverage.open_sources(args.features)
    backend = leverage.Backend(args.backend)
    prep, sv_threshold = score_options(args)
    table, model = leverage.leverage_scores(sources, prep, sv_threshold, backend, block_rows(args))
    leverage.write_spectrum(args.out.with_name("spectrum.json"), model)
    leverage.write_scores(args.out, table)
    return 0
