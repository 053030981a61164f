"""``python -m scalselect plot-compare``: agreement of several runs on the same dataset.

Writes ``overlap.<format>`` (Jaccard overlap of the top-N sets per budget and pair of
runs), ``rank_agreement.<format>`` (two runs: percentile ranks against each other; more:
the matrix of Spearman's ρ) and the table ``comparison.csv`` / ``comparison.tex`` (one
row per pair: samples scored by both, Spearman's ρ, Jaccard per budget).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from scalselect.cli.plot import (
    add_output_arguments,
    output_settings,
    read_ranked_scores,
)
from scalselect.errors import UserError

HELP = "Compare runs on the same dataset: top-N overlap (Jaccard) and score rank correlation (Spearman)."
log = logging.getLogger("scalselect.plot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", nargs=3, action="append", required=True,
        metavar=("NAME", "SCORES", "DATASET"),
        help="A run: its name, score/scores.parquet and filter/dataset.json (repeat, at "
             "least twice).",
    )
    parser.add_argument("--budgets", nargs="+", required=True,
                        help="Budgets as configured (counts or percentages, e.g. 100000 16%%).")
    add_output_arguments(parser)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    from scalselect.report import comparison, figures, style, tables

    output_settings(args)  # range checks before any work
    names = [name for name, _, _ in args.run]
    if len(names) < 2 or len(set(names)) != len(names):
        raise UserError(f"give at least two distinct runs to compare, got {names}")
    datasets = {name: Path(dataset) for name, _, dataset in args.run}
    digests = {name: _digest(path) for name, path in datasets.items()}
    if len(set(digests.values())) > 1:
        raise UserError(
            "runs can only be compared on the same filtered dataset (samples are matched "
            "by dataset index), but these differ: "
            + ", ".join(f"{name}: {datasets[name]}" for name in names)
        )
    budgets = list(dict.fromkeys(args.budgets))
    scores = {name: read_ranked_scores(Path(path)) for name, path, _ in args.run}
    overlap, correlation = comparison.compare_runs(scores, budgets)
    overlap["pair"] = overlap["run_a"] + " vs " + overlap["run_b"]

    wide = correlation.copy()
    columns = [
        tables.Column("run_a", "Run A", "l"), tables.Column("run_b", "Run B", "l"),
        tables.Column("n_common", "Samples", "r", tables.latex_count),
        tables.Column("spearman", r"Spearman $\rho$", "r", lambda v: f"{v:.3f}"),
    ]
    for budget in budgets:
        key = f"jaccard@{budget}"
        rows = overlap[overlap["budget"] == str(budget)]
        wide[key] = rows["jaccard"].to_numpy()
        header = f"$J$ @ {tables.latex_escape(figures.overlap_budget_label(str(budget), rows))}"
        columns.append(tables.Column(key, header, "r", lambda v: f"{v:.3f}"))

    ranks = (
        comparison.percentile_ranks(scores[names[0]], scores[names[1]])
        if len(names) == 2 else None
    )
    with style.paper_style():
        written = [
            *style.save_figure(figures.overlap(overlap), args.out_dir / "overlap",
                               args.formats, args.dpi),
            *style.save_figure(figures.rank_agreement(ranks, correlation, names),
                               args.out_dir / "rank_agreement", args.formats, args.dpi),
            *tables.write_table(wide, args.out_dir / "comparison", columns),
        ]
    for path in written:
        log.info("wrote %s", path)
    return 0
