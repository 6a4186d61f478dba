"""``skembed encode`` never changes the data: what it reads is what it encodes and writes."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from skembed import SentenceEmbedder, cli

TEXTS = ["a cat", "a dog", "the man sits"]


@pytest.fixture
def encode(capsys, tiny_model):
    """``encode(*argv)`` runs ``skembed encode`` in-process on the tiny model: (code, stderr)."""

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(["encode", *map(str, argv), "--model", str(tiny_model), "--device", "cpu"])
        return code, capsys.readouterr().err

    return run


@pytest.fixture
def reference(tiny_model):
    """``reference(texts)``: what the library gives for exactly these texts."""
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    return embedder.transform


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command loads a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "_embedder", refuse)


def assert_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("skembed: error:"), err
    for fragment in fragments:
        assert fragment in err


def read_table(path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


# 1. Missing texts follow --missing, whose default is the library's ("error").


def write_with_gap(tmp_path, suffix: str):
    """An input whose second text (row 1) is missing; returns its path and --column args."""
    path = tmp_path / f"in{suffix}"
    if suffix == ".txt":
        path.write_text("a cat\n\nthe man sits\n", encoding="utf-8")
        return path, []
    if suffix == ".tsv":
        path.write_text("n\tbody\n1\ta cat\n2\t\n3\tthe man sits\n", encoding="utf-8")
    elif suffix == ".csv":
        path.write_text("n,body\n1,a cat\n2,\n3,the man sits\n", encoding="utf-8")
    else:
        pd.DataFrame({"n": [1, 2, 3], "body": ["a cat", None, "the man sits"]}).to_parquet(path)
    return path, ["--column", "body"]


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".tsv", ".parquet"])
def test_missing_text_is_refused_by_default_naming_the_row(encode, no_model, tmp_path, suffix):
    source, column = write_with_gap(tmp_path, suffix)
    out = tmp_path / "out.npy"
    code, err = encode(source, "-o", out, *column)
    assert_error(code, err, "row 1", "--missing")
    if suffix in (".txt", ".tsv"):  # rows are lines there: the file line is named too
        assert f"line {2 if suffix == '.txt' else 3}" in err
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".tsv", ".parquet"])
@pytest.mark.parametrize("policy", ["empty", "zero"])
def test_missing_policy_is_the_library_policy(encode, reference, tmp_path, suffix, policy):
    source, column = write_with_gap(tmp_path, suffix)
    out = tmp_path / "out.npy"
    code, err = encode(source, "-o", out, *column, "--missing", policy)
    assert code == 0, err
    got = np.load(out)
    expected = reference(["a cat", "", "the man sits"])
    if policy == "zero":
        expected[1] = 0
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_csv_cells_are_texts_as_written(encode, reference, tmp_path):
    # pandas would read "number" as floats (7.0, 1.5, 1000.0) and "word" as missing values.
    columns = {"number": ["007", "1.50", "1e3"], "word": ["NA", "None", "null"]}
    source = tmp_path / "in.csv"
    rows = zip(*columns.values(), strict=True)
    source.write_text("number,word\n" + "".join(f"{a},{b}\n" for a, b in rows), "utf-8")
    for column, texts in columns.items():
        out = tmp_path / f"{column}.npy"
        code, err = encode(source, "-o", out, "--column", column)
        assert code == 0, err
        np.testing.assert_allclose(np.load(out), reference(texts), atol=1e-6)


# 2. A .tsv is a table: header row, --column, quotes kept as written.


def test_tsv_is_read_as_a_table_with_quotes_kept(encode, reference, tmp_path):
    first = ['He said "hi" to me', '"quoted" start', 'a lone " quote']
    second = ["a cat", "a dog", "the man sits"]
    lines = ["score\tsentence1\tsentence2"]
    lines += [f"{i}.0\t{a}\t{b}" for i, (a, b) in enumerate(zip(first, second, strict=True))]
    source = tmp_path / "pairs.tsv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for column, texts in (("sentence1", first), ("sentence2", second)):
        out = tmp_path / f"{column}.npy"
        code, err = encode(source, "-o", out, "--column", column)
        assert code == 0, err
        assert "wrote 3 x 32" in err  # the header is not a text
        np.testing.assert_allclose(np.load(out), reference(texts), atol=1e-6)


def test_tsv_needs_a_column_and_well_formed_rows(encode, no_model, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("score\tsentence\n1.0\ta cat\n2.0\ta dog\textra\n", encoding="utf-8")
    assert_error(*encode(source, "-o", tmp_path / "out.npy"), "--column")
    assert_error(
        *encode(source, "-o", tmp_path / "out.npy", "--column", "sentence"),
        "line 3 has 3 tab-separated fields",
    )


# 3. Table outputs carry an id column; .npy rows are in input order.


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_output_starts_with_the_input_row_number(encode, reference, tmp_path, suffix):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / f"out{suffix}"
    code, err = encode(tmp_path / "in.txt", "-o", out)
    assert code == 0, err
    table = read_table(out)
    assert table.columns[0] == "row" and table["row"].tolist() == [0, 1, 2]
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(np.float32), reference(TEXTS), atol=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("source_suffix", [".csv", ".tsv", ".parquet"])
def test_id_column_is_copied_into_the_output(encode, reference, tmp_path, suffix, source_suffix):
    ids = ["q-7", "007", "x"]
    source = tmp_path / f"in{source_suffix}"
    frame = pd.DataFrame({"key": ids, "body": TEXTS})
    if source_suffix == ".csv":
        frame.to_csv(source, index=False)
    elif source_suffix == ".tsv":
        frame.to_csv(source, index=False, sep="\t")
    else:
        frame.to_parquet(source)
    out = tmp_path / f"out{suffix}"
    code, err = encode(source, "-o", out, "--column", "body", "--id-column", "key")
    assert code == 0, err
    table = pd.read_csv(out, dtype={"key": str}) if suffix == ".csv" else read_table(out)
    assert table.columns[0] == "key" and table["key"].tolist() == ids
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(np.float32), reference(TEXTS), atol=1e-6)


def test_id_column_is_refused_where_it_cannot_be_kept(encode, no_model, tmp_path):
    pd.DataFrame({"key": [1], "body": ["a cat"]}).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "in.txt").write_text("a cat\n", encoding="utf-8")
    assert_error(
        *encode(
            tmp_path / "in.csv", "-o", tmp_path / "o.npy", "--column", "body", "--id-column", "key"
        ),
        "--id-column needs a .csv or .parquet output",
    )
    assert_error(
        *encode(tmp_path / "in.txt", "-o", tmp_path / "o.csv", "--id-column", "key"),
        "--id-column",
    )
    assert_error(
        *encode(
            tmp_path / "in.csv", "-o", tmp_path / "o.csv", "--column", "body", "--id-column", "nope"
        ),
        "no column 'nope'",
    )


# 4. A missing package for a format is refused before any model is loaded.


@pytest.mark.parametrize(
    ("source", "output", "absent", "needed"),
    [
        ("in.txt", "out.parquet", ["pyarrow", "fastparquet"], "pip install 'skembed[parquet]'"),
        ("in.txt", "out.csv", ["pandas"], "pip install 'skembed[pandas]'"),
        ("in.csv", "out.npy", ["pandas"], "pip install 'skembed[pandas]'"),
        ("in.parquet", "out.npy", ["pyarrow", "fastparquet"], "pip install 'skembed[parquet]'"),
    ],
)
def test_missing_format_dependency_is_refused_before_loading_the_model(
    encode, no_model, monkeypatch, tmp_path, source, output, absent, needed
):
    (tmp_path / "in.txt").write_text("a cat\n", encoding="utf-8")
    pd.DataFrame({"body": ["a cat"]}).to_csv(tmp_path / "in.csv", index=False)
    pd.DataFrame({"body": ["a cat"]}).to_parquet(tmp_path / "in.parquet")
    for name in absent:
        monkeypatch.setitem(sys.modules, name, None)
    column = [] if source.endswith(".txt") else ["--column", "body"]
    code, err = encode(tmp_path / source, "-o", tmp_path / output, *column)
    assert_error(code, err, needed)
    assert not (tmp_path / output).exists()


def test_txt_to_npy_needs_no_pandas(encode, reference, monkeypatch, tmp_path):
    for name in ("pandas", "pyarrow", "fastparquet"):
        monkeypatch.setitem(sys.modules, name, None)
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, err = encode(tmp_path / "in.txt", "-o", tmp_path / "out.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference(TEXTS), atol=1e-6)


# 5. The output is written exactly at the path given, whatever the suffix's case.


@pytest.mark.parametrize("name", ["x.NPY", "x.Npy", "x.CSV", "x.PARQUET"])
def test_output_is_written_at_the_exact_path(encode, reference, tmp_path, name):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / name
    code, err = encode(tmp_path / "in.txt", "-o", out)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.txt", name])
    assert f"to {out}" in err
    if name.lower().endswith(".npy"):
        got = np.load(out)
    else:
        with open(out, "rb") as handle:
            got = (pd.read_csv if name.lower().endswith(".csv") else pd.read_parquet)(handle)
        got = got.drop(columns="row").to_numpy(np.float32)
    np.testing.assert_allclose(got, reference(TEXTS), atol=1e-6)


# 6. Lines end at "\n" (or "\r\n") only; other line-breaking characters are text.


def test_lines_split_on_newline_only(encode, reference, tmp_path):
    texts = ["one\u2028two cat", "three\x85four dog", "five\x0c six\rseven"]
    source = tmp_path / "in.txt"
    source.write_bytes("\r\n".join(texts[:2]).encode() + b"\n" + texts[2].encode() + b"\n")
    code, err = encode(source, "-o", tmp_path / "out.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), reference(texts), atol=1e-6)


# 7. The input is never overwritten; other outputs only on request.


@pytest.mark.parametrize("spelling", ["dotdot", "symlink", "hardlink"])
def test_input_file_is_never_the_output(encode, no_model, tmp_path, spelling):
    source = tmp_path / "in.csv"
    pd.DataFrame({"body": TEXTS}).to_csv(source, index=False)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    if spelling == "dotdot":
        out = tmp_path / "sub" / ".." / "in.csv"
    else:
        out = tmp_path / "sub" / "same.csv"
        (out.symlink_to if spelling == "symlink" else out.hardlink_to)(source)
    for overwrite in ([], ["--overwrite"]):
        code, err = encode(source, "-o", out, "--column", "body", *overwrite)
        assert_error(code, err, "is the input file")
    assert source.read_bytes() == before


def test_output_folder_must_exist(encode, no_model, tmp_path):
    (tmp_path / "in.txt").write_text("a cat\n", encoding="utf-8")
    out = tmp_path / "no" / "such" / "out.npy"
    assert_error(*encode(tmp_path / "in.txt", "-o", out), "does not exist")
    assert not (tmp_path / "no").exists()


def test_existing_output_is_replaced_only_with_overwrite(encode, reference, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    out.write_bytes(b"precious")
    assert_error(*encode(tmp_path / "in.txt", "-o", out), "--overwrite")
    assert out.read_bytes() == b"precious"
    code, err = encode(tmp_path / "in.txt", "-o", out, "--overwrite")
    assert code == 0, err
    np.testing.assert_allclose(np.load(out), reference(TEXTS), atol=1e-6)


def test_failed_write_leaves_the_previous_output(encode, monkeypatch, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    out.write_bytes(b"precious")

    def fail_midway(writer, block, embeddings):
        writer.handle.write(b"half a file")
        raise OSError("No space left on device")

    # The rows are written block by block as they are encoded.
    monkeypatch.setattr(cli._Writer, "write", fail_midway)
    assert_error(*encode(tmp_path / "in.txt", "-o", out, "--overwrite"), "No space left")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]
