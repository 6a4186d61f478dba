"""The "Scaling out" page's recipes run as printed, wherever their engine is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes"


def _run(name: str, tmp_path: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(RECIPES / name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


# Each recipe checks its own result against an in-process transform (its assertions).
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_dask_recipe(tmp_path):
    pytest.importorskip("distributed")
    assert _run("dask_cluster.py", tmp_path).splitlines()[-1] == (
        "(4, 384) float32 [101, 205, 307, 409] [1, 1]"
    )


def test_ray_recipe(tmp_path):
    pytest.importorskip("ray")
    assert _run("ray_data.py", tmp_path).splitlines()[-1] == "(4, 384) float32"


def test_spark_recipe(tmp_path):
    # Both routes (predict_batch_udf, mapInPandas) on local[2], 3,000 STSb sentences: equal to
    # an in-process transform, one model load per Python worker (the recipe asserts both).
    # CI installs pyspark and Java (.ci/run), so a missing one is a failure there.
    if os.environ.get("CI") != "true":
        pytest.importorskip("pyspark")
        if shutil.which("java") is None:
            pytest.skip("Spark needs a Java runtime")
    assert _run("spark_udf.py", tmp_path).splitlines()[-1] == (
        "(3000, 384) (3000, 384) most model loads in one Python worker: 1"
    )
