"""Paper tables: the same table as CSV (exact values, for scripts) and as a LaTeX
``booktabs`` tabular (formatted, for the paper; needs ``\\usepackage{booktabs}``)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scalselect.io import atomic_write

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
    "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped.

    Examples
    --------
    >>> latex_escape("16% of ocr_vqa")
    '16\\\\% of ocr\\\\_vqa'
    """
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex_count(value: int) -> str:
    """An exact count with thin-space thousands groups: ``100{,}000``.

    Examples
    --------
    >>> latex_count(100000), latex_count(32)
    ('100{,}000', '32')
    """
    return f"{int(value):,}".replace(",", "{,}")


def latex_percent(fraction: float) -> str:
    """A fraction as a percentage with one decimal: ``16.0\\%``.

    Examples
    --------
    >>> latex_percent(0.16)
    '16.0\\\\%'
    """
    return f"{100 * fraction:.1f}\\%"


def latex_number(value: float, digits: int = 3) -> str:
    """A real number with ``digits`` significant digits (trailing zeros kept, so that a
    column reads alike), in powers of ten outside [0.01, 10^4): ``0.0123``, ``0.110``,
    ``$1.23\\times10^{-4}$``.

    Examples
    --------
    >>> latex_number(0.012345), latex_number(0.11), latex_number(1.2345e-4)
    ('0.0123', '0.110', '$1.23\\\\times10^{-4}$')
    """
    if value == 0 or not math.isfinite(value):
        return str(value)
    value = float(f"{value:.{digits}g}")
    if 10 ** (digits - 1) <= abs(value) < 1e4:
        return f"{value:.0f}"
    if 0.01 <= abs(value) < 1e4:
        return f"{value:#.{digits}g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    power = f"10^{{{int(exponent)}}}"
    return f"${power}$" if mantissa == "1" else f"${mantissa}\\times{power}$"


@dataclass(frozen=True)
class Column:
    """A column of a LaTeX table: source column, header (LaTeX), alignment, formatter."""

    key: str
    header: str
    align: str = "r"
    format: Callable[[object], str] = lambda value: latex_escape(str(value))


def booktabs(table: pd.DataFrame, columns: Sequence[Column]) -> str:
    """The rows of ``table`` as a LaTeX ``tabular`` with booktabs rules."""
    lines = [
        f"\\begin{{tabular}}{{{''.join(c.align for c in columns)}}}",
        "\\toprule",
        " & ".join(c.header for c in columns) + r" \\",
        "\\midrule",
    ]
    for _, row in table.iterrows():
        lines.append(" & ".join(c.format(row[c.key]) for c in columns) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def write_table(
    table: pd.DataFrame, stem: str | os.PathLike, columns: Sequence[Column]
) -> list[Path]:
    """Write ``stem.csv`` (all columns, exact values) and ``stem.tex`` (``columns``),
    atomically."""
    stem = Path(stem)
    csv, tex = stem.with_name(f"{stem.name}.csv"), stem.with_name(f"{stem.name}.tex")
    with atomic_write(csv) as handle:
        table.to_csv(handle, index=False)
    with atomic_write(tex) as handle:
        handle.write(booktabs(table, columns))
    return [csv, tex]


BUDGET_COLUMNS = (
    Column("budget", "Budget", "l"),
    Column("n", "$N$", "r", latex_count),
    Column("fraction", "Fraction of data", "r", latex_percent),
    Column("score_threshold", r"Score threshold $\pi_{(N)}$", "r", latex_number),
)
