"""One class per sentence-transformers module kind, found by the reference's type name.

A module kind is a :class:`Module` subclass registered with :func:`register_module`:
it reads itself from its folder, writes itself back, reports its output dimension
and runs its forward pass as a ``torch.nn.Module``. A model folder loads as a
:class:`Pipeline` of them.
"""

from ._base import (
    LoadContext,
    Module,
    load_strict,
    load_weights,
    module_class,
    register_module,
    registered_modules,
    save_weights,
)
from ._int8 import precision_key
from ._layers import Dense, Dropout, LayerNorm, Normalize, WeightedLayerPooling
from ._pipeline import Pipeline, load_pipeline, save_pipeline, write_modules_json
from ._pooling import POOLERS, POOLING_MODES, Pooling, pool
from ._router import Router
from ._static import StaticEmbedding
from ._transformer import Transformer, check_model_config

__all__ = [
    "POOLERS",
    "POOLING_MODES",
    "Dense",
    "Dropout",
    "LayerNorm",
    "LoadContext",
    "Module",
    "Normalize",
    "Pipeline",
    "Pooling",
    "Router",
    "StaticEmbedding",
    "Transformer",
    "WeightedLayerPooling",
    "check_model_config",
    "load_pipeline",
    "load_strict",
    "load_weights",
    "module_class",
    "pool",
    "precision_key",
    "register_module",
    "registered_modules",
    "save_pipeline",
    "save_weights",
    "write_modules_json",
]
