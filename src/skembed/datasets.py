"""Datasets shipped with skembed: the STS Benchmark.

The STSb files (train 5,749, dev 1,500, test 1,379 pairs) are package data,
so they load offline on a fresh install. Licence and citation:
``skembed/data/stsb/LICENSE.txt`` and ``README.md``. Cite Cer et al.,
SemEval-2017 Task 1, when you use them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from importlib import resources
from typing import Any

__all__ = ["iter_stsb", "load_stsb"]

SPLITS = ("train", "dev", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not an STSb split; expected one of {list(SPLITS)}.")


def iter_stsb(split: str = "test") -> Iterator[tuple[str, str, float]]:
    """Iterate over the pairs of one STSb split, without pandas.

    Parameters
    ----------
    split : {"train", "dev", "test"}, default="test"
        The split to read.

    Yields
    ------
    tuple of (str, str, float)
        ``(sentence1, sentence2, score)``, in file order.

    Raises
    ------
    ValueError
        If ``split`` is not one of the three splits.
    """
    _check_split(split)
    source = resources.files("skembed") / "data" / "stsb" / f"{split}.tsv"
    with source.open(encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in rows:
            yield row["sentence1"], row["sentence2"], float(row["score"])


def load_stsb(split: str = "test") -> Any:
    """Load one split of the STS Benchmark as a pandas DataFrame.

    Parameters
    ----------
    split : {"train", "dev", "test"}, default="test"
        The split to load.

    Returns
    -------
    pandas.DataFrame
        Columns ``sentence1`` and ``sentence2`` (str) and ``score`` (float,
        0 to 5), one row per pair, in file order.

    Raises
    ------
    ValueError
        If ``split`` is not one of the three splits.
    ImportError
        If pandas is not installed.

    Examples
    --------
    >>> from skembed.datasets import load_stsb
    >>> len(load_stsb("test")), len(load_stsb("dev"))
    (1379, 1500)
    """
    _check_split(split)
    try:
        import pandas as pd
    except ImportError as exc:  # pandas is not a dependency of skembed itself
        raise ImportError(
            "load_stsb returns a pandas DataFrame: pip install 'skembed[pandas]' "
            "(iter_stsb reads the same rows without pandas)"
        ) from exc
    return pd.DataFrame(list(iter_stsb(split)), columns=["sentence1", "sentence2", "score"])
