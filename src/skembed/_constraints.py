"""Parameter constraints shared by the estimators (scikit-learn's ``_parameter_constraints``)."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from sklearn.utils._param_validation import Interval, Options

from ._similarity_function import SimilarityFunction

__all__ = ["PositiveCount", "SimilarityFunctionName"]


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


class SimilarityFunctionName(Options):
    """A similarity function: a name or member that :class:`SimilarityFunction` accepts.

    Derived from the enum, so a metric added there is accepted by every
    estimator that takes a metric. (An ``Options`` subclass because scikit-learn
    takes only its own constraint classes.)
    """

    def __init__(self) -> None:
        super().__init__(object, set(SimilarityFunction.possible_values()))

    def is_satisfied_by(self, val: Any) -> bool:
        """Whether ``val`` names a member of :class:`SimilarityFunction`."""
        try:
            SimilarityFunction(val)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"a similarity function among {SimilarityFunction.possible_values()}"
