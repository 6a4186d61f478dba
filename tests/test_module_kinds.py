"""A new module kind is one class and its registration (issue 20).

The toy kind here scales sentence embeddings by a constant read from its config.
Nothing outside this file knows it: the folder reader finds it by the type name
in ``modules.json``, loads it, runs it, and writes it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skembed.encoder import Encoder, read_folder
from skembed.encoder._config import field, read_json, write_json
from skembed.encoder.modules import LoadContext, Module, register_module, registered_modules

CPU = torch.device("cpu")
TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


class Scale(Module):
    """Multiplies the sentence embedding by ``factor``."""

    type_name = "Scale"

    def __init__(self, dimension: int, factor: float) -> None:
        super().__init__()
        self.dimension = dimension
        self.factor = factor

    @classmethod
    def load(cls, folder: Path, context: LoadContext) -> Scale:
        path = folder / "config.json"
        return cls(context.dimension, float(field(read_json(path), path, "factor", (int, float))))

    def save(self, folder: Path) -> None:
        write_json(folder / "config.json", {"factor": self.factor})

    @property
    def output_dimension(self) -> int:
        return self.dimension

    @property
    def type_path(self) -> str:
        return f"{__name__}.Scale"

    def forward(self, features: dict) -> dict:
        features["sentence_embedding"] = features["sentence_embedding"] * self.factor
        return features


@pytest.fixture(scope="module")
def registered():
    register_module(Scale)
    yield
    # The registry is process-wide: leave it as other tests expect it.
    from skembed.encoder.modules import _base

    del _base._REGISTRY["Scale"]


def _add_scale(folder: Path, factor: float) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    idx = max(m["idx"] for m in modules) + 1
    modules.append({"idx": idx, "name": str(idx), "path": f"{idx}_Scale", "type": "toy.Scale"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / f"{idx}_Scale").mkdir()
    (folder / f"{idx}_Scale" / "config.json").write_text(json.dumps({"factor": factor}))


def test_an_unregistered_kind_is_refused(make_tiny_model):
    folder = make_tiny_model(normalize=False)
    _add_scale(folder, 3.0)
    with pytest.raises(ValueError, match=r"'toy\.Scale' at position 2 is not supported"):
        read_folder(folder)


def test_a_registered_kind_loads_runs_saves_and_loads_again(registered, make_tiny_model, tmp_path):
    assert registered_modules()["Scale"] is Scale
    plain = make_tiny_model(normalize=False)
    expected = Encoder(plain, CPU).encode(TEXTS).embeddings * 3.0

    folder = make_tiny_model(normalize=False)
    _add_scale(folder, 3.0)
    encoder = Encoder(folder, CPU)
    assert isinstance(encoder.pipeline[-1], Scale) and encoder.pipeline[-1].factor == 3.0
    np.testing.assert_allclose(encoder.encode(TEXTS).embeddings, expected, rtol=1e-6, atol=1e-7)

    encoder.save(tmp_path / "saved", max_seq_length=32, similarity_fn_name="cosine")
    modules = json.loads((tmp_path / "saved" / "modules.json").read_text())
    assert modules[-1]["type"] == f"{__name__}.Scale" and modules[-1]["path"] == "2_Scale"
    assert read_json(tmp_path / "saved" / "2_Scale" / "config.json") == {"factor": 3.0}
    again = Encoder(tmp_path / "saved", CPU)
    assert isinstance(again.pipeline[-1], Scale)
    np.testing.assert_allclose(again.encode(TEXTS).embeddings, expected, rtol=1e-6, atol=1e-7)


def test_a_type_name_is_taken_once(registered):
    class Other(Scale):
        type_name = "Scale"

    with pytest.raises(ValueError, match="needs a type_name of its own"):
        register_module(Other)
