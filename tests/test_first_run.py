"""What a new user meets first: warnings at their own line, honest precision, a quiet load."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import pytest
import torch
from sklearn.pipeline import Pipeline

import skembed._device as device_module
from skembed import SentenceEmbedder, TruncationWarning

LONG = "the cat sits in the garden and the dog plays with the new guitar"


def caught(run) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        run()
    return [r for r in records if issubclass(r.category, TruncationWarning)]


@pytest.mark.parametrize("route", ["transform", "fit_transform", "pipeline"])
def test_truncation_warning_points_at_the_callers_line(tiny_model, route):
    embedder = SentenceEmbedder(tiny_model, device="cpu", max_seq_length=6)
    texts = ["cat", LONG, "dog", LONG]
    if route == "transform":
        embedder.fit()
        records = caught(lambda: embedder.transform(texts))
    elif route == "fit_transform":
        records = caught(lambda: embedder.fit_transform(texts))
    else:
        pipeline = Pipeline([("embed", embedder)])
        records = caught(lambda: pipeline.fit_transform(texts))
    assert len(records) == 1
    assert Path(records[0].filename) == Path(__file__)
    assert records[0].message.positions == [1, 3]
    assert "rows 1, 3" in str(records[0].message)


def test_truncation_warning_lists_all_rows_and_shows_the_first_five(tiny_model):
    embedder = SentenceEmbedder(tiny_model, device="cpu", max_seq_length=6, missing="zero")
    embedder.fit()
    texts = [None, *([LONG, "cat"] * 4)]  # rows 1, 3, 5, 7 cut; 0 missing
    texts += [LONG, LONG]  # rows 9, 10
    (record,) = caught(lambda: embedder.transform(texts))
    assert record.message.positions == [1, 3, 5, 7, 9, 10]
    assert "rows 1, 3, 5, 7, 9, ..." in str(record.message)


def test_bfloat16_without_bfloat16_units_warns_once(monkeypatch):
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(device_module, "_WARNED_BFLOAT16", False)
    cpu = torch.device("cpu")
    with pytest.warns(UserWarning, match="without bfloat16 units") as records:
        assert device_module.resolve_dtype("bfloat16", cpu) == torch.bfloat16
        device_module.resolve_dtype("bfloat16", cpu)
    assert len([r for r in records if "bfloat16 units" in str(r.message)]) == 1
    assert Path(records[0].filename) == Path(__file__)


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_bfloat16_with_bfloat16_units_is_silent(monkeypatch, flag):
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: {"avx2", flag})
    monkeypatch.setattr(device_module, "_WARNED_BFLOAT16", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_module.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
        # float32 never warns, whatever the CPU.
        device_module.resolve_dtype("float32", torch.device("cpu"))


def test_cpu_features_names_the_flags_that_matter(monkeypatch):
    flags = {"avx2", "sse4_2", "amx_bf16", "avx512_vnni"}
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: flags)
    described = device_module.cpu_features()
    assert described.endswith(": avx2 avx512_vnni amx_bf16")
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: set())
    assert "none of avx2" in device_module.cpu_features()


def test_loading_a_model_prints_nothing(make_tiny_model, capfd):
    folder = make_tiny_model(seed=11)
    capfd.readouterr()
    SentenceEmbedder(folder, device="cpu").fit().transform(["a cat"])
    out, err = capfd.readouterr()
    assert out == ""
    assert "Loading" not in err and "%" not in err, err


def test_progress_bar_counts_every_input_text(tiny_model, monkeypatch, fresh_cache):
    import skembed.cache._encode as cache_module

    bars = []

    class Recording:
        def __init__(self, total, disable, **kwargs):
            self.total, self.n, self.disable = total, 0, disable
            bars.append(self)

        def update(self, n):
            self.n += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cache_module, "tqdm", Recording)
    embedder = SentenceEmbedder(tiny_model, device="cpu", show_progress_bar=True).fit()
    embedder.transform(["a cat", "a dog"])  # now cached
    texts = ["a cat", "the man", "a cat", "a dog", "the man", "a new tv"]  # hits and repeats
    embedder.transform(texts)
    assert (bars[-1].total, bars[-1].n, bars[-1].disable) == (6, 6, False)
    # Spread over two devices, each device's rows still count once.
    spread = SentenceEmbedder(tiny_model, device=["cpu", "cpu"], show_progress_bar=True).fit()
    spread.transform([f"text {i}" for i in range(9)] * 2)
    assert (bars[-1].total, bars[-1].n) == (18, 18)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_evaluate_shows_progress_on_a_terminal_unless_quiet(tiny_model, monkeypatch, quiet):
    from skembed import cli
    from skembed.cache import clear_cache

    clear_cache()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = ["evaluate", "stsb", "--model", str(tiny_model), "--device", "cpu"]
    assert cli.main(argv + (["--quiet"] if quiet else [])) == 0
    assert ("Encoding" in terminal.getvalue()) != quiet, terminal.getvalue()[-300:]
