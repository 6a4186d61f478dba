"""dtype="int8": oneDNN int8 products on the unpadded BERT pass, against float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import sentences, small_bert_model
from sklearn.model_selection import GridSearchCV

from skembed import SentenceEmbedder, evaluate_sts
from skembed._device import resolve_dtype
from skembed.cache import clear_cache
from skembed.encoder import work_counts
from skembed.encoder.modules._int8 import Int8Linears, _QuantizedLinear, _Range, calibration_texts
from skembed.encoder.modules._packed import PackedBert, Products

CPU = torch.device("cpu")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_quantized_linear_matches_float64_arithmetic_on_its_grid():
    """The kernel computes exactly what its quantized operands say, up to float32 rounding."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 40)
    value_range = _Range()
    x = torch.randn(70, 48)
    value_range.update(x)
    layer = _QuantizedLinear(linear, value_range)
    q = layer.quantize(x)
    assert q.dtype == torch.uint8
    # float64 reference built from the quantized operands themselves
    x64 = (q.double() - layer.input_zero_point) * layer.input_scale
    w64 = linear.weight.double()
    w_scales = layer.weight_scales.double()[:, None]
    w64 = torch.round(w64 / w_scales).clamp(-127, 127) * w_scales
    expected = x64 @ w64.T + linear.bias.double()
    got = layer(q)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    gelu = layer(q, gelu=True)
    torch.testing.assert_close(
        gelu.double(), torch.nn.functional.gelu(expected), rtol=1e-5, atol=1e-5
    )
    residual = torch.randn(70, 40)
    added = layer(q, residual=residual)
    torch.testing.assert_close(added.double(), expected + residual.double(), rtol=1e-5, atol=1e-5)
    # and the quantization error itself stays within one step of each operand's grid
    float64 = x.double() @ linear.weight.double().T + linear.bias.double()
    assert (got.double() - float64).abs().max() < 0.05 * float64.abs().max()


def test_quantize_clips_to_the_calibrated_range_and_keeps_zero_exact():
    linear = torch.nn.Linear(4, 3)
    value_range = _Range()
    value_range.update(torch.tensor([[-1.0, 2.0, 0.5, 0.0]]))
    layer = _QuantizedLinear(linear, value_range)
    q = layer.quantize(torch.tensor([[0.0, 2.0, 100.0, -100.0]]))
    assert q[0, 0] == layer.input_zero_point  # zero maps to the zero point exactly
    assert q[0, 2] == 255 and q[0, 3] == 0  # beyond the range: clipped
    assert abs((int(q[0, 1]) - layer.input_zero_point) * layer.input_scale - 2.0) < 1e-6


@pytest.fixture
def small_bert():
    return small_bert_model()


def _calibrated(model, ids, mask) -> PackedBert:
    float_pass = PackedBert(model)

    def run(products):
        float_pass.products = products
        with torch.inference_mode():
            float_pass(ids, mask)

    return PackedBert(model, Int8Linears.calibrate(run, Products(), model))


def test_int8_pass_is_close_to_float32_and_a_text_does_not_depend_on_its_batch(small_bert):
    generator = torch.Generator().manual_seed(1)
    lengths = [17, 17, 12, 9, 5, 3]
    ids = torch.randint(5, 50, (len(lengths), 20), generator=generator)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    int8 = _calibrated(small_bert, ids, mask)
    with torch.inference_mode():
        exact = PackedBert(small_bert)(ids, mask)
        approx = int8(ids, mask)
        alone = int8(ids[3:4], mask[3:4])
    real = mask.bool()
    a, b = exact[real], approx[real]
    cosines = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cosines.min() > 0.99, cosines.min()
    assert (a - b).abs().max() > 1e-4  # int8 really ran: not the float32 products
    assert (approx[~real] == 0).all()
    # static ranges: the same text gives the same vector alone and in a batch
    torch.testing.assert_close(alone[0, :9], approx[3, :9], rtol=0, atol=1e-6)


def test_a_product_not_seen_in_calibration_is_refused(small_bert):
    ids = torch.randint(5, 50, (2, 6))
    int8 = _calibrated(small_bert, ids, torch.ones_like(ids))
    with pytest.raises(RuntimeError, match="not seen in int8 calibration"):
        int8.products.dense(torch.nn.Linear(32, 32), torch.randn(3, 32))


def test_calibration_texts_are_fixed():
    texts = calibration_texts()
    assert len(texts) == 512 and texts[0] == "A plane is taking off."


def test_int8_is_refused_off_the_cpu():
    assert resolve_dtype("int8", CPU) == torch.int8
    with pytest.raises(ValueError, match="int8' runs on the CPU only; device is cuda"):
        resolve_dtype("int8", torch.device("cuda"))


def test_int8_refuses_a_transformer_the_packed_pass_does_not_run(tiny_model, monkeypatch):
    monkeypatch.setattr(PackedBert, "supports", staticmethod(lambda model: False))
    with pytest.raises(ValueError, match="dtype='int8' runs plain BERT encoders on the CPU only"):
        SentenceEmbedder(tiny_model, device="cpu", dtype="int8").fit().transform(["a"])


@pytest.mark.usefixtures("fresh_cache")
def test_int8_embedder_records_its_dtype_and_keeps_vectors_apart(tiny_model, tmp_path):
    texts = sentences(30)
    store = tmp_path / "store"
    fp32 = SentenceEmbedder(tiny_model, device="cpu", dtype="float32", memory=store).fit()
    int8 = SentenceEmbedder(tiny_model, device="cpu", dtype="int8", memory=store).fit()
    assert int8.dtype_ == "int8"
    a = fp32.transform(texts)
    before = work_counts()["texts_encoded"]
    b = int8.transform(texts)
    # nothing taken from float32's vectors, in the process cache or the store
    assert work_counts()["texts_encoded"] - before == len(texts)
    assert not np.array_equal(a, b)
    assert _cosines(a, b).min() > 0.95
    # as a fresh process sees it: the store alone
    clear_cache()
    before = work_counts()["texts_encoded"]
    np.testing.assert_array_equal(int8.transform(texts), b)
    np.testing.assert_array_equal(fp32.transform(texts), a)
    assert work_counts()["texts_encoded"] == before


def test_evaluate_sts_and_grid_search_compare_dtypes(tiny_model):
    left, right = sentences(12, seed=1), sentences(12, seed=2)
    pairs = list(zip(left, right, strict=True))
    gold = np.linspace(0, 5, len(pairs))
    scores = {
        dtype: evaluate_sts(
            SentenceEmbedder(tiny_model, device="cpu", dtype=dtype), pairs, gold, metrics=["cosine"]
        )["cosine"]["spearman"]
        for dtype in ("float32", "int8")
    }
    assert all(np.isfinite(list(scores.values())))
    search = GridSearchCV(
        SentenceEmbedder(tiny_model, device="cpu"), {"dtype": ["float32", "int8"]}, cv=2
    ).fit(pairs, gold)
    assert [p["dtype"] for p in search.cv_results_["params"]] == ["float32", "int8"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_precision_key_names_the_int8_calibration(monkeypatch):
    from skembed.encoder import precision_key
    from skembed.encoder.modules import _int8

    assert precision_key(torch.float32) == "torch.float32"
    assert precision_key(torch.bfloat16) == "torch.bfloat16"
    key = precision_key(torch.int8)
    assert key.startswith("torch.int8/") and key != precision_key(torch.float32)
    assert precision_key(torch.int8) == key  # the same calibration, the same key
    texts = calibration_texts()
    monkeypatch.setattr(_int8, "calibration_texts", lambda: (*texts[:-1], texts[-1] + "!"))
    other_texts = precision_key(torch.int8)
    monkeypatch.setattr(_int8, "calibration_texts", lambda: texts)
    monkeypatch.setattr(_int8, "CALIBRATION_METHOD", "percentile-99.9/v2")
    other_method = precision_key(torch.int8)
    assert len({key, other_texts, other_method}) == 3


@pytest.mark.usefixtures("fresh_cache")
def test_int8_vectors_of_another_calibration_are_not_served(tiny_model, tmp_path, monkeypatch):
    from skembed.encoder import release_models
    from skembed.encoder.modules import _int8

    texts = sentences(20)
    store = tmp_path / "store"
    first = SentenceEmbedder(tiny_model, device="cpu", dtype="int8", memory=store).fit()
    a = first.transform(texts)
    # The same process, a model loaded anew after the calibration texts changed (as a
    # new skembed release would ship them): a fresh calibration, a fresh key.
    release_models()
    clear_cache()
    calibration = calibration_texts()[:256]
    monkeypatch.setattr(_int8, "calibration_texts", lambda: calibration)
    second = SentenceEmbedder(tiny_model, device="cpu", dtype="int8", memory=store).fit()
    before = work_counts()["texts_encoded"]
    b = second.transform(texts)
    assert work_counts()["texts_encoded"] - before == len(texts)  # nothing from the store
    assert not np.array_equal(a, b)  # the new ranges really were used
    release_models()
