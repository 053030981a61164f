"""``python -m scalselect plot-methods``: the training-free comparison of one run's
selection methods per budget, on the scored representations.

Writes ``methods.csv`` (every measure, exact), ``methods.tex`` (booktabs) and
``methods.<format>`` (:func:`scalselect.report.figures.methods_comparison`). The subsets are
those the workflow writes: ScalSelect's top-N, each random-N seed, and the picks of the
baseline selectors (``select/<method>-<N>.<ext>.picks.parquet``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from scalselect.cli.plot import (
    add_output_arguments,
    add_sources_argument,
    output_settings,
)

HELP = "Compare a run's selection methods per budget (overlap, composition, subspace retention, coverage)."
log = logging.getLogger("scalselect.plot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scalselect.data.records import FORMAT_CHOICES

    parser.add_argument("--dataset", required=True, type=Path, help="filter/dataset.json")
    parser.add_argument("--format", default="auto",
                        choices=FORMAT_CHOICES, help="Record format.")
    parser.add_argument("--source-field", default=None, help="Record field of the source label.")
    parser.add_argument("--features", required=True, nargs="+", type=Path, help="Extraction shard directories.")
    parser.add_argument("--model", required=True, type=Path, help="score/model.npz")
    parser.add_argument("--scores", required=True, type=Path, help="score/scores.parquet")
    parser.add_argument("--budgets", nargs="+", required=True, help="Budgets as configured.")
    parser.add_argument("--random-seeds", nargs="*", type=int, default=[], help="Seeds of the random subsets.")
    parser.add_argument("--picks", nargs="*", default=[], type=Path,
                        help="Baseline picks, select/<method>-<N>.<ext>.picks.parquet.")
    add_sources_argument(parser)
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from scalselect.budgets import resolve_budget
    from scalselect.methods import METHODS
    from scalselect.report import composition, diagnostics, figures, style, tables
    from scalselect.score.leverage import Model
    from scalselect.select import baselines, selection

    output_settings(args)  # range checks before any work
    began = time.perf_counter()
    scores = selection.read_scores(args.scores)
    picks = {(n, METHODS[method].label): indices
             for (method, n), indices in baselines.read_picks(args.picks).items()}
    model = Model.load(args.model)
    reps = baselines.load_representations(args.features, model)
    spectrum = model.spectrum
    basis = spectrum.basis * spectrum.singular_values[: spectrum.k]
    space = diagnostics.Space(reps.index, reps.matrix, basis,
                              float(np.square(spectrum.singular_values[: spectrum.k]).sum()))
    names = selection.budget_names((b, resolve_budget(b, len(scores)))
                                   for b in args.budgets)
    subsets = _subsets(scores, names, args.random_seeds, picks)
    sources = composition.sample_sources(args.dataset, args.format, args.source_field)
    order = composition.source_order(
        sources, None if args.sources is None else composition.read_sources(args.sources))
    table = diagnostics.methods_table(space, subsets, sources, order)
    table.insert(1, "budget_label", [style.budget_label(names[n], n) for n in table["budget"]])
    columns = _table_columns()
    with style.paper_style():
        written = [
            *style.save_figure(figures.methods_comparison(table, style.source_colors(order)),
                               args.out_dir / "methods", args.formats, args.dpi),
            *tables.write_table(table, args.out_dir / "methods", columns),
        ]
    for path in written:
        log.info("wrote %s", path)
    log.info("compared %d subsets (k = %d, coverage on %s query samples) in %.1f s",
             len(subsets), spectrum.k, sorted(set(table["coverage_queries"])),
             time.perf_counter() - began)
    return 0


def _subsets(scores, names: dict[int, str], seeds: list[int], picks: dict) -> dict:
    """Every compared subset by ``(N, method label)``: top-N, random-N per seed and the
    baselines' picks; picks of a budget not asked for are a ``UserError``."""
    from scalselect.errors import UserError
    from scalselect.methods import SCALSELECT, random_label
    from scalselect.select import selection

    subsets = {}
    for n in names:
        subsets[(n, SCALSELECT)] = selection.top_indices(scores, n)
        for seed in seeds:
            subsets[(n, random_label(seed))] = selection.random_indices(scores, n, seed)
        subsets.update({(size, label): indices for (size, label), indices in picks.items()
                        if size == n})
    unused = {key for key in picks if key not in subsets}
    if unused:
        raise UserError(f"picks of budgets not in --budgets: {sorted(unused)}")
    return subsets


def _table_columns() -> list:
    """The columns of methods.csv / methods.tex."""
    from scalselect.report import tables

    return [
        tables.Column("budget_label", "Budget", "l"),
        tables.Column("method", "Method", "l"),
        tables.Column("jaccard_scalselect", "$J$ with ScalSelect", "r", lambda v: f"{v:.3f}"),
        tables.Column("subspace_retention", "Subspace retention", "r", lambda v: f"{v:.3f}"),
        tables.Column("energy_ratio", "Rank-$k$ energy", "r", lambda v: f"{v:.3f}"),
        tables.Column("coverage_mean", "Mean NN dist.", "r", tables.latex_number),
        tables.Column("coverage_max", "Max NN dist.", "r", tables.latex_number),
    ]
