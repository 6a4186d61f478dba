"""Fine-tuning inside scikit-learn (issue 21): SentenceFineTuner and FineTunedClassifier."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skembed import FineTunedClassifier, SentenceEmbedder, SentenceFineTuner
from skembed.cache import DiskEmbeddingStore
from skembed.encoder import Encoder
from skembed.training import check_targets, label_pairs, pair_loss

CPU = torch.device("cpu")
WORDS = (
    "weather lovely today sunny outside drove stadium new movie awesome great cat dog sits "
    "plays garden man woman playing guitar watches tv"
).split()


def _random_pairs(n: int, seed: int = 0) -> tuple[list[tuple[str, str]], np.ndarray]:
    rng = np.random.default_rng(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS, rng.integers(2, 8)))

    pairs = [(text(), text()) for _ in range(n)]
    return pairs, rng.uniform(0, 1, n).astype(np.float32)


@pytest.fixture(scope="module")
def pairs():
    return _random_pairs(48)


def _tuner(model, **options) -> SentenceFineTuner:
    options = {"device": "cpu", "max_steps": 4, "train_batch_size": 8, **options}
    return SentenceFineTuner(model, **options)


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


# --- Step parity with the reference trainer ---------------------------------------------------


def _reference_run(model: Path, first, second, scores, output: Path, **args):
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    reference = SentenceTransformer(str(model), device="cpu")
    losses: list[float] = []

    class Recorded(CoSENTLoss):
        def forward(self, features, labels):
            loss = super().forward(features, labels)
            losses.append(loss.item())
            return loss

    data = Dataset.from_dict({"sentence1": first, "sentence2": second, "score": scores})
    trainer = SentenceTransformerTrainer(
        model=reference,
        args=SentenceTransformerTrainingArguments(
            output_dir=str(output),
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            logging_steps=1,
            **args,
        ),
        train_dataset=data,
        loss=Recorded(reference),
    )
    trainer.train()
    return losses, reference[0].auto_model.state_dict()


def test_first_20_steps_match_the_reference_trainer(tiny_model, tmp_path):
    # Same model folder, data, loss, optimizer settings and seed; dropout on, shuffled order:
    # the losses of every step and the weights after them agree.
    train, scores = _random_pairs(100, seed=1)
    first, second = [a for a, _ in train], [b for _, b in train]
    settings = {"learning_rate": 1e-3, "weight_decay": 0.01, "max_steps": 20}
    tuner = _tuner(
        tiny_model, **settings, warmup=0.1, train_batch_size=4, random_state=7, logging_steps=1
    ).fit(train, scores)
    losses, reference = _reference_run(
        tiny_model,
        first,
        second,
        scores.tolist(),
        tmp_path,
        **settings,
        warmup_steps=0.1,
        per_device_train_batch_size=4,
        seed=7,
    )
    ours = [entry["loss"] for entry in tuner.history_]
    assert len(ours) == len(losses) == 20
    np.testing.assert_allclose(ours, losses, rtol=0, atol=1e-4)
    trained = _weights(tuner.model_folder_)
    assert set(trained) == set(reference)
    for name, tensor in trained.items():
        np.testing.assert_allclose(tensor.numpy(), reference[name].numpy(), rtol=0, atol=1e-5)
    # The weights moved: the comparison is not between two untouched models.
    base = _weights(tiny_model)
    assert max((trained[k] - base[k]).abs().max().item() for k in base) > 1e-3


@pytest.mark.parametrize("loss", ["cosent", "cosine", "contrastive"])
def test_losses_are_the_reference_losses(loss):
    from sentence_transformers.sentence_transformer import losses

    reference = {
        "cosent": losses.CoSENTLoss,
        "cosine": losses.CosineSimilarityLoss,
        "contrastive": losses.ContrastiveLoss,
    }[loss]
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=generator), torch.randn(16, 8, generator=generator)
    targets = torch.rand(16, generator=generator)
    if loss == "contrastive":
        targets = (targets > 0.5).float()
    expected = _reference_loss(reference, a, b, targets)
    torch.testing.assert_close(pair_loss(loss, a, b, targets), expected, rtol=0, atol=1e-5)


def _reference_loss(kind, a, b, targets) -> torch.Tensor:
    class Passthrough(torch.nn.Module):
        def forward(self, features):
            return {"sentence_embedding": features["x"]}

    loss = kind(Passthrough())
    return loss([{"x": a}, {"x": b}], targets)


# --- Opt-in: a plain SentenceEmbedder never trains ---------------------------------------------


def test_a_plain_embedder_in_a_pipeline_does_not_train(tiny_model, monkeypatch):
    import skembed._fine_tuning as fine_tuning

    def refuse(*args, **kwargs):
        raise AssertionError("a plain SentenceEmbedder must not train")

    monkeypatch.setattr(fine_tuning, "train_pairs", refuse)
    monkeypatch.setattr(torch.optim, "AdamW", refuse)
    texts = ["a cat sits outside", "the dog plays", "a man is playing guitar", "a woman watches tv"]
    labels = [0, 0, 1, 1]
    pipeline = Pipeline(
        [("embed", SentenceEmbedder(tiny_model, device="cpu")), ("clf", LogisticRegression())]
    )
    before = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    pipeline.fit(texts, labels)
    embedder = pipeline.named_steps["embed"]
    assert not hasattr(embedder, "history_")
    state = embedder._get_encoder().pipeline.state_dict()
    base = _weights(tiny_model)
    for name, tensor in base.items():
        key = next(k for k in state if k.endswith(name))
        assert torch.equal(state[key], tensor), name
    np.testing.assert_array_equal(embedder.transform(texts), before)


# --- Fine-tuning: the result, determinism, identity -------------------------------------------


def test_fit_trains_and_is_deterministic_for_a_seed(tiny_model, pairs):
    X, y = pairs
    base = SentenceEmbedder(tiny_model, device="cpu").fit()
    first = _tuner(tiny_model, random_state=3).fit(X, y)
    again = _tuner(tiny_model, random_state=3).fit(X, y)
    other = _tuner(tiny_model, random_state=4).fit(X, y)
    texts = [a for a, _ in X[:10]]
    assert first.model_fingerprint_ == again.model_fingerprint_
    np.testing.assert_array_equal(first.transform(texts), again.transform(texts))
    assert other.model_fingerprint_ != first.model_fingerprint_
    assert first.base_model_fingerprint_ == base.model_fingerprint_ != first.model_fingerprint_
    assert np.abs(first.transform(texts) - base.transform(texts)).max() > 1e-4
    assert first.n_steps_ == 4 and [h["step"] for h in first.history_] == [4]
    assert first.transform(texts).shape == (10, first.n_features_out_)


def test_clone_and_params(tiny_model):
    tuner = _tuner(tiny_model, learning_rate=1e-4, loss="cosine")
    params = tuner.get_params()
    assert params["learning_rate"] == 1e-4 and params["loss"] == "cosine"
    assert params["device"] == "cpu" and "memory" in params
    twin = clone(tuner).set_params(learning_rate=3e-5)
    assert twin.learning_rate == 3e-5 and tuner.learning_rate == 1e-4


def test_the_cache_never_mixes_base_and_candidates(tiny_model, pairs, tmp_path):
    # One shared store: the base model's vectors, then two candidates' vectors, each keyed by
    # the weights that made them.
    X, y = pairs
    store = DiskEmbeddingStore(tmp_path / "store")
    texts = [a for a, _ in X] + ["an unseen text"]
    base = SentenceEmbedder(tiny_model, device="cpu", memory=store).fit()
    base_vectors = base.transform(texts)
    candidates = [
        _tuner(tiny_model, memory=store, learning_rate=rate, max_steps=3).fit(X, y)
        for rate in (1e-3, 3e-3)
    ]
    outputs = [c.transform(texts) for c in candidates]
    for candidate, got in zip(candidates, outputs, strict=True):
        # The trained weights themselves, outside every cache.
        direct = Encoder(Path(candidate.model_folder_), CPU).encode(texts).embeddings
        np.testing.assert_allclose(got, direct, rtol=0, atol=1e-6)
        assert np.abs(got - base_vectors).max() > 1e-4
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4
    # A fresh process's view: the store alone, the in-process cache out of the way.
    from skembed.cache import clear_cache

    clear_cache()
    np.testing.assert_array_equal(candidates[1].transform(texts), outputs[1])
    np.testing.assert_array_equal(base.transform(texts), base_vectors)


# --- Persistence ---------------------------------------------------------------------------------

_RELOAD = textwrap.dedent(
    """
    import sys, joblib, numpy as np
    estimator = joblib.load(sys.argv[1])
    np.save(sys.argv[2], estimator.transform(sys.argv[3:]))
    """
)


def _transform_in_new_process(path: Path, texts: list[str], out: Path) -> np.ndarray:
    subprocess.run([sys.executable, "-c", _RELOAD, str(path), str(out), *texts], check=True)
    return np.load(out)


def test_a_pickle_carries_the_trained_weights_and_refuses_changed_ones(tiny_model, pairs, tmp_path):
    X, y = pairs
    tuner = _tuner(tiny_model).fit(X, y)
    texts = ["a cat sits outside", "the new movie is awesome"]
    expected = tuner.transform(texts)
    joblib.dump(tuner, tmp_path / "tuner.joblib")
    got = _transform_in_new_process(tmp_path / "tuner.joblib", texts, tmp_path / "out.npy")
    np.testing.assert_array_equal(got, expected)
    # Changed weights in the pickle: refused, never encoded under the trained identity.
    state = pickle.loads(pickle.dumps(tuner))._trained.__getstate__()
    name = "model.safetensors"
    state["files"][name] = state["files"][name][:-4] + b"\0\0\0\1"
    forged = object.__new__(type(tuner._trained))
    with pytest.raises(ValueError, match="fingerprint"):
        forged.__setstate__(state)


def test_save_loads_in_the_reference_and_encodes_identically(tiny_model, pairs, tmp_path):
    from sentence_transformers import SentenceTransformer

    X, y = pairs
    tuner = _tuner(tiny_model).fit(X, y)
    tuner.save(tmp_path / "saved")
    texts = ["a cat sits outside", "the new movie is awesome", "a man plays guitar"]
    reference = SentenceTransformer(str(tmp_path / "saved"), device="cpu").encode(texts)
    np.testing.assert_allclose(reference, tuner.transform(texts), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore::skembed.TruncationWarning")
def test_grid_search_over_learning_rate_and_loss(tiny_model, tmp_path):
    from skembed.datasets import load_stsb

    train = load_stsb("train").head(48)
    X, y = train[["sentence1", "sentence2"]], train["score"] / 5
    grid = {"learning_rate": [1e-4, 1e-3], "loss": ["cosent", "cosine"]}
    results = {}
    for n_jobs in (1, 2):
        search = GridSearchCV(_tuner(tiny_model, max_steps=3), grid, cv=2, n_jobs=n_jobs)
        results[n_jobs] = search.fit(X, y)
    # Training is deterministic: the same scores whatever the number of processes.
    np.testing.assert_allclose(
        results[1].cv_results_["mean_test_score"], results[2].cv_results_["mean_test_score"]
    )
    best = results[2].best_estimator_
    assert isinstance(best, SentenceFineTuner) and best.n_steps_ == 3
    texts = train["sentence1"].head(5).tolist()
    joblib.dump(best, tmp_path / "best.joblib")
    got = _transform_in_new_process(tmp_path / "best.joblib", texts, tmp_path / "best.npy")
    np.testing.assert_array_equal(got, best.transform(texts))
    best.save(tmp_path / "best")
    reloaded = SentenceEmbedder(tmp_path / "best", device="cpu").fit().transform(texts)
    np.testing.assert_allclose(reloaded, best.transform(texts), rtol=0, atol=1e-5)


# --- Labelled texts and the classifier -----------------------------------------------------------


def _labelled(n_per_class: int = 8) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    animals, music = WORDS[11:17], WORDS[17:]
    texts, labels = [], []
    for _ in range(n_per_class):
        texts.append(" ".join(rng.choice(animals, 3)))
        texts.append(" ".join(rng.choice(music, 3)))
        labels += ["animal", "music"]
    return texts, np.asarray(labels)


def test_labelled_texts_draw_pairs_from_the_labels():
    labels = np.asarray(["a", "a", "b", "b", "b"])
    first, second, targets = label_pairs(labels, 4, seed=0)
    assert len(first) == len(second) == len(targets) == 20
    assert ((labels[first] == labels[second]) == (targets == 1)).all()
    assert (first != second).all()
    assert targets.sum() == 10


def test_classifier_fine_tunes_then_fits_a_head(tiny_model):
    texts, labels = _labelled()
    classifier = FineTunedClassifier(
        SentenceFineTuner(tiny_model, device="cpu", max_steps=6, learning_rate=1e-3)
    ).fit(pd.Series(texts, index=range(100, 100 + len(texts))), labels)
    assert list(classifier.classes_) == ["animal", "music"]
    assert classifier.predict(texts).shape == (len(texts),)
    probabilities = classifier.predict_proba(texts)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-6)
    assert 0 <= classifier.score(texts, labels) <= 1
    assert classifier.fine_tuner_.n_steps_ == 6
    search = GridSearchCV(classifier, {"fine_tuner__learning_rate": [1e-4, 1e-3]}, cv=2)
    assert search.fit(texts, labels).best_params_["fine_tuner__learning_rate"] in (1e-4, 1e-3)


# --- What a user sees: errors, history, validation, progress ------------------------------------


@pytest.mark.parametrize(
    ("X", "y", "options", "message"),
    [
        ([("a", "b"), ("c", "d")], [0.5], {}, r"X has 2 text pairs but y has shape \(1,\)"),
        ([("a", "b"), ("c", "d")], None, {}, "needs y"),
        ([("a", "b"), ("c", "d")], [0.5, 3.0], {"loss": "cosine"}, r"\[-1, 1\].*y / 5"),
        ([("a", "b"), ("c", "d")], [0.5, 1.0], {"loss": "contrastive"}, "labels 0"),
        ([("a", "b"), ("c", "d")], ["x", "y"], {}, "numeric score per text pair"),
        (["a", "b", "c"], ["x", "x", "x"], {}, "one label"),
        (["a", "b"], ["x", "y"], {}, "a single text"),
        ([], [], {}, "needs at least 2|empty|no text"),
    ],
)
def test_bad_input_says_what_was_given_and_expected(tiny_model, X, y, options, message):
    with pytest.raises(ValueError, match=message):
        _tuner(tiny_model, **options).fit(X, y)


def test_check_targets_accepts_the_loss_ranges():
    check_targets("cosent", np.asarray([0.0, 5.0], dtype=np.float32))
    check_targets("cosine", np.asarray([-1.0, 1.0], dtype=np.float32))
    check_targets("contrastive", np.asarray([0.0, 1.0], dtype=np.float32))


def test_history_validation_and_early_stopping(tiny_model, pairs):
    X, y = pairs
    tuner = _tuner(
        tiny_model,
        max_steps=40,
        logging_steps=2,
        learning_rate=5e-3,
        validation_fraction=0.25,
        n_iter_no_change=2,
    ).fit(X, y)
    history = pd.DataFrame(tuner.history_)
    assert list(history.columns) == ["step", "epoch", "loss", "learning_rate", "validation_loss"]
    assert (history["step"] % 2 == 0).all() and tuner.n_steps_ == history["step"].iloc[-1]
    best = history.loc[history["validation_loss"].idxmin(), "step"]
    assert tuner.best_step_ == best
    # It stopped after n_iter_no_change evaluations without a better validation loss.
    after = history[history["step"] > best]
    assert tuner.n_steps_ == 40 or len(after) == 2


def test_progress_bar_only_when_asked_or_on_a_terminal(tiny_model, pairs, capsys):
    X, y = pairs
    _tuner(tiny_model).fit(X, y)  # stderr is not a terminal under pytest
    assert "Fine-tuning" not in capsys.readouterr().err
    _tuner(tiny_model, show_progress_bar=True).fit(X, y)
    assert "Fine-tuning" in capsys.readouterr().err


def test_the_fine_tuner_takes_every_parameter_of_the_embedder():
    # A SentenceEmbedder parameter missing from SentenceFineTuner's signature would be dropped
    # by clone (GridSearchCV's candidates would silently lose it).
    inherited = set(SentenceEmbedder().get_params())
    assert inherited <= set(SentenceFineTuner().get_params())
    assert set(SentenceFineTuner._parameter_constraints) == set(SentenceFineTuner().get_params())
    tuner = clone(SentenceFineTuner(long_text="chunk", chunk_overlap=3))
    assert (tuner.long_text, tuner.chunk_overlap) == ("chunk", 3)
