"""Every figure a notebook's text quotes in bold is one its code cells print.

The notebooks stored in the repository are checked always. The docs build executes them afresh
(myst-nb); CI then points ``SKEMBED_EXECUTED_NOTEBOOKS`` at those executed copies, so the text is
also checked against what the code prints today.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# A quoted figure: a number in bold, such as **0.8203**, **1,379** or **69.2%**.
FIGURE = re.compile(r"\*\*(-?\d[\d,]*(?:\.\d+)?%?)\*\*")


def quoted_figures(notebook: dict) -> list[str]:
    cells = [c for c in notebook["cells"] if c["cell_type"] == "markdown"]
    return [m for c in cells for m in FIGURE.findall("".join(c["source"]))]


def printed_text(notebook: dict) -> str:
    """Everything the code cells print or display as text."""
    parts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                parts.append("".join(output["text"]))
            elif "data" in output:
                parts.append("".join(output["data"].get("text/plain", "")))
                parts.append("".join(output["data"].get("text/html", "")))
    return "\n".join(parts)


def printed_figures(text: str) -> set[str]:
    return set(re.findall(r"-?\d[\d,]*(?:\.\d+)?%?", text))


def _executed_copies() -> list[Path]:
    folder = os.environ.get("SKEMBED_EXECUTED_NOTEBOOKS")
    if not folder:
        return []
    copies = [Path(folder) / path.name for path in NOTEBOOKS]
    missing = [str(p) for p in copies if not p.is_file()]
    assert not missing, f"SKEMBED_EXECUTED_NOTEBOOKS={folder} lacks {missing}"
    return copies


@pytest.mark.parametrize(
    "path", NOTEBOOKS + _executed_copies(), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_quoted_figures_are_printed(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    printed = printed_figures(printed_text(notebook))
    assert printed, f"{path} holds no outputs: execute it before committing"
    missing = [figure for figure in quoted_figures(notebook) if figure not in printed]
    assert not missing, f"{path.name} quotes {missing}, which no cell prints"


def test_figures_are_compared_whole():
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": ["F1 **0.68**, recall **69.2%**, **1,379** pairs"]},
            {
                "cell_type": "code",
                "source": [],
                "outputs": [{"output_type": "stream", "text": ["score 0.680 (69.2%), 1,379\n"]}],
            },
        ]
    }
    assert quoted_figures(notebook) == ["0.68", "69.2%", "1,379"]
    # 0.68 is not 0.680 as printed: a quoted figure must be written as printed.
    assert printed_figures(printed_text(notebook)) == {"0.680", "69.2%", "1,379"}
