"""``python -m scalselect plot-layers``: the layer ablation of runs that differ only in
``extract.layer``.

Writes ``layer_ablation.<format>`` (:func:`scalselect.report.figures.layer_ablation`: the
normalised spectra with each run's k, and the pairwise overlap of the top-N sets) and
``layer_ablation.csv`` / ``.tex`` (per run: layer, k, rank, samples; per pair and budget:
Jaccard overlap).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from scalselect.cli.plot import (
    add_output_arguments,
    output_settings,
    read_ranked_scores,
)
from scalselect.errors import UserError

HELP = "Layer ablation: spectra and top-N overlap of runs that differ only in extract.layer."
log = logging.getLogger("scalselect.plot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", nargs=4, action="append", required=True,
        metavar=("NAME", "LAYER", "SPECTRUM", "SCORES"),
        help="A run: its name, decoder layer, score/spectrum.json and score/scores.parquet "
             "(repeat, at least twice).",
    )
    parser.add_argument("--budgets", nargs="+", required=True, help="Budgets as configured.")
    add_output_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from scalselect.report import comparison, figures, style, tables

    output_settings(args)  # range checks before any work
    if len(args.run) < 2 or len({name for name, *_ in args.run}) != len(args.run):
        raise UserError(f"give at least two distinct runs, got {[name for name, *_ in args.run]}")
    rows, scores = [], {}
    for name, layer, spectrum_path, scores_path in args.run:
        spectrum = json.loads(Path(spectrum_path).read_text())
        singular = np.asarray(spectrum["singular_values"], dtype=np.float64)
        rows.append({"run": name, "layer": int(layer), "k": int(spectrum["k"]),
                     "rank": int(spectrum["rank"]), "n": int(spectrum["n"]),
                     "label": f"layer {layer}",
                     "energy": singular**2 / np.square(singular).sum()})
        scores[name] = read_ranked_scores(Path(scores_path))
    spectra = pd.DataFrame(rows).sort_values("layer", kind="stable")
    overlap, _ = comparison.compare_runs(scores, list(dict.fromkeys(args.budgets)))
    layer_of = dict(zip(spectra["run"], spectra["layer"]))
    overlap["pair"] = [f"layer {layer_of[a]} vs {layer_of[b]}"
                       for a, b in zip(overlap["run_a"], overlap["run_b"])]
    table = spectra.drop(columns=["energy", "label"])
    headers = {}
    for budget in dict.fromkeys(args.budgets):
        rows = overlap[overlap["budget"] == str(budget)]
        for _, pair in rows.iterrows():
            for run_name, other in ((pair["run_a"], pair["run_b"]), (pair["run_b"], pair["run_a"])):
                key = f"jaccard@{budget} vs layer {layer_of[other]}"
                table.loc[table["run"] == run_name, key] = pair["jaccard"]
                headers[key] = tables.latex_escape(
                    f"{figures.overlap_budget_label(str(budget), rows)} vs layer {layer_of[other]}")
    columns = [
        tables.Column("run", "Run", "l"), tables.Column("layer", "Layer", "r"),
        tables.Column("k", "$k$", "r", tables.latex_count),
        tables.Column("n", "Samples", "r", tables.latex_count),
        *(tables.Column(key, f"$J$ @ {header}", "r", lambda v: "" if pd.isna(v) else f"{v:.3f}")
          for key, header in headers.items()),
    ]
    with style.paper_style():
        written = [
            *style.save_figure(figures.layer_ablation(spectra, overlap),
                               args.out_dir / "layer_ablation", args.formats, args.dpi),
            *tables.write_table(table, args.out_dir / "layer_ablation", columns),
        ]
    for path in written:
        log.info("wrote %s", path)
    return 0
