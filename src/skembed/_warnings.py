"""Warnings attributed to the user's line, not to skembed's or scikit-learn's internals."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["TruncationWarning", "truncation_warning", "warn_at_caller"]

# Frames in these packages are skipped: a warning raised while a Pipeline runs
# fit_transform names the user's call of the Pipeline.
_INTERNAL_PACKAGES = ("skembed", "sklearn", "joblib")


def _package_dirs() -> tuple[str, ...]:
    dirs = []
    for name in _INTERNAL_PACKAGES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


def warn_at_caller(message: str | Warning, category: type[Warning] = UserWarning) -> None:
    """Warn with the first frame outside skembed, scikit-learn and joblib as the location.

    ``message`` may be a Warning instance, whose class is then the category.
    """
    internal = _package_dirs()
    frame = sys._getframe(1)
    level = 2  # stacklevel 2 is the caller of this function
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(internal):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


class TruncationWarning(UserWarning):
    """Some texts were longer than ``max_seq_length`` tokens and were cut.

    Only their first ``max_seq_length`` tokens were embedded, as in the reference
    library. The message names the first few rows; ``positions`` holds all of them.
    ``SentenceEmbedder.count_tokens(X)`` gives every row's token count (the prompt
    and special tokens included), so ``count_tokens(X) > max_seq_length_`` is the
    mask of these rows; ``long_text="chunk"`` encodes such texts whole, as windows.

    Parameters
    ----------
    message : str
        The warning text.
    positions : sequence of int
        Row positions (from 0, in the input's order) of every truncated text.

    Attributes
    ----------
    positions : list of int
        Row positions (from 0, in the input's order) of every truncated text.

    Examples
    --------
    >>> import warnings
    >>> from skembed import TruncationWarning
    >>> with warnings.catch_warnings(record=True) as caught:  # doctest: +SKIP
    ...     warnings.simplefilter("always")
    ...     embedder.transform(texts)
    >>> [w.message.positions for w in caught if w.category is TruncationWarning]  # doctest: +SKIP
    [[3, 17]]
    """

    def __init__(self, message: str, positions: list[int]) -> None:
        super().__init__(message)
        self.positions = list(positions)


def truncation_warning(
    positions: list[int], n_texts: int, max_seq_length: int, total: int | None = None
) -> TruncationWarning:
    """The :class:`TruncationWarning` of ``positions``, rows cut among ``n_texts``.

    ``total``: how many rows were cut, when ``positions`` holds only the first ones.
    """
    total = len(positions) if total is None else total
    shown = ", ".join(map(str, positions[:5])) + (", ..." if total > 5 else "")
    held = "all" if total == len(positions) else f"the first {len(positions)}"
    return TruncationWarning(
        f"{total} of {n_texts} texts are longer than max_seq_length={max_seq_length} "
        f"tokens and were truncated (rows {shown}; {held} in this warning's .positions; "
        "count_tokens(X) counts every row's tokens, long_text='chunk' encodes them all).",
        positions,
    )
