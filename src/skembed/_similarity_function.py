"""The names of the similarity functions, with no dependency beyond the standard library.

Kept apart from the math in :mod:`skembed._similarity` so that the command line and
``import skembed`` can list the metrics without importing torch.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["SimilarityFunction"]

# sentence-transformers' multi-vector metrics, refused by name with the reason.
_LATE_INTERACTION = ("maxsim", "meanmaxsim")


class SimilarityFunction(str, Enum):
    """The similarity functions that compare two embeddings.

    Members compare equal to their string value, so ``"cosine"`` and
    ``SimilarityFunction.COSINE`` can be used interchangeably. The members of
    sentence-transformers' ``SimilarityFunction`` are accepted too and map to
    the member of the same value; its late-interaction ``MAXSIM`` and
    ``MEAN_MAXSIM`` (``"maxsim"``, ``"meanmaxsim"``) are refused, since they
    compare the token embeddings of multi-vector models and skembed makes one
    embedding per text.

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
    >>> SimilarityFunction("maxsim")
    Traceback (most recent call last):
    ...
    ValueError: Similarity function 'maxsim' is not supported: ...
    """

    COSINE = "cosine"
    DOT_PRODUCT = "dot"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"

    @classmethod
    def _missing_(cls, value: object) -> SimilarityFunction:
        # Another library's member (sentence-transformers' enum is not a str subclass) is
        # known by its value.
        name = value.value if isinstance(value, Enum) else value
        if isinstance(name, str):
            key = name.strip().lower()
            if key == "dot_product":
                return cls.DOT_PRODUCT
            for member in cls:
                if member.value == key:
                    return member
            if key in _LATE_INTERACTION:
                raise ValueError(
                    f"Similarity function {value!r} is not supported: late-interaction "
                    "MaxSim compares the token embeddings of multi-vector (ColBERT-style) "
                    "models, and skembed makes one embedding per text. Use one of "
                    f"{cls.possible_values()}."
                )
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
