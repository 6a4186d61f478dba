"""The one place that turns user text input into lists of str.

Accepted: list or tuple of str, 1-D numpy array, pandas or polars Series, a
DataFrame (pandas or polars) or 2-D array with one column of texts, and for
text pairs a two-column frame, an ``(n, 2)`` array or a list of 2-tuples.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "TextInputMixin",
    "as_text_pairs",
    "as_texts",
    "check_texts_or_pairs",
    "column_names",
    "embed_pairs",
    "looks_like_text",
    "text_columns",
]


def _is_polars(obj: Any) -> bool:
    return type(obj).__module__.split(".", 1)[0] == "polars"


def column_names(X: Any) -> list[str] | None:
    """Names of the columns of a frame, or the name of a named Series; else None."""
    columns = getattr(X, "columns", None)
    if columns is not None:
        return [str(c) for c in columns]
    name = getattr(X, "name", None)
    return [str(name)] if isinstance(name, str) and name else None


def text_columns(X: Any, what: str = "X") -> tuple[list[list[Any]], list[Any] | None]:
    """Split ``X`` into columns of raw values, with the row labels when ``X`` has an index.

    Raises
    ------
    TypeError
        If ``X`` is a single string or an unsupported container.
    ValueError
        If ``X`` has more than two dimensions or rows of unequal length.
    """
    if isinstance(X, str | bytes):
        raise TypeError(
            f"{what} is a single string ({X[:40]!r}); expected a collection of texts, "
            f"e.g. [{X[:20]!r}]."
        )
    labels = None
    if hasattr(X, "iloc") and hasattr(X, "index"):  # pandas Series or DataFrame
        labels = X.index.tolist()
        if X.ndim == 1:
            return [X.tolist()], labels
        return [X.iloc[:, j].tolist() for j in range(X.shape[1])], labels
    if _is_polars(X):
        if hasattr(X, "get_columns"):
            return [column.to_list() for column in X.get_columns()], None
        return [X.to_list()], None
    if isinstance(X, np.ndarray):
        if X.ndim == 1:
            return [X.tolist()], None
        if X.ndim == 2:
            return [X[:, j].tolist() for j in range(X.shape[1])], None
        raise ValueError(f"{what} has {X.ndim} dimensions (shape {X.shape}); expected 1 or 2.")
    if isinstance(X, list | tuple):
        if X and all(isinstance(row, list | tuple) for row in X):
            widths = {len(row) for row in X}
            if len(widths) != 1:
                raise ValueError(
                    f"{what} is a list of rows of unequal lengths {sorted(widths)}; expected rows "
                    "of one text, or pairs of two texts."
                )
            return [list(column) for column in zip(*X, strict=True)], None
        return [list(X)], None
    raise TypeError(
        f"{what} is a {type(X).__name__}; expected a list, tuple, numpy array, pandas/polars "
        "Series or DataFrame of texts."
    )


def _is_missing(value: Any) -> bool:
    # pandas.NA and NaT are neither None nor float NaN.
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or type(value).__name__ in {"NAType", "NaTType"}
    )


def _check_texts(
    values: list[Any], labels: list[Any] | None, what: str, allow_missing: bool
) -> list[str | None]:
    if set(map(type, values)) <= {str}:
        # The common case, checked without a Python-level loop: plain str throughout.
        texts: list[str | None] = list(values)
        _check_unicode(texts, labels, what)
        return texts
    texts = []
    for position, value in enumerate(values):
        if isinstance(value, str):
            # numpy str_ and other str subclasses become plain str.
            texts.append(value if type(value) is str else str(value))
            continue
        where = _where(position, labels)
        if _is_missing(value):
            if allow_missing:
                texts.append(None)
                continue
            raise ValueError(
                f"{what} has a missing value ({value!r}) at {where}; every text must be a str. "
                "Drop or fill missing texts first, or set missing='empty' or 'zero'."
            )
        raise TypeError(
            f"{what} has a {type(value).__name__} ({value!r}) at {where}; every text must be a str."
        )
    _check_unicode(texts, labels, what)
    return texts


# Surrogate code points: Python str may hold them, UTF-8 (and so every tokenizer) cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(texts: list[str | None], labels: list[Any] | None, what: str) -> None:
    """Refuse texts that cannot be encoded as UTF-8 (lone surrogates), naming the position."""
    # A search, not an encode: no copy of the texts, however long they are. ASCII texts
    # (a flag CPython keeps on every str) cannot hold surrogates: only the others are searched.
    present = filter(None, texts)
    if any(map(_SURROGATE.search, itertools.filterfalse(str.isascii, present))):
        for position, text in enumerate(texts):
            if text is None:
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"{what} has a text that is not valid Unicode at {_where(position, labels)}: "
                    f"{text[exc.start : exc.end]!r} at character {exc.start} ({exc.reason}); "
                    "texts must be encodable as UTF-8. A lone surrogate often comes from "
                    "decoding bytes with errors='surrogateescape': decode them with "
                    "errors='replace' first."
                ) from None


def _where(position: int, labels: list[Any] | None) -> str:
    return f"position {position}" + (
        f" (index label {labels[position]!r})" if labels is not None else ""
    )


def _checked_columns(
    X: Any, what: str, allowed: tuple[int, ...], allow_missing: bool = False
) -> list[list[str | None]]:
    columns, labels = text_columns(X, what)
    if len(columns) not in allowed:
        raise ValueError(
            f"{what} has {len(columns)} column(s); expected "
            + " or ".join(_SHAPES[n] for n in allowed)
            + "."
        )
    if len(columns) == 1:
        return [_check_texts(columns[0], labels, what, allow_missing)]
    return [
        _check_texts(column, labels, f"{what} ({name} column)", allow_missing)
        for column, name in zip(columns, ("first", "second"), strict=False)
    ]


_SHAPES = {
    1: "one column of texts (a list, 1-D array, Series or one-column frame)",
    2: "text pairs (a two-column frame, an (n, 2) array or a list of 2-tuples)",
}


def as_texts(X: Any, what: str = "X", allow_missing: bool = False) -> list[str | None]:
    """Return the texts of a one-column input as a list of str.

    With ``allow_missing``, missing values (None, NaN, pandas.NA) become None
    instead of raising.

    Raises
    ------
    TypeError
        If ``X`` is a bare string, an unsupported container, or holds non-text values.
    ValueError
        If ``X`` has a missing text (the message names its position) or more than one column.
    """
    return _checked_columns(X, what, (1,), allow_missing)[0]


def as_text_pairs(
    X: Any, what: str = "X", allow_missing: bool = False
) -> tuple[list[str | None], list[str | None]]:
    """Return the two text columns of a pairs input.

    Raises
    ------
    TypeError, ValueError
        As :func:`as_texts`; ``ValueError`` if ``X`` does not have two columns.
    """
    first, second = _checked_columns(X, what, (2,), allow_missing)
    return first, second


def embed_pairs(
    first: list[str | None], second: list[str | None], embed: Callable[[list[Any]], Any]
) -> tuple[Any, Any]:
    """The embeddings of the first and of the second texts of pairs, from one ``embed`` call.

    One call, so that a text on both sides is encoded once.
    """
    both = embed(first + second)
    return both[: len(first)], both[len(first) :]


def check_texts_or_pairs(X: Any, what: str = "X", allow_missing: bool = False) -> int:
    """Check that ``X`` is one column of texts or two columns of text pairs.

    Returns
    -------
    int
        The number of columns, 1 or 2.

    Raises
    ------
    TypeError, ValueError
        As :func:`as_texts`.
    """
    return len(_checked_columns(X, what, (1, 2), allow_missing))


def looks_like_text(X: Any) -> bool:
    """Whether ``X`` is to be read as texts rather than as numeric embeddings.

    Embeddings are numbers: a torch tensor, a scipy sparse matrix, or an array,
    frame or (nested) list whose values are all integers or floats. Anything
    else is read as texts, so a malformed input gets the text checks' error,
    which names the position of the bad value.
    """
    if isinstance(X, str):
        return True
    if type(X).__module__.split(".", 1)[0] in ("torch", "scipy"):
        return False
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(X, "columns"):  # a data frame
        return not all(_is_number_dtype(d) for d in list(dtypes))
    dtype = getattr(X, "dtype", None)
    if dtype is not None:
        return not _is_number_dtype(dtype)
    if isinstance(X, list | tuple):
        if X and isinstance(X[0], str):
            return True
        try:
            array = np.asarray(X)
        except ValueError:  # ragged nesting
            return True
        return not (array.size and array.dtype.kind in "iuf")
    return True


def _is_number_dtype(dtype: Any) -> bool:
    # numpy, pandas and polars dtypes; bool and categorical are not embedding values.
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str) and len(kind) == 1:
        return kind in "iuf"
    name = str(dtype).lower()
    return name.startswith(("int", "uint", "float")) and "categor" not in name


class TextInputMixin:
    """scikit-learn tags of an estimator whose input is text.

    Texts come as a 1-D collection, or as a 2-D array / frame of one text column
    (two for text pairs). Put it before ``BaseEstimator`` in the bases.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.input_tags.string = True
        tags.input_tags.two_d_array = True
        return tags

    def _check_columns(self, X: Any) -> None:
        """Refuse an input whose columns are not those seen in :meth:`fit`.

        A renamed or different column would silently get the fitted column's
        feature names, so, unlike scikit-learn's warning, a mismatch is an error.
        """
        fitted = getattr(self, "n_features_in_", None)
        if fitted is not None and fitted != 1:
            raise ValueError(
                f"This {type(self).__name__} was fitted on {fitted} text columns (text pairs); "
                "transform takes one column of texts. Fit it on texts, or use "
                "similarity_pairwise for pairs."
            )
        names = column_names(X)
        fitted_names = getattr(self, "feature_names_in_", None)
        if names is not None and fitted_names is not None and names != list(fitted_names):
            raise ValueError(
                f"X has column(s) {names}, but this {type(self).__name__} was fitted on "
                f"{list(fitted_names)}; the output would be named after the wrong column. "
                "Rename the column, or fit on this one."
            )
