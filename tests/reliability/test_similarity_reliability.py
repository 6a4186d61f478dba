"""Reliability of the similarity layer: never a silently wrong result (issue 8, findings 3, 16).

float32 inputs of any magnitude give what float64 gives, rounded; ``semantic_search``
returns scores that are those of its indices, with ties resolved the documented way; a
torch input always gives torch output; every shape either works or is refused with a
``ValueError`` naming the argument and the shape. The references are written here with
numpy and scipy, not through skembed.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import METRICS
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy.spatial.distance import cdist

import skembed._similarity as sim_module
from skembed import paired_similarity, semantic_search, similarity

F32_MAX = float(np.finfo(np.float32).max)


# --- float64 references ----------------------------------------------------------------------


def reference(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """The exact-as-float64 similarity matrix of two 2-D arrays (inf or NaN beyond float64)."""
    with np.errstate(all="ignore"):
        return _reference(np.asarray(x, np.float64), np.asarray(y, np.float64), metric)


def _reference(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return _unit(x) @ _unit(y).T
    if metric == "dot":
        return np.array([[_exact_dot(a, b) for b in y] for a in x]).reshape(len(x), len(y))
    if metric == "manhattan":
        return -cdist(x, y, "cityblock")
    # Differences scaled by their max before squaring: cdist's squares of float64 values
    # near 1e-160 underflow.
    diff = x[:, None, :] - y[None, :, :]
    peak = np.abs(diff).max(axis=2, initial=0.0)
    scaled = diff / np.where(peak > 0, peak, 1.0)[:, :, None]
    return -peak * np.sqrt((scaled * scaled).sum(axis=2))


def _exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    """The dot product in exact rational arithmetic, rounded once (inf beyond float64)."""
    total = sum(Fraction(float(u)) * Fraction(float(v)) for u, v in zip(a, b, strict=True))
    try:
        return float(total)
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def _unit(a: np.ndarray) -> np.ndarray:
    # The reference's normalisation, a / max(|a|, 1e-12), exactly: the norm from rows scaled by
    # their max, so that no square overflows or underflows.
    peak = np.abs(a).max(axis=1, keepdims=True)
    scaled = a / np.where(peak > 0, peak, 1.0)
    norms = peak * np.linalg.norm(scaled, axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        return np.where(norms >= 1e-12, scaled / np.where(norms > 0, norms / peak, 1.0), a / 1e-12)


def _norms(a: np.ndarray, order: int) -> np.ndarray:
    a = np.asarray(a, np.float64)
    peak = np.abs(a).max(axis=1)
    scaled = a / np.where(peak > 0, peak, 1.0)[:, None]
    return peak * np.linalg.norm(scaled, ord=order, axis=1)


def tolerance(x: np.ndarray, y: np.ndarray, metric: str, ref: np.ndarray, dtype) -> np.ndarray:
    """Allowed error: relative to the result and to the scale of the two rows compared.

    The scale is what rounding is proportional to: 1 for cosine, ``|x| |y|`` for dot,
    ``|x| + |y|`` for the distances; the last term is the float grid near zero
    (subnormal numbers), which no computation in that dtype can beat.
    """
    rtol, grid = (2e-5, 2.0**-149) if dtype == np.float32 else (1e-9, 2.0**-1074)
    with np.errstate(all="ignore"):  # a scale beyond float64 allows anything: inf
        if metric == "cosine":
            scale = np.ones_like(ref)
        elif metric == "dot":
            # A zero row against an infinite norm: 0 * inf, a zero scale.
            scale = np.nan_to_num(np.outer(_norms(x, 2), _norms(y, 2)), nan=0.0, posinf=np.inf)
        else:
            order = 2 if metric == "euclidean" else 1
            scale = _norms(x, order)[:, None] + _norms(y, order)[None, :]
        return rtol * (np.abs(ref) + scale) + 4 * (x.shape[1] + 1) * grid


def assert_matches_reference(got, x, y, metric: str) -> None:
    """``got`` is finite and close to the reference wherever the reference fits its dtype."""
    got = _numpy(got)
    ref = reference(x, y, metric)
    limit = F32_MAX if got.dtype == np.float32 else float(np.finfo(np.float64).max)
    fits = np.isfinite(ref) & (np.abs(ref) < 0.999 * limit)
    assert np.isfinite(got[fits]).all(), (got, ref)
    with np.errstate(invalid="ignore"):  # inf - inf where both overflow: not checked
        err = np.abs(got.astype(np.float64) - ref)
    tol = tolerance(np.asarray(x, np.float64), np.asarray(y, np.float64), metric, ref, got.dtype)
    bad = fits & ~(err <= tol)
    assert not bad.any(), f"{metric}: got {got[bad]}, expected {ref[bad]} (tolerance {tol[bad]})"
    # Beyond the dtype's range the result is infinite with the right sign, never NaN.
    beyond = np.isfinite(ref) & ~fits
    assert not np.isnan(got[beyond]).any()
    assert (np.sign(got[beyond]) == np.sign(ref[beyond])).all()


def assert_rows_match_reference(got, x, y, metric: str) -> None:
    """``paired_similarity`` output: row i checked against the reference of x[i], y[i]."""
    got = _numpy(got).reshape(-1)
    for i in range(len(got)):
        assert_matches_reference(got[i : i + 1, None], x[i : i + 1], y[i : i + 1], metric)


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- 1. extreme magnitudes ---------------------------------------------------------------------


def _scaled(scale: float, shape=(5, 8), seed: int = 0) -> np.ndarray:
    return (_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _mixed_rows(seed: int = 0) -> np.ndarray:
    """Rows of very different magnitudes in one array, including two tiny rows."""
    rows = _rng(seed).standard_normal((6, 8))
    return (rows * np.array([1e-30, 1.0, 1e18, 3e-32, 1e-20, 1e-42])[:, None]).astype(np.float32)


EXTREMES = {
    "large": lambda: (_scaled(1e20), _scaled(1e20, (4, 8), 1)),
    "tiny": lambda: (_scaled(1e-30), _scaled(1e-30, (4, 8), 1)),
    "subnormal": lambda: (_scaled(1e-41), _scaled(1e-41, (4, 8), 1)),
    "overflowing": lambda: (_scaled(1e30), _scaled(1e30, (4, 8), 1)),
    "mixed rows": lambda: (_mixed_rows(), _mixed_rows(1)),
    "large and tiny": lambda: (_scaled(1e25), _scaled(1e-25, (4, 8), 1)),
}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(EXTREMES))
def test_float32_extremes_match_float64(metric, case):
    x, y = EXTREMES[case]()
    got = similarity(x, y, metric=metric)
    assert got.dtype == np.float32
    assert_matches_reference(got, x, y, metric)
    assert_matches_reference(similarity(x, metric=metric), x, x, metric)
    assert_matches_reference(similarity(torch.from_numpy(x), y, metric=metric), x, y, metric)
    assert_matches_reference(similarity(sp.csr_array(x), y, metric=metric), x, y, metric)

    rows = min(len(x), len(y))
    pairs = paired_similarity(x[:rows], y[:rows], metric=metric)
    assert pairs.dtype == np.float32
    assert_rows_match_reference(pairs, x[:rows], y[:rows], metric)

    scores, indices = semantic_search(x, y, top_k=len(y), metric=metric)
    picked = np.take_along_axis(reference(x, y, metric), indices, axis=1)
    fits = np.abs(picked) < 0.999 * F32_MAX
    assert np.isfinite(scores[fits]).all()
    assert not np.isnan(scores).any()


FLOAT64_EXTREMES = {
    # Squares of 1e-160 are subnormal in float64, of 1e-162 almost nothing.
    "subnormal squares": lambda: _rng(7).standard_normal((6, 8)) * 1e-160,
    "vanishing squares": lambda: _rng(8).standard_normal((6, 8)) * 1e-162,
    # Opposite rows whose squared norms fit float64 but whose squared distances do not;
    # enough rows for blocks of several rows.
    "overflowing squares": lambda: _opposite_rows() * 0.6e154,
}


def _opposite_rows() -> np.ndarray:
    rows = np.where(_rng(9).random((24, 2)) < 0.5, -1.0, 1.0)
    rows[::2] *= 0.5
    return rows


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("case", list(FLOAT64_EXTREMES))
def test_float64_extremes_match_exact_results(metric, case):
    x = FLOAT64_EXTREMES[case]()
    got = similarity(x, metric=metric)
    assert got.dtype == np.float64
    assert_matches_reference(got, x, x, metric)
    assert_matches_reference(similarity(x, x[::-1], metric=metric), x, x[::-1], metric)
    assert_rows_match_reference(paired_similarity(x, x[::-1], metric=metric), x, x[::-1], metric)


def test_dot_product_beyond_float32_is_inf_and_cancellation_is_exact():
    big = np.float32(1e30)
    x = np.array([[big, big], [big, -big]], dtype=np.float32)
    y = np.array([[big, big]], dtype=np.float32)
    got = similarity(x, y, metric="dot")
    # 2e60 does not fit float32: inf is the right answer. 1e60 - 1e60 is exactly 0.
    assert got[0, 0] == np.inf
    assert got[1, 0] == 0.0
    assert paired_similarity(x[1], y[0], metric="dot") == 0.0


@pytest.mark.parametrize("metric", METRICS)
def test_ordinary_float32_stays_float32_and_extremes_go_float64(monkeypatch, metric):
    """The magnitude check is cheap: ordinary embeddings never take the float64 path."""
    seen = []
    kernel = sim_module._matrix_kernel

    def spy(x, y, name, out):
        scores = kernel(x, y, name, out)
        seen.append((x.dtype, y.dtype, scores.dtype))
        return scores

    monkeypatch.setattr(sim_module, "_matrix_kernel", spy)
    ordinary = _scaled(1.0, (7, 16))
    similarity(ordinary, metric=metric)
    semantic_search(ordinary, ordinary, top_k=3, metric=metric)
    assert {dtypes for dtypes in seen} == {(torch.float32, torch.float32, torch.float32)}

    seen.clear()
    extreme = similarity(_scaled(1e20), metric=metric)
    expected = torch.float64 if metric in ("dot", "euclidean") else torch.float32
    assert {x_dtype for x_dtype, _, _ in seen} == {expected}
    assert extreme.dtype == np.float32  # computed in float64, handed back as float32


# --- 2. semantic_search: scores are those of their indices, ties in a fixed order ---------------


@pytest.mark.parametrize("metric", METRICS)
def test_search_scores_are_the_similarity_of_their_indices(metric):
    rng = _rng(3)
    corpus = rng.standard_normal((300, 64)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    # Near-duplicates of corpus rows: the scores where the euclidean kernel used to lose
    # most of its digits (||x||^2 + ||y||^2 - 2 x.y cancels).
    queries = corpus[:60] + 1e-3 * rng.standard_normal((60, 64)).astype(np.float32)
    scores, indices = semantic_search(queries, corpus, top_k=5, metric=metric)
    for i in range(len(queries)):
        for r in range(5):
            alone = similarity(queries[i], corpus[indices[i, r]], metric=metric)[0, 0]
            assert_allclose(scores[i, r], alone, rtol=1e-5, atol=1e-7)
    exact = np.take_along_axis(reference(queries, corpus, metric), indices, axis=1)
    assert_allclose(scores, exact, rtol=1e-5, atol=1e-7)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize("metric", METRICS)
def test_search_ties_keep_the_lower_corpus_row_whatever_the_blocks(metric):
    """Copies of a corpus row tie exactly, in whatever block they fall: the lower rows win.

    Rows of -1, 0, 1 with four non-zeros make every cosine, dot and manhattan score exact,
    so all their ties are exact. Euclidean distances of different rows go through a
    matrix product and may differ in the last bit where they are mathematically equal,
    so for that metric only the copies of the query (distance 0) are checked.
    """
    rng = _rng(4)
    distinct = np.zeros((7, 16), dtype=np.float32)
    for row in distinct:
        row[rng.choice(16, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    # Each row three times, scattered, so that equal scores straddle the cut of top_k
    # and the boundaries of corpus blocks.
    corpus = np.repeat(distinct, 3, axis=0)[rng.permutation(21)]
    queries = distinct[[0, 3, 5, 6]]
    full = reference(queries, corpus, metric)
    expected = np.lexsort((np.broadcast_to(np.arange(21), full.shape), -full), axis=1)
    for k in (2, 3) if metric == "euclidean" else (2, 3, 5, 8):
        for budget in (4 * 21 * 4, 4 * 5 * 4, 4 * 8 * 2, 64 << 20):
            scores, indices = semantic_search(
                queries, corpus, top_k=k, metric=metric, max_block_bytes=budget
            )
            assert_array_equal(indices, expected[:, :k])
            assert_allclose(scores, np.take_along_axis(full, expected[:, :k], 1), atol=1e-6)


# --- 3. torch in, torch out --------------------------------------------------------------------


def _callable_dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


@pytest.mark.parametrize("metric", [*METRICS, _callable_dot])
@pytest.mark.parametrize(
    "kinds",
    [
        ("torch", "sparse"),
        ("sparse", "torch"),
        ("torch", "numpy"),
        ("numpy", "torch"),
        ("torch", None),
        ("torch", "list"),
    ],
)
def test_torch_in_torch_out_for_every_combination(metric, kinds):
    rng = _rng(5)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    y = rng.standard_normal((4, 6)).astype(np.float32)
    make = {
        "torch": torch.from_numpy,
        "sparse": sp.csr_matrix,
        "numpy": lambda a: a,
        "list": lambda a: a.tolist(),
    }
    a = make[kinds[0]](x)
    b = None if kinds[1] is None else make[kinds[1]](y)
    expected_y = x if b is None else y

    got = similarity(a, b, metric=metric)
    assert isinstance(got, torch.Tensor), type(got)
    assert got.shape == (4, 4)
    # A list is float64 data (as numpy reads it); float32 otherwise.
    assert got.dtype == (torch.float64 if kinds[1] == "list" else torch.float32)
    name = metric if isinstance(metric, str) else "dot"
    assert_allclose(got.numpy(), reference(x, expected_y, name), rtol=1e-5, atol=1e-5)

    if b is not None:
        rows = paired_similarity(a, b, metric=metric)
        assert isinstance(rows, torch.Tensor)
        assert rows.shape == (4,)
        single = paired_similarity(a[0] if kinds[0] != "sparse" else a[[0]], b[0], metric=metric)
        assert isinstance(single, torch.Tensor)


def test_semantic_search_torch_out_with_either_input_a_tensor():
    rng = _rng(6)
    corpus = rng.standard_normal((30, 8)).astype(np.float32)
    queries = corpus[:3] + 0.01
    reference_scores, reference_indices = semantic_search(queries, corpus, top_k=4)
    for q, c in [(torch.from_numpy(queries), corpus), (queries, torch.from_numpy(corpus))]:
        scores, indices = semantic_search(q, c, top_k=4)
        assert isinstance(scores, torch.Tensor) and isinstance(indices, torch.Tensor)
        assert scores.dtype == torch.float32 and indices.dtype == torch.int64
        assert_array_equal(indices.numpy(), reference_indices)
        assert_array_equal(scores.numpy(), reference_scores)
    scores, indices = semantic_search(queries, corpus, top_k=4)
    assert isinstance(scores, np.ndarray) and isinstance(indices, np.ndarray)


# --- 4. shapes and values: a result of the right shape or a clear ValueError -----------------


@pytest.mark.parametrize(
    ("X", "Y", "words"),
    [
        (np.array([]), None, ["X", "dimension 0", "(0,)"]),
        (np.ones((3, 0)), None, ["X", "dimension 0", "(3, 0)"]),
        (np.ones((2, 3)), np.ones((2, 0)), ["Y", "dimension 0", "(2, 0)"]),
        (sp.csr_array(np.ones((2, 3))), sp.csr_array((2, 0)), ["Y", "dimension 0"]),
        (np.float64(2.0), None, ["X", "0 dimensions"]),
        (np.ones((2, 3, 4)), None, ["X", "3 dimensions", "(2, 3, 4)"]),
        (torch.ones(2, 3, 4), None, ["X", "3 dimensions", "(2, 3, 4)"]),
        (np.ones((2, 3)), np.ones((1, 2, 3)), ["Y", "3 dimensions", "(1, 2, 3)"]),
        (np.array([["a", "b"]]), None, ["X", "strings"]),
        (["one text", "another"], None, ["X", "strings"]),
        (np.array([[1.0, "a"]], dtype=object), None, ["X", "not an array of numbers"]),
        (np.ones((2, 3), dtype=complex), None, ["X", "complex"]),
        (torch.ones(2, 3, dtype=torch.complex64), None, ["X", "complex"]),
        (sp.csr_array(np.ones((2, 3), dtype=complex)), None, ["X", "complex"]),
        ([[1.0, 2.0], [3.0]], None, ["X", "not an array of numbers"]),
        (np.array([[1.0, np.nan]]), None, ["X", "NaN"]),
        (np.ones((2, 3)), np.array([[np.inf, 0.0, 0.0]]), ["Y", "infinity"]),
        (torch.tensor([[0.0, float("nan")]]), None, ["X", "NaN"]),
        (sp.csr_array(np.array([[np.nan, 1.0]])), None, ["X", "NaN"]),
        (np.ones((2, 3)), np.ones((2, 4)), ["X", "Y", "3", "4"]),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), None, ["X", "datetime64"]),
    ],
)
@pytest.mark.parametrize("metric", ["cosine", "euclidean", _callable_dot])
def test_bad_inputs_raise_value_error_naming_argument_and_shape(X, Y, words, metric):
    with pytest.raises(ValueError) as info:
        similarity(X, Y, metric=metric)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_one_dimensional_sparse_is_one_embedding():
    one = sp.csr_array(np.array([3.0, 4.0, 0.0]))
    got = similarity(one, metric="euclidean")
    assert got.shape == (1, 1) and got[0, 0] == 0.0
    assert_allclose(similarity(one, np.eye(3), metric="dot"), [[3.0, 4.0, 0.0]])
    assert paired_similarity(one, np.array([0.0, 0.0, 0.0]), metric="euclidean") == -5.0


def test_search_and_pairwise_refuse_bad_inputs_the_same_way():
    with pytest.raises(ValueError, match=r"queries.*dimension 0"):
        semantic_search(np.ones((2, 0)), np.ones((3, 0)), top_k=1)
    with pytest.raises(ValueError, match=r"corpus.*NaN"):
        semantic_search(np.ones((2, 3)), np.array([[np.nan, 1.0, 1.0]]), top_k=1)
    with pytest.raises(ValueError, match=r"corpus.*sparse"):
        semantic_search(np.ones((2, 3)), sp.csr_array(np.ones((3, 3))), top_k=1)
    with pytest.raises(ValueError, match=r"Y.*3 dimensions"):
        paired_similarity(np.ones((2, 3)), np.ones((2, 1, 3)))
    with pytest.raises(ValueError, match=r"X.*strings"):
        paired_similarity(["a", "b"], ["c", "d"])


@pytest.mark.parametrize("metric", [*METRICS, _callable_dot])
@pytest.mark.parametrize("kind", ["numpy", "torch", "sparse"])
def test_empty_inputs_give_empty_results(metric, kind):
    make = {"numpy": lambda a: a, "torch": torch.from_numpy, "sparse": sp.csr_array}[kind]
    empty, rows = make(np.zeros((0, 3))), make(np.ones((2, 3)))
    for got, shape in [
        (similarity(empty, rows, metric=metric), (0, 2)),
        (similarity(rows, empty, metric=metric), (2, 0)),
        (similarity(empty, metric=metric), (0, 0)),
        (paired_similarity(empty, empty, metric=metric), (0,)),
    ]:
        assert tuple(got.shape) == shape
        assert isinstance(got, torch.Tensor) == (kind == "torch")
    if kind != "sparse" and isinstance(metric, str):
        scores, indices = semantic_search(empty, rows, top_k=2, metric=metric)
        assert tuple(scores.shape) == tuple(indices.shape) == (0, 2)
        with pytest.raises(ValueError, match="0 corpus rows"):
            semantic_search(rows, empty, top_k=1, metric=metric)


# --- 5. the fuzz -------------------------------------------------------------------------------

KINDS = ["numpy", "torch", "sparse", "list"]
DTYPES = ["float32", "float64", "float16", "int64", "bool"]
EXPONENTS = {"float16": (-24, 15), "float32": (-149, 127), "float64": (-1074, 1023)}
# Where squares and products leave the normal range of the dtype: drawn often.
EDGES = {
    "float16": [-24, -14, -7, 7, 8, 15],
    "float32": [-149, -126, -100, -75, -63, -50, 50, 63, 64, 100, 120, 127],
    "float64": [-1074, -1022, -600, -537, -511, -500, 500, 511, 512, 600, 1000, 1023],
}


@st.composite
def embedding_values(draw, d: int, dtype: str) -> np.ndarray:
    """An (n, d) float64 array of values that ``dtype`` holds exactly.

    Float magnitudes range over the whole dtype, subnormal numbers included, with one
    magnitude per array, per row or per value.
    """
    n = draw(st.integers(0, 6))
    if dtype in ("int64", "bool"):
        low, high = (0, 1) if dtype == "bool" else (-1000, 1000)
        values = draw(st.lists(st.integers(low, high), min_size=n * d, max_size=n * d))
        return np.array(values, dtype=np.float64).reshape(n, d)
    mantissas = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(-2.0, 2.0, allow_nan=False)),
            min_size=n * d,
            max_size=n * d,
        )
    )
    shape = draw(st.sampled_from([(1, 1), (n, 1), (n, d)]))
    count = shape[0] * shape[1]
    exponent = st.one_of(st.integers(*EXPONENTS[dtype]), st.sampled_from(EDGES[dtype]))
    powers = draw(st.lists(exponent, min_size=count, max_size=count))
    scale = np.ldexp(1.0, np.array(powers, dtype=np.int64))
    # Rounded to the dtype; a value beyond its range is clipped to its largest.
    limit = float(np.finfo(dtype).max)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        values = np.array(mantissas).reshape(n, d) * scale.reshape(shape)
        return np.clip(values, -limit, limit).astype(dtype).astype(np.float64)


@st.composite
def embedding_inputs(draw, d: int, name: str):
    """(input object, its values as float64 2-D, its kind, its dtype, whether 1-D)."""
    kind = draw(st.sampled_from(KINDS), label=f"{name} kind")
    dtype = draw(st.sampled_from(DTYPES), label=f"{name} dtype")
    if kind == "sparse" and dtype == "float16":
        dtype = "float32"  # scipy.sparse has no float16
    values = draw(embedding_values(d, dtype), label=f"{name} values")
    one_d = len(values) == 1 and draw(st.booleans(), label=f"{name} 1-D")
    array = values.astype(dtype)
    array = array[0] if one_d else array
    make = {
        "numpy": lambda a: a,
        "torch": lambda a: torch.from_numpy(a.copy()),
        "sparse": sp.csr_array,
        "list": lambda a: a.tolist(),
    }
    return make[kind](array), values, kind, dtype, one_d


def _result_dtype(inputs: list) -> type:
    # float16 and float32 arrays compute as float32; a list is read by numpy as float64.
    narrow = all(dt in ("float16", "float32") and kind != "list" for _, _, kind, dt, _ in inputs)
    return np.float32 if narrow else np.float64


@settings(deadline=None)
@given(data=st.data())
def test_fuzz_similarity_inputs(data):
    metric = data.draw(st.sampled_from(METRICS), label="metric")
    d = data.draw(st.integers(1, 8), label="d")
    inputs = [data.draw(embedding_inputs(d, "X"))]
    if data.draw(st.booleans(), label="with Y"):
        inputs.append(data.draw(embedding_inputs(d, "Y")))
    X, x = inputs[0][:2]
    Y, y = inputs[1][:2] if len(inputs) == 2 else (None, x)
    if any(kind == "list" and not len(values) for _, values, kind, _, _ in inputs):
        # An empty list carries no width: it is an embedding of dimension 0.
        with pytest.raises(ValueError, match="dimension 0"):
            similarity(X, Y, metric=metric)
        return
    as_torch = any(kind == "torch" for _, _, kind, _, _ in inputs)
    dtype = _result_dtype(inputs)

    got = similarity(X, Y, metric=metric)
    assert isinstance(got, torch.Tensor) == as_torch
    got = _numpy(got)
    assert got.dtype == dtype
    assert got.shape == (len(x), len(y))
    assert_matches_reference(got, x, y, metric)
    if Y is None:
        tol = tolerance(x, x, metric, reference(x, x, metric), dtype)
        finite = np.isfinite(got) & np.isfinite(got.T)
        assert (np.abs(got[finite] - got.T[finite]) <= 2 * tol[finite]).all()

    if len(x) == len(y):
        rows = paired_similarity(X, X if Y is None else Y, metric=metric)
        assert isinstance(rows, torch.Tensor) == as_torch
        rows = _numpy(rows)
        both_1d = all(one_d for *_, one_d in inputs)
        assert rows.shape == (() if both_1d else (len(x),))
        assert rows.dtype == dtype
        assert_rows_match_reference(rows, x, y, metric)

    if len(y) and not any(kind == "sparse" for _, _, kind, _, _ in inputs):
        top_k = data.draw(st.integers(1, len(y)), label="top_k")
        budget = data.draw(st.sampled_from([dtype().itemsize * top_k, 64 << 20]), label="bytes")
        scores, indices = semantic_search(
            X, X if Y is None else Y, top_k=top_k, metric=metric, max_block_bytes=budget
        )
        assert isinstance(scores, torch.Tensor) == isinstance(indices, torch.Tensor) == as_torch
        scores, indices = _numpy(scores), _numpy(indices)
        assert scores.shape == indices.shape == (len(x), top_k)
        assert scores.dtype == dtype and indices.dtype == np.int64
        assert all(len(set(row)) == top_k for row in indices.tolist())
        assert not np.isnan(scores).any()
        assert (scores[:, 1:] <= scores[:, :-1]).all()
        # Equal scores: the lower corpus row first.
        tied = scores[:, 1:] == scores[:, :-1]
        assert (np.diff(indices, axis=1)[tied] > 0).all()
        # Each score is the similarity of its pair.
        for i in range(len(x)):
            assert_matches_reference(scores[i][None, :], x[i : i + 1], y[indices[i]], metric)
