"""The bundled STS Benchmark."""

from __future__ import annotations

from importlib import resources

import pytest

from skembed.datasets import iter_stsb, load_stsb


@pytest.mark.parametrize(("split", "rows"), [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_split_sizes_and_columns(split, rows):
    frame = load_stsb(split)
    assert len(frame) == rows
    assert list(frame.columns) == ["sentence1", "sentence2", "score"]
    assert frame["score"].dtype == float
    assert frame["score"].between(0, 5).all()
    assert frame["sentence1"].map(len).gt(0).all() and frame["sentence2"].map(len).gt(0).all()


def test_first_test_pair():
    first = load_stsb("test").iloc[0]
    assert first["sentence1"] == "A girl is styling her hair."
    assert first["sentence2"] == "A girl is brushing her hair."
    assert first["score"] == 2.5


def test_licence_ships_with_the_data():
    folder = resources.files("skembed") / "data" / "stsb"
    assert "Commons Attribution - Share Alike" in (folder / "LICENSE.txt").read_text(
        encoding="utf-8"
    )
    assert "SemEval" in (folder / "README.md").read_text(encoding="utf-8")


def test_unknown_split():
    with pytest.raises(ValueError, match="validation"):
        load_stsb("validation")


def test_iter_stsb_matches_load_stsb():
    rows = list(iter_stsb("dev"))
    frame = load_stsb("dev")
    assert len(rows) == len(frame)
    assert rows[0] == tuple(frame.iloc[0])
    assert all(isinstance(score, float) for _, _, score in rows)
