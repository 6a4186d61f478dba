"""Model families and modules beyond BERT + Pooling + Dense + Normalize, against the reference.

T5 encoders, WeightedLayerPooling, LayerNorm, Dropout, StaticEmbedding and Router, each on a
tiny random model built and saved by sentence-transformers itself (``reference_models.py``):
skembed gives the reference's embeddings, saves a folder the reference loads to the same
embeddings, and refuses malformed folders of these modules with the file named.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from conftest import sentences
from reference_models import build_reference_models

from skembed import SentenceEmbedder

pytestmark = pytest.mark.usefixtures("fresh_cache")

# Sentences of 1 to 29 words (some over the 24-token limit), an empty text and a long one.
TEXTS = [*sentences(40, seed=5, varied=True), "", "the cat sits " * 30]
TOLERANCE = 1e-5
SINGLE_PIPELINES = ["t5", "modules", "wlp_without_layers", "static", "router"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_reference_models(tmp_path_factory.mktemp("reference_models"))


def reference(folder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def embed(folder, **params) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation of the long texts is expected
        return SentenceEmbedder(folder, device="cpu", **params).fit().transform(TEXTS)


@pytest.mark.parametrize("name", SINGLE_PIPELINES)
def test_parity_with_reference(models, name):
    expected = reference(models[name]).encode(TEXTS)
    actual = embed(models[name])
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", SINGLE_PIPELINES)
def test_save_then_reference_load_gives_the_same_embeddings(models, name, tmp_path):
    expected = reference(models[name]).encode(TEXTS)
    embedder = SentenceEmbedder(models[name], device="cpu").fit()
    embedder.save(tmp_path / "saved")
    np.testing.assert_allclose(
        reference(tmp_path / "saved").encode(TEXTS), expected, atol=TOLERANCE
    )
    np.testing.assert_allclose(embed(tmp_path / "saved"), expected, atol=TOLERANCE)


def test_weighted_layer_pooling_needs_the_hidden_layers(models, tmp_path):
    """Without hidden layers in the transformer's output (its config's ``output_hidden_states``)
    the reference passes token embeddings through WeightedLayerPooling; so does skembed, and the
    learned layer weights then make no difference."""
    folder = tmp_path / "no_layers"
    shutil.copytree(models["modules"], folder)
    _edit_json(folder / "config.json", output_hidden_states=False)
    expected = reference(folder).encode(TEXTS)
    np.testing.assert_allclose(embed(folder), expected, atol=TOLERANCE)
    assert not np.allclose(embed(models["modules"]), expected, atol=1e-3)


def test_router_routes_by_role(models):
    folder = models["router"]
    st = reference(folder)
    for role, expected in [
        ("query", st.encode_query(TEXTS)),
        ("document", st.encode_document(TEXTS)),
        (None, st.encode(TEXTS)),
    ]:
        np.testing.assert_allclose(embed(folder, role=role), expected, atol=TOLERANCE)
    assert not np.allclose(embed(folder, role="query"), embed(folder, role="document"))


def test_router_route_mappings(models, tmp_path):
    folder = models["router_mapped"]
    st = reference(folder)
    query, document = embed(folder, role="query"), embed(folder, role="document")
    np.testing.assert_allclose(query, st.encode_query(TEXTS), atol=TOLERANCE)
    np.testing.assert_allclose(document, st.encode_document(TEXTS), atol=TOLERANCE)
    # No default route: the reference refuses a plain encode, and so does skembed.
    with pytest.raises(ValueError):
        st.encode(TEXTS)
    with pytest.raises(ValueError, match=r"No route .* task=None"):
        embed(folder)
    SentenceEmbedder(folder, device="cpu", role="query").fit().save(tmp_path / "saved")
    saved = reference(tmp_path / "saved")
    np.testing.assert_allclose(saved.encode_query(TEXTS), query, atol=TOLERANCE)
    np.testing.assert_allclose(saved.encode_document(TEXTS), document, atol=TOLERANCE)


@pytest.mark.reference_fix("model2vec token mapping and per-token weights")
def test_static_embedding_reads_model2vec_weights(models, tmp_path):
    """A model2vec table (``embeddings`` + per-token ``weights``) folds into one row per token."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model2vec"
    shutil.copytree(models["static"], folder)
    table = load_file(folder / "model.safetensors")["embedding.weight"]
    weights = torch.linspace(0.5, 2.0, table.shape[0])
    save_file(
        {"embeddings": table, "weights": weights, "mapping": torch.arange(table.shape[0])},
        folder / "model.safetensors",
    )
    expected = embed(models["static"])
    folded = embed(folder)
    from sentence_transformers import SentenceTransformer

    np.testing.assert_allclose(
        folded, SentenceTransformer(str(folder), device="cpu").encode(TEXTS), atol=TOLERANCE
    )
    assert not np.allclose(folded, expected)


def _edit_json(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        (
            "modules",
            lambda f: _edit_json(f / "4_LayerNorm" / "config.json", dimension=8),
            r"4_LayerNorm do not match its config.json(.|\n)*size mismatch for norm.weight",
        ),
        (
            "modules",
            lambda f: _edit_json(f / "1_WeightedLayerPooling" / "config.json", num_hidden_layers=5),
            r"num_hidden_layers=5, but the transformer has 2 layers",
        ),
        (
            "modules",
            lambda f: _edit_json(f / "1_WeightedLayerPooling" / "config.json", layer_start=7),
            r"'layer_start' is 7; expected an integer from 0 to num_hidden_layers=2",
        ),
        (
            "modules",
            lambda f: _edit_json(f / "3_Dropout" / "config.json", dropout="high"),
            r"field 'dropout' is 'high' \(a string\); expected a number",
        ),
        (
            "router",
            lambda f: _edit_json(
                f / "router_config.json",
                types={"../outside": "Transformer"},
                structure={"query": ["../outside"]},
            ),
            r"must be relative and inside the model folder",
        ),
        (
            "router",
            lambda f: _edit_json(f / "router_config.json", structure={"query": ["missing_module"]}),
            r"route 'query' of field 'structure' is \['missing_module'\]",
        ),
        (
            "router",
            lambda f: _edit_json(
                f / "router_config.json",
                structure={"../../escape": ["query_0_StaticEmbedding"]},
                parameters={},
            ),
            r"route name '../../escape' of field 'structure' must be a non-empty name",
        ),
        (
            "t5",
            lambda f: _edit_json(f / "config.json", model_type="bart", is_encoder_decoder=True),
            r"model_type 'bart' is an encoder-decoder model; skembed runs the encoder of",
        ),
    ],
)
def test_malformed_folders_are_refused(models, tmp_path, name, edit, message):
    folder = tmp_path / name
    shutil.copytree(models[name], folder)
    SentenceEmbedder(folder, device="cpu").fit()  # loads before the edit
    edit(folder)
    with pytest.raises(ValueError, match=message):
        SentenceEmbedder(folder, device="cpu").fit()


def test_static_table_must_cover_the_tokenizer(models, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "static"
    shutil.copytree(models["static"], folder)
    table = load_file(folder / "model.safetensors")["embedding.weight"]
    save_file({"embedding.weight": table[:10].contiguous()}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"shape \(10, 16\); its tokenizer makes token ids up to"):
        SentenceEmbedder(folder, device="cpu").fit()


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        (["Transformer", "CNN", "Pooling"], r"module 'sentence_transformers.models.CNN' at "),
        (["Router", "Pooling"], r"'sentence_transformers.models.Pooling' at position 1 needs "),
        (["Transformer", "Pooling", "WeightedLayerPooling"], r"needs token embeddings"),
        (["Transformer", "LayerNorm"], r"needs a sentence embedding"),
    ],
)
def test_module_order_is_checked(models, tmp_path, modules, message):
    folder = tmp_path / "model"
    shutil.copytree(models["router"], folder)
    entries = [
        {"idx": i, "name": str(i), "path": "", "type": f"sentence_transformers.models.{kind}"}
        for i, kind in enumerate(modules)
    ]
    (folder / "modules.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=message):
        SentenceEmbedder(folder, device="cpu").fit()


def test_static_model_refuses_a_token_limit(models):
    """A static model has no token limit (the reference's is infinite): one given is refused,
    not silently ignored."""
    with pytest.raises(ValueError, match=r"max_seq_length=8 does not apply .* StaticEmbedding"):
        SentenceEmbedder(models["static"], device="cpu", max_seq_length=8).fit()


def test_static_model_refuses_int8(models):
    """int8 quantizes a Transformer: a model without one is refused, not run in float32
    under an int8 cache key."""
    with pytest.raises(
        ValueError, match=r"int8' quantizes a Transformer .* StaticEmbedding"
    ):
        SentenceEmbedder(models["static"], device="cpu", dtype="int8").fit()
