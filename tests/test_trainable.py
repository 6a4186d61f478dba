"""The module pipeline trains as one ``torch.nn.Module`` (issue 20)."""

from __future__ import annotations

import numpy as np
import torch

from skembed.encoder import Encoder, EncodeSettings
from skembed.encoder.modules import Transformer

CPU = torch.device("cpu")
TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


def _backward(encoder: Encoder) -> tuple[torch.Tensor, list[str]]:
    """One forward and backward pass in training mode; the parameters that got no gradient."""
    pipeline = encoder.pipeline
    pipeline.train()
    pipeline.zero_grad()
    try:
        features = encoder.tokenize(TEXTS, EncodeSettings())
        embeddings = pipeline(features)["sentence_embedding"]
        # A loss that reaches every parameter: pull the first two texts together.
        loss = 1 - torch.nn.functional.cosine_similarity(embeddings[0], embeddings[1], dim=0)
        loss.backward()
    finally:
        pipeline.eval()
    transformer = encoder.input_module
    assert isinstance(transformer, Transformer)
    missing = [
        name
        for name, parameter in transformer.named_parameters()
        if parameter.grad is None or not torch.isfinite(parameter.grad).all()
    ]
    return embeddings, missing


def test_every_transformer_parameter_of_minilm_gets_a_gradient(real_model):
    encoder = Encoder(real_model, CPU)
    parameters = dict(encoder.input_module.named_parameters())
    # Pooler weights are not on the sentence-embedding path of the reference either.
    expected = {name for name in parameters if ".pooler." not in f".{name}"}
    embeddings, missing = _backward(encoder)
    assert expected and not (set(missing) & expected), sorted(set(missing) & expected)
    assert embeddings.requires_grad
    # The trained-mode pass is the model's own; in eval mode it is the inference one.
    with torch.no_grad():
        eval_rows = encoder.pipeline(encoder.tokenize(TEXTS))["sentence_embedding"]
    np.testing.assert_allclose(
        eval_rows.numpy(), encoder.encode(TEXTS).embeddings, rtol=0, atol=1e-5
    )


def test_inference_uses_the_unpadded_pass_and_training_does_not(tiny_model, monkeypatch):
    encoder = Encoder(tiny_model, CPU)
    transformer = encoder.input_module
    calls = []
    packed = transformer.packed
    assert packed is not None
    monkeypatch.setattr(transformer, "packed", lambda *args: calls.append(1) or packed(*args))
    encoder.encode(TEXTS)
    assert calls, "encode should run the unpadded inference pass"
    calls.clear()
    _, missing = _backward(encoder)
    assert not calls, "a pass with gradients must not run the inference-only kernels"
    assert not [name for name in missing if ".pooler." not in f".{name}"]
