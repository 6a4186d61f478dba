"""Tiny random models built and saved by the reference library (sentence-transformers), one per
model family and module that skembed reads beyond BERT + Pooling + Dense + Normalize.

Each is made with the reference's own classes, so its folder is exactly what the reference
writes. Used by the parity tests of ``test_model_coverage.py`` and ``test_roles.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from conftest import build_tiny_model

# Token ids of the tiny BERT tokenizer run to 154 (its vocabulary list has repeated letters).
VOCABULARY_ROWS = 155
HIDDEN = 32


def _randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The module with every parameter redrawn, so that ones and zeros hide no bug."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return module


def build_reference_models(root: Path) -> dict[str, Path]:
    """Build and save each reference model under ``root``; return their folders by name.

    - ``t5``: a 2-layer T5 encoder (``T5EncoderModel``), mean pooling.
    - ``modules``: BERT with its hidden layers kept, WeightedLayerPooling, mean+cls Pooling,
      Dropout, LayerNorm, Dense, Normalize.
    - ``wlp_without_layers``: WeightedLayerPooling on a BERT whose config does not keep its
      hidden layers (the reference then passes token embeddings through).
    - ``static``: a StaticEmbedding (model2vec-style) alone.
    - ``router``: Router.for_query_document (query: StaticEmbedding; document: BERT + mean
      pooling), then Normalize.
    - ``router_mapped``: a Router of two BERT routes picked by ``route_mappings``, the second
      with max pooling, no default route.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Router
    from sentence_transformers.sentence_transformer import modules as st
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    bert = build_tiny_model(root / "bert", st_format=False, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(bert)

    t5 = root / "t5_raw"
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCABULARY_ROWS, d_model=HIDDEN, d_kv=8, num_heads=4, d_ff=64, num_layers=2
    )
    T5EncoderModel(config).save_pretrained(t5)
    tokenizer.save_pretrained(t5)

    layered = root / "bert_layers"
    shutil.copytree(bert, layered)
    config_path = layered / "config.json"
    config_json = json.loads(config_path.read_text())
    config_json["output_hidden_states"] = True
    config_path.write_text(json.dumps(config_json))

    def transformer(path: Path) -> torch.nn.Module:
        return st.Transformer(str(path), max_seq_length=24)

    def static(dimension: int, seed: int) -> torch.nn.Module:
        table = torch.randn(
            VOCABULARY_ROWS, dimension, generator=torch.Generator().manual_seed(seed)
        )
        return st.StaticEmbedding(tokenizer, embedding_weights=table)

    torch.manual_seed(1)
    pipelines = {
        "t5": [transformer(t5), st.Pooling(HIDDEN, "mean")],
        "modules": [
            transformer(layered),
            _randomized(st.WeightedLayerPooling(HIDDEN, num_hidden_layers=2, layer_start=1), 1),
            st.Pooling(HIDDEN, ["mean", "cls"]),
            st.Dropout(0.3),
            _randomized(st.LayerNorm(2 * HIDDEN), 2),
            Dense(2 * HIDDEN, 16),
            Normalize(),
        ],
        "wlp_without_layers": [
            transformer(bert),
            _randomized(st.WeightedLayerPooling(HIDDEN, num_hidden_layers=2, layer_start=1), 3),
            st.Pooling(HIDDEN, "mean"),
        ],
        "static": [static(16, 4)],
        "router": [
            Router.for_query_document(
                query_modules=[static(HIDDEN, 5)],
                document_modules=[transformer(bert), st.Pooling(HIDDEN, "mean")],
            ),
            Normalize(),
        ],
        "router_mapped": [
            Router(
                {
                    "short": [transformer(bert), st.Pooling(HIDDEN, "mean")],
                    "long": [transformer(layered), st.Pooling(HIDDEN, "max")],
                },
                default_route=None,
                allow_empty_key=False,
                route_mappings={("query", None): "short", ("document", "text"): "long"},
            )
        ],
    }
    folders = {}
    for name, modules in pipelines.items():
        folders[name] = root / name
        SentenceTransformer(modules=modules, device="cpu").save(str(folders[name]))
    return folders
