"""The selection methods a run can make (``select.methods``), in one table.

Read by the configuration check (the schema's ``select.methods`` enum must list these
names: ``tests/test_methods.py``), the workflow (``rules/common.smk`` asks for the picks
of the baselines), the ``select-baseline`` command's choices and the labels of the
methods comparison.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A selection method.

    ``baseline``: a selector on the run's representations (``select-baseline``), whose
    picks the workflow writes as ``select/<name>-<N>.parquet``.
    """

    name: str
    label: str
    baseline: bool = False


METHODS = {
    method.name: method
    for method in (
        Method("scalselect", "ScalSelect"),
        Method("random", "Random"),
        Method("kcenter", "k-center", baseline=True),
        Method("kmeans", "k-means", baseline=True),
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
