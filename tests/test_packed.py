"""The unpadded BERT forward pass and the oneDNN matrix products, against torch's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import sentences, small_bert_model

import skembed.encoder.modules._kernels as kernels
from skembed.encoder import load_encoder
from skembed.encoder._batching import plan_batches
from skembed.encoder.modules._packed import (
    PackedBert,
    _equal_length_runs,
    padded_rows,
    varlen_attention_runs_on,
)
from skembed.encoder.modules._pooling import POOLING_MODES, pool

CPU = torch.device("cpu")


def _batch(lengths: list[int], width: int, left: bool = False, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (len(lengths), width), generator=generator)
    types = torch.randint(0, 2, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for row, n in enumerate(lengths):
        (mask[row, width - n :] if left else mask[row, :n]).fill_(1)
    return ids.masked_fill(mask == 0, 0), mask, types


# Lengths in the order plan_batches gives (longest first, runs of equal lengths) and in an
# arbitrary order, where every text is a run of its own.
LENGTHS = [[17, 17, 12, 12, 12, 5, 3, 3], [4, 17, 9, 4, 1, 12, 12]]


# Jagged nested tensors are a prototype API in torch: its notices are not test failures.
pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("hidden_act", ["gelu", "relu", "gelu_new"])
@pytest.mark.parametrize(("varlen", "counted"), [(False, False), (True, False), (True, True)])
def test_unpadded_forward_matches_the_padded_one(lengths, left, hidden_act, varlen, counted):
    model = small_bert_model(hidden_act=hidden_act)
    ids, mask, types = _batch(lengths, width=20, left=left)
    count = int(mask.sum()) if counted else None
    with torch.inference_mode():
        padded = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        unpadded = PackedBert(model, varlen=varlen)(ids, mask, types, count)
    real = mask.bool()
    assert unpadded.shape == padded.shape
    torch.testing.assert_close(unpadded[real], padded[real], rtol=0, atol=1e-5)
    assert torch.count_nonzero(unpadded[~real]) == 0
    # Every pooling mode reads only real positions, so it sees the same vectors.
    for mode in POOLING_MODES:
        torch.testing.assert_close(
            pool(unpadded, mask, (mode,)), pool(padded, mask, (mode,)), rtol=0, atol=1e-5
        )


def test_unpadded_forward_without_token_types_uses_type_zero():
    model = small_bert_model()
    ids, mask, _ = _batch([9, 6, 6], width=9)
    with torch.inference_mode():
        padded = model(input_ids=ids, attention_mask=mask).last_hidden_state
        unpadded = PackedBert(model)(ids, mask)
    torch.testing.assert_close(unpadded[mask.bool()], padded[mask.bool()], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("varlen", [False, True])
def test_unpadded_forward_in_half_precision_is_close_to_float32(dtype, varlen):
    model = small_bert_model()
    ids, mask, types = _batch(LENGTHS[1], width=20)
    with torch.inference_mode():
        exact = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        unpadded = PackedBert(model.to(dtype), varlen=varlen)(ids, mask, types)
    a, b = (pool(t, mask, ("mean",)).float() for t in (exact, unpadded))
    cosine = torch.nn.functional.cosine_similarity(a, b)
    assert cosine.min() > 0.999


def test_varlen_attention_is_one_call_per_layer(monkeypatch):
    model = small_bert_model()
    ids, mask, types = _batch(LENGTHS[1], width=20)  # 6 lengths: 6 calls a layer by runs
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional,
        "scaled_dot_product_attention",
        lambda *args, **kwargs: calls.append(1) or sdpa(*args, **kwargs),
    )
    layers = len(model.encoder.layer)
    with torch.inference_mode():
        PackedBert(model, varlen=True)(ids, mask, types)
        assert len(calls) == layers
        PackedBert(model)(ids, mask, types)
    assert len(calls) == layers + 6 * layers


def test_varlen_attention_runs_on_the_cpu():
    assert varlen_attention_runs_on(CPU, torch.float32)


@pytest.mark.parametrize(
    "change",
    [
        {"is_decoder": True},
        {"chunk_size_feed_forward": 4},
        {"output_hidden_states": True},
    ],
)
def test_configurations_it_does_not_reproduce_keep_the_models_forward(change):
    assert PackedBert.supports(small_bert_model())
    assert not PackedBert.supports(small_bert_model(**change))


def test_a_model_in_training_mode_is_not_supported():
    assert not PackedBert.supports(small_bert_model().train())


def test_other_architectures_are_not_supported():
    from transformers import RobertaConfig, RobertaModel

    roberta = RobertaModel(
        RobertaConfig(
            vocab_size=50,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
        )
    ).eval()
    assert not PackedBert.supports(roberta)


def test_equal_length_runs():
    runs = _equal_length_runs(torch.tensor([5, 5, 3, 7, 7, 7, 0, 2]))
    # (first packed token, length, texts); a text of no tokens takes no place.
    assert runs == [(0, 5, 2), (10, 3, 1), (13, 7, 3), (34, 2, 1)]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_encoder_on_the_cpu_uses_the_unpadded_pass_and_matches_the_padded_one(
    make_tiny_model, padding_side
):
    folder = make_tiny_model(padding_side=padding_side, pooling=["cls", "max", "mean"])
    encoder = load_encoder(folder, CPU)
    transformer = encoder.input_module
    assert transformer.packed is not None
    texts = [*sentences(60), "", "a", "a much longer sentence " * 6]
    unpadded = encoder.encode(texts, batch_size=7).embeddings
    packed, transformer.packed = transformer.packed, None
    try:
        padded = encoder.encode(texts, batch_size=7).embeddings
    finally:
        transformer.packed = packed
    np.testing.assert_allclose(unpadded, padded, rtol=0, atol=1e-6)


def test_the_encoder_counts_tokens_on_the_host(tiny_model, monkeypatch):
    encoder = load_encoder(tiny_model, CPU)
    transformer = encoder.input_module
    seen = []
    packed = transformer.packed

    def recording(ids, mask, types=None, token_count=None):
        seen.append((token_count, int(mask.sum())))
        return packed(ids, mask, types, token_count)

    monkeypatch.setattr(transformer, "packed", recording)
    encoder.encode(sentences(40, varied=True), batch_size=9)
    assert len(seen) >= 4
    assert all(given == counted for given, counted in seen)


def test_padded_rows_keep_the_shapes_few_and_the_padding_small():
    assert [padded_rows(n) for n in (0, 1, 64, 65, 300, 512, 513, 1024, 4000)] == [
        64,
        64,
        64,
        128,
        512,
        512,
        1024,
        1024,
        4096,
    ]
    rows = np.array([padded_rows(n) for n in range(1, 4097)])
    assert (rows >= np.arange(1, 4097)).all()
    assert len(set(rows.tolist())) == 11
    assert (rows - np.arange(1, 4097))[512:].max() == 511


def test_unpadded_plans_count_real_tokens():
    lengths = np.array([5, 50, 3, 200, 7, 7, 9, 1, 120, 2, 30, 30])
    batches = plan_batches(lengths, max_rows=4, max_tokens=100, unpadded=True)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for rows in batches:
        assert len(rows) <= 4
        assert len(rows) == 1 or lengths[rows].sum() <= 100
    # [30, 9, 7, 7] is 53 real tokens but 120 padded ones: it fits the budget only unpadded.
    assert [lengths[b].tolist() for b in batches] == [
        [200],
        [120],
        [50, 30],
        [30, 9, 7, 7],
        [5, 3, 2, 1],
    ]
    # A batch may fill the budget exactly.
    exact = np.array([20, 60, 40, 40])
    planned = plan_batches(exact, max_rows=10, max_tokens=100, unpadded=True)
    assert [exact[b].tolist() for b in planned] == [[60, 40], [40, 20]]


# --- matrix products -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_torch(dtype, gelu, bias):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 48, generator=generator).to(dtype)
    w = torch.randn(29, 48, generator=generator).to(dtype)
    b = torch.randn(29, generator=generator).to(dtype) if bias else None
    expected = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    if gelu:
        expected = torch.nn.functional.gelu(expected)
    got = kernels.linear(x, w, b, gelu=gelu)
    assert got.dtype == dtype and got.shape == (37, 29)
    tolerance = 1e-5 if dtype == torch.float32 else 0.1
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_adds_the_residual(dtype):
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(37, 48, generator=generator), torch.randn(29, 48, generator=generator)
    b, r = torch.randn(29, generator=generator), torch.randn(37, 29, generator=generator)
    expected = torch.nn.functional.linear(x.double(), w.double(), b.double()) + r.double()
    got = kernels.linear(*(t.to(dtype) for t in (x, w, b)), residual=r.to(dtype))
    tolerance = 1e-5 if dtype == torch.float32 else 0.2
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance)


def test_linear_refuses_gelu_and_residual_together():
    x = torch.ones(2, 3)
    with pytest.raises(ValueError, match="gelu or residual"):
        kernels.linear(x, x, None, gelu=True, residual=torch.ones(2, 2))


@pytest.mark.parametrize("options", [{"gelu": True}, {"residual": True}])
def test_linear_without_onednn_gives_the_same_products(monkeypatch, options):
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(50, 40, generator=generator), torch.randn(30, 40, generator=generator)
    b = torch.randn(30, generator=generator)
    if options.get("residual"):
        options = {"residual": torch.randn(50, 30, generator=generator)}
    with_onednn = kernels.linear(x, w, b, **options)
    monkeypatch.setattr(kernels, "_ONEDNN_LINEAR", None)
    assert not kernels._uses_onednn(x, w)
    torch.testing.assert_close(kernels.linear(x, w, b, **options), with_onednn, rtol=0, atol=1e-5)


def test_onednn_is_used_for_float32_on_the_cpu_where_torch_has_it():
    x = torch.ones(2, 3)
    assert kernels._uses_onednn(x, x) == (kernels._ONEDNN_LINEAR is not None)
    assert not kernels._uses_onednn(x.double(), x.double())
    assert not kernels._uses_onednn(x, x.double())


# --- on a CUDA device ----------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TEXTS = [*sentences(300, varied=True), "", "a", "a much longer sentence " * 40]


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda_runs_unpadded_and_stays_close_to_float32(real_model, dtype):
    expected = load_encoder(real_model, CPU).encode(TEXTS).embeddings
    encoder = load_encoder(real_model, torch.device("cuda"), dtype=dtype)
    packed = encoder.input_module.packed
    assert packed is not None and packed.varlen
    ours = encoder.encode(TEXTS).embeddings
    cosine = (
        (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.9998


@cuda
def test_float32_on_cuda_keeps_the_padded_pass_and_the_cpu_figures(real_model):
    expected = load_encoder(real_model, CPU).encode(TEXTS).embeddings
    encoder = load_encoder(real_model, torch.device("cuda"))
    assert encoder.input_module.packed is None
    np.testing.assert_allclose(encoder.encode(TEXTS).embeddings, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("left", [False, True])
def test_pad_batch_places_every_token(tiny_model, left):
    from skembed.encoder._batching import pad_batch

    backend = load_encoder(tiny_model, CPU).input_module.backend(40)
    texts = [*sentences(12, varied=True), "", "the cat " * 30]
    encodings = backend.encode_batch_fast(texts, add_special_tokens=True)
    arrays = pad_batch(encodings, pad_id=7, left=left, with_token_types=True)
    width = max(len(e.ids) for e in encodings)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        span = slice(width - n, width) if left else slice(0, n)
        pad = slice(0, width - n) if left else slice(n, width)
        assert arrays["input_ids"][row, span].tolist() == encoding.ids
        assert arrays["token_type_ids"][row, span].tolist() == encoding.type_ids
        assert (arrays["input_ids"][row, pad] == 7).all()
        assert arrays["attention_mask"][row].tolist() == [
            int(i in range(width)[span]) for i in range(width)
        ]
