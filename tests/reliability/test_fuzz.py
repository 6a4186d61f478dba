"""Fuzz of text inputs: every input either gives correct embeddings or a clear error.

Example counts come from the hypothesis profile (tests/conftest.py): a few hundred per test by
default, a long run with ``SKEMBED_FUZZ=long pytest tests/reliability/test_fuzz.py``.
"""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skembed.encoder._encoder as encoder_module
from skembed import SentenceEmbedder
from skembed.cache import clear_cache
from skembed.encoder import load_encoder

# Short texts with every kind of character, long ones built by repetition (past the point where
# texts are cut before tokenizing), and lone surrogates, which no UTF-8 encoder accepts.
TEXTS = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.builds(
        lambda text, times: text * times, st.text(min_size=1, max_size=8), st.integers(1, 3000)
    ),
    st.builds(
        lambda a, s, b: a + s + b,
        st.text(max_size=5),
        st.sampled_from(["\ud800", "\udfff", "\udc80"]),
        st.text(max_size=5),
    ),
)
MISSING = st.sampled_from([None, math.nan, pd.NA, np.float32("nan")])
NOT_TEXT = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.binary(max_size=5), st.booleans()
)
VALUES = st.lists(st.one_of(TEXTS, TEXTS, TEXTS, MISSING, NOT_TEXT), min_size=0, max_size=8)
try:
    import polars as pl
except ImportError:  # polars is an optional extra: fuzz the other containers without it
    pl = None
CONTAINERS = ["list", "tuple", "object array", "series", "frame", "rows"]
CONTAINERS += ["polars"] if pl is not None else []
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Three fits and a store per example: a quarter of the profile's count.
FUZZ_STORE = settings(FUZZ, max_examples=max(10, settings.default.max_examples // 4))
pytestmark = pytest.mark.filterwarnings("ignore:.*were truncated:UserWarning")


def is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def contain(values: list, container: str, index: list[int]):
    if container == "tuple":
        return tuple(values)
    if container == "object array":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    if container == "series":
        return pd.Series(values, index=index, dtype=object, name="text")
    if container == "frame":
        return pd.DataFrame({"text": pd.Series(values, index=index, dtype=object)})
    if container == "rows":
        return [(value,) for value in values]
    return list(values)


def expected_error(values: list, missing: str) -> tuple[type, str] | None:
    """The error the library promises for ``values``, or None when they must be encoded."""
    for value in values:
        if isinstance(value, str):
            continue
        if is_missing(value):
            if missing == "error":
                return ValueError, "missing value"
            continue
        return TypeError, "every text must be a str"
    if not all(valid_unicode(v) for v in values if isinstance(v, str)):
        return ValueError, "not valid Unicode"
    return None


@pytest.fixture(scope="module")
def alone(tiny_model):
    """Embedding of one text encoded by itself, with long texts tokenized whole."""
    encoder = load_encoder(tiny_model, torch.device("cpu"))
    memo: dict[str, np.ndarray] = {}

    def embed(text: str) -> np.ndarray:
        if text not in memo:
            with mock.patch.object(encoder_module, "_MIN_CHARS", 10**9):
                memo[text] = encoder.encode([text]).embeddings[0]
        return memo[text]

    return embed


@pytest.fixture(scope="module")
def embedders(tiny_model):
    return {
        missing: SentenceEmbedder(tiny_model, device="cpu", missing=missing).fit()
        for missing in ("error", "empty", "zero")
    }


@FUZZ
@given(
    values=VALUES,
    container=st.sampled_from(CONTAINERS),
    missing=st.sampled_from(["error", "empty", "zero"]),
    data=st.data(),
)
def test_texts_are_encoded_correctly_or_refused_clearly(
    values, container, missing, data, embedders, alone
):
    if container == "polars":
        if not all((isinstance(v, str) and valid_unicode(v)) or v is None for v in values):
            container = "list"  # a polars column of strings holds only valid str or null
    index = data.draw(st.permutations(range(100, 100 + len(values))))
    if container == "polars":
        X = pl.Series("text", values, dtype=pl.String)
    else:
        X = contain(values, container, index)
    embedder = embedders[missing]
    error = expected_error(values, missing)
    if error is not None:
        kind, message = error
        with pytest.raises(kind, match=message) as info:
            embedder.transform(X)
        if message != "missing value" or container != "polars":
            assert "position" in str(info.value)
        return

    out = embedder.transform(X)
    assert out.shape == (len(values), embedder.n_features_out_) and out.dtype == np.float32
    assert np.isfinite(out).all()
    for row, value in zip(out, values, strict=True):
        if isinstance(value, str):
            expected = alone(value)
        elif missing == "empty":
            expected = alone("")
        else:
            expected = np.zeros(embedder.n_features_out_, np.float32)
        np.testing.assert_allclose(row, expected, atol=2e-6)

    # Order: a shuffled input gives the same rows, shuffled.
    order = np.asarray(data.draw(st.permutations(range(len(values)))), dtype=int)
    shuffled = embedder.transform([values[i] for i in order])
    np.testing.assert_allclose(shuffled, out[order], atol=2e-6)


@FUZZ_STORE
@given(texts=st.lists(TEXTS.filter(valid_unicode), min_size=1, max_size=6))
def test_cache_and_store_give_the_embeddings_of_a_fresh_encoding(
    texts, tiny_model, tmp_path_factory, alone
):
    store = tmp_path_factory.mktemp("store")
    first = SentenceEmbedder(tiny_model, device="cpu", memory=store).fit().transform(texts)
    cached = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    clear_cache()
    stored = SentenceEmbedder(tiny_model, device="cpu", memory=store).fit().transform(texts)
    expected = np.stack([alone(text) for text in texts])
    for out in (first, cached, stored):
        np.testing.assert_allclose(out, expected, atol=2e-6)
