"""The README quickstart runs as printed and prints what the README says."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import METRICS

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def _run(
    code: str, cwd: Path = README.parent, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    # From the repository root by default, where the README's relative data paths hold.
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=600,
        check=False,
    )


def _numbers(text: str) -> np.ndarray:
    return np.array([float(x) for x in re.findall(r"-?\d+\.\d+", text)])


@pytest.mark.integration
def test_quickstart_prints_what_the_readme_shows():
    # The printed figures are the CPU's; a CUDA device, hidden here, is checked below.
    result = _run(_block("quickstart"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout == _block("quickstart-output")


@pytest.mark.integration
def test_quickstart_on_a_gpu_moves_only_what_the_readme_says():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    result = _run(_block("quickstart"))
    assert result.returncode == 0, result.stderr
    printed, expected = _numbers(result.stdout), _numbers(_block("quickstart-output"))
    # float16 by default there: the README promises cosines within 1e-3 (manhattan sums 384
    # differences, so it gets 1e-3 relative).
    np.testing.assert_allclose(printed[:9], expected[:9], rtol=0, atol=1e-3)
    np.testing.assert_allclose(printed[9:], expected[9:], rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def reference_similarities(real_model):
    """Factory: the reference library's pair similarities of a frame of STSb pairs, per metric."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import SimilarityFunction as ReferenceFunction

    model = SentenceTransformer(str(real_model), device="cpu")

    def similarities(frame) -> dict[str, np.ndarray]:
        first = torch.from_numpy(model.encode(frame["sentence1"].tolist()))
        second = torch.from_numpy(model.encode(frame["sentence2"].tolist()))
        return {
            metric: ReferenceFunction.to_similarity_pairwise_fn(metric)(first, second).numpy()
            for metric in METRICS
        }

    return similarities


# What the other examples print is the README's text, and is checked against the same
# computation on the reference library's embeddings.


@pytest.mark.integration
@pytest.mark.slow
def test_main_example_prints_the_cross_validated_score_of_each_metric(
    stsb_dev, reference_similarities
):
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold

    result = _run(_block("main"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == _block("main-output")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["param_similarity_fn_name", "mean_test_score"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:2] for row in rows] == [[str(i), m] for i, m in enumerate(METRICS)]
    gold = stsb_dev["score"].to_numpy()
    for (_, metric, printed), scores in zip(
        rows, reference_similarities(stsb_dev).values(), strict=True
    ):
        folds = [spearmanr(scores[test], gold[test]).statistic for _, test in KFold(3).split(gold)]
        assert float(printed) == pytest.approx(np.mean(folds), abs=1e-4), metric


# Appended to the recipes example: what its process and each process of joblib's loky pool
# (the one the grid search ran on, reused) loaded and encoded. Each pool process answers once:
# all of them wait at one barrier.
_WORKER_COUNTS = """
import json, multiprocessing, os
from joblib import Parallel, delayed
from skembed.encoder import work_counts

def _counts(barrier):
    barrier.wait(timeout=300)
    return work_counts()

with multiprocessing.Manager() as manager:
    barrier = manager.Barrier(2)
    workers = Parallel(n_jobs=2)(delayed(_counts)(barrier) for _ in range(2))
with open("counts.json", "w") as file:
    json.dump({"parent": work_counts(), "workers": workers}, file)
"""


@pytest.mark.integration
@pytest.mark.slow
def test_recipes_example_prints_the_best_metric_and_its_accuracy(
    stsb_train, reference_similarities, tmp_path
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    # In a scratch folder: the recipe writes its store ("skembed-store") where it runs.
    result = _run(_block("recipes") + _WORKER_COUNTS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _block("recipes-output")
    # No pre-fill: the grid search's workers (each loaded the model once) encoded each unique
    # sentence once between them; the parent, the two examples' 2 + 2 texts, and its refit
    # read everything from the store.
    counts = json.loads((tmp_path / "counts.json").read_text())
    unique = set(stsb_train.head(900)["sentence1"]) | set(stsb_train.head(900)["sentence2"])
    assert counts["parent"]["texts_encoded"] == 2 + 2
    assert len(counts["workers"]) == 2
    assert [c["models_loaded"] for c in counts["workers"]] == [1, 1], counts
    assert sum(c["texts_encoded"] for c in counts["workers"]) == len(unique), counts
    match = re.fullmatch(r"(\{.*\}) (0\.\d{1,3})\n", result.stdout)
    assert match, result.stdout
    best_params, best_score = ast.literal_eval(match[1]), float(match[2])
    assert list(best_params) == ["sim__embedder__similarity_fn_name"]
    train = stsb_train.head(900)
    labels = train["score"].to_numpy() >= 3
    accuracy = {
        metric: cross_val_score(LogisticRegression(), scores[:, None], labels, cv=3).mean()
        for metric, scores in reference_similarities(train).items()
    }
    best = best_params["sim__embedder__similarity_fn_name"]
    assert best_score == pytest.approx(accuracy[best], abs=0.005)
    # The best of the reference's accuracies, or one within a rounding of it.
    assert accuracy[best] >= max(accuracy.values()) - 0.005, accuracy


def test_ci_runs_the_readme_developer_block():
    # Line for line, the torch index included (tests/test_fresh_install.py runs the user block).
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [
        line
        for line in _block("install-dev").splitlines()
        if not line.startswith(("python3 -m venv", ". .venv"))
    ]
    assert commands == [
        "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu",
        'pip install -e ".[dev]"',
        'pytest -m "not slow"',
    ]
    assert all(command in ci for command in commands), commands


@pytest.mark.parametrize("name", ["install-user", "install-dev"])
def test_installation_page_shows_the_readme_install_blocks(name):
    page = (README.parent / "docs" / "installation.rst").read_text(encoding="utf-8")
    literal = "".join(f"    {line}\n" for line in _block(name).splitlines())
    assert f"::\n\n{literal}\n" in page, name
