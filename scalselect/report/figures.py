"""The paper figures: one small function per figure, each returning a matplotlib Figure.

Every function draws with :mod:`scalselect.report.style` (call them inside
:func:`scalselect.report.style.paper_style`) and takes plain data, not file paths, so the
figures can be tested and reused outside the workflow. Saving is
:func:`scalselect.report.style.save_figure`.

Figures per run:

- score distribution — four panels (histogram, ranking curve with the budgets marked,
  cumulative share of importance, violin with box) as one double-column figure
  (:func:`score_distribution`) and each panel alone (:func:`score_panel`);
- the spectrum: cumulative energy of the singular values with τ_sv and k
  (:func:`spectrum`);
- data-source composition of the full set, the top-N and the random-N subsets
  (:func:`composition`);
- attention gallery: images of the highest- and lowest-scored samples with the kept
  vision tokens (:func:`attention_gallery`).

Across runs: top-N overlap per budget (:func:`overlap`) and rank agreement of the scores
(:func:`rank_agreement`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image

from scalselect.methods import METHODS
from scalselect.report import style
from scalselect.select.selection import budget_names

IMPORTANCE_LABEL = "Importance score π"
PANELS = ("histogram", "ranking", "cumulative", "violin")
# A scale becomes logarithmic when the data span more than this ratio.
LOG_RANGE = 100.0
# Vertices of a drawn curve, and outliers drawn one by one, at most: beyond that, vector
# files grow without any visible difference at print size.
MAX_CURVE_POINTS = 2000
MAX_FLIERS = 2000
# Samples drawn as dots in the rank-agreement plot; more are binned (hexagons).
MAX_SCATTER = 5000


@dataclass(frozen=True)
class BudgetMark:
    """One selection size marked on the score figures (budgets of equal N merged)."""

    n: int
    fraction: float
    label: str


def budget_marks(summary: pd.DataFrame) -> list[BudgetMark]:
    """The distinct budgets of ``select/summary.csv`` (columns ``budget``, ``n``,
    ``fraction``), smallest first, labelled as asked: ``16% (N = 100K)`` for a
    percentage, ``N = 100K (16%)`` for a count."""
    fractions = dict(zip(summary["n"].astype(int), summary["fraction"].astype(float)))
    marks = []
    for n, budget in budget_names(zip(summary["budget"], summary["n"])).items():
        label = style.budget_label(budget, n)
        if not budget.endswith("%"):
            label += f" ({style.format_percent(fractions[n])})"
        marks.append(BudgetMark(n, fractions[n], label))
    return marks


def _spans_decades(values: np.ndarray) -> bool:
    """Whether positive ``values`` are better shown on a log scale (robust range)."""
    if len(values) < 2 or np.any(values <= 0):
        return False
    low, high = np.quantile(values, [0.001, 0.999])
    return bool(high / low > LOG_RANGE)


def _mark_style(i: int) -> dict:
    return {
        "color": style.MARKS[i % len(style.MARKS)],
        "linestyle": style.DASHES[i % len(style.DASHES)],
        "linewidth": 0.9,
    }


def curve_points(n: int, log: bool, count: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of a length-``n`` monotone curve worth drawing: all of them when
    ``n <= count``, else ``count`` spread evenly (log-spaced for a log axis), first and
    last included. A 665K-point line would make a multi-megabyte PDF and look the same.

    Examples
    --------
    >>> curve_points(5, log=False).tolist()
    [0, 1, 2, 3, 4]
    >>> curve_points(1001, log=False, count=5).tolist()
    [0, 250, 500, 750, 1000]
    """
    if n <= count:
        return np.arange(n)
    spaced = np.geomspace(1, n, count) - 1 if log else np.linspace(0, n - 1, count)
    return np.unique(np.round(spaced).astype(np.int64))


def draw_histogram(ax: Axes, importance: np.ndarray) -> None:
    """Histogram of the scores; log-spaced bins when they span decades, log counts when
    a few bins dominate. The mean (k/N for leverage scores) is marked."""
    log_x = _spans_decades(importance)
    bins = min(60, max(10, int(np.sqrt(len(importance)))))
    if log_x:
        edges = np.geomspace(importance.min(), importance.max(), bins + 1)
    elif np.ptp(importance) > 0:
        edges = np.linspace(importance.min(), importance.max(), bins + 1)
    else:  # all scores equal (e.g. k = N - 1): one bar, 10 % of the value wide
        value = float(importance[0])
        half = 0.05 * abs(value) or 0.5
        edges = np.array([value - half, value + half])
    counts, _, _ = ax.hist(
        importance, bins=edges, color=style.SELECTED, alpha=0.85, edgecolor="white",
        linewidth=0.3,
    )
    nonzero = counts[counts > 0]
    if len(nonzero) and counts.max() > 20 * np.median(nonzero):
        ax.set_yscale("log")
    else:
        # Head room for the legend above the tallest bar.
        ax.set_ylim(0, counts.max() * 1.2)
    ax.yaxis.set_major_formatter(style.count_formatter)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(style.power_formatter)
    else:
        ax.xaxis.set_major_formatter(style.TickFormatter())
    mean = float(importance.mean())
    ax.axvline(mean, color=style.NEUTRAL, linestyle=":", linewidth=0.9,
               label=f"mean = {style.format_value(mean)}")
    ax.legend(loc="upper right")
    ax.set_xlabel(IMPORTANCE_LABEL)
    ax.set_ylabel("Samples")


def draw_ranking(ax: Axes, importance: np.ndarray, marks: Sequence[BudgetMark]) -> None:
    """Scores in rank order (rank 1 = most important), budgets as vertical lines."""
    log_x = len(importance) >= 1000
    ranks = curve_points(len(importance), log_x) + 1
    ax.plot(ranks, importance[ranks - 1], color=style.SELECTED, linewidth=1.2)
    if log_x:
        ax.set_xscale("log")
    if _spans_decades(importance):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(style.power_formatter)
    else:
        ax.yaxis.set_major_formatter(style.TickFormatter())
    ax.xaxis.set_major_formatter(style.count_formatter)
    for i, mark in enumerate(marks):
        ax.axvline(mark.n, label=mark.label, **_mark_style(i))
    ax.set_xlim(1 if ax.get_xscale() == "log" else 0, len(importance))
    ax.set_xlabel("Rank")
    ax.set_ylabel(IMPORTANCE_LABEL)


def draw_cumulative(ax: Axes, importance: np.ndarray, marks: Sequence[BudgetMark]) -> None:
    """Share of the total importance held by the top ranks; the diagonal is what a
    uniform score (or a random subset, in expectation) would give."""
    n = len(importance)
    share = np.concatenate([[0.0], np.cumsum(importance) / importance.sum()])
    points = curve_points(n + 1, log=False)
    ax.plot([0, 1], [0, 1], color=style.RANDOM, linestyle=":", linewidth=0.9,
            label="uniform")
    ax.plot(points / n, share[points], color=style.SELECTED, linewidth=1.2)
    for i, mark in enumerate(marks):
        kw = _mark_style(i)
        y = share[mark.n]
        ax.plot([mark.fraction, mark.fraction], [0, y], label=mark.label, **kw)
        ax.plot([0, mark.fraction], [y, y], **{**kw, "label": None})
        ax.plot(mark.fraction, y, "o", color=kw["color"], markersize=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_formatter(style.percent_formatter)
    ax.yaxis.set_major_formatter(style.percent_formatter)
    ax.set_xlabel("Top-ranked share of samples")
    ax.set_ylabel("Share of total importance")


def draw_violin(ax: Axes, importance: np.ndarray) -> None:
    """Horizontal violin with the quartile box, whiskers (1.5 IQR) and mean; in log10
    space when the scores span decades."""
    log_x = _spans_decades(importance)
    values = np.log10(importance) if log_x else importance
    if np.ptp(values) > 0:
        parts = ax.violinplot(values, orientation="horizontal", showextrema=False,
                              widths=0.85)
        for body in parts["bodies"]:
            body.set_facecolor(style.SELECTED)
            body.set_edgecolor("none")
            body.set_alpha(0.35)
    # Past a few thousand outliers the violin shows the tails; dots would only bloat files.
    ax.boxplot(
        values, orientation="horizontal", widths=0.18, showmeans=True,
        showfliers=_outliers(values) <= MAX_FLIERS,
        flierprops={"marker": ".", "markersize": 2, "markeredgecolor": style.NEUTRAL,
                    "alpha": 0.6},
        medianprops={"color": style.HIGHLIGHT, "linewidth": 1.2},
        meanprops={"marker": "D", "markersize": 3, "markerfacecolor": "white",
                   "markeredgecolor": "black", "markeredgewidth": 0.6},
        boxprops={"linewidth": 0.8}, whiskerprops={"linewidth": 0.8},
        capprops={"linewidth": 0.8},
    )
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.set_ylim(0.45, 1.55)
    if log_x:
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda v, _p: style.format_power(10.0 ** v))
        )
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    else:
        ax.xaxis.set_major_formatter(style.TickFormatter())
    ax.legend(
        handles=[
            Line2D([], [], color=style.HIGHLIGHT, linewidth=1.2, label="median"),
            Line2D([], [], marker="D", linestyle="none", markersize=3,
                   markerfacecolor="white", markeredgecolor="black", label="mean"),
        ],
        loc="upper right", ncols=2,
    )
    ax.set_xlabel(IMPORTANCE_LABEL)


def _outliers(values: np.ndarray) -> int:
    """Number of values beyond the 1.5 IQR whiskers of a box plot."""
    q1, q3 = np.percentile(values, [25, 75])
    reach = 1.5 * (q3 - q1)
    return int(((values < q1 - reach) | (values > q3 + reach)).sum())


def _draw_panel(
    ax: Axes, panel: str, importance: np.ndarray, marks: Sequence[BudgetMark]
) -> None:
    if panel == "histogram":
        draw_histogram(ax, importance)
    elif panel == "ranking":
        draw_ranking(ax, importance, marks)
    elif panel == "cumulative":
        draw_cumulative(ax, importance, marks)
    elif panel == "violin":
        draw_violin(ax, importance)
    else:
        raise ValueError(f"unknown score panel {panel!r}; expected one of {PANELS}")


def score_panel(
    panel: str, importance: np.ndarray, marks: Sequence[BudgetMark] = ()
) -> Figure:
    """One panel of the score distribution as a single-column figure.

    Parameters
    ----------
    panel : str
        ``"histogram"``, ``"ranking"``, ``"cumulative"`` or ``"violin"``.
    importance : ndarray of shape (n,)
        Scores sorted descending (rank order).
    marks : sequence of BudgetMark
        Budgets to mark (ranking and cumulative panels).
    """
    height = 1.5 if panel == "violin" else style.SINGLE_COLUMN / 1.5
    fig, ax = style.new_figure(style.SINGLE_COLUMN, height)
    _draw_panel(ax, panel, np.asarray(importance, dtype=np.float64), marks)
    if marks and panel in ("ranking", "cumulative"):
        ax.legend(loc="upper right" if panel == "ranking" else "lower right")
    return fig


def score_distribution(importance: np.ndarray, marks: Sequence[BudgetMark]) -> Figure:
    """The four score panels, (a)-(d), as one double-column figure; the budgets share
    one legend above the panels."""
    fig, axes = style.new_figure(style.DOUBLE_COLUMN, 4.6, nrows=2, ncols=2)
    importance = np.asarray(importance, dtype=np.float64)
    for letter, ax, panel in zip("abcd", axes.flat, PANELS):
        _draw_panel(ax, panel, importance, marks)
        style.panel_label(ax, letter)
    if marks:
        _fitting_legend(fig, axes.flat[1])
    # Panel (c)'s own legend names only its reference line; budgets are in the figure's.
    handles, labels = axes.flat[2].get_legend_handles_labels()
    axes.flat[2].legend([handles[labels.index("uniform")]], ["uniform"], loc="lower right")
    return fig


def spectrum(cumulative_energy: Sequence[float], k: int, sv_threshold: float) -> Figure:
    """Cumulative spectral energy ``sum_{j<=i} s_j^2 / sum s_j^2`` against the number of
    components ``i``, with the threshold τ_sv and the chosen rank k; the energy of each
    component alone is drawn faintly for the decay."""
    cumulative = np.asarray(cumulative_energy, dtype=np.float64)
    components = np.arange(1, len(cumulative) + 1)
    each = np.diff(np.concatenate([[0.0], cumulative]))
    fig, ax = style.new_figure(style.SINGLE_COLUMN)
    ax.plot(components, each, color=style.RANDOM, linewidth=0.9,
            label="energy of component")
    ax.plot(components, cumulative, color=style.SELECTED, linewidth=1.4,
            label="cumulative energy")
    ax.axhline(sv_threshold, color=style.NEUTRAL, linestyle="--", linewidth=0.8,
               label=rf"$\tau_{{\mathrm{{sv}}}}$ = {style.format_percent(sv_threshold)}")
    ax.axvline(k, color=style.HIGHLIGHT, linestyle=":", linewidth=1.0,
               label=f"k = {style.format_count(k)}")
    ax.plot(k, cumulative[k - 1], "o", color=style.HIGHLIGHT, markersize=4,
            markeredgecolor="white", markeredgewidth=0.5, zorder=3)
    if len(cumulative) > 50:
        ax.set_xscale("log")
        ax.set_xlim(1, len(cumulative))
    else:
        ax.set_xlim(0.5, len(cumulative) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(style.count_formatter)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(style.percent_formatter)
    ax.set_xlabel("Components (singular values)")
    ax.set_ylabel("Spectral energy")
    # Above the axes: inside, the legend sat on the k line wherever k fell.
    _fitting_legend(fig, ax)
    return fig


def _text_color(color: str) -> str:
    r, g, b = to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _share_label(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.01 else f"{100 * share:.1f}%"


def _label_small_segments(fig: Figure, ax: Axes, row: int, segments: list[tuple[float, float]]
                          ) -> None:
    """Percentages of the segments too narrow to hold one (``(centre, share)``, left to
    right), in a line just above the bar: each as close to its segment as the labels to
    its right allow, so that none overlap."""
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    limit = ax.transData.transform((1, row))[0]
    for centre, share in reversed(segments):
        label = ax.text(centre, row - 0.32, _share_label(share), ha="center", va="bottom",
                        fontsize=5, color="black")
        box = label.get_window_extent(renderer)
        if box.x1 > limit:
            shifted = to_data.transform((box.x0 + box.width / 2 - (box.x1 - limit), 0))[0]
            label.set_x(shifted)
            box = label.get_window_extent(renderer)
        limit = box.x0 - 2


def composition(shares: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Horizontal stacked bars: the share of each data source (columns, in order) in each
    subset (rows, top to bottom: the full set first), each source in its colour of
    ``colors`` (:func:`scalselect.report.style.source_colors`). Values are fractions summing to 1
    per row; every segment carries its percentage, inside when it fits (at least 8 %),
    else just above the bar."""
    sources = list(shares.columns)
    height = 0.9 + 0.28 * len(shares)
    fig, ax = style.new_figure(style.SINGLE_COLUMN, height)
    rows = np.arange(len(shares))
    left = np.zeros(len(shares))
    small: list[list[tuple[float, float]]] = [[] for _ in rows]
    for source in sources:
        widths = shares[source].to_numpy(dtype=np.float64)
        ax.barh(rows, widths, left=left, height=0.6, color=colors[source], label=source,
                edgecolor="white", linewidth=0.4)
        for row, (x, w) in enumerate(zip(left, widths)):
            if w >= 0.08:
                ax.text(x + w / 2, row, _share_label(w), ha="center", va="center",
                        fontsize=6, color=_text_color(colors[source]))
            elif w > 0:
                small[row].append((x + w / 2, w))
        left += widths
    ax.set_yticks(rows, list(shares.index))
    # Top to bottom, with room above the first bar for its small segments' labels.
    ax.set_ylim(len(shares) - 0.5, -0.8)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(style.percent_formatter)
    ax.set_xlabel("Share of samples")
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    _fitting_legend(fig, ax, handlelength=1.0, columnspacing=1.0)
    # Place the small labels in the final layout, and keep them out of it.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    for row, segments in enumerate(small):
        _label_small_segments(fig, ax, row, segments)
    return fig


def _fitting_legend(fig: Figure, ax: Axes, **kw) -> None:
    """A figure legend of ``ax``'s labelled artists above the axes, in as many columns
    (at most 6) as fit the figure's width."""
    handles, labels = ax.get_legend_handles_labels()
    for ncols in range(min(len(labels), 6), 0, -1):
        legend = fig.legend(handles, labels, loc="outside upper center", ncols=ncols, **kw)
        width = legend.get_window_extent(fig.canvas.get_renderer()).width
        if ncols == 1 or width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


@dataclass(frozen=True)
class GalleryEntry:
    """One sample of the attention gallery.

    ``image`` is the region of the image the model saw; ``grid`` its vision-token grid
    (rows, cols); ``kept`` the indices (row-major in that grid) of the kept tokens;
    ``index`` the sample's dataset index.
    """

    image: Image.Image
    grid: tuple[int, int]
    kept: np.ndarray
    importance: float
    rank: int
    index: int


def _cell_borders(dropped: np.ndarray, cell_w: float, cell_h: float) -> list:
    """Line segments along the cell edges that separate dropped from kept cells."""
    rows, cols = dropped.shape
    segments = []
    vertical = dropped[:, 1:] != dropped[:, :-1]
    for r, c in zip(*np.nonzero(vertical)):
        x = (c + 1) * cell_w
        segments.append([(x, r * cell_h), (x, (r + 1) * cell_h)])
    horizontal = dropped[1:, :] != dropped[:-1, :]
    for r, c in zip(*np.nonzero(horizontal)):
        y = (r + 1) * cell_h
        segments.append([(c * cell_w, y), ((c + 1) * cell_w, y)])
    return segments


def _draw_tokens(ax: Axes, entry: GalleryEntry) -> None:
    width, height = entry.image.size
    ax.imshow(entry.image, extent=(0, width, height, 0), interpolation="antialiased")
    rows, cols = entry.grid
    mask = np.ones(rows * cols, dtype=bool)
    mask[np.asarray(entry.kept, dtype=np.int64)] = False
    # Dim the dropped tokens; the kept ones stay as the model saw them, and the border
    # between the two is traced so that it shows on dark and busy images too.
    dropped = mask.reshape(rows, cols)
    shade = np.zeros((rows, cols, 4))
    shade[..., 3] = np.where(dropped, 0.6, 0.0)
    ax.imshow(shade, extent=(0, width, height, 0), interpolation="nearest")
    ax.add_collection(LineCollection(
        _cell_borders(dropped, width / cols, height / rows), colors=style.PALETTE[6],
        linewidths=0.6,
    ))
    # Bottom-aligned, so that the captions of a row line up whatever the aspect ratios.
    ax.set_anchor("S")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    kept = len(entry.kept)
    ax.set_xlabel(
        f"#{style.format_count(entry.rank)}  π = {style.format_value(entry.importance)}\n"
        f"kept {kept}/{rows * cols} tokens",
        fontsize=6, labelpad=2,
    )


def attention_gallery(
    highest: Sequence[GalleryEntry], lowest: Sequence[GalleryEntry]
) -> Figure:
    """Two rows of images, the highest-scored samples above and the lowest below; the
    vision tokens dropped by the attention threshold are dimmed, as a legend above
    says."""
    cols = max(len(highest), len(lowest), 1)
    panel = style.DOUBLE_COLUMN / max(cols, 4)
    fig, axes = style.new_figure(style.DOUBLE_COLUMN, 2 * (panel + 0.3) + 0.1,
                                 nrows=2, ncols=cols, squeeze=False)
    for row, (entries, name) in enumerate(((highest, "Highest"), (lowest, "Lowest"))):
        for col in range(cols):
            ax = axes[row][col]
            if col < len(entries):
                _draw_tokens(ax, entries[col])
            else:
                ax.set_axis_off()
        axes[row][0].set_ylabel(f"{name} scores", fontsize=8)
    kept = Patch(facecolor="white", edgecolor=style.PALETTE[6], linewidth=0.6,
                 label="kept vision tokens")
    dropped = Patch(facecolor=(0, 0, 0, 0.6), edgecolor=style.PALETTE[6], linewidth=0.6,
                    label="dropped (dimmed)")
    fig.legend(handles=[kept, dropped], loc="outside upper center", ncols=2)
    return fig


# Size of :func:`token_overlay`: 2 inches wide at 100 dpi, about the browser's thumbnails.
TOKEN_OVERLAY_WIDTH = 2.0
TOKEN_OVERLAY_DPI = 100


def token_overlay(entry: GalleryEntry) -> Figure:
    """One sample of the attention gallery alone, drawn as in the gallery (its dropped
    vision tokens dimmed, rank, score and kept count below): the selection browser
    shows it in the sample's row."""
    width, height = entry.image.size
    fig, ax = style.new_figure(TOKEN_OVERLAY_WIDTH,
                               TOKEN_OVERLAY_WIDTH * height / width + 0.3)
    _draw_tokens(ax, entry)
    return fig


def overlap(table: pd.DataFrame) -> Figure:
    """Jaccard overlap of the top-N sets of pairs of runs, per budget (columns ``pair``,
    ``budget``, ``jaccard``, ``random_jaccard``; budgets in table order); a dotted
    segment marks the expected overlap of two random subsets of the same sizes."""
    fig, ax = style.new_figure(style.SINGLE_COLUMN)
    _overlap_bars(ax, table, first_colour=0)
    ax.set_xlabel("Budget")
    _fitting_legend(fig, ax)
    return fig


def _overlap_bars(ax: Axes, table: pd.DataFrame, first_colour: int) -> None:
    """Grouped bars of the top-N Jaccard overlap per budget, one colour per pair (from
    palette entry ``first_colour`` on), each with a dotted segment at the overlap two
    random subsets of the same sizes would have."""
    pairs = list(dict.fromkeys(table["pair"]))
    budgets = list(dict.fromkeys(table["budget"]))
    positions = np.arange(len(budgets))
    width = 0.8 / max(1, len(pairs))
    for i, pair in enumerate(pairs):
        rows = table[table["pair"] == pair].set_index("budget").reindex(budgets)
        x = positions - 0.4 + width * (i + 0.5)
        ax.bar(x, rows["jaccard"], width=width * 0.92,
               color=style.PALETTE[(i + first_colour) % 7], label=pair)
        ax.hlines(rows["random_jaccard"], x - width * 0.46, x + width * 0.46,
                  color="black", linestyle=":", linewidth=1.0)
    ax.plot([], [], color="black", linestyle=":", linewidth=1.0, label="random subsets")
    ax.set_xticks(positions, [overlap_budget_label(b, table[table["budget"] == b]) for b in budgets])
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(style.TickFormatter())
    ax.set_ylabel("Jaccard overlap of top-N")


def overlap_budget_label(budget: str, rows: pd.DataFrame) -> str:
    """A budget of the overlap table as asked and as resolved in the runs it compares
    (``n_a``, ``n_b``): ``16% (N = 40)``, or ``16% (N = 39–40)`` where the runs scored
    different numbers of samples."""
    sizes = sorted({*rows["n_a"].astype(int), *rows["n_b"].astype(int)})
    if len(sizes) == 1:
        return style.budget_label(budget, sizes[0])
    return f"{budget} (N = {style.format_count(sizes[0])}–{style.format_count(sizes[-1])})"


def rank_agreement(
    ranks: pd.DataFrame | None, correlation: pd.DataFrame, runs: Sequence[str]
) -> Figure:
    """Agreement of two or more runs' scores.

    Two runs: each sample's percentile rank in one run against the other (one dot per
    sample, or hexagonal bins, darker = more samples, beyond ``MAX_SCATTER``),
    Spearman's ρ in the legend. ``ranks`` has the columns
    ``x``, ``y`` (percentile ranks in [0, 1]). More runs: the matrix of Spearman's ρ
    (``correlation`` with columns ``run_a``, ``run_b``, ``spearman``).
    """
    if len(runs) == 2 and ranks is not None:
        fig, ax = style.new_figure(style.SINGLE_COLUMN, style.SINGLE_COLUMN * 0.9)
        rho = float(correlation["spearman"].iloc[0])
        if len(ranks) <= MAX_SCATTER:
            ax.scatter(ranks["x"], ranks["y"], s=4, color=style.SELECTED, alpha=0.6,
                       linewidths=0)
        else:
            ax.hexbin(ranks["x"], ranks["y"], gridsize=40, cmap="Blues", mincnt=1,
                      extent=(0, 1, 0, 1), linewidths=0.1)
        ax.plot([0, 1], [0, 1], color=style.NEUTRAL, linestyle=":", linewidth=0.8,
                label=f"Spearman ρ = {rho:.2f}")
        ax.set_aspect("equal")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_formatter(style.percent_formatter)
        ax.yaxis.set_major_formatter(style.percent_formatter)
        ax.set_xlabel(f"Percentile rank, {runs[0]}")
        ax.set_ylabel(f"Percentile rank, {runs[1]}")
        ax.legend(loc="upper left")
        return fig
    size = style.SINGLE_COLUMN
    fig, ax = style.new_figure(size, size * 0.85)
    matrix = np.eye(len(runs))
    position = {run: i for i, run in enumerate(runs)}
    for _, row in correlation.iterrows():
        a, b = position[row["run_a"]], position[row["run_b"]]
        matrix[a, b] = matrix[b, a] = row["spearman"]
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    for a in range(len(runs)):
        for b in range(len(runs)):
            ax.text(b, a, f"{matrix[a, b]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if abs(matrix[a, b]) > 0.6 else "black")
    ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right")
    ax.set_yticks(range(len(runs)), runs)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Spearman ρ")
    return fig


# Random seeds after the first, in the methods comparison: random's colour, hatched.
HATCHES = (None, "////", "....", "xxxx", "\\\\\\\\")
# Panels of the methods comparison: table column, axis label, fixed y range (or None).
METHOD_MEASURES = (
    ("jaccard_scalselect", "Jaccard overlap\nwith ScalSelect", (0, 1)),
    ("subspace_retention", "Dominant-subspace\nretention", (0, 1)),
    ("energy_ratio", "Rank-k energy\n(subset / full set)", None),
    ("coverage_mean", "Mean distance to\nnearest selected", None),
    ("coverage_max", "Max distance to\nnearest selected", None),
)


def methods_comparison(table: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Training-free comparison of selection methods: one panel per measure of
    :data:`METHOD_MEASURES` (grouped bars: budgets on the x axis, one bar per method),
    and the data-source composition of each method's subset at the largest budget
    (columns ``share:<source>``). ``table`` is :func:`scalselect.report.diagnostics.methods_table`'s
    with each budget's ``budget_label`` (:func:`scalselect.report.style.budget_label`). Each
    method has its colour (:func:`scalselect.report.style.method_color`; random seeds after the
    first are hatched), each source its colour of ``colors``
    (:func:`scalselect.report.style.source_colors`), none shared."""
    methods = list(dict.fromkeys(table["method"]))
    budgets = sorted(set(table["budget"].astype(int)))
    labels = dict(zip(table["budget"].astype(int), table["budget_label"]))
    keys = {method.label: name for name, method in METHODS.items()}
    seeds = [m for m in methods if m not in keys]  # random_label(seed)
    fig, axes = style.new_figure(style.DOUBLE_COLUMN, 4.6, nrows=2, ncols=3)
    positions = np.arange(len(budgets))
    width = 0.8 / len(methods)
    for letter, ax, (key, label, limits) in zip("abcde", axes.flat, METHOD_MEASURES):
        for i, method in enumerate(methods):
            rows = table[table["method"] == method].set_index("budget").reindex(budgets)
            hatch = HATCHES[seeds.index(method) % len(HATCHES)] if method in seeds else None
            ax.bar(positions - 0.4 + width * (i + 0.5), rows[key], width=width * 0.92,
                   color=style.method_color(keys.get(method, "random")), hatch=hatch,
                   edgecolor="white", linewidth=0.3, label=method)
        ax.set_xticks(positions, [labels[b] for b in budgets])
        if limits:
            ax.set_ylim(*limits)
        ax.yaxis.set_major_formatter(style.TickFormatter())
        ax.set_ylabel(label)
        style.panel_label(ax, letter)
    ax = axes.flat[5]
    largest = table[table["budget"].astype(int) == budgets[-1]]
    share_columns = [c for c in table.columns if c.startswith("share:")]
    left = np.zeros(len(largest))
    rows = np.arange(len(largest))
    for column in share_columns:
        widths = largest[column].to_numpy(dtype=np.float64)
        source = column.removeprefix("share:")
        ax.barh(rows, widths, left=left, height=0.7, label=source, color=colors[source],
                edgecolor="white", linewidth=0.4)
        left += widths
    ax.set_yticks(rows, list(largest["method"]))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(style.percent_formatter)
    ax.set_xlabel(f"Source share, {labels[budgets[-1]]}")
    ax.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.0, 1.0), handlelength=0.8)
    style.panel_label(ax, "f")
    _fitting_legend(fig, axes.flat[0])
    return fig


def layer_ablation(spectra: pd.DataFrame, overlap: pd.DataFrame) -> Figure:
    """Layer ablation: (a) the normalised spectrum ``s_j^2 / sum s^2`` of each run
    against the component index, each run's k marked; (b) the Jaccard overlap of the
    runs' top-N sets per budget and pair.

    ``spectra`` has one row per run: ``label``, ``energy`` (the normalised spectrum, a
    sequence) and ``k``; ``overlap`` is :func:`scalselect.report.comparison.compare_runs`'s
    with a ``pair`` label column.
    """
    fig, (ax, bars) = style.new_figure(style.DOUBLE_COLUMN, 2.6, ncols=2)
    longest = 1
    for i, row in enumerate(spectra.itertuples()):
        energy = np.asarray(row.energy, dtype=np.float64)
        components = np.arange(1, len(energy) + 1)
        color = style.PALETTE[i % 7]
        ax.plot(components, energy, color=color, linewidth=1.2, linestyle=style.DASHES[i % 6]
                if i else "-", label=f"{row.label} (k = {style.format_count(row.k)})")
        ax.plot(row.k, energy[row.k - 1], "o", color=color, markersize=5,
                markeredgecolor="white", markeredgewidth=0.6, zorder=3)
        longest = max(longest, len(energy))
    ax.set_yscale("log")
    if longest > 50:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(style.count_formatter)
    ax.set_xlabel("Component j")
    ax.set_ylabel("Normalised energy $s_j^2 / \\sum s^2$")
    ax.legend(loc="upper right")
    style.panel_label(ax, "a")
    _overlap_bars(bars, overlap, first_colour=3)
    bars.legend(loc="upper left", fontsize=6)
    style.panel_label(bars, "b")
    return fig
