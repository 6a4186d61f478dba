"""The README quickstart runs as printed and prints what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def _run(code: str) -> subprocess.CompletedProcess:
    # From the repository root, where the README's relative data paths hold.
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=README.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
        check=False,
    )


@pytest.mark.integration
def test_quickstart_prints_what_the_readme_shows():
    result = _run(_block("quickstart"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == _block("quickstart-output")


@pytest.mark.integration
@pytest.mark.parametrize("name", ["main", "recipes"])
def test_readme_examples_run(name):
    result = _run(_block(name))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
