"""What this process has loaded and encoded, counted for checking that work is not repeated."""

from __future__ import annotations

import threading

__all__ = ["count", "work_counts"]

# What this process has done, for checking that work is not repeated across processes (a
# Dask or loky worker loads a model once, a stored text is never encoded again).
_WORK_COUNTS = {"models_loaded": 0, "texts_encoded": 0}
_WORK_COUNTS_LOCK = threading.Lock()


def count(name: str, n: int) -> None:
    with _WORK_COUNTS_LOCK:
        _WORK_COUNTS[name] += n


def work_counts() -> dict[str, int]:
    """What this process has loaded and encoded since it started.

    Call it on each worker (e.g. ``dask.distributed.Client.run(work_counts)``)
    to see that a model is loaded once per worker and that texts found in a
    store are not encoded again.

    Returns
    -------
    dict
        ``models_loaded``: models loaded from their files (a model shared
        from the process-wide registry is not loaded again);
        ``texts_encoded``: texts run through a model (cache hits are not).
    """
    with _WORK_COUNTS_LOCK:
        return dict(_WORK_COUNTS)
