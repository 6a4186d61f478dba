"""The modules after pooling (Dense, LayerNorm, Dropout, Normalize) and WeightedLayerPooling."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from .._config import field, read_json, size_field, write_json
from ._base import (
    Features,
    LoadContext,
    Module,
    load_strict,
    load_weights,
    register_module,
    save_weights,
)

__all__ = ["Dense", "Dropout", "LayerNorm", "Normalize", "WeightedLayerPooling"]


def _check_dimension(path: Path, key: str, value: int, context: LoadContext) -> None:
    if value != context.dimension:
        raise ValueError(
            f"{path}: {key}={value}, but the module before it gives embeddings of size "
            f"{context.dimension}."
        )


@register_module
class Dense(Module):
    """A linear layer plus activation (and optional residual) on the sentence embedding."""

    type_name = "Dense"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "torch.nn.modules.activation.Tanh",
        use_residual: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_features, out_features, bias=bias)
        self.residual = (
            torch.nn.Linear(in_features, out_features, bias=False)
            if use_residual and in_features != out_features
            else None
        )
        self.use_residual = use_residual
        self.activation_name = activation
        self.activation = _activation(activation, trust_remote_code)

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Dense:
        path = folder / "config.json"
        config = read_json(path)
        in_features = size_field(config, path, "in_features")
        out_features = size_field(config, path, "out_features")
        bias = field(config, path, "bias", (bool,), True)
        activation = (
            field(config, path, "activation_function", (str, type(None)), None)
            or "torch.nn.modules.linear.Identity"
        )
        use_residual = field(config, path, "use_residual", (bool,), False)
        module = cls(
            in_features, out_features, bias, activation, use_residual, context.trust_remote_code
        )
        module.load_state_dict(load_weights(folder), strict=False)
        _check_dimension(path, "in_features", in_features, context)
        return module

    def save(self, folder: Path) -> None:
        config: dict[str, Any] = {
            "in_features": self.linear.in_features,
            "out_features": self.linear.out_features,
            "bias": self.linear.bias is not None,
            "activation_function": self.activation_name,
        }
        if self.use_residual:
            config["use_residual"] = True
        write_json(folder / "config.json", config)
        save_weights(self, folder)

    @property
    def output_dimension(self) -> int:
        return self.linear.out_features

    def forward(self, features: Features) -> Features:
        x = features["sentence_embedding"]
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        features["sentence_embedding"] = out
        return features


def _activation(dotted: str, trust_remote_code: bool) -> torch.nn.Module:
    if not (dotted.startswith("torch.") or trust_remote_code):
        raise ValueError(
            f"Dense activation {dotted!r} is not a torch class; loading it runs code from the "
            "model folder, so pass trust_remote_code=True if you trust it."
        )
    module_name, _, class_name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"Dense activation {dotted!r} is not a torch.nn.Module class.")
    return cls()


class _SameSize(Module):
    """A module whose output has the size of its input."""

    def __init__(self, dimension: int) -> None:
        super().__init__()
        self.dimension = dimension

    @property
    def output_dimension(self) -> int:
        return self.dimension


@register_module
class Normalize(_SameSize):
    """L2 normalisation of the sentence embedding (no parameters; its folder may be absent)."""

    type_name = "Normalize"

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Normalize:
        assert context.dimension is not None
        return cls(context.dimension)

    def save(self, folder: Path) -> None:
        pass  # nothing to save: the folder alone, as the reference writes it

    def forward(self, features: Features) -> Features:
        embeddings = features["sentence_embedding"]
        features["sentence_embedding"] = torch.nn.functional.normalize(embeddings, p=2.0, dim=-1)
        return features


@register_module
class LayerNorm(_SameSize):
    """Layer normalisation of the sentence embedding, with learned scale and shift."""

    type_name = "LayerNorm"

    def __init__(self, dimension: int) -> None:
        super().__init__(dimension)
        self.norm = torch.nn.LayerNorm(dimension)

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> LayerNorm:
        path = folder / "config.json"
        dimension = size_field(read_json(path), path, "dimension")
        module = cls(dimension)
        load_strict(module, folder)
        _check_dimension(path, "dimension", dimension, context)
        return module

    def save(self, folder: Path) -> None:
        write_json(folder / "config.json", {"dimension": self.dimension})
        save_weights(self, folder)

    def forward(self, features: Features) -> Features:
        features["sentence_embedding"] = self.norm(features["sentence_embedding"])
        return features


@register_module
class Dropout(_SameSize):
    """Dropout on the sentence embedding: the identity at inference, active in training."""

    type_name = "Dropout"

    def __init__(self, dimension: int, rate: float = 0.2) -> None:
        super().__init__(dimension)
        self.rate = rate
        self.dropout = torch.nn.Dropout(rate)

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Dropout:
        path = folder / "config.json"
        config = read_json(path) if path.is_file() else {}
        rate = field(config, path, "dropout", (float, int), 0.2)
        if not 0 <= rate <= 1:
            raise ValueError(f"{path}: field 'dropout' is {rate}; expected a number from 0 to 1.")
        assert context.dimension is not None
        return cls(context.dimension, float(rate))

    def save(self, folder: Path) -> None:
        write_json(folder / "config.json", {"dropout": self.rate})

    def forward(self, features: Features) -> Features:
        features["sentence_embedding"] = self.dropout(features["sentence_embedding"])
        return features


@register_module
class WeightedLayerPooling(_SameSize):
    """Token embeddings as a learned weighted mean of the transformer's hidden layers.

    Where the transformer's config does not return its hidden layers, the token
    embeddings pass unchanged, as in the reference.
    """

    type_name = "WeightedLayerPooling"
    takes = "tokens"
    gives = "tokens"

    def __init__(
        self,
        dimension: int,
        num_hidden_layers: int,
        layer_start: int,
        embedding_dimension: int | None = None,
    ) -> None:
        super().__init__(dimension)
        # The size its config names (saved back as read; the token size is the transformer's).
        self.embedding_dimension = embedding_dimension or dimension
        self.num_hidden_layers = num_hidden_layers
        self.layer_start = layer_start
        self.layer_weights = torch.nn.Parameter(torch.ones(num_hidden_layers + 1 - layer_start))

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> WeightedLayerPooling:
        path = folder / "config.json"
        config = read_json(path)
        # Older saves name the dimension "word_embedding_dimension".
        key = (
            "embedding_dimension" if "embedding_dimension" in config else "word_embedding_dimension"
        )
        dimension = size_field(config, path, key)
        layers = size_field(config, path, "num_hidden_layers", 12)
        start = field(config, path, "layer_start", (int,), 4)
        if not 0 <= start <= layers:
            raise ValueError(
                f"{path}: field 'layer_start' is {start}; expected an integer from 0 to "
                f"num_hidden_layers={layers}."
            )
        found = getattr(context.previous, "num_hidden_layers", None)
        if found != layers:
            raise ValueError(
                f"{path}: num_hidden_layers={layers}, but the transformer has {found} layers."
            )
        assert context.dimension is not None
        module = cls(context.dimension, layers, start, dimension)
        load_strict(module, folder)
        return module

    def save(self, folder: Path) -> None:
        write_json(
            folder / "config.json",
            {
                "word_embedding_dimension": self.embedding_dimension,
                "layer_start": self.layer_start,
                "num_hidden_layers": self.num_hidden_layers,
            },
        )
        save_weights(self, folder)

    def forward(self, features: Features) -> Features:
        layers = features.get("all_layer_embeddings")
        if layers is not None:
            stacked = torch.stack(layers[self.layer_start :])
            weights = self.layer_weights.view(-1, 1, 1, 1)
            features["token_embeddings"] = (weights * stacked).sum(dim=0) / self.layer_weights.sum()
        return features
