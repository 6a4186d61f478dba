"""Parameter constraints shared by the estimators (scikit-learn's ``_parameter_constraints``)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from sklearn.utils._param_validation import Interval

__all__ = ["PositiveCount"]


class PositiveCount(Interval):
    """An integer >= 1, and not a bool.

    scikit-learn's ``Interval(Integral, 1, None)`` accepts ``True`` as 1: a
    ``truncate_dim=True`` would silently keep one column.
    """

    def __init__(self) -> None:
        super().__init__(Integral, 1, None, closed="left")

    def is_satisfied_by(self, val: Any) -> bool:
        """Whether ``val`` is an integer >= 1 other than a bool."""
        return not isinstance(val, bool) and super().is_satisfied_by(val)

    def __str__(self) -> str:
        return f"{super().__str__()} (not a bool)"
