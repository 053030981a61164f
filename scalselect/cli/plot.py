"""``python -m scalselect plot FIGURES``: the paper figures and tables of one run.

Figure groups, split by what they depend on so that a new budget redraws only the
budget-dependent ones:

- ``scores``: score histogram, score violin and spectrum (scores and spectrum only);
- ``budgets``: ranking curve, cumulative share, four-panel distribution and the budget
  table (also the selection summary);
- ``composition``: data sources of the full set, top-N and random-N (also the dataset
  and the random seeds);
- ``gallery``: images of the highest- and lowest-scored samples with their kept vision
  tokens (recomputed with the model for just those samples), and each of them alone in
  ``OUT_DIR/attention_tokens/<dataset index>.png`` for the selection browser.

Every figure is written as ``OUT_DIR/<name>.<format>`` for each ``--formats``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import pandas as pd

from scalselect import settings
from scalselect.errors import UserError
from scalselect.locations import as_location
from scalselect.settings import ExtractSettings, PlotSettings

HELP = "Draw a run's paper figures and tables (score distribution, spectrum, composition, gallery)."
log = logging.getLogger("scalselect.plot")

# Output stems (the workflow's rules name the same files).
BUDGET_TABLE = "budgets"
COMPOSITION = "composition"
GALLERY = "attention_gallery"
# The gallery's samples one by one, ``<dataset index>.png``, for the selection browser.
TOKENS = "attention_tokens"


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out-dir``, ``--formats`` and ``--dpi`` (shared with ``plot-compare``,
    ``plot-methods`` and ``plot-layers``, which check them with :func:`output_settings`)."""
    parser.add_argument("--out-dir", required=True, type=Path, help="Directory of the figures.")
    settings.add_arguments(parser, PlotSettings, "formats", "dpi")


def output_settings(args: argparse.Namespace) -> PlotSettings:
    """The figures' settings of the options (range-checked: ``UserError``)."""
    return settings.from_arguments(PlotSettings, args)


def add_sources_argument(parser: argparse.ArgumentParser) -> None:
    """``--sources`` (shared with ``plot-methods`` and ``browse``)."""
    parser.add_argument(
        "--sources", type=Path, default=None,
        help="The sources of every run of the configuration, most frequent first (written by"
        " `sources`): each keeps one colour across the runs' figures and browsers (default:"
        " this dataset's sources by frequency).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    groups = parser.add_subparsers(dest="figures", required=True, metavar="FIGURES")

    scores = groups.add_parser("scores", help="Score histogram, violin and spectrum.")
    scores.add_argument("--scores", required=True, type=Path, help="score/scores.parquet")
    scores.add_argument("--spectrum", required=True, type=Path, help="score/spectrum.json")
    add_output_arguments(scores)

    budgets = groups.add_parser("budgets", help="Ranking, cumulative share, 4 panels, budget table.")
    budgets.add_argument("--scores", required=True, type=Path, help="score/scores.parquet")
    budgets.add_argument("--summary", required=True, type=Path, help="select/summary.csv")
    add_output_arguments(budgets)

    composition = groups.add_parser("composition", help="Data sources of full set, top-N, random-N.")
    composition.add_argument("--dataset", required=True, type=as_location, help="filter/dataset.json")
    composition.add_argument("--scores", required=True, type=Path, help="score/scores.parquet")
    composition.add_argument("--summary", required=True, type=Path, help="select/summary.csv")
    composition.add_argument("--random-seeds", nargs="*", type=int, default=[0],
                             help="Seeds of the random subsets (as selected).")
    composition.add_argument("--format", default="auto",
                             help="Record format of the dataset (default: detected).")
    composition.add_argument("--source-field", default=None,
                             help="Record field holding the source label (default: first "
                                  "folder of the image path).")
    add_sources_argument(composition)
    add_output_arguments(composition)

    gallery = groups.add_parser("gallery", help="Highest/lowest-scored images, kept tokens.")
    gallery.add_argument("--dataset", required=True, type=as_location, help="filter/dataset.json")
    gallery.add_argument("--format", default="auto",
                         help="Record format of the dataset (default: detected).")
    gallery.add_argument("--image-root", required=True, type=as_location)
    gallery.add_argument("--scores", required=True, type=Path, help="score/scores.parquet")
    gallery.add_argument("--model", required=True, help="Model directory.")
    settings.add_arguments(gallery, PlotSettings, "gallery_samples")
    settings.add_arguments(gallery.add_argument_group("the run's extraction settings"),
                           ExtractSettings, *(f.name for f in dataclasses.fields(ExtractSettings)))
    add_output_arguments(gallery)


def read_ranked_scores(path: Path) -> pd.DataFrame:
    """``scores.parquet`` in rank order; a clear error when missing, malformed or empty."""
    from scalselect.select import selection

    try:
        table = selection.read_scores(path)
    except (OSError, KeyError, ValueError) as error:
        raise UserError(f"cannot read scores {path}: {error}") from None
    if len(table) < 1:
        raise UserError(f"{path} holds no scores")
    return table


def read_summary(path: Path) -> pd.DataFrame:
    """``select/summary.csv`` with the budget column kept as written (``"16%"``)."""
    from scalselect.select import selection

    try:
        table = pd.read_csv(path, dtype={"budget": str})
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read selection summary {path}: {error}") from None
    if tuple(table.columns) != selection.SUMMARY_COLUMNS:
        raise UserError(
            f"{path}: columns {tuple(table.columns)}, expected {selection.SUMMARY_COLUMNS}"
        )
    return table


def run(args: argparse.Namespace) -> int:
    from scalselect.report import style

    output_settings(args)  # range checks before any work
    with style.paper_style():
        written = {
            "scores": _scores, "budgets": _budgets, "composition": _composition,
            "gallery": _gallery,
        }[args.figures](args)
    for path in written:
        log.info("wrote %s", path)
    return 0


def _save(fig, args: argparse.Namespace, name: str) -> list[Path]:
    from scalselect.report import style

    return style.save_figure(fig, args.out_dir / name, args.formats, args.dpi)


def _scores(args: argparse.Namespace) -> list[Path]:
    import json

    from scalselect.report import figures

    importance = read_ranked_scores(args.scores)["importance"].to_numpy()
    try:
        spectrum = json.loads(args.spectrum.read_text(encoding="utf-8"))
        energy, k, tau = spectrum["cumulative_energy"], spectrum["k"], spectrum["sv_threshold"]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"cannot read spectrum {args.spectrum}: {error!r}") from None
    return [
        *_save(figures.score_panel("histogram", importance), args, "score_histogram"),
        *_save(figures.score_panel("violin", importance), args, "score_violin"),
        *_save(figures.spectrum(energy, int(k), float(tau)), args, "spectrum"),
    ]


def _budgets(args: argparse.Namespace) -> list[Path]:
    from scalselect.report import figures, tables

    importance = read_ranked_scores(args.scores)["importance"].to_numpy()
    summary = read_summary(args.summary)
    marks = figures.budget_marks(summary)
    return [
        *_save(figures.score_panel("ranking", importance, marks), args, "score_ranking"),
        *_save(figures.score_panel("cumulative", importance, marks), args, "score_cumulative"),
        *_save(figures.score_distribution(importance, marks), args, "score_distribution"),
        *tables.write_table(summary, args.out_dir / BUDGET_TABLE, tables.BUDGET_COLUMNS),
    ]


def _composition(args: argparse.Namespace) -> list[Path]:
    from scalselect.io import atomic_write
    from scalselect.report import composition, figures, style

    sources = composition.sample_sources(args.dataset, args.format, args.source_field)
    scores = read_ranked_scores(args.scores)
    if scores["index"].max() >= len(sources):
        raise UserError(
            f"{args.scores} scores dataset index {scores['index'].max()} but {args.dataset} "
            f"has {len(sources)} records: they belong to different runs"
        )
    subsets = composition.selection_subsets(
        scores, read_summary(args.summary), args.random_seeds, len(sources)
    )
    order = composition.source_order(
        sources, None if args.sources is None else composition.read_sources(args.sources))
    table = composition.composition_table(sources, subsets, order)
    csv = args.out_dir / f"{COMPOSITION}.csv"
    with atomic_write(csv) as handle:
        table.to_csv(handle, index=False)
    fig = figures.composition(composition.share_matrix(table), style.source_colors(order))
    return [*_save(fig, args, COMPOSITION), csv]


def _gallery(args: argparse.Namespace) -> list[Path]:
    from scalselect.report import figures, gallery

    scores = read_ranked_scores(args.scores)
    highest, lowest = gallery.gallery_entries(
        args.dataset, args.format, args.image_root, scores, output_settings(args).gallery_samples,
        args.model, settings.from_arguments(ExtractSettings, args),
    )
    written = _save(figures.attention_gallery(highest, lowest), args, GALLERY)
    return [*written, _save_overlays([*highest, *lowest], args.out_dir / TOKENS)]


def _save_overlays(entries: list, folder: Path) -> Path:
    """Each gallery sample's :func:`~scalselect.report.figures.token_overlay` as
    ``folder/<dataset index>.png``, and the index the selection browser reads
    (:func:`~scalselect.report.browse.overlay_index`); the folder is replaced as a whole."""
    from scalselect.io import atomic_directory
    from scalselect.report import browse, figures, style

    with atomic_directory(folder) as partial:
        for entry in entries:
            style.save_figure(figures.token_overlay(entry), partial / str(entry.index), ["png"],
                              figures.TOKEN_OVERLAY_DPI)
        (partial / "index.js").write_text(browse.overlay_index([e.index for e in entries]),
                                          encoding="utf-8")
    return folder
