"""Text input coercion: every accepted container, and clear errors for the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skembed._inputs import as_text_pairs, as_texts, check_texts_or_pairs, looks_like_text

TEXTS = ["first text", "second text", "third"]


@pytest.mark.parametrize(
    "container",
    [
        list,
        tuple,
        np.array,
        lambda t: np.array(t, dtype=object),
        lambda t: np.array(t).reshape(-1, 1),
        lambda t: pd.Series(t, index=[100, 101, 102]),
        lambda t: pd.Series(t, dtype="string"),
        lambda t: pd.DataFrame({"text": t}, index=["a", "b", "c"]),
        lambda t: [[x] for x in t],
    ],
    ids=[
        "list",
        "tuple",
        "array",
        "object-array",
        "column-array",
        "series",
        "string-series",
        "frame",
        "rows-of-one",
    ],
)
def test_accepted_text_containers(container):
    texts = as_texts(container(TEXTS))
    assert texts == TEXTS
    assert all(type(t) is str for t in texts)


def test_polars_inputs():
    pl = pytest.importorskip("polars")
    assert as_texts(pl.Series("text", TEXTS)) == TEXTS
    assert as_texts(pl.DataFrame({"text": TEXTS})) == TEXTS


def test_bare_string_is_refused():
    with pytest.raises(TypeError, match="single string"):
        as_texts("The weather is lovely today.")


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
def test_missing_text_names_its_position(missing):
    with pytest.raises(ValueError, match="position 1"):
        as_texts(["a", missing, "c"])


def test_missing_text_names_index_label():
    series = pd.Series(["a", "b", None], index=[100, 101, 102])
    with pytest.raises(ValueError, match=r"position 2 \(index label 102\)"):
        as_texts(series)


def test_non_text_value_is_refused():
    with pytest.raises(TypeError, match="int"):
        as_texts(["a", 5])


def test_unsupported_container_is_refused():
    with pytest.raises(TypeError, match="set"):
        as_texts({"a", "b"})


def test_two_columns_are_not_single_texts():
    with pytest.raises(ValueError, match="2 column"):
        as_texts(pd.DataFrame({"a": TEXTS, "b": TEXTS}))


@pytest.mark.parametrize(
    "pairs",
    [
        [("a", "b"), ("c", "d")],
        [["a", "b"], ["c", "d"]],
        np.array([["a", "b"], ["c", "d"]]),
        pd.DataFrame({"s1": ["a", "c"], "s2": ["b", "d"]}, index=[7, 9]),
    ],
    ids=["tuples", "lists", "array", "frame"],
)
def test_accepted_pair_containers(pairs):
    assert as_text_pairs(pairs) == (["a", "c"], ["b", "d"])


def test_pairs_need_two_columns():
    with pytest.raises(ValueError, match="text pairs"):
        as_text_pairs(TEXTS)
    with pytest.raises(ValueError, match="unequal lengths"):
        as_text_pairs([("a", "b"), ("c",)])


def test_missing_value_in_pairs_names_column():
    frame = pd.DataFrame({"s1": ["a", "c"], "s2": ["b", None]})
    with pytest.raises(ValueError, match=r"second column.*position 1"):
        as_text_pairs(frame)


def test_check_texts_or_pairs():
    check_texts_or_pairs(TEXTS)
    check_texts_or_pairs([("a", "b")])
    with pytest.raises(ValueError, match="3 column"):
        check_texts_or_pairs(np.array([["a", "b", "c"]]))


def test_looks_like_text():
    assert looks_like_text(TEXTS)
    assert looks_like_text(np.array(TEXTS))
    assert looks_like_text(pd.Series(TEXTS))
    assert looks_like_text(pd.DataFrame({"t": TEXTS}))
    assert not looks_like_text(np.zeros((2, 3), dtype=np.float32))
    assert not looks_like_text([[0.1, 0.2]])
    import torch

    assert not looks_like_text(torch.zeros(2, 3))
