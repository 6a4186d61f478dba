"""evaluate_sts: Pearson and Spearman per metric, the figures of skembed evaluate."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import METRICS
from scipy.stats import pearsonr, spearmanr

from skembed import SentenceEmbedder, evaluate_sts

WORDS = ["the cat sits", "a dog plays", "the man plays guitar", "a woman watches tv", "new tv"]
PAIRS = [(a, b) for a in WORDS for b in WORDS if a < b]
GOLD = np.random.default_rng(0).uniform(0, 5, len(PAIRS))

pytestmark = pytest.mark.usefixtures("fresh_cache")


def test_every_metric_against_the_embedders_own_pair_scores(tiny_model):
    embedder = SentenceEmbedder(tiny_model, device="cpu")
    figures = evaluate_sts(embedder, PAIRS, GOLD)
    assert list(figures) == METRICS
    assert not hasattr(embedder, "n_features_out_")  # a clone was fitted, not this one
    for metric in METRICS:
        fitted = SentenceEmbedder(tiny_model, device="cpu", similarity_fn_name=metric).fit()
        scores = fitted.similarity_pairwise(PAIRS)
        assert figures[metric] == {
            "spearman": pytest.approx(spearmanr(scores, GOLD).statistic, abs=1e-12),
            "pearson": pytest.approx(pearsonr(scores, GOLD).statistic, abs=1e-12),
        }
        assert fitted.score(PAIRS, GOLD) == figures[metric]["spearman"]


def test_metrics_subset_and_bad_lengths(tiny_model):
    embedder = SentenceEmbedder(tiny_model, device="cpu")
    assert list(evaluate_sts(embedder, PAIRS, GOLD, metrics=["dot"])) == ["dot"]
    with pytest.raises(ValueError, match=f"X has {len(PAIRS)} pairs but y has 3 scores"):
        evaluate_sts(embedder, PAIRS, GOLD[:3])
    with pytest.raises(ValueError, match="Unknown similarity function 'jaccard'"):
        evaluate_sts(embedder, PAIRS, GOLD, metrics=["jaccard"])


def test_cli_prints_the_figures_of_evaluate_sts(tiny_model, capsys, monkeypatch):
    from skembed import cli, datasets

    rows = [(a, b, float(g)) for (a, b), g in zip(PAIRS, GOLD, strict=True)]
    monkeypatch.setattr(datasets, "iter_stsb", lambda split: iter(rows))
    assert cli.main(["evaluate", "stsb", "--model", str(tiny_model), "--device", "cpu"]) in (
        0,
        None,
    )
    printed = capsys.readouterr().out.splitlines()[2:]
    assert len(printed) == len(METRICS)
    figures = evaluate_sts(SentenceEmbedder(tiny_model, device="cpu"), PAIRS, GOLD)
    for line, (metric, values) in zip(printed, figures.items(), strict=True):
        name, spearman, pearson = line.split()
        assert name == metric
        assert float(spearman) == pytest.approx(100 * values["spearman"], abs=0.006)
        assert float(pearson) == pytest.approx(100 * values["pearson"], abs=0.006)


def test_save_writes_a_model_card_with_the_figures_given(tiny_model, tmp_path):
    embedder = SentenceEmbedder(tiny_model, device="cpu", similarity_fn_name="dot").fit()
    figures = evaluate_sts(embedder, PAIRS, GOLD, metrics=["dot"])
    embedder.save(tmp_path / "saved", evaluation=figures, evaluated_on="toy pairs")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert f"Saved by skembed from `{tiny_model}`." in card
    assert "| pooling | mean |" in card
    assert "| similarity function | dot |" in card
    assert "| max_seq_length | 24 |" in card
    assert "## Evaluation: toy pairs" in card
    spearman, pearson = 100 * figures["dot"]["spearman"], 100 * figures["dot"]["pearson"]
    assert f"| dot | {spearman:.2f} | {pearson:.2f} |" in card
    # A card without figures has no evaluation section.
    embedder.save(tmp_path / "plain")
    assert "Evaluation" not in (tmp_path / "plain" / "README.md").read_text()
