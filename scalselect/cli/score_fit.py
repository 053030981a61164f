"""``score-fit``: merge the shards' moments, preprocess, decompose (the reduce step)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scalselect.cli.score import (
    add_compute_arguments,
    add_preprocessing_arguments,
    block_rows,
    score_options,
)

if TYPE_CHECKING:
    from scalselect.score.leverage import Model

HELP = (
    "Scoring, reduce step: merge moments, eigendecompose the preprocessed Gram matrix, "
    "choose k; writes spectrum.json and the scoring model."
)


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs and outputs of the fit (shared with ``score-shards``)."""
    parser.add_argument(
        "--partials", nargs="+", required=True, type=Path, metavar="NPZ",
        help="Moments files written by score-partial.",
    )
    parser.add_argument(
        "--features", nargs="*", default=(), metavar="PATH",
        help="The shards again; read (a second pass) only with --l2-normalize.",
    )
    parser.add_argument("--spectrum", required=True, type=Path, help="spectrum.json to write.")
    parser.add_argument("--model", required=True, type=Path, help="Scoring model (.npz) to write.")
    add_preprocessing_arguments(parser)
    add_compute_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_fit_arguments(parser)


def fit_and_save(args: argparse.Namespace) -> Model:
    """Fit the model from ``args.partials`` and write ``args.model`` and
    ``args.spectrum``; returns the model."""
    from scalselect.score import leverage

    prep, sv_threshold = score_options(args)
    if prep.l2_normalize and not args.features:
        raise leverage.LeverageError("--l2-normalize needs --features for the second pass")
    sources = leverage.open_sources(args.features) if prep.l2_normalize else ()
    moments = leverage.merge_moments([leverage.Moments.load(p) for p in args.partials])
    backend = leverage.Backend(args.backend)
    model = leverage.fit(moments, prep, sv_threshold, backend, sources, block_rows(args))
    model.save(args.model)
    leverage.write_spectrum(args.spectrum, model)
    return model


def run(args: argparse.Namespace) -> int:
    fit_and_save(args)
    return 0
