"""``score``: importance scores of the representations in one process (METHOD.md stage 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scalselect.score.leverage import Preprocessing

HELP = (
    "Importance scores: exact rank-k leverage scores of the representations "
    "(moments, spectrum and scores in one process)."
)


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that change the scores: rank threshold and preprocessing switches."""
    parser.add_argument(
        "--sv-threshold", type=float, default=0.9,
        help="Cumulative spectral energy that fixes the rank k (default 0.9).",
    )
    parser.add_argument(
        "--center", action=argparse.BooleanOptionalAction, default=True,
        help="Centre feature columns (default on, the paper's setting).",
    )
    parser.add_argument(
        "--standardize", action=argparse.BooleanOptionalAction, default=False,
        help="Divide columns by their standard deviation (default off).",
    )
    parser.add_argument(
        "--l2-normalize", action=argparse.BooleanOptionalAction, default=False,
        help="L2-normalise rows after centring/standardising (default off).",
    )


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


def preprocessing(args: argparse.Namespace) -> Preprocessing:
    """The :class:`~scalselect.score.leverage.Preprocessing` the options ask for."""
    from scalselect.score.leverage import Preprocessing

    return Preprocessing(args.center, args.standardize, args.l2_normalize)


def block_rows(args: argparse.Namespace) -> int:
    """Rows per streamed block: the option, else the library's default."""
    from scalselect.score.leverage import BLOCK_ROWS

    return args.block_rows or BLOCK_ROWS


def run(args: argparse.Namespace) -> int:
    from scalselect.score import leverage

    sources = leverage.open_sources(args.features)
    backend = leverage.Backend(args.backend)
    table, model = leverage.leverage_scores(
        sources, preprocessing(args), args.sv_threshold, backend, block_rows(args)
    )
    leverage.write_spectrum(args.out.with_name("spectrum.json"), model)
    leverage.write_scores(args.out, table)
    return 0
