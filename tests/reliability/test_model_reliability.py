"""Model folders: no stale model, hostile or malformed folders refused, loaded models bounded."""

from __future__ import annotations

import gc
import json
import pickle
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

from skembed import SentenceEmbedder, encoder
from skembed.encoder import folder_fingerprint, load_encoder

TEXTS = ["the weather is lovely today", "a man is playing guitar", "the cat sits outside"]
CPU = torch.device("cpu")


def reference(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts)


def rewrite(folder: Path, seed: int) -> None:
    """Save a different model into ``folder``, as a notebook's retrain-and-save loop does."""
    shutil.rmtree(folder)
    build_tiny_model(folder, seed=seed)


@pytest.fixture
def models_released():
    # Attribute lookups, not imports: on code without them only the tests that use them fail.
    getattr(encoder, "release_models", lambda: None)()
    yield
    getattr(encoder, "release_models", lambda: None)()
    getattr(encoder, "set_max_loaded_models", lambda n: None)(4)


def test_model_rewritten_in_place_is_loaded_again(tmp_path, models_released):
    folder = build_tiny_model(tmp_path / "model", seed=0)
    fitted_on_a = SentenceEmbedder(folder, device="cpu").fit()
    a = fitted_on_a.transform(TEXTS)
    np.testing.assert_allclose(a, reference(folder, TEXTS), atol=1e-6)

    rewrite(folder, seed=1)
    expected_b = reference(folder, TEXTS)
    assert np.abs(expected_b - a).max() > 0.1  # the two models really differ

    fresh = SentenceEmbedder(folder, device="cpu").fit()
    np.testing.assert_allclose(fresh.transform(TEXTS), expected_b, atol=1e-6)
    assert fresh.model_fingerprint_ != fitted_on_a.model_fingerprint_
    # A refit of the estimator fitted on A follows the folder too.
    np.testing.assert_allclose(fitted_on_a.fit().transform(TEXTS), expected_b, atol=1e-6)


def test_unpickled_estimator_on_a_warm_process_gets_the_new_files(tmp_path, models_released):
    # A warm worker loaded model A from a folder; the folder now holds B, and an estimator
    # fitted on B elsewhere arrives pickled: it must get B's embeddings, not A's.
    folder = build_tiny_model(tmp_path / "model", seed=0)
    SentenceEmbedder(folder, device="cpu").fit().transform(TEXTS)
    elsewhere = build_tiny_model(tmp_path / "elsewhere", seed=1)
    fitted_elsewhere = SentenceEmbedder(elsewhere, device="cpu").fit()
    fitted_elsewhere.set_params(model_name_or_path=folder)
    rewrite(folder, seed=1)

    arrived = pickle.loads(pickle.dumps(fitted_elsewhere))
    np.testing.assert_allclose(arrived.transform(TEXTS), reference(folder, TEXTS), atol=1e-6)


def test_fingerprint_follows_linked_files(tmp_path):
    # The Hugging Face cache links every file of a snapshot to a blob outside the folder.
    folder = build_tiny_model(tmp_path / "model")
    blob = tmp_path / "blob.json"
    shutil.move(folder / "1_Pooling" / "config.json", blob)
    (folder / "1_Pooling" / "config.json").symlink_to(blob)
    before = folder_fingerprint(folder)
    config = json.loads(blob.read_text())
    config["pooling_mode_cls_token"], config["pooling_mode_mean_tokens"] = True, False
    blob.write_text(json.dumps(config))
    assert folder_fingerprint(folder) != before


def module_entries(folder: Path) -> list[dict]:
    return json.loads((folder / "modules.json").read_text())


def write_modules(folder: Path, modules) -> None:
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize("path", ["../outside", "/etc", "1_Pooling/../../outside"])
def test_module_paths_outside_the_folder_are_refused(make_tiny_model, tmp_path, path):
    folder = make_tiny_model()
    outside = folder.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))
    modules = module_entries(folder)
    modules[1]["path"] = path
    write_modules(folder, modules)
    with pytest.raises(ValueError, match="inside the model folder") as info:
        SentenceEmbedder(folder, device="cpu").fit()
    assert "modules.json" in str(info.value)


def test_module_folder_linked_outside_is_refused(make_tiny_model, tmp_path):
    folder = make_tiny_model()
    outside = tmp_path / "pooling_elsewhere"
    shutil.move(folder / "1_Pooling", outside)
    (folder / "1_Pooling").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the model folder"):
        SentenceEmbedder(folder, device="cpu").fit()


def _drop(key):
    def change(modules):
        del modules[1][key]
        return modules

    return change


def _set(key, value):
    def change(modules):
        modules[1][key] = value
        return modules

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_drop("idx"), "'idx'"),
        (_drop("type"), "'type'"),
        (_set("path", 3), "'path'"),
        (_set("idx", "1"), "'idx'"),
        (lambda modules: {"modules": modules}, "an array"),
        (lambda modules: [*modules[:1], "Pooling"], "module 1"),
        (lambda modules: [], "non-empty"),
    ],
)
def test_malformed_modules_json_names_the_file_and_field(make_tiny_model, change, field):
    folder = make_tiny_model()
    write_modules(folder, change(module_entries(folder)))
    with pytest.raises(ValueError, match=r"modules\.json") as info:
        SentenceEmbedder(folder, device="cpu").fit()
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("relative", "config", "field"),
    [
        ("1_Pooling/config.json", {"pooling_mode": 3}, "'pooling_mode'"),
        ("1_Pooling/config.json", {"pooling_mode_cls_token": "yes"}, "'pooling_mode_cls_token'"),
        ("1_Pooling/config.json", {"include_prompt": "no"}, "'include_prompt'"),
        ("config_sentence_transformers.json", {"prompts": ["query: "]}, "'prompts'"),
        ("config_sentence_transformers.json", {"prompts": {"q": 1}}, "'prompts'"),
        ("config_sentence_transformers.json", {"similarity_fn_name": 7}, "'similarity_fn_name'"),
        ("config_sentence_transformers.json", {"similarity_fn_name": "maxsim"}, "maxsim"),
        ("config_sentence_transformers.json", {"default_prompt_name": []}, "default_prompt"),
        ("sentence_bert_config.json", {"max_seq_length": "long"}, "'max_seq_length'"),
        ("sentence_bert_config.json", {"max_seq_length": 0}, "'max_seq_length'"),
        ("sentence_bert_config.json", {"do_lower_case": "true"}, "'do_lower_case'"),
        ("config.json", {"num_hidden_layers": -1}, "'num_hidden_layers'"),
        ("config.json", {"hidden_size": True}, "'hidden_size'"),
    ],
)
def test_malformed_configs_name_the_file_and_field(make_tiny_model, relative, config, field):
    folder = make_tiny_model()
    path = folder / relative
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    with pytest.raises(ValueError) as info:
        SentenceEmbedder(folder, device="cpu").fit()
    assert path.name in str(info.value) and field in str(info.value)


def test_config_json_that_is_not_an_object_is_refused(make_tiny_model):
    folder = make_tiny_model()
    (folder / "1_Pooling" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json holds an array; expected an object"):
        SentenceEmbedder(folder, device="cpu").fit()


@pytest.mark.parametrize(
    "sizes",
    [{"num_hidden_layers": 10**6}, {"num_hidden_layers": 2000}, {"intermediate_size": 10**6}],
)
def test_config_sizes_the_weights_cannot_back_are_refused_before_building(make_tiny_model, sizes):
    folder = make_tiny_model()
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **sizes}))
    with pytest.raises(ValueError, match=r"does not match its weights|expected an integer"):
        SentenceEmbedder(folder, device="cpu").fit()


def test_max_seq_length_of_the_folder_beyond_positions_is_refused_at_fit(make_tiny_model):
    folder = make_tiny_model(max_seq_length=10**6)  # the tiny model has 64 positions
    with pytest.raises(ValueError, match=r"sentence_bert_config.json exceeds the 64 positions"):
        SentenceEmbedder(folder, device="cpu").fit()


def test_loaded_models_are_bounded_and_released(tmp_path, models_released):
    encoder.set_max_loaded_models(2)
    folders = [build_tiny_model(tmp_path / f"m{seed}", seed=seed) for seed in range(3)]
    refs = []
    for folder in folders:
        embedder = SentenceEmbedder(folder, device="cpu").fit()
        refs.append(weakref.ref(embedder._encoder))
        embedder.transform(TEXTS)
        del embedder
    gc.collect()
    assert [Path(m["folder"]).name for m in encoder.loaded_models()] == ["m1", "m2"]
    assert refs[0]() is None and refs[1]() is not None

    encoder.release_models()
    gc.collect()
    assert encoder.loaded_models() == [] and all(ref() is None for ref in refs)


def test_a_fitted_estimator_keeps_its_model_after_release(tiny_model, models_released):
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    before = embedder.transform(TEXTS)
    encoder.release_models()
    np.testing.assert_array_equal(embedder.transform(TEXTS), before)
    # The next fit loads a new copy, with the same embeddings.
    assert load_encoder(tiny_model, CPU) is not embedder._encoder
    np.testing.assert_array_equal(
        SentenceEmbedder(tiny_model, device="cpu").fit().transform(TEXTS), before
    )


def test_max_loaded_models_is_validated():
    with pytest.raises(ValueError, match="integer >= 0"):
        encoder.set_max_loaded_models(-1)
