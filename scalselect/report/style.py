"""One look for every figure: sizes, palette, fonts, number formats and file output.

Figures are drawn at their final print size (a single column is 3.5 in wide, a double
column 7 in) with constrained layout, so nothing is rescaled when they are placed in a
paper and 7-8 pt text stays 7-8 pt. Fonts are the DejaVu family that ships with
matplotlib (identical on every machine), embedded in PDFs as TrueType (Type 42) so that
journals accept them and text stays editable. Colours are the Okabe-Ito palette, which
stays distinguishable under the common colour-vision deficiencies and in greyscale by
lightness. Figures carry no titles: captions belong to the paper (and to the report).

Numbers are written the same way everywhere: counts as ``950``, ``1.2K``, ``3M``; small
and large values as powers of ten, ``10⁻⁴`` or ``2.5×10⁻⁴``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, FuncFormatter

from scalselect.budgets import Budget
from scalselect.io import atomic_write
from scalselect.methods import METHODS

# fontTools logs each step of subsetting the embedded fonts at INFO level.
logging.getLogger("fontTools").setLevel(logging.WARNING)

SINGLE_COLUMN = 3.5
DOUBLE_COLUMN = 7.0
FORMATS = ("pdf", "png", "svg")

# Okabe & Ito (2008), "Color Universal Design"; black last.
PALETTE = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",
)
# One colour per selection method in every figure and in the browser, declared with the
# method (scalselect.methods.METHODS); the data sources take the other Okabe-Ito
# colours, so that a method and a source never share one where both are drawn (the
# methods comparison, the browser).
METHOD_COLORS = {name: method.color for name, method in METHODS.items()}
# Roles used across figures, so that "selected" looks the same in every one.
SELECTED = METHOD_COLORS["scalselect"]
RANDOM = METHOD_COLORS["random"]
HIGHLIGHT = PALETTE[3]
NEUTRAL = "#4D4D4D"
SOURCE_COLORS = (PALETTE[1], PALETTE[5], PALETTE[3], PALETTE[6], PALETTE[7])
# The sources beyond len(SOURCE_COLORS), pooled as OTHER: light grey, apart from RANDOM.
OTHER = "other"
OTHER_SOURCES = "#CCCCCC"
# Marker lines (budgets) drawn over a SELECTED curve: no blue, no yellow (too faint as
# a thin line on white).
MARKS = (PALETTE[1], PALETTE[2], PALETTE[3], PALETTE[4], PALETTE[5], PALETTE[7])
# Line styles that tell budgets apart without relying on colour.
DASHES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)))

RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.3,
    "axes.linewidth": 0.6,
    "axes.edgecolor": NEUTRAL,
    "axes.labelcolor": "black",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "axes.axisbelow": True,
    "axes.grid": False,
    "grid.linewidth": 0.4,
    "grid.color": "#DDDDDD",
    "lines.linewidth": 1.2,
    "lines.markersize": 3,
    "patch.linewidth": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "xtick.major.size": 3,
    "ytick.major.size": 3,
    "xtick.minor.size": 1.5,
    "ytick.minor.size": 1.5,
    "xtick.color": NEUTRAL,
    "ytick.color": NEUTRAL,
    "xtick.labelcolor": "black",
    "ytick.labelcolor": "black",
    "figure.dpi": 100,
    "figure.constrained_layout.h_pad": 0.03,
    "figure.constrained_layout.w_pad": 0.03,
    "savefig.facecolor": "white",
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    # Editable text in SVG; fixed hash salt so identical figures give identical files.
    "svg.fonttype": "none",
    "svg.hashsalt": "scalselect",
    "image.interpolation": "nearest",
}

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def method_color(method: str) -> str:
    """The colour of a selection method, by its name in ``METHODS`` (a random seed's
    key ``random-seed<S>`` is random's).

    >>> method_color("kcenter"), method_color("random-seed3") == RANDOM
    ('#009E73', True)
    """
    return METHOD_COLORS[method.partition("-seed")[0]]


def source_colors(order: Sequence[str]) -> dict[str, str]:
    """The colour of each data source of ``order`` (the sources of every run of a
    configuration, most frequent first: ``results/sources.json``), so that a source has
    one colour in every figure and browser of those runs: the first
    ``len(SOURCE_COLORS)`` sources their own, every later one (pooled as ``other`` in the
    figures) and :data:`OTHER` itself :data:`OTHER_SOURCES`.

    >>> colors = source_colors(["coco", "vg", "gqa", "ocr_vqa", "textvqa", "sam"])
    >>> colors["coco"], colors["textvqa"], colors["sam"] == colors["other"] == OTHER_SOURCES
    ('#E69F00', '#000000', True)
    """
    colors = {source: OTHER_SOURCES for source in order}
    colors.update(zip(order, SOURCE_COLORS))
    colors[OTHER] = OTHER_SOURCES
    return colors


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Context in which figures are created and saved with the paper style."""
    with matplotlib.rc_context(RC):
        yield


def new_figure(
    width: float = SINGLE_COLUMN,
    height: float | None = None,
    nrows: int = 1,
    ncols: int = 1,
    **subplot_kw,
) -> tuple[Figure, Axes | Sequence[Axes]]:
    """A figure of ``width`` x ``height`` inches with constrained layout.

    ``height`` defaults to ``width / 1.5`` (single panel). Extra keyword arguments go to
    :func:`matplotlib.pyplot.subplots`. Call inside :func:`paper_style`.
    """
    height = width / 1.5 if height is None else height
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, height), layout="constrained", **subplot_kw
    )
    return fig, axes


def format_count(value: float) -> str:
    """A count, short: ``950``, ``1.2K``, ``12K``, ``3M``.

    Three significant digits at most, trailing zeros dropped.

    Examples
    --------
    >>> format_count(950), format_count(1234), format_count(100000), format_count(2.5e6)
    ('950', '1.2K', '100K', '2.5M')
    """
    if value == 0:
        return "0"
    sign = "−" if value < 0 else ""
    value = abs(value)
    for scale, suffix in _SUFFIXES:
        if value >= scale * 0.9995:
            scaled = value / scale
            digits = 0 if scaled >= 10 else 1
            text = f"{scaled:.{digits}f}"
            text = text.rstrip("0").rstrip(".") if digits else text
            if float(text) >= 1000 and suffix != "T":
                continue
            return f"{sign}{text}{suffix}"
    text = f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"
    return f"{sign}{text}"


def format_power(value: float, digits: int = 2) -> str:
    """A positive or negative number as a power of ten: ``10⁻⁴``, ``2.5×10⁻⁴``.

    The mantissa is kept to ``digits`` significant digits and omitted when it is 1.

    Examples
    --------
    >>> format_power(1e-4), format_power(2.5e-4), format_power(-3e5), format_power(0)
    ('10⁻⁴', '2.5×10⁻⁴', '−3×10⁵', '0')
    """
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    sign = "−" if value < 0 else ""
    mantissa_text, exponent_text = f"{abs(value):.{digits - 1}e}".split("e")
    mantissa = mantissa_text.rstrip("0").rstrip(".")
    power = "10" + str(int(exponent_text)).translate(_SUPERSCRIPT)
    return f"{sign}{power}" if mantissa == "1" else f"{sign}{mantissa}×{power}"


def format_value(value: float, digits: int = 2) -> str:
    """A measurement: plain decimals between 0.01 and 10,000, powers of ten outside.

    Examples
    --------
    >>> format_value(0.5), format_value(0.0123), format_value(3.2e-5), format_value(12)
    ('0.5', '0.012', '3.2×10⁻⁵', '12')
    """
    if value == 0 or not math.isfinite(value):
        return format_power(value, digits)
    if 0.01 <= abs(value) < 1e4:
        text = f"{value:.{digits}g}"
        return text.replace("-", "−")
    return format_power(value, digits)


def format_percent(fraction: float) -> str:
    """A fraction as a percentage with at most one decimal: ``16%``, ``2.5%``, ``0.3%``.

    Examples
    --------
    >>> format_percent(0.16), format_percent(0.025), format_percent(1 / 3)
    ('16%', '2.5%', '33.3%')
    """
    text = f"{100 * fraction:.1f}"
    return f"{text.removesuffix('.0')}%"


def budget_label(budget: int | str, n: int, exact: bool = False, bare: bool = False) -> str:
    """A selection budget as asked, and as resolved when asked as a percentage:
    ``N = 32``, ``25% (N = 37)``. ``exact`` writes the count in full (``106,448``, for
    the browser) instead of short (``106K``); ``bare`` leaves out a count's ``N = ``
    (row names and menus: ``Top-32``).

    Examples
    --------
    >>> budget_label(32, 32), budget_label("25%", 37), budget_label("16%", 106448)
    ('N = 32', '25% (N = 37)', '16% (N = 106K)')
    >>> budget_label("100000", 100000, exact=True, bare=True)
    '100,000'
    """
    count = f"{n:,}" if exact else format_count(n)
    asked = Budget.parse(budget)
    if asked.is_percentage:
        return f"{asked.text} (N = {count})"
    return count if bare else f"N = {count}"


class TickFormatter(Formatter):
    """Tick labels of a linear axis: the fewest decimals that write every tick exactly,
    the same for all (``0.025``, ``0.050``, ``0.075``), or powers of ten when the ticks
    are all below 0.01 or reach 10,000 (``2×10⁻³``). Unicode minus signs."""

    def __init__(self) -> None:
        self.decimals = 0
        self.powers = False

    def set_locs(self, locs: Sequence[float]) -> None:
        ticks = [float(v) for v in locs]
        largest = max((abs(v) for v in ticks), default=0.0)
        self.powers = largest >= 1e4 or 0 < largest < 0.01
        scale = largest or 1.0
        self.decimals = next(
            (d for d in range(7) if all(abs(round(v, d) - v) <= 1e-9 * scale for v in ticks)),
            6,
        )

    def __call__(self, value: float, pos: int | None = None) -> str:
        if self.powers:
            return format_power(value)
        return f"{value:.{self.decimals}f}".replace("-", "−")


count_formatter = FuncFormatter(lambda value, _pos: format_count(value))
power_formatter = FuncFormatter(lambda value, _pos: format_power(value))
percent_formatter = FuncFormatter(lambda value, _pos: format_percent(value))


def panel_label(ax: Axes, letter: str) -> None:
    """Bold panel letter ``(a)`` above the top-left corner of ``ax``; placed in the
    title slot so that the layout reserves room for it (it is a letter, not a title)."""
    ax.set_title(f"({letter})", loc="left", fontweight="bold", fontsize=8, pad=4)


def save_figure(
    fig: Figure, stem: str | os.PathLike, formats: Sequence[str], dpi: int = 300
) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format, atomically; close it.

    The page is the figure's own size (no tight bounding box), so a PNG is exactly
    ``width * dpi`` x ``height * dpi`` pixels. PDF and SVG are vector files; their
    creation date is left out so that the same figure gives the same bytes.
    """
    stem = Path(stem)
    written = []
    try:
        for fmt in formats:
            if fmt not in FORMATS:
                raise ValueError(f"unknown figure format {fmt!r}; expected one of {FORMATS}")
            path = stem.with_name(f"{stem.name}.{fmt}")
            metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
            with matplotlib.rc_context(RC), atomic_write(path, "wb") as handle:
                fig.savefig(handle, format=fmt, dpi=dpi, metadata=metadata)
            written.append(path)
    finally:
        plt.close(fig)
    return written
