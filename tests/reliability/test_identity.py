"""Identity: no vector is stored or served under a fingerprint that did not produce it.

Each test here failed on the code before the fix it guards (issue 18 of the trust suite):
a folder replaced between the fingerprint check and the load, module folders the fingerprint
did not see, transformers that loaded with random weights, size checks fooled by a missing
field, lazy Dask results that followed later changes of the estimator, and smaller edges.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_model

import skembed._embedder
from skembed import (
    EmbeddingQuantizer,
    SentenceEmbedder,
    community_detection,
    paired_similarity,
    paraphrase_mining,
    similarity,
)
from skembed.cache import DiskEmbeddingStore, clear_cache
from skembed.encoder import folder_fingerprint, release_models

TEXTS = ["the weather is lovely today", "a man is playing guitar", "the cat sits outside"]
LATER = ["a woman watches tv", "the dog plays in the garden"]


@pytest.fixture(autouse=True)
def isolated():
    release_models()
    clear_cache()
    yield
    release_models()
    clear_cache()


# --- a folder replaced while an unpickled estimator is about to load it ------------------------


def test_folder_replaced_at_the_deferred_load_is_refused_and_nothing_stored(
    tmp_path, monkeypatch
):
    folder = build_tiny_model(tmp_path / "model", seed=0)
    store = DiskEmbeddingStore(tmp_path / "store")
    fitted = SentenceEmbedder(folder, device="cpu", memory=store).fit()
    fitted.transform(TEXTS)
    stored_before = len(store)
    arrived = pickle.loads(pickle.dumps(fitted))
    release_models()
    clear_cache()

    # The hook sits where the model is loaded, after the fingerprint was checked: the folder
    # now holds another model, as a writer racing the worker would leave it.
    real_load = skembed._embedder.load_encoders

    def replaced_then_loaded(*args, **kwargs):
        shutil.rmtree(folder)
        build_tiny_model(folder, seed=1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(skembed._embedder, "load_encoders", replaced_then_loaded)
    with pytest.raises(ValueError, match="changed after they were checked"):
        arrived.transform(LATER)
    assert len(store) == stored_before
    # Nor is the wrong model kept for a later call.
    monkeypatch.setattr(skembed._embedder, "load_encoders", real_load)
    with pytest.raises(ValueError, match="fit it again"):
        arrived.transform(LATER)
    assert len(store) == stored_before


def test_unpickled_estimator_serves_the_store_then_loads_the_checked_model(tmp_path):
    folder = build_tiny_model(tmp_path / "model", seed=0)
    fitted = SentenceEmbedder(folder, device="cpu", memory=tmp_path / "store").fit()
    expected = fitted.transform(TEXTS + LATER)
    fitted.transform(TEXTS)
    release_models()
    clear_cache()
    arrived = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(arrived.transform(TEXTS), expected[:3])
    np.testing.assert_array_equal(arrived.transform(LATER), expected[3:])


# --- module folders the fingerprint must cover, whatever their names ---------------------------


def _dense_weights_changed(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights_path = folder / "model.safetensors"
    weights = load_file(weights_path)
    weights["linear.bias"] = weights["linear.bias"] + 1.0
    save_file(weights, weights_path)


def _hidden_dense(folder: Path) -> Path:
    (folder / "2_Dense").rename(folder / ".2_Dense")
    modules = json.loads((folder / "modules.json").read_text())
    modules[2]["path"] = ".2_Dense"
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder / ".2_Dense"


def _linked_dense(folder: Path) -> Path:
    (folder / "2_Dense").rename(folder / ".real_dense")
    (folder / "2_Dense").symlink_to(folder / ".real_dense", target_is_directory=True)
    return folder / ".real_dense"


@pytest.mark.parametrize("layout", [_hidden_dense, _linked_dense], ids=["dot-named", "linked"])
def test_changed_weights_of_a_hidden_or_linked_module_change_the_fingerprint(
    make_tiny_model, layout
):
    folder = make_tiny_model(dense=True)
    dense = layout(folder)
    fitted = SentenceEmbedder(folder, device="cpu").fit()
    before = fitted.transform(TEXTS)
    fingerprint = folder_fingerprint(folder)
    pickled = pickle.dumps(fitted)

    _dense_weights_changed(dense)
    assert folder_fingerprint(folder) != fingerprint
    release_models()
    clear_cache()
    with pytest.raises(ValueError, match="differ from those this estimator was fitted with"):
        pickle.loads(pickled).transform(TEXTS)
    after = SentenceEmbedder(folder, device="cpu").fit().transform(TEXTS)
    assert np.abs(after - before).max() > 1e-3


def test_hidden_folders_nothing_loads_stay_outside_the_fingerprint(make_tiny_model):
    # A git checkout of a model: .git changes with every fetch, and no module is read there.
    folder = make_tiny_model()
    fingerprint = folder_fingerprint(folder)
    (folder / ".git").mkdir()
    (folder / ".git" / "FETCH_HEAD").write_text("abc")
    assert folder_fingerprint(folder) == fingerprint


def test_a_link_loop_inside_the_folder_is_walked_once(make_tiny_model):
    folder = make_tiny_model()
    (folder / "1_Pooling" / "again").symlink_to(folder, target_is_directory=True)
    fingerprint = folder_fingerprint(folder)
    assert fingerprint == folder_fingerprint(folder)
    SentenceEmbedder(folder, device="cpu").fit().transform(TEXTS)


# --- transformers whose weights do not cover their config --------------------------------------


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


def test_more_layers_than_the_weights_hold_is_refused_naming_the_keys(make_tiny_model):
    folder = make_tiny_model()
    _edit_config(folder, num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"do not cover the model") as info:
        SentenceEmbedder(folder, device="cpu").fit()
    assert str(folder) in str(info.value) and "encoder.layer.2." in str(info.value)


def test_a_model_type_that_does_not_match_the_weights_is_refused(make_tiny_model):
    folder = make_tiny_model()
    _edit_config(folder, model_type="distilbert", architectures=None)
    with pytest.raises(ValueError, match=r"do not cover the model .*'distilbert'"):
        SentenceEmbedder(folder, device="cpu").fit()


def _pretraining_checkpoint(root: Path) -> Path:
    """A BERT saved with its masked-LM head and without a pooler, as many checkpoints are."""
    from transformers import BertForMaskedLM

    folder = build_tiny_model(root, seed=2)
    config = json.loads((folder / "config.json").read_text())
    from transformers import BertConfig

    torch.manual_seed(2)
    BertForMaskedLM(BertConfig(**config)).save_pretrained(folder)
    return folder


_ENCODE_IN_A_PROCESS = """
import sys
import numpy as np
from skembed import SentenceEmbedder
vectors = SentenceEmbedder(sys.argv[1], device="cpu").fit().transform(sys.argv[2:])
sys.stdout.write(vectors.tobytes().hex())
"""


@pytest.mark.slow
def test_an_accepted_checkpoint_gives_identical_vectors_in_two_processes(tmp_path):
    # Unused weights (the LM head) are ignored and the missing pooler is never read, as in the
    # reference: the checkpoint loads, and nothing random reaches the vectors.
    folder = _pretraining_checkpoint(tmp_path / "mlm")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", _ENCODE_IN_A_PROCESS, str(folder), *TEXTS],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    in_process = SentenceEmbedder(folder, device="cpu").fit().transform(TEXTS)
    assert runs[0] == in_process.tobytes().hex()


# --- absurd sizes hidden by a missing field ----------------------------------------------------


def _tiny_t5(root: Path) -> Path:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2)
    T5EncoderModel(config).save_pretrained(root)
    return root


@pytest.mark.parametrize(
    ("build", "changes", "field"),
    [
        (lambda root: build_tiny_model(root), {"num_hidden_layers": 10**6}, "hidden_size"),
        (
            lambda root: build_tiny_model(root),
            {"num_hidden_layers": 10**6, "hidden_size": None},
            "hidden_size",
        ),
        (_tiny_t5, {"num_layers": 10**6, "d_model": None}, "d_model"),
    ],
    ids=["bert", "bert-without-hidden-size", "t5-without-d-model"],
)
def test_absurd_sizes_are_refused_quickly_even_with_a_size_left_out(
    tmp_path, build, changes, field
):
    folder = build(tmp_path / "model")
    _edit_config(folder, **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="does not match its weights") as info:
        SentenceEmbedder(folder, device="cpu").fit()
    assert time.perf_counter() - start < 15
    assert "config.json" in str(info.value) and field in str(info.value)


# --- lazy Dask results are snapshots of the call -----------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [{"normalize_embeddings": True, "prompt": "query: "}, {"truncate_dim": 8}],
    ids=["settings", "truncate_dim"],
)
def test_lazy_dask_result_computes_what_transform_meant(tiny_model, changes):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")

    texts = pd.Series(TEXTS + LATER, name="text")
    embedder = SentenceEmbedder(tiny_model, device="cpu", normalize_embeddings=False).fit(texts)
    expected = embedder.transform(texts)
    lazy = embedder.transform(dd.from_pandas(texts, npartitions=2))

    embedder.set_params(**changes).fit(texts)
    assert embedder.transform(texts).shape != expected.shape or (
        np.abs(embedder.transform(texts) - expected).max() > 1e-3
    )
    np.testing.assert_array_equal(lazy.compute(scheduler="sync").to_numpy(), expected)


# --- smaller edges -----------------------------------------------------------------------------


def test_quantized_search_with_rescoring_refuses_top_k_beyond_the_corpus():
    rng = np.random.default_rng(0)
    corpus, queries = rng.standard_normal((30, 8)), rng.standard_normal((3, 8))
    quantizer = EmbeddingQuantizer(precision="int8").fit(corpus)
    codes = quantizer.transform(corpus)
    for rescore in (False, True):
        with pytest.raises(ValueError, match="top_k=40 must be between 1 and the 30 corpus rows"):
            quantizer.semantic_search(queries, codes, top_k=40, rescore=rescore)
    scores, indices = quantizer.semantic_search(queries, codes, top_k=30, rescore=True)
    assert scores.shape == indices.shape == (3, 30)


def test_paraphrase_mining_of_no_rows_finds_no_pairs():
    scores, pairs = paraphrase_mining(np.zeros((0, 4), dtype=np.float32))
    assert scores.shape == (0,) and pairs.shape == (0, 2)


def test_paraphrase_mining_never_pairs_a_row_with_itself_when_distances_overflow():
    X = np.array([[3e38], [-3e38], [0.0]], dtype=np.float32)
    scores, pairs = paraphrase_mining(X, top_k=2, metric="euclidean")
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (1, 2)]
    assert scores[-1] == -np.inf  # the overflowed distance ranks last


def test_cosine_of_a_tiny_row_is_the_reference_formula():
    from sentence_transformers.util import cos_sim, pairwise_cos_sim

    x, y = np.array([[1e-15, 0.0]]), np.array([[1.0, 1.0]])
    expected = cos_sim(torch.tensor(x), torch.tensor(y)).numpy()
    np.testing.assert_allclose(similarity(x, y), expected, rtol=1e-12)
    np.testing.assert_allclose(similarity(x, y), [[7.0710678e-4]], rtol=1e-7)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    reference32 = cos_sim(torch.tensor(x32), torch.tensor(y32)).numpy()
    np.testing.assert_allclose(similarity(x32, y32), reference32, rtol=1e-6)
    np.testing.assert_allclose(
        paired_similarity(x32, y32),
        pairwise_cos_sim(torch.tensor(x32), torch.tensor(y32)).numpy(),
        rtol=1e-6,
    )


def test_community_detection_refuses_nan():
    X = np.ones((4, 3), dtype=np.float32)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        community_detection(X, min_community_size=1)


def test_a_killed_writers_partial_output_is_deleted_by_the_next_write(tmp_path, tiny_model):
    from skembed import cli

    output = tmp_path / "big.csv"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / cli._partial_name(output.resolve(), dead.pid)
    leftover.write_text("half a file")
    live = tmp_path / cli._partial_name(output.resolve(), os.getppid())
    live.write_text("another writer, still running")
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    cli.main(["encode", str(tmp_path / "texts.txt"), "-o", str(output), "--model", str(tiny_model)])
    assert output.is_file() and not leftover.exists() and live.exists()


def test_store_questions_on_a_missing_folder_create_nothing(tmp_path):
    store = DiskEmbeddingStore(tmp_path / "not-yet")
    assert len(store) == 0 and store.nbytes == 0
    store.clear()
    assert not (tmp_path / "not-yet").exists()


def test_a_store_bound_below_an_empty_store_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"max_bytes=100 is below the [\d,]+ bytes an empty"):
        DiskEmbeddingStore(tmp_path, max_bytes=100)


@pytest.mark.parametrize("name", ["truncate_dim", "batch_size", "max_seq_length"])
def test_a_bool_is_not_a_count(tiny_model, name):
    with pytest.raises(ValueError, match=rf"'{name}' parameter .* \(not a bool\)"):
        SentenceEmbedder(tiny_model, device="cpu", **{name: True}).fit()


def test_an_empty_prompt_name_is_refused(tiny_model):
    with pytest.raises(ValueError, match=r"prompt_name='' is not among the model's prompts"):
        SentenceEmbedder(tiny_model, device="cpu", prompt_name="").fit()
