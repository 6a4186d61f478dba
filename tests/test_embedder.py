"""SentenceEmbedder as a scikit-learn estimator, on a tiny random BERT."""

from __future__ import annotations

import io
import pickle
import re
import warnings
from html import unescape

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import METRICS
from scipy.stats import rankdata, spearmanr
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skembed import SentenceEmbedder, SimilarityFunction, paired_similarity, similarity
from skembed.encoder import load_encoder

TEXTS = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


@pytest.fixture
def embedder(tiny_model):
    return SentenceEmbedder(tiny_model, device="cpu").fit(TEXTS)


def test_init_stores_parameters_unchanged(tiny_model):
    embedder = SentenceEmbedder(tiny_model, similarity_fn_name=SimilarityFunction.DOT, batch_size=7)
    params = embedder.get_params()
    assert params["model_name_or_path"] is tiny_model
    assert params["similarity_fn_name"] is SimilarityFunction.DOT
    assert params["batch_size"] == 7
    assert not hasattr(embedder, "device_")


def test_fit_records_resolved_state(embedder, tiny_model):
    assert embedder.model_folder_ == str(tiny_model.resolve())
    assert embedder.device_ == "cpu"
    assert embedder.n_features_out_ == 32
    assert embedder.max_seq_length_ == 24
    assert embedder.similarity_fn_name_ == "cosine"
    assert len(embedder.model_fingerprint_) == 64


def test_transform_shape_dtype_and_order(embedder):
    out = embedder.transform(TEXTS)
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(embedder.transform(TEXTS[::-1]), out[::-1], atol=1e-6)


def test_transform_requires_fit(tiny_model):
    with pytest.raises(NotFittedError):
        SentenceEmbedder(tiny_model).transform(TEXTS)


def test_transform_accepts_series_with_any_index(embedder):
    expected = embedder.transform(TEXTS)
    series = pd.Series(TEXTS, index=[100, 205, 7])
    np.testing.assert_array_equal(embedder.transform(series), expected)
    np.testing.assert_array_equal(embedder.transform(series.to_frame("text")), expected)
    np.testing.assert_array_equal(embedder.transform(np.array(TEXTS)), expected)
    np.testing.assert_array_equal(embedder.transform(tuple(TEXTS)), expected)


def test_transform_refuses_bare_string_and_missing_values(embedder):
    with pytest.raises(TypeError, match="single string"):
        embedder.transform("The weather is lovely today.")
    with pytest.raises(ValueError, match="position 1"):
        embedder.transform(["a", None])


def test_duplicate_texts_get_identical_rows(embedder):
    out = embedder.transform(["a b", "c", "a b"])
    np.testing.assert_array_equal(out[0], out[2])


def test_truncation_warns_with_count(embedder):
    long_text = "the cat sits outside " * 20
    with pytest.warns(UserWarning, match=r"1 of 2 texts .* max_seq_length=24"):
        embedder.transform([long_text, "short"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.transform(["short"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"similarity_fn_name": "jaccard"}, "similarity_fn_name"),
        ({"max_seq_length": 1000}, "exceeds the 64 positions"),
        ({"prompt": "a", "prompt_name": "b"}, "not both"),
        ({"prompt_name": "missing"}, "not among the model's prompts"),
        ({"device": "tpu"}, "not a torch device"),
    ],
)
def test_fit_validates_parameters(tiny_model, params, message):
    with pytest.raises(ValueError, match=message):
        SentenceEmbedder(tiny_model, **params).fit()


def test_fit_validates_input(tiny_model):
    with pytest.raises(ValueError, match="position 0"):
        SentenceEmbedder(tiny_model, device="cpu").fit([None, "b"])


def test_unknown_model_error_lists_what_was_tried(tmp_path):
    with pytest.raises(OSError, match="Tried"):
        SentenceEmbedder(str(tmp_path / "nowhere"), device="cpu").fit()


def test_metric_set_three_ways(make_tiny_model):
    folder = make_tiny_model(similarity_fn_name="manhattan")
    # 1. through the model's config file
    embedder = SentenceEmbedder(folder, device="cpu").fit()
    assert embedder.similarity_fn_name_ == "manhattan"
    # 2. at construction
    assert SentenceEmbedder(folder, similarity_fn_name="dot").fit().similarity_fn_name_ == "dot"
    # 3. by assignment and set_params, taking effect without refitting
    embedder.similarity_fn_name = SimilarityFunction.EUCLIDEAN
    assert embedder.similarity_fn_name_ == "euclidean"
    embedding = embedder.transform(TEXTS)
    np.testing.assert_allclose(
        embedder.similarity(embedding), similarity(embedding, metric="euclidean")
    )
    embedder.set_params(similarity_fn_name="cosine")
    np.testing.assert_allclose(embedder.similarity(embedding), similarity(embedding), atol=1e-6)


def test_similarity_methods_accept_texts_and_embeddings(embedder):
    embedder.set_params(similarity_fn_name="manhattan")
    embedding = embedder.transform(TEXTS)
    np.testing.assert_allclose(
        embedder.similarity(TEXTS, TEXTS[:2]), similarity(embedding, embedding[:2], "manhattan")
    )
    np.testing.assert_allclose(
        embedder.similarity_pairwise(TEXTS, TEXTS[::-1]),
        paired_similarity(embedding, embedding[::-1], "manhattan"),
    )
    tensor = torch.from_numpy(embedding)
    assert isinstance(embedder.similarity(tensor), torch.Tensor)


@pytest.fixture(scope="module")
def metric_pairs():
    """Text pairs whose four metrics rank the pairs four different ways."""
    rng = np.random.default_rng(0)
    words = ["the", "cat", "dog", "sits", "plays", "garden", "man", "woman", "tv", "guitar"]
    # Pairs of sentences of different lengths: unnormalized embeddings of different norms.
    first = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(30)]
    second = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(30)]
    return pd.DataFrame({"sentence1": first, "sentence2": second})


def _gold(embedder, pairs, metric):
    """Gold scores that rank the pairs exactly as ``metric`` does, nonlinearly (ranks cubed)."""
    a, b = embedder.transform(pairs.iloc[:, 0]), embedder.transform(pairs.iloc[:, 1])
    return rankdata(paired_similarity(a, b, metric)) ** 3


def test_score_is_spearman_of_the_metrics_pair_similarity(make_tiny_model, metric_pairs):
    # Without normalization the four metrics order pairs differently (with unit vectors,
    # cosine, dot and euclidean would all agree and a metric mix-up would go unnoticed).
    embedder = SentenceEmbedder(make_tiny_model(normalize=False), device="cpu").fit()
    a, b = (
        embedder.transform(metric_pairs["sentence1"]),
        embedder.transform(metric_pairs["sentence2"]),
    )
    for truth in METRICS:
        gold = _gold(embedder, metric_pairs, truth)
        for metric in METRICS:
            embedder.set_params(similarity_fn_name=metric)
            score = embedder.score(metric_pairs, gold)
            expected = spearmanr(paired_similarity(a, b, metric), gold).statistic
            assert score == pytest.approx(expected, abs=1e-12), (truth, metric)
            if metric == truth:
                # A rank correlation: 1 for a monotone, nonlinear gold (Pearson would be < 1).
                assert score == pytest.approx(1.0), metric
            else:
                assert score < 0.999, (truth, metric)
    with pytest.raises(ValueError, match="30 pairs but y has 3"):
        embedder.score(metric_pairs, gold[:3])


@pytest.mark.parametrize("truth", ["dot", "manhattan"])
def test_grid_search_over_metric_finds_the_metric_of_the_gold_scores(
    make_tiny_model, metric_pairs, truth
):
    folder = make_tiny_model(normalize=False)
    gold = _gold(SentenceEmbedder(folder, device="cpu").fit(), metric_pairs, truth)
    search = GridSearchCV(
        SentenceEmbedder(folder, device="cpu"), {"similarity_fn_name": METRICS}, cv=3
    ).fit(metric_pairs, gold)
    assert [p["similarity_fn_name"] for p in search.cv_results_["params"]] == METRICS
    scores = dict(zip(METRICS, search.cv_results_["mean_test_score"], strict=True))
    assert search.best_params_["similarity_fn_name"] == truth
    assert scores[truth] == pytest.approx(1.0)
    assert all(score < 0.999 for metric, score in scores.items() if metric != truth), scores


def test_clone_is_unfitted_and_shares_the_model(embedder):
    twin = clone(embedder)
    assert not hasattr(twin, "n_features_out_")
    twin.fit()
    assert twin._encoder is embedder._encoder
    np.testing.assert_array_equal(twin.transform(TEXTS), embedder.transform(TEXTS))


def test_pickle_holds_parameters_not_weights(embedder):
    expected = embedder.transform(TEXTS)
    buffer = io.BytesIO()
    joblib.dump(embedder, buffer)
    assert len(buffer.getvalue()) < 10_000
    buffer.seek(0)
    restored = joblib.load(buffer)
    assert "_encoder" not in restored.__dict__
    np.testing.assert_array_equal(restored.transform(TEXTS), expected)
    assert restored.get_params() == embedder.get_params()


def test_reloaded_estimator_detects_changed_model(make_tiny_model):
    folder = make_tiny_model()
    embedder = SentenceEmbedder(folder, device="cpu").fit()
    payload = pickle.dumps(embedder)
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 12}')
    with pytest.raises(ValueError, match="differ from those this estimator was fitted with"):
        pickle.loads(payload).transform(TEXTS)


def test_save_writes_effective_metric(embedder, tmp_path):
    embedder.set_params(similarity_fn_name="euclidean")
    embedder.save(tmp_path / "saved")
    reloaded = SentenceEmbedder(tmp_path / "saved", device="cpu").fit()
    assert reloaded.similarity_fn_name_ == "euclidean"
    np.testing.assert_allclose(reloaded.transform(TEXTS), embedder.transform(TEXTS), atol=1e-6)


def test_normalize_embeddings_and_prompt(tiny_model, make_tiny_model):
    raw_folder = make_tiny_model(normalize=False)
    raw = SentenceEmbedder(raw_folder, device="cpu").fit().transform(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    normed = SentenceEmbedder(raw_folder, device="cpu", normalize_embeddings=True).fit()
    np.testing.assert_allclose(np.linalg.norm(normed.transform(TEXTS), axis=1), 1.0, atol=1e-6)

    prompted = SentenceEmbedder(tiny_model, device="cpu", prompt="query: ").fit()
    assert prompted.prompt_ == "query: "
    encoder = load_encoder(tiny_model, torch.device("cpu"))
    direct = encoder.encode(["query: " + t for t in TEXTS]).embeddings
    np.testing.assert_allclose(prompted.transform(TEXTS), direct, atol=1e-6)


def test_default_prompt_name_from_model(make_tiny_model):
    folder = make_tiny_model(prompts={"query": "query: "}, default_prompt_name="query")
    assert SentenceEmbedder(folder, device="cpu").fit().prompt_ == "query: "
    assert SentenceEmbedder(folder, device="cpu", prompt="").fit().prompt_ == ""


def test_feature_names_and_pipeline(embedder):
    names = embedder.get_feature_names_out()
    assert len(names) == 32 and names[0] == "sentenceembedder0"
    pipeline = make_pipeline(clone(embedder), StandardScaler()).fit(TEXTS)
    assert pipeline.transform(TEXTS).shape == (3, 32)


def _html_parameters(html: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The text repr of an estimator's HTML, and its user-set and default parameter rows."""
    text = unescape(
        re.search(r'<div class="sk-text-repr-fallback"><pre>(.*?)</pre>', html, re.S)[1]
    )
    rows = re.findall(
        r'<tr class="(user-set|default)">.*?<td class="param">(\w+)</td>\s*'
        r'<td class="value">(.*?)</td>',
        html,
        re.S,
    )
    tables = {
        kind: {n: unescape(v) for k, n, v in rows if k == kind} for kind in ("user-set", "default")
    }
    return " ".join(text.split()), tables["user-set"], tables["default"]


def test_html_repr_shows_the_parameters_set():
    from sklearn.utils import estimator_html_repr

    embedder = SentenceEmbedder(
        "my-org/tiny-bert",
        device="cpu",
        similarity_fn_name="manhattan",
        batch_size=7,
        prompt="query: ",
    )
    expected = {
        "model_name_or_path": "'my-org/tiny-bert'",
        "similarity_fn_name": "'manhattan'",
        "device": "'cpu'",
        "batch_size": "7",
        "prompt": "'query: '",
    }
    for html in (embedder._repr_html_(), estimator_html_repr(embedder)):
        text, user_set, defaults = _html_parameters(html)
        assert text.startswith("SentenceEmbedder(")
        for name, value in expected.items():
            assert f"{name}={value}" in text, name
        assert "normalize_embeddings" not in text  # only parameters that differ are shown
        if user_set or defaults:  # scikit-learn >= 1.7 adds a table of all parameters
            assert user_set == expected
            assert set(defaults) == set(embedder.get_params()) - set(expected)
            assert defaults["normalize_embeddings"] == "False"
