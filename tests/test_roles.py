"""Query/document roles and construction-time prompts, against the reference's ``encode_query``,
``encode_document`` and ``SentenceTransformer(prompts=...)``; their cache keys; and their
scikit-learn behaviour (clone, get_params, grid search, PairedSimilarity)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sentences
from reference_models import build_reference_models
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skembed import PairedSimilarity, SentenceEmbedder, paired_similarity

pytestmark = pytest.mark.usefixtures("fresh_cache")

TEXTS = sentences(12, seed=7)
TOLERANCE = 1e-5
# Saved with the model: as e5-style models save them, plus a default prompt.
SAVED_PROMPTS = {"query": "query: ", "passage": "passage: ", "title": "title: "}


@pytest.fixture(scope="module")
def router_model(tmp_path_factory):
    return build_reference_models(tmp_path_factory.mktemp("roles"))["router"]


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory):
    from conftest import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("prompted") / "model",
        prompts=SAVED_PROMPTS,
        default_prompt_name="title",
        legacy_pooling_config=False,
        include_prompt=False,
    )


def reference(folder, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs)


def embed(folder, texts=TEXTS, **params) -> np.ndarray:
    return SentenceEmbedder(folder, device="cpu", **params).fit().transform(texts)


@pytest.mark.parametrize(
    "prompts", [None, {"document": "passage: "}, {"query": "q: ", "title": "t: ", "other": "o: "}]
)
def test_roles_match_encode_query_and_encode_document(prompted_model, prompts):
    st = reference(prompted_model, prompts=prompts)
    cases = {
        None: st.encode(TEXTS),
        "query": st.encode_query(TEXTS),
        "document": st.encode_document(TEXTS),
    }
    for role, expected in cases.items():
        actual = embed(prompted_model, prompts=prompts, role=role)
        np.testing.assert_allclose(actual, expected, atol=TOLERANCE, err_msg=f"role={role}")
    # The three differ here: each role picks its own prompt.
    assert not np.allclose(cases["query"], cases["document"])
    assert not np.allclose(cases[None], cases["query"])


def test_prompt_name_and_prompt_win_over_the_role(prompted_model):
    st = reference(prompted_model)
    np.testing.assert_allclose(
        embed(prompted_model, role="query", prompt_name="passage"),
        st.encode_query(TEXTS, prompt_name="passage"),
        atol=TOLERANCE,
    )
    np.testing.assert_allclose(
        embed(prompted_model, role="document", prompt="search: "),
        st.encode_document(TEXTS, prompt="search: "),
        atol=TOLERANCE,
    )


def test_prompts_in_effect_are_exposed(prompted_model):
    embedder = SentenceEmbedder(prompted_model, prompts={"query": "q: "}, role="query").fit()
    assert embedder.prompts_ == {**SAVED_PROMPTS, "document": "", "query": "q: "}
    assert embedder.prompt_ == "q: "


@pytest.mark.parametrize("prompts", [None, {"query": "q: ", "document": "d: "}])
def test_router_roles_match_the_reference(router_model, prompts):
    st = reference(router_model, prompts=prompts)
    for role, expected in [
        ("query", st.encode_query(TEXTS)),
        ("document", st.encode_document(TEXTS)),
        (None, st.encode(TEXTS)),
    ]:
        actual = embed(router_model, prompts=prompts, role=role)
        np.testing.assert_allclose(actual, expected, atol=TOLERANCE, err_msg=f"role={role}")


def test_cache_keys_follow_role_and_prompts(router_model, prompted_model):
    """Same texts, another role or prompts: new vectors, never those cached for the first."""
    st = reference(router_model)
    embedder = SentenceEmbedder(router_model, device="cpu", role="query").fit()
    query = embedder.transform(TEXTS)
    embedder.set_params(role="document").fit()
    document = embedder.transform(TEXTS)
    np.testing.assert_allclose(document, st.encode_document(TEXTS), atol=TOLERANCE)
    assert not np.allclose(query, document)
    # Back to the query role: the cached query vectors, equal to the reference's.
    np.testing.assert_allclose(embedder.set_params(role="query").fit().transform(TEXTS), query)

    first = embed(prompted_model, prompts={"query": "first: "}, role="query")
    second = embed(prompted_model, prompts={"query": "second: "}, role="query")
    expected = reference(prompted_model, prompts={"query": "second: "}).encode_query(TEXTS)
    np.testing.assert_allclose(second, expected, atol=TOLERANCE)
    assert not np.allclose(first, second)


def test_save_keeps_the_prompts(prompted_model, tmp_path):
    embedder = SentenceEmbedder(prompted_model, device="cpu", prompts={"query": "q: "})
    embedder.fit().save(tmp_path / "saved")
    st = reference(tmp_path / "saved")
    np.testing.assert_allclose(
        st.encode_query(TEXTS),
        embedder.set_params(role="query").fit().transform(TEXTS),
        atol=TOLERANCE,
    )


def test_parameters_are_scikit_learn_conventional(prompted_model):
    prompts = {"query": "q: "}
    embedder = SentenceEmbedder(prompted_model, prompts=prompts, role="document")
    assert embedder.prompts is prompts  # stored unchanged
    params = clone(embedder).get_params()
    assert params["prompts"] == prompts and params["role"] == "document"
    with pytest.raises(InvalidParameterError, match="role"):
        SentenceEmbedder(prompted_model, role="passage").fit()
    with pytest.raises(InvalidParameterError, match="prompts"):
        SentenceEmbedder(prompted_model, prompts=["q: "]).fit()
    with pytest.raises(ValueError, match=r"prompts must map prompt names .* got \{'query': 1\}"):
        SentenceEmbedder(prompted_model, prompts={"query": 1}).fit()


def test_paired_similarity_embeds_queries_and_documents(router_model):
    st = reference(router_model)
    queries, documents = sentences(10, seed=1), sentences(10, seed=2)
    pairs = list(zip(queries, documents, strict=True))
    expected = paired_similarity(st.encode_query(queries), st.encode_document(documents))
    scorer = PairedSimilarity(SentenceEmbedder(router_model, device="cpu"), query_document=True)
    np.testing.assert_allclose(scorer.fit(pairs).transform(pairs).ravel(), expected, atol=TOLERANCE)
    plain = PairedSimilarity(SentenceEmbedder(router_model, device="cpu")).fit(pairs)
    assert not np.allclose(plain.transform(pairs).ravel(), expected, atol=1e-3)
    assert not hasattr(scorer.set_params(query_document=False).fit(pairs), "document_embedder_")


def test_grid_search_over_roles(router_model):
    pairs = list(zip(sentences(16, seed=3), sentences(16, seed=4), strict=True))
    labels = np.arange(16) % 2
    search = GridSearchCV(
        Pipeline(
            [
                ("sim", PairedSimilarity(SentenceEmbedder(router_model, device="cpu"))),
                ("clf", LogisticRegression()),
            ]
        ),
        {"sim__query_document": [False, True], "sim__embedder__role": [None, "query"]},
        cv=2,
    ).fit(pairs, labels)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
