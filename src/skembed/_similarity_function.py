"""The names of the similarity functions, with no dependency beyond the standard library.

Kept apart from the math in :mod:`skembed._similarity` so that the command line and
``import skembed`` can list the metrics without importing torch.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["SimilarityFunction"]


class SimilarityFunction(str, Enum):
    """The similarity functions that compare two embeddings.

    Members compare equal to their string value, so ``"cosine"`` and
    ``SimilarityFunction.COSINE`` can be used interchangeably.

    Attributes
    ----------
    COSINE : "cosine"
        Cosine similarity, in [-1, 1].
    DOT_PRODUCT : "dot"
        Dot product. ``DOT`` is an alias.
    EUCLIDEAN : "euclidean"
        Negative euclidean (L2) distance.
    MANHATTAN : "manhattan"
        Negative manhattan (L1) distance.

    Examples
    --------
    >>> from skembed import SimilarityFunction
    >>> SimilarityFunction("manhattan")
    <SimilarityFunction.MANHATTAN: 'manhattan'>
    >>> SimilarityFunction.possible_values()
    ['cosine', 'dot', 'euclidean', 'manhattan']
    """

    COSINE = "cosine"
    DOT_PRODUCT = "dot"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"

    @classmethod
    def _missing_(cls, value: object) -> SimilarityFunction:
        if isinstance(value, str):
            key = value.strip().lower()
            if key == "dot_product":
                return cls.DOT_PRODUCT
            for member in cls:
                if member.value == key:
                    return member
        raise ValueError(
            f"Unknown similarity function {value!r}; expected one of "
            f"{cls.possible_values()} (or a SimilarityFunction member)."
        )

    @staticmethod
    def possible_values() -> list[str]:
        """Return the names of the supported similarity functions.

        Returns
        -------
        list of str
            ``["cosine", "dot", "euclidean", "manhattan"]``.
        """
        return [member.value for member in SimilarityFunction]

    def __str__(self) -> str:
        return self.value
