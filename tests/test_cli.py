"""The skembed command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import METRICS

import skembed
from skembed import SentenceEmbedder
from skembed.cache import clear_cache
from skembed.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the test printed before
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("module", [False, True])
def test_help_exits_zero(module):
    command = [sys.executable, "-m", "skembed"] if module else ["skembed"]
    for sub in ([], ["similarity"], ["encode"], ["evaluate"]):
        result = subprocess.run(
            [*command, *sub, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "usage: skembed" in result.stdout


def test_similarity_table(capsys, tiny_model):
    texts = ["a cat", "a dog", "the man"]
    code, out, _ = run(capsys, "similarity", *texts, "--model", str(tiny_model), "--metric", "dot")
    assert code == 0
    expected = SentenceEmbedder(tiny_model, similarity_fn_name="dot").fit().similarity(texts)
    lines = out.splitlines()
    assert lines[0].startswith("dot similarity")
    for i, line in enumerate(lines[2:]):
        assert line.startswith(f"[{i}] {texts[i]}")
        assert [float(v) for v in line.split()[-3:]] == pytest.approx(expected[i], abs=1e-4)


def test_encode_formats(capsys, tiny_model, tmp_path):
    texts = ["a cat", "a dog", "the man sits"]
    expected = SentenceEmbedder(tiny_model).fit().transform(texts)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    pd.DataFrame({"body": texts, "n": [1, 2, 3]}).to_csv(tmp_path / "in.csv", index=False)
    pd.DataFrame({"body": texts}).to_parquet(tmp_path / "in.parquet")
    for source, extra in (
        ("in.txt", []),
        ("in.csv", ["--column", "body"]),
        ("in.parquet", ["--column", "body"]),
    ):
        for suffix in (".npy", ".csv", ".parquet"):
            out = tmp_path / f"out-{source}{suffix}"
            clear_cache()  # encode for real, so the progress bar shows
            code, _, err = run(
                capsys,
                "encode",
                str(tmp_path / source),
                "-o",
                str(out),
                "--model",
                str(tiny_model),
                *extra,
            )
            assert code == 0, err
            # stderr is not a terminal here: no progress bar, only the summary line.
            assert "wrote 3 x 32" in err and "Encoding" not in err
            if suffix == ".npy":
                got = np.load(out)
            elif suffix == ".csv":
                got = pd.read_csv(out).drop(columns="row").to_numpy(np.float32)
            else:
                got = pd.read_parquet(out).drop(columns="row").to_numpy()
            np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_encode_names_columns_as_the_estimator_does(capsys, tiny_model, tmp_path, suffix):
    texts = ["a cat", "a dog"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    embedder = SentenceEmbedder(tiny_model).set_output(transform="pandas")
    # The same input the estimator sees: the table's text column, and a list for a .txt.
    for source, extra, estimator_input in (
        ("in.csv", ["--column", "text"], pd.DataFrame({"text": texts})),
        ("in.txt", [], texts),
    ):
        out = tmp_path / f"{source}{suffix}"
        argv = [str(tmp_path / source), "-o", str(out), "--model", str(tiny_model), *extra]
        code, _, err = run(capsys, "encode", *argv)
        assert code == 0, err
        expected = list(embedder.fit_transform(estimator_input).columns)
        assert expected[0] == ("text_0" if extra else "sentenceembedder0")
        assert list(read(out).columns) == ["row", *expected]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encode", "missing.txt", "-o", "x.npy"], "No such file"),
        (["encode", "{csv}", "-o", "x.npy"], "--column"),
        (["encode", "{csv}", "-o", "x.npy", "--column", "nope"], "no column 'nope'"),
        (["encode", "{txt}", "-o", "x.json"], "must end in one of"),
        (["similarity", "a", "--model", "/no/such/model"], "Cannot find model"),
    ],
)
def test_errors_are_one_line_with_nonzero_exit(
    capsys, monkeypatch, tmp_path, tiny_model, argv, message
):
    (tmp_path / "in.txt").write_text("a cat\n", encoding="utf-8")
    pd.DataFrame({"body": ["a cat"]}).to_csv(tmp_path / "in.csv", index=False)
    argv = [a.format(csv=tmp_path / "in.csv", txt=tmp_path / "in.txt") for a in argv]
    if "--model" not in argv:
        argv += ["--model", str(tiny_model)]
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("skembed: error:") and message in err


def test_usage_error_exits_two(capsys):
    with pytest.raises(SystemExit) as info:
        main(["similarity", "a", "--metric", "jaccard"])
    assert info.value.code == 2
    assert main(["similarity", "a", "--batch-size", "0"]) == 2


@pytest.mark.integration
def test_similarity_with_real_model_prints_seed_value(capsys):
    code, out, _ = run(
        capsys,
        "similarity",
        "The new movie is awesome",
        "The new movie is so great",
        "A woman watches TV",
        "--device",
        "cpu",
    )
    assert code == 0 and "0.8939" in out


@pytest.mark.integration
def test_evaluate_stsb_prints_published_spearman_and_reference_pearson(
    capsys, real_model, stsb_test
):
    from scipy.stats import pearsonr, spearmanr
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import SimilarityFunction as ReferenceFunction

    code, out, _ = run(capsys, "evaluate", "stsb", "--split", "test", "--device", "cpu")
    assert code == 0
    printed = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert list(printed) == METRICS
    # The published figure (MTEB, STSBenchmark test, cosine Spearman x 100).
    assert printed["cosine"][0] == "82.03"
    # Every figure is that of the reference library's embeddings, to the printed 2 decimals.
    reference = SentenceTransformer(str(real_model), device="cpu")
    first = torch.from_numpy(reference.encode(stsb_test["sentence1"].tolist()))
    second = torch.from_numpy(reference.encode(stsb_test["sentence2"].tolist()))
    gold = stsb_test["score"].to_numpy()
    for metric in METRICS:
        scores = ReferenceFunction.to_similarity_pairwise_fn(metric)(first, second).numpy()
        expected = [100 * spearmanr(scores, gold).statistic, 100 * pearsonr(scores, gold).statistic]
        assert [float(v) for v in printed[metric]] == pytest.approx(expected, abs=0.0051), metric


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"skembed {skembed.__version__}\n"
    result = subprocess.run(
        ["skembed", "--version"], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"skembed {skembed.__version__}\n"
