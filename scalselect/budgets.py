"""Selection budgets: a sample count or a percentage of the scored samples, parsed once.

Every stage that meets a budget reads it with :meth:`Budget.parse`: the configuration
check (percentages above 100% or at 0%), ``filter`` (counts above the samples it keeps),
``select`` and the baselines (:func:`resolve_budget`), the summary, figures, tables and
the browser.

A percentage is exact decimal arithmetic, never a float: ``"1.15%"`` of 3000 samples is
34.5, rounded half up to 35 (a binary float gives 34).

This module imports nothing heavy: the workflow's rule files read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from scalselect.errors import UserError


class BudgetError(UserError):
    """A budget that is not a count or a percentage, or that the samples cannot meet."""


@dataclass(frozen=True)
class Budget:
    """One budget as asked: ``text`` as configured (``"16%"``, ``"100000"``), and either
    ``count`` or ``percent`` (exact)."""

    text: str
    count: int | None = None
    percent: Fraction | None = None

    @classmethod
    def parse(cls, budget: int | str) -> Budget:
        """A budget from the configuration or the command line.

        Examples
        --------
        >>> Budget.parse(" 16% ").percent, Budget.parse("50").count
        (Fraction(16, 1), 50)

        Raises ``BudgetError`` for anything but an integer count or a finite decimal
        percentage (``"1/3%"``, ``"nan%"``, ``"1.5"``).
        """
        text = str(budget).strip()
        try:
            if not text.endswith("%"):
                return cls(text, count=int(text))
            percent = Decimal(text[:-1])
            if not percent.is_finite():
                raise ValueError(text)
        except (ValueError, InvalidOperation):
            raise BudgetError(f"budget {budget!r} is neither a count nor a percentage") from None
        return cls(text, percent=Fraction(percent))

    @property
    def is_percentage(self) -> bool:
        """Whether the budget is a share of the scored samples."""
        return self.percent is not None

    def problem(self) -> str | None:
        """Why no number of scored samples meets this budget (a percentage above 100% or
        at 0%), else ``None``; counts are checked against the samples by :meth:`resolve`."""
        if self.percent is None:
            return None
        if self.percent > 100:
            return f"{self.text!r} is more than 100% of the scored samples"
        if self.percent == 0:
            return f"{self.text!r} is 0% of the scored samples: it selects no sample"
        return None

    def resolve(self, n_valid: int) -> int:
        """The number of samples of ``n_valid`` scored ones this budget asks for.

        Examples
        --------
        >>> Budget.parse("1.15%").resolve(3000), Budget.parse(7).resolve(10)
        (35, 7)

        Raises ``BudgetError`` for a percentage above 100, zero samples, or more samples
        than were scored.
        """
        if self.percent is None:
            n = self.count
        elif self.percent > 100:
            raise BudgetError(f"budget {self.text!r} is more than 100% of the scored samples")
        else:
            n = math.floor(self.percent * n_valid / 100 + Fraction(1, 2))
        if n < 1:
            raise BudgetError(f"budget {self.text!r} of {n_valid} scored samples selects no sample")
        if n > n_valid:
            raise BudgetError(
                f"budget {self.text!r} asks for {n} samples but only {n_valid} were scored"
            )
        return n


def resolve_budget(budget: int | str, n_valid: int) -> int:
    """The number of samples ``budget`` (a count, or a percentage of the ``n_valid``
    scored samples) asks for: :meth:`Budget.parse`, then :meth:`Budget.resolve`."""
    return Budget.parse(budget).resolve(n_valid)
