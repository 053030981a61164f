"""The selection methods a run can make (``select.methods``), in one table.

Read by the configuration check (the schema's ``select.methods`` enum must list these
names: ``tests/test_methods.py``), the workflow (``rules/common.smk`` asks for the picks
of the baselines), the ``select-baseline`` command's choices and the labels of the
methods comparison.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from scalselect.errors import UserError


@dataclass(frozen=True)
class Method:
    """A selection method.

    ``picker``: for a baseline (a selector on the run's representations, run by
    ``select-baseline``), the name of its function in :mod:`scalselect.select.baselines`
    (named, not imported: the rules read this table without numpy or torch). The
    workflow writes its selection as ``select/<name>-<N>.<ext>`` (``ext``: the dataset's
    kind, as for top-N) and its picks as ``select/<name>-<N>.<ext>.picks.parquet``
    (:func:`picks_name`).
    """

    name: str
    label: str
    # Its colour in every figure, table and browser (hex; colour-blind safe, Okabe-Ito),
    # apart from the colours the sources take (scalselect.report.style.SOURCE_COLORS).
    color: str
    picker: str | None = None

    @property
    def baseline(self) -> bool:
        """Whether ``select-baseline`` makes this method's selections."""
        return self.picker is not None


METHODS = {
    method.name: method
    for method in (
        Method("scalselect", "ScalSelect", "#0072B2"),
        Method("random", "Random", "#8C8C8C"),
        Method("kcenter", "k-center", "#009E73", picker="kcenter_picks"),
        Method("kmeans", "k-means", "#CC79A7", picker="kmeans_picks"),
    )
}
BASELINES = tuple(name for name, method in METHODS.items() if method.baseline)
SCALSELECT = METHODS["scalselect"].label


def random_label(seed: int) -> str:
    """The label of the random subset of ``seed``.

    >>> random_label(3)
    'Random (seed 3)'
    """
    return f"{METHODS['random'].label} (seed {seed})"


# A picks table is named after its selection: Snakemake wants the same wildcards in every
# output of a rule (the selection's extension among them), and ``<name>-<N>.parquet`` is
# the selection of a parquet dataset.
PICKS_SUFFIX = ".picks.parquet"
_PICKS_NAME = re.compile(r"(\w+)-([1-9]\d*)\.(?:jsonl?|parquet)" + re.escape(PICKS_SUFFIX))


def picks_name(method: str, n: int, ext: str) -> str:
    """File name of the picks table of the baseline selection ``<method>-<n>.<ext>``.

    >>> picks_name("kcenter", 32, "parquet")
    'kcenter-32.parquet.picks.parquet'
    """
    return f"{method}-{n}.{ext}{PICKS_SUFFIX}"


def picks_key(path: str | os.PathLike) -> tuple[str, int]:
    """The baseline and budget of a picks table named as :func:`picks_name` names it.

    >>> picks_key("results/run/select/kmeans-8.jsonl.picks.parquet")
    ('kmeans', 8)

    Raises
    ------
    UserError
        A file name of another form, or of a method that is not a baseline.
    """
    name = Path(path).name
    match = _PICKS_NAME.fullmatch(name)
    if match is None or match[1] not in BASELINES:
        raise UserError(
            f"{path}: not a baseline's picks table (named <method>-<N>.<json|jsonl|parquet>"
            f"{PICKS_SUFFIX}, method one of {', '.join(BASELINES)})"
        )
    return match[1], int(match[2])
