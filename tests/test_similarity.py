"""Tests for skembed.similarity: the enum, the four metrics, input kinds and row blocking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import METRICS
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.testing import assert_allclose, assert_array_equal
from scipy.spatial.distance import cdist
from sklearn.metrics.pairwise import cosine_similarity

import skembed._similarity as sim_module
import skembed._similarity_numerics as numerics_module
from skembed import SimilarityFunction, paired_similarity, similarity

SETTINGS = settings(max_examples=50, deadline=None)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _to_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


# --------------------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------------------


def _elements(dtype) -> st.SearchStrategy[float]:
    """Bounded finite values; zeros are allowed but no tiny magnitudes.

    Magnitudes below 2**-10 are left out so that a non-zero row never has a norm under the
    1e-12 eps of ``torch.nn.functional.normalize`` (where cosine deliberately departs from
    scikit-learn, as in the reference library).
    """
    width = 32 if np.dtype(dtype) == np.float32 else 64
    lo = 2.0**-10
    return st.one_of(
        st.just(0.0),
        st.floats(lo, 10.0, width=width, allow_nan=False, allow_infinity=False),
        st.floats(-10.0, -lo, width=width, allow_nan=False, allow_infinity=False),
    )


@st.composite
def matrix_pairs(draw, dtype=np.float64, same_rows=False, max_rows=6, max_dim=6):
    d = draw(st.integers(1, max_dim))
    n_x = draw(st.integers(1, max_rows))
    n_y = n_x if same_rows else draw(st.integers(1, max_rows))
    x = draw(arrays(dtype, (n_x, d), elements=_elements(dtype)))
    y = draw(arrays(dtype, (n_y, d), elements=_elements(dtype)))
    return x, y


@st.composite
def matrices(draw, dtype=np.float64, max_rows=6, max_dim=6):
    d = draw(st.integers(1, max_dim))
    n = draw(st.integers(1, max_rows))
    return draw(arrays(dtype, (n, d), elements=_elements(dtype)))


# --------------------------------------------------------------------------------------
# 1. The SimilarityFunction enum
# --------------------------------------------------------------------------------------


def test_enum_values():
    assert SimilarityFunction.COSINE.value == "cosine"
    assert SimilarityFunction.DOT_PRODUCT.value == "dot"
    assert SimilarityFunction.EUCLIDEAN.value == "euclidean"
    assert SimilarityFunction.MANHATTAN.value == "manhattan"
    assert SimilarityFunction.possible_values() == METRICS
    assert [m.value for m in SimilarityFunction] == METRICS


def test_dot_is_an_alias_of_dot_product():
    assert SimilarityFunction.DOT is SimilarityFunction.DOT_PRODUCT
    assert len(list(SimilarityFunction)) == 4
    assert SimilarityFunction.DOT.name == "DOT_PRODUCT"


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("cosine", SimilarityFunction.COSINE),
        ("dot", SimilarityFunction.DOT_PRODUCT),
        ("dot_product", SimilarityFunction.DOT_PRODUCT),
        ("DOT_PRODUCT", SimilarityFunction.DOT_PRODUCT),
        ("Dot", SimilarityFunction.DOT_PRODUCT),
        ("COSINE", SimilarityFunction.COSINE),
        ("Euclidean", SimilarityFunction.EUCLIDEAN),
        ("MANHATTAN", SimilarityFunction.MANHATTAN),
        (" manhattan ", SimilarityFunction.MANHATTAN),
    ],
)
def test_enum_from_string(name, member):
    assert SimilarityFunction(name) is member


def test_enum_from_member():
    for member in SimilarityFunction:
        assert SimilarityFunction(member) is member


@pytest.mark.parametrize("bad", ["cosin", "l2", "", "dotproduct", 3, None])
def test_enum_unknown_name_lists_valid_values(bad):
    with pytest.raises(ValueError) as info:
        SimilarityFunction(bad)
    message = str(info.value)
    for value in METRICS:
        assert value in message


def test_enum_members_equal_their_strings():
    assert SimilarityFunction.COSINE == "cosine"
    assert SimilarityFunction.DOT_PRODUCT == "dot"
    assert SimilarityFunction.DOT == "dot"
    assert SimilarityFunction.EUCLIDEAN == "euclidean"
    assert SimilarityFunction.MANHATTAN == "manhattan"
    assert "cosine" == SimilarityFunction.COSINE
    assert isinstance(SimilarityFunction.COSINE, str)
    assert str(SimilarityFunction.MANHATTAN) == "manhattan"
    assert f"{SimilarityFunction.EUCLIDEAN}" == "euclidean"
    assert SimilarityFunction.COSINE in {"cosine"}


@pytest.mark.parametrize(
    "metric",
    [SimilarityFunction.DOT, SimilarityFunction.DOT_PRODUCT, "dot_product", "DOT", "Dot_Product"],
)
def test_metric_accepts_members_and_aliases(metric):
    x = _rng().standard_normal((4, 3))
    y = _rng(1).standard_normal((5, 3))
    assert_allclose(similarity(x, y, metric=metric), x @ y.T, rtol=1e-12, atol=1e-12)
    assert_allclose(
        paired_similarity(x, y[:4], metric=metric), (x * y[:4]).sum(1), rtol=1e-12, atol=1e-12
    )


# --------------------------------------------------------------------------------------
# 2. Agreement with sentence_transformers.util
# --------------------------------------------------------------------------------------

MATRIX_REFERENCE = {
    "cosine": "cos_sim",
    "dot": "dot_score",
    "euclidean": "euclidean_sim",
    "manhattan": "manhattan_sim",
}
PAIRWISE_REFERENCE = {
    "cosine": "pairwise_cos_sim",
    "dot": "pairwise_dot_score",
    "euclidean": "pairwise_euclidean_sim",
    "manhattan": "pairwise_manhattan_sim",
}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("n_x", "n_y", "d"), [(5, 7, 16), (30, 40, 24), (1, 3, 8)])
def test_similarity_matches_sentence_transformers(metric, n_x, n_y, d):
    from sentence_transformers import util

    rng = _rng(n_x + n_y + d)
    x = rng.standard_normal((n_x, d)).astype(np.float32)
    y = rng.standard_normal((n_y, d)).astype(np.float32)
    x[0] = 0.0  # a zero row: the reference scores it 0 under cosine
    expected = getattr(util, MATRIX_REFERENCE[metric])(torch.from_numpy(x), torch.from_numpy(y))
    expected = expected.numpy()

    got = similarity(x, y, metric=metric)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32
    assert got.shape == (n_x, n_y)
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    got_torch = similarity(torch.from_numpy(x), torch.from_numpy(y), metric=metric)
    assert isinstance(got_torch, torch.Tensor)
    assert_allclose(got_torch.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.reference_fix("pairwise cosine of normalised rows")
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(("n", "d"), [(9, 16), (40, 24), (1, 5)])
def test_pairwise_similarity_matches_sentence_transformers(metric, n, d):
    from sentence_transformers import util

    rng = _rng(n * d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.standard_normal((n, d)).astype(np.float32)
    x[0] = 0.0
    reference = getattr(util, PAIRWISE_REFERENCE[metric])
    expected = reference(torch.from_numpy(x), torch.from_numpy(y)).numpy()

    got = paired_similarity(x, y, metric=metric)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32
    assert got.shape == (n,)
    assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    # Two 1-D inputs: a 0-d result, as in the reference.
    expected_scalar = reference(torch.from_numpy(x[-1]), torch.from_numpy(y[-1])).numpy()
    got_scalar = paired_similarity(x[-1], y[-1], metric=metric)
    assert np.shape(got_scalar) == np.shape(expected_scalar) == ()
    assert_allclose(got_scalar, expected_scalar, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# 3. Hypothesis properties
# --------------------------------------------------------------------------------------


def _tol(dtype) -> dict:
    if np.dtype(dtype) == np.float32:
        return {"rtol": 1e-5, "atol": 1e-4}
    return {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(data=st.data())
def test_property_symmetry(metric, dtype, data):
    x = data.draw(matrices(dtype))
    s = similarity(x, metric=metric)
    assert s.shape == (len(x), len(x))
    assert_allclose(s, s.T, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(data=st.data())
def test_property_self_similarity(dtype, data):
    x = data.draw(matrices(dtype))
    nonzero = np.linalg.norm(x.astype(np.float64), axis=1) > 0
    tight = 1e-5 if dtype == np.float32 else 1e-12

    cos = np.diag(similarity(x, metric="cosine"))
    assert_allclose(cos[nonzero], 1.0, atol=tight)
    assert_array_equal(cos[~nonzero], 0.0)

    # A row's distance to itself is recomputed from its difference, x - x: exactly zero.
    euclid = np.diag(similarity(x, metric="euclidean"))
    assert_array_equal(euclid, 0.0)

    manhattan = np.diag(similarity(x, metric="manhattan"))
    assert_allclose(manhattan, 0.0, atol=tight)

    # Nothing scores above a row's similarity with itself for the distance metrics.
    assert (similarity(x, metric="euclidean") <= 0).all()
    assert (similarity(x, metric="manhattan") <= tight).all()
    # Cosine stays in [-1, 1].
    assert (np.abs(similarity(x, metric="cosine")) <= 1 + tight).all()


@SETTINGS
@given(pair=matrix_pairs(np.float64))
def test_property_euclidean_matches_scipy_cdist(pair):
    x, y = pair
    assert_allclose(similarity(x, y, "euclidean"), -cdist(x, y, "euclidean"), rtol=1e-10, atol=1e-9)


@SETTINGS
@given(pair=matrix_pairs(np.float64))
def test_property_manhattan_matches_scipy_cdist(pair):
    x, y = pair
    assert_allclose(similarity(x, y, "manhattan"), -cdist(x, y, "cityblock"), rtol=1e-10, atol=1e-9)


@SETTINGS
@given(pair=matrix_pairs(np.float64))
def test_property_cosine_matches_sklearn(pair):
    x, y = pair
    got = similarity(x, y, "cosine")
    assert_allclose(got, cosine_similarity(x, y), rtol=1e-10, atol=1e-10)
    assert not np.isnan(got).any()


@SETTINGS
@given(pair=matrix_pairs(np.float64))
def test_property_dot_matches_matmul(pair):
    x, y = pair
    assert_allclose(similarity(x, y, "dot"), x @ y.T, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(data=st.data())
def test_property_pairwise_is_diagonal_of_similarity(metric, dtype, data):
    x, y = data.draw(matrix_pairs(dtype, same_rows=True))
    pairwise = paired_similarity(x, y, metric=metric)
    assert pairwise.shape == (len(x),)
    assert pairwise.dtype == dtype
    assert_allclose(pairwise, np.diag(similarity(x, y, metric=metric)), **_tol(dtype))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(data=st.data())
def test_property_dtype_preserved(metric, dtype, data):
    x, y = data.draw(matrix_pairs(dtype, same_rows=True))
    s = similarity(x, y, metric=metric)
    assert isinstance(s, np.ndarray)
    assert s.dtype == dtype
    assert s.shape == (len(x), len(y))
    assert similarity(x, metric=metric).dtype == dtype
    p = paired_similarity(x, y, metric=metric)
    assert isinstance(p, np.ndarray)
    assert p.dtype == dtype


@pytest.mark.parametrize("metric", METRICS)
@SETTINGS
@given(x=matrices(np.float64, max_rows=8), block=st.integers(1, 20))
def test_property_blocking_matches_unblocked(metric, x, block):
    y = x[::-1] * 0.5 + 1.0
    unblocked = similarity(x, y, metric=metric)
    unblocked_self = similarity(x, metric=metric)
    blocked = similarity(x, y, metric=metric, max_block_bytes=8 * block)
    blocked_self = similarity(x, metric=metric, max_block_bytes=8 * block)
    assert_allclose(blocked, unblocked, rtol=1e-12, atol=1e-12)
    assert_allclose(blocked_self, unblocked_self, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# 4. Zero rows under cosine
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_row_scores_zero_under_cosine(dtype):
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], dtype=dtype)
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    s = similarity(x, y, metric="cosine")
    assert not np.isnan(s).any()
    assert_array_equal(s[0], 0.0)
    assert_array_equal(s[:, 1], 0.0)
    assert_allclose(s[1, 0], 1 / math.sqrt(14), rtol=1e-6)

    self_sim = similarity(x, metric="cosine")
    assert self_sim[0, 0] == 0.0
    assert_allclose(self_sim[1, 1], 1.0, rtol=1e-6)

    p = paired_similarity(x, y, metric="cosine")
    assert not np.isnan(p).any()
    assert_array_equal(p, [0.0, 0.0])

    t = similarity(torch.from_numpy(x), torch.from_numpy(y), metric="cosine")
    assert not torch.isnan(t).any()
    assert_array_equal(t.numpy(), s)

    assert paired_similarity(np.zeros(3), np.zeros(3), metric="cosine") == 0.0


# --------------------------------------------------------------------------------------
# 5. torch inputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(metric, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=gen, dtype=dtype)
    y = torch.randn(3, 6, generator=gen, dtype=dtype)
    s = similarity(x, y, metric=metric)
    assert isinstance(s, torch.Tensor)
    assert s.dtype == dtype
    assert s.device == x.device
    assert s.shape == (4, 3)
    assert_allclose(s.numpy(), similarity(x.numpy(), y.numpy(), metric=metric), rtol=1e-6)

    p = paired_similarity(x, y[[0, 1, 2, 0]], metric=metric)
    assert isinstance(p, torch.Tensor)
    assert p.dtype == dtype
    assert p.shape == (4,)

    scalar = paired_similarity(x[0], y[0], metric=metric)
    assert isinstance(scalar, torch.Tensor)
    assert scalar.shape == ()


@pytest.mark.parametrize("metric", METRICS)
def test_torch_result_carries_no_gradient(metric):
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.randn(3, 4, requires_grad=True)
    assert not similarity(x, y, metric=metric).requires_grad
    assert not similarity(x, metric=metric).requires_grad
    assert not paired_similarity(x, y, metric=metric).requires_grad


@pytest.mark.parametrize("metric", METRICS)
def test_mixing_numpy_and_torch_returns_torch(metric):
    rng = _rng(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = rng.standard_normal((4, 5)).astype(np.float32)
    expected = similarity(x, y, metric=metric)

    for a, b in [(x, torch.from_numpy(y)), (torch.from_numpy(x), y)]:
        s = similarity(a, b, metric=metric)
        assert isinstance(s, torch.Tensor)
        assert s.dtype == torch.float32
        assert_allclose(s.numpy(), expected, rtol=1e-6, atol=1e-6)

        p = paired_similarity(a, b, metric=metric)
        assert isinstance(p, torch.Tensor)
        assert_allclose(p.numpy(), np.diag(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_torch_is_computed_in_float32(metric, half):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 32, generator=gen).to(half)
    y = torch.randn(6, 32, generator=gen).to(half)
    s = similarity(x, y, metric=metric)
    assert isinstance(s, torch.Tensor)
    assert s.dtype == torch.float32
    expected = similarity(x.float(), y.float(), metric=metric)
    assert_allclose(s.numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)

    p = paired_similarity(x, y[:5], metric=metric)
    assert p.dtype == torch.float32
    expected_p = paired_similarity(x.float(), y[:5].float(), metric=metric)
    assert_allclose(p.numpy(), expected_p.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_numpy_dtype_conversions(metric):
    x = np.arange(12).reshape(4, 3) - 5
    y = np.arange(6).reshape(2, 3)
    s = similarity(x, y, metric=metric)
    assert s.dtype == np.float64
    assert_allclose(s, similarity(x.astype(np.float64), y.astype(np.float64), metric=metric))

    s16 = similarity(x.astype(np.float16), y.astype(np.float16), metric=metric)
    assert s16.dtype == np.float32
    assert_allclose(s16, s, rtol=1e-5, atol=1e-5)

    p16 = paired_similarity(x[:2].astype(np.float16), y.astype(np.float16), metric=metric)
    assert p16.dtype == np.float32

    # Plain lists are accepted too.
    assert_allclose(similarity(x.tolist(), y.tolist(), metric=metric), s)

    ti = similarity(torch.from_numpy(x), torch.from_numpy(y), metric=metric)
    assert isinstance(ti, torch.Tensor)
    assert ti.is_floating_point()
    assert_allclose(ti.numpy(), s, rtol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_inputs_are_not_modified(metric):
    rng = _rng(4)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.standard_normal((5, 4)).astype(np.float32)
    x_copy, y_copy = x.copy(), y.copy()
    tx, ty = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
    tx_copy, ty_copy = tx.clone(), ty.clone()

    out = similarity(x, y, metric=metric)
    out += 1  # the output must not alias an input either
    paired_similarity(x, y, metric=metric)
    similarity(x, metric=metric)
    similarity(tx, ty, metric=metric)
    paired_similarity(tx, ty, metric=metric)

    assert_array_equal(x, x_copy)
    assert_array_equal(y, y_copy)
    assert torch.equal(tx, tx_copy)
    assert torch.equal(ty, ty_copy)


@pytest.mark.parametrize("metric", METRICS)
def test_read_only_and_non_contiguous_numpy(metric):
    rng = _rng(5)
    base = rng.standard_normal((6, 8))
    x = base[::2, ::2]  # non-contiguous
    y = base[1::2, 1::2].copy()
    y.setflags(write=False)  # read-only
    expected = similarity(np.ascontiguousarray(x), y.copy(), metric=metric)
    assert_allclose(similarity(x, y, metric=metric), expected, rtol=1e-12, atol=1e-12)
    assert_allclose(
        paired_similarity(x, y, metric=metric), np.diag(expected), rtol=1e-10, atol=1e-10
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", METRICS)
def test_torch_output_stays_on_device(metric):
    x = torch.randn(4, 8, device="cuda")
    y = torch.randn(4, 8, device="cuda")
    s = similarity(x, y, metric=metric)
    assert s.device == x.device
    assert paired_similarity(x, y, metric=metric).device == x.device
    assert_allclose(
        s.cpu().numpy(), similarity(x.cpu(), y.cpu(), metric=metric).numpy(), rtol=1e-4, atol=1e-4
    )


# --------------------------------------------------------------------------------------
# 6. scipy sparse inputs
# --------------------------------------------------------------------------------------


def _sparse_pair(dtype=np.float64):
    rng = _rng(6)
    x = rng.standard_normal((6, 10)).astype(dtype)
    y = rng.standard_normal((4, 10)).astype(dtype)
    x[np.abs(x) < 0.8] = 0.0
    y[np.abs(y) < 0.8] = 0.0
    x[2] = 0.0  # an all-zero sparse row
    return x, y


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_matches_dense(metric, dtype):
    x, y = _sparse_pair(dtype)
    dense = similarity(x, y, metric=metric)
    tol = _tol(dtype)

    for a, b in [
        (sp.csr_matrix(x), sp.csr_matrix(y)),
        (sp.csr_matrix(x), y),
        (x, sp.csr_matrix(y)),
        (sp.csc_matrix(x), sp.coo_matrix(y)),
        (sp.csr_array(x), sp.csr_array(y)),
    ]:
        got = similarity(a, b, metric=metric)
        assert isinstance(got, np.ndarray)
        assert not sp.issparse(got)
        assert got.shape == (6, 4)
        assert got.dtype == dtype
        assert not np.isnan(got).any()
        assert_allclose(got, dense, **tol)

    self_sparse = similarity(sp.csr_matrix(x), metric=metric)
    assert isinstance(self_sparse, np.ndarray)
    assert_allclose(self_sparse, similarity(x, metric=metric), **tol)
    assert_array_equal(self_sparse, similarity(sp.csr_matrix(x), sp.csr_matrix(x), metric=metric))

    p = paired_similarity(sp.csr_matrix(x[:4]), sp.csr_matrix(y), metric=metric)
    assert isinstance(p, np.ndarray)
    assert_allclose(p, paired_similarity(x[:4], y, metric=metric), **tol)


def test_sparse_zero_row_cosine_is_zero():
    x, y = _sparse_pair()
    s = similarity(sp.csr_matrix(x), sp.csr_matrix(y), metric="cosine")
    assert_array_equal(s[2], 0.0)


def test_sparse_integer_input_becomes_float64():
    x = sp.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]]))
    for metric in METRICS:
        s = similarity(x, metric=metric)
        assert s.dtype == np.float64
        assert_allclose(s, similarity(x.toarray().astype(np.float64), metric=metric), atol=1e-12)


def test_sparse_mismatched_dims_raise():
    with pytest.raises(ValueError, match=r"(?s)3.*5"):
        similarity(sp.csr_matrix(np.ones((2, 3))), sp.csr_matrix(np.ones((2, 5))))
    with pytest.raises(ValueError, match=r"(?s)3.*5"):
        similarity(sp.csr_matrix(np.ones((2, 3))), np.ones((2, 5)), metric="euclidean")


# --------------------------------------------------------------------------------------
# 7. 1-D promotion
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_one_dimensional_promotion(metric):
    a = np.array([1.0, 2.0, 2.0])
    b = np.array([2.0, 0.0, 1.0])
    m = np.stack([a, b, a + b])

    s = similarity(a, b, metric=metric)
    assert s.shape == (1, 1)
    assert similarity(a, metric=metric).shape == (1, 1)
    assert similarity(a, m, metric=metric).shape == (1, 3)
    assert similarity(m, b, metric=metric).shape == (3, 1)
    assert_allclose(similarity(a, m, metric=metric)[0], similarity(m, a, metric=metric)[:, 0])

    p = paired_similarity(a, b, metric=metric)
    assert np.shape(p) == ()
    assert_allclose(p, s[0, 0], rtol=1e-12)
    # Only two 1-D inputs give a 0-d result.
    assert paired_similarity(a, b[None, :], metric=metric).shape == (1,)

    ts = similarity(torch.from_numpy(a), torch.from_numpy(b), metric=metric)
    assert tuple(ts.shape) == (1, 1)
    tp = paired_similarity(torch.from_numpy(a), torch.from_numpy(b), metric=metric)
    assert isinstance(tp, torch.Tensor)
    assert tuple(tp.shape) == ()


def test_one_dimensional_known_values():
    a = np.array([3.0, 4.0])
    b = np.array([0.0, 0.0])
    assert similarity(a, b, "euclidean")[0, 0] == -5.0
    assert similarity(a, b, "manhattan")[0, 0] == -7.0
    assert similarity(a, b, "dot")[0, 0] == 0.0
    assert similarity(a, b, "cosine")[0, 0] == 0.0
    assert paired_similarity(a, b, "euclidean") == -5.0
    assert paired_similarity(a, b, "manhattan") == -7.0
    assert_allclose(paired_similarity(a, np.array([4.0, 3.0]), "cosine"), 24 / 25)
    assert_allclose(similarity(a, np.array([6.0, 8.0]), "cosine"), [[1.0]])


# --------------------------------------------------------------------------------------
# 8. Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [*METRICS, lambda a, b: 0.0])
def test_mismatched_dimension_raises(metric):
    with pytest.raises(ValueError, match=r"(?s)\b3\b.*\b5\b"):
        similarity(np.ones((2, 3)), np.ones((4, 5)), metric=metric)
    with pytest.raises(ValueError, match=r"(?s)\b3\b.*\b5\b"):
        similarity(torch.ones(2, 3), torch.ones(4, 5), metric=metric)
    with pytest.raises(ValueError, match=r"(?s)\b3\b.*\b5\b"):
        similarity(np.ones(3), np.ones(5), metric=metric)
    with pytest.raises(ValueError, match=r"(?s)\b3\b.*\b5\b"):
        paired_similarity(np.ones((2, 3)), np.ones((2, 5)), metric=metric)


@pytest.mark.parametrize("metric", [*METRICS, lambda a, b: 0.0])
def test_pairwise_different_row_counts_raise(metric):
    with pytest.raises(ValueError, match=r"(?s)\b2\b.*\b3\b"):
        paired_similarity(np.ones((2, 4)), np.ones((3, 4)), metric=metric)
    with pytest.raises(ValueError):
        paired_similarity(torch.ones(2, 4), torch.ones(3, 4), metric=metric)
    with pytest.raises(ValueError):
        paired_similarity(sp.csr_matrix(np.ones((2, 4))), np.ones((3, 4)), metric=metric)
    with pytest.raises(ValueError):
        paired_similarity(np.ones(4), np.ones((3, 4)), metric=metric)


@pytest.mark.parametrize("metric", [*METRICS, lambda a, b: 0.0])
def test_three_dimensional_input_raises(metric):
    with pytest.raises(ValueError, match="3"):
        similarity(np.ones((2, 3, 4)), metric=metric)
    with pytest.raises(ValueError):
        similarity(np.ones((2, 4)), np.ones((2, 3, 4)), metric=metric)
    with pytest.raises(ValueError):
        similarity(torch.ones(2, 3, 4), metric=metric)
    with pytest.raises(ValueError):
        paired_similarity(np.ones((2, 3, 4)), np.ones((2, 3, 4)), metric=metric)


@pytest.mark.parametrize("metric", [*METRICS, lambda a, b: 0.0])
@pytest.mark.parametrize(
    "make",
    [np.float64, np.array, torch.tensor],
    ids=["numpy-scalar", "numpy-0d", "torch-0d"],
)
def test_zero_dimensional_input_raises(metric, make):
    """A 0-d input is not an embedding: (n, d) and (d,) are the documented shapes.

    The torch and callable paths reject it (``_promote_2d`` even words a message for
    "0 dimensions"), so numpy scalars must not slip through as a 1-value embedding.
    """
    scalar = make(2.0)
    with pytest.raises(ValueError, match="0 dimensions"):
        similarity(scalar, metric=metric)
    with pytest.raises(ValueError, match="0 dimensions"):
        similarity(np.ones((2, 1)), scalar, metric=metric)
    with pytest.raises(ValueError, match="0 dimensions"):
        paired_similarity(scalar, make(3.0), metric=metric)


@pytest.mark.parametrize("bad", ["cosin", "l1", "jaccard", ""])
def test_unknown_metric_raises(bad):
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="cosine"):
        similarity(x, metric=bad)
    with pytest.raises(ValueError, match="manhattan"):
        paired_similarity(x, x, metric=bad)
    with pytest.raises(ValueError):
        similarity(sp.csr_matrix(x), metric=bad)
    with pytest.raises(ValueError):
        similarity(torch.ones(2, 3), metric=bad)


def test_object_array_raises():
    with pytest.raises(ValueError):
        similarity(np.array([[1.0, "a"]], dtype=object))


# --------------------------------------------------------------------------------------
# 9. Callable metrics
# --------------------------------------------------------------------------------------


def test_callable_metric_matches_dot():
    rng = _rng(7)
    x = rng.standard_normal((4, 5))
    y = rng.standard_normal((3, 5))

    def dot(a, b):
        return float(np.dot(a, b))

    s = similarity(x, y, metric=dot)
    assert isinstance(s, np.ndarray)
    assert s.shape == (4, 3)
    assert_allclose(s, similarity(x, y, metric="dot"), rtol=1e-12, atol=1e-12)
    assert_allclose(similarity(x, metric=dot), similarity(x, x, metric="dot"), rtol=1e-12)
    assert_allclose(
        paired_similarity(x[:3], y, metric=dot),
        paired_similarity(x[:3], y, metric="dot"),
        rtol=1e-12,
        atol=1e-12,
    )
    scalar = paired_similarity(x[0], y[0], metric=dot)
    assert np.shape(scalar) == ()
    assert_allclose(scalar, np.dot(x[0], y[0]))

    # Torch and sparse inputs reach the callable as numpy rows.
    assert_allclose(similarity(torch.from_numpy(x), y, metric=dot), s, rtol=1e-12)
    assert_allclose(similarity(sp.csr_matrix(x), y, metric=dot), s, rtol=1e-12)


def test_callable_metric_is_called_on_each_pair_of_rows():
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.arange(4, dtype=np.float64).reshape(2, 2) + 10
    calls = []

    def record(a, b):
        assert isinstance(a, np.ndarray)
        assert isinstance(b, np.ndarray)
        assert a.shape == b.shape == (2,)
        calls.append((tuple(a), tuple(b)))
        return a[0] * 100 + b[1]

    s = similarity(x, y, metric=record)
    assert len(calls) == 6
    assert sorted(calls) == sorted((tuple(a), tuple(b)) for a in x for b in y)
    assert_array_equal(s, x[:, [0]] * 100 + y[None, :, 1])

    calls.clear()
    p = paired_similarity(x[:2], y, metric=record)
    assert calls == [(tuple(x[0]), tuple(y[0])), (tuple(x[1]), tuple(y[1]))]
    assert_array_equal(p, x[:2, 0] * 100 + y[:, 1])


def test_callable_metric_keeps_float32():
    x = np.ones((2, 3), dtype=np.float32)
    assert similarity(x, metric=lambda a, b: float(a @ b)).dtype == np.float32
    assert paired_similarity(x, x, metric=lambda a, b: float(a @ b)).dtype == np.float32


# --------------------------------------------------------------------------------------
# 10. Row blocking
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("block", [1, 7, 50])
@pytest.mark.parametrize("as_torch", [False, True])
def test_blocking_matches_unblocked(monkeypatch, metric, block, as_torch):
    rng = _rng(8)
    x = rng.standard_normal((37, 12))
    y = rng.standard_normal((9, 12))
    x[5] = 0.0
    if as_torch:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    unblocked = _to_numpy(similarity(x, y, metric=metric))
    unblocked_self = _to_numpy(similarity(x, metric=metric))
    unblocked_32 = similarity(_to_numpy(x).astype(np.float32), metric=metric)

    budget = 8 * block
    blocked = similarity(x, y, metric=metric, max_block_bytes=budget)
    blocked_self = similarity(x, metric=metric, max_block_bytes=budget)
    blocked_32 = similarity(_to_numpy(x).astype(np.float32), metric=metric, max_block_bytes=budget)

    assert isinstance(blocked, torch.Tensor) == as_torch
    assert blocked.shape == (37, 9)
    assert blocked_self.shape == (37, 37)
    assert_allclose(_to_numpy(blocked), unblocked, rtol=1e-12, atol=1e-12)
    # Euclidean self-distances near 0 differ by ~1e-7 when a block changes cdist's algorithm.
    assert_allclose(_to_numpy(blocked_self), unblocked_self, rtol=1e-12, atol=1e-6)
    self_twice = similarity(x, x, metric=metric, max_block_bytes=budget)
    assert_array_equal(_to_numpy(blocked_self), _to_numpy(self_twice))
    assert blocked_32.dtype == np.float32
    # float32 euclidean goes through cdist's matrix-product form, hence the looser atol.
    assert_allclose(blocked_32, unblocked_32, rtol=1e-5, atol=3e-3)


@pytest.mark.parametrize("metric", METRICS)
def test_blocking_splits_rows(monkeypatch, metric):
    """With a tiny budget the kernel really runs on row blocks that cover X exactly once."""
    rng = _rng(9)
    # Integers compute in float64, in which cosine and manhattan write in place (never blocked).
    x = rng.integers(-9, 9, (10, 4))
    y = rng.integers(-9, 9, (3, 4))
    expected = similarity(x, y, metric=metric)

    seen = []
    kernel = sim_module._matrix_kernel

    def spy(xb, yb, name, out):
        seen.append((xb.shape[0], yb.shape[0], None if out is None else out.shape))
        return kernel(xb, yb, name, out)

    monkeypatch.setattr(sim_module, "_matrix_kernel", spy)
    # Room for 7 float64 scores: blocks of 2 rows of 3.
    got = similarity(x, y, metric=metric, max_block_bytes=56)
    if metric in ("cosine", "manhattan"):
        assert seen == [(10, 3, None)]  # one block, which the kernel allocates itself
        return

    assert len(seen) > 1
    assert sum(rows for rows, _, _ in seen) == 10
    assert all(rows <= 2 and n_y == 3 and out == (rows, 3) for rows, n_y, out in seen)
    assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

    # More columns than the budget: one row at a time.
    seen.clear()
    wide = rng.integers(-9, 9, (12, 4))
    got_self = similarity(wide, metric=metric, max_block_bytes=56)
    assert len(seen) == 12
    # Within the default budget, one block.
    seen.clear()
    assert_allclose(similarity(wide, metric=metric), got_self, rtol=1e-12, atol=1e-6)
    assert len(seen) == 1
    monkeypatch.setattr(sim_module, "_matrix_kernel", kernel)
    assert_allclose(got_self, similarity(wide, metric=metric), rtol=1e-12, atol=1e-6)


def test_scores_written_in_place_are_never_blocked(monkeypatch):
    """Cosine, manhattan and float32 dot need no temporaries: one block whatever the budget."""
    x = _rng(10).standard_normal((10, 4)).astype(np.float32)
    seen = []
    kernel = sim_module._matrix_kernel

    def spy(xb, yb, name, out):
        seen.append(xb.shape[0])
        return kernel(xb, yb, name, out)

    monkeypatch.setattr(sim_module, "_matrix_kernel", spy)
    for metric in ("cosine", "dot", "manhattan"):
        blocked = similarity(x, metric=metric, max_block_bytes=8)
        assert seen == [10]
        assert_allclose(blocked, similarity(x.astype(np.float64), metric=metric), rtol=1e-5)
        seen.clear()
    similarity(x, metric="euclidean", max_block_bytes=8)
    assert seen == [1] * 10


@pytest.mark.parametrize("metric", METRICS)
def test_blocking_with_empty_inputs(metric):
    tiny = {"metric": metric, "max_block_bytes": 56}
    assert similarity(np.zeros((0, 3)), np.ones((2, 3)), **tiny).shape == (0, 2)
    assert similarity(np.ones((4, 3)), np.zeros((0, 3)), **tiny).shape == (4, 0)
    assert paired_similarity(np.zeros((0, 3)), np.zeros((0, 3)), metric=metric).shape == (0,)


# --------------------------------------------------------------------------------------
# 11. Y=None
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [*METRICS, lambda a, b: float(np.abs(a - b).max())])
def test_y_none_equals_x_with_itself(metric):
    rng = _rng(10)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    assert_array_equal(similarity(x, metric=metric), similarity(x, x, metric=metric))
    assert_array_equal(similarity(x, None, metric=metric), similarity(x, x.copy(), metric=metric))
    tx = torch.from_numpy(x)
    t_none = similarity(tx, metric=metric)
    t_self = similarity(tx, tx, metric=metric)
    if isinstance(t_none, torch.Tensor):
        assert torch.equal(t_none, t_self)
    else:
        assert_array_equal(t_none, t_self)


def test_default_metric_is_cosine():
    rng = _rng(11)
    x = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 3))
    assert_array_equal(similarity(x, y), similarity(x, y, metric="cosine"))
    assert_array_equal(paired_similarity(x, y), paired_similarity(x, y, metric="cosine"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_manhattan_tiles_cover_every_pair_once(monkeypatch, dtype):
    """Tiles of (x rows, y rows) that do not divide the inputs still give every distance."""
    rng = _rng(11)
    x = rng.normal(size=(23, 5)).astype(dtype)
    y = rng.normal(size=(17, 5)).astype(dtype)
    # Tiles of 3 y rows and 2 x rows (2 * 3 * 5 differences of 4 or 8 bytes each).
    monkeypatch.setattr(numerics_module, "_L1_Y_ROWS", 3)
    monkeypatch.setattr(numerics_module, "_L1_TILE_BYTES", 2 * 3 * 5 * np.dtype(dtype).itemsize)
    got = similarity(x, y, metric="manhattan")
    assert got.dtype == dtype
    assert_allclose(got, -cdist(x.astype(np.float64), y, "cityblock"), rtol=1e-6)
