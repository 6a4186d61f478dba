"""The code examples of the documentation pages (docs/*.rst) run and print what the pages show.

Each page's ``.. code-block:: python`` blocks run in order in one namespace, in a fresh process
whose working folder is a temporary one (examples that save files write there). A block followed
by a ``prints::`` literal block must print exactly that. Literal blocks whose lines start with
``$ skembed`` are command lines: each runs, and the lines under it are its expected output.
The other literal blocks are the install and test commands, which CI itself runs (.ci/run).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.rst"))
# Separates the output of one block from the next in the page's process.
MARKER = "---skembed-docs-block---"


@dataclass
class Example:
    """A python block of a page (its directive's line) and, when the page shows it, its output."""

    line: int
    code: str
    expected: str | None = None


@dataclass
class Command:
    """A ``$ skembed`` command line of a page and the output the page shows under it."""

    line: int
    argv: list[str]
    expected: list[str] = field(default_factory=list)


def _indented_block(lines: list[str], start: int) -> tuple[str, int]:
    """The body indented under line ``start - 1``, dedented, and the index after it."""
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" ")):
        end += 1
    body = lines[start:end]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    indent = min(len(x) - len(x.lstrip()) for x in body if x.strip())
    return "\n".join(x[indent:] for x in body) + "\n", end


def parse_page(text: str) -> tuple[list[Example], list[Command]]:
    """The python examples and the ``$ skembed`` commands of an rst page, in page order."""
    lines = text.splitlines()
    examples: list[Example] = []
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(".. code-block:: python"):
            code, end = _indented_block(lines, i + 1)
            examples.append(Example(i + 1, code))
            i = end
            continue
        if line.endswith("::") and not line.startswith(".. "):
            body, end = _indented_block(lines, i + 1)
            if line == "prints::":
                assert examples and examples[-1].expected is None, f"line {i + 1}: prints what?"
                examples[-1].expected = body
            elif body.startswith("$ skembed "):
                for row in body.splitlines():
                    if row.startswith("$ "):
                        commands.append(Command(i + 1, shlex.split(row[2:])))
                    else:
                        commands[-1].expected.append(row)
            i = end
            continue
        i += 1
    return examples, commands


def test_parse_page_pairs_blocks_with_their_output():
    page = (
        "Intro\n\n.. code-block:: python\n\n    x = 1\n\n    print(x)\n\nprints::\n\n    1\n\n"
        ".. code-block:: python\n\n    y = 2\n\nA command::\n\n"
        "    $ skembed similarity 'a b' c\n    table\n    $ skembed --version\n\n"
        "Install::\n\n    pip install skembed\n"
    )
    examples, commands = parse_page(page)
    assert [(e.code, e.expected) for e in examples] == [
        ("x = 1\n\nprint(x)\n", "1\n"),
        ("y = 2\n", None),
    ]
    assert [(c.argv, c.expected) for c in commands] == [
        (["skembed", "similarity", "a b", "c"], ["table"]),
        (["skembed", "--version"], []),
    ]


def _environment() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}


def _run_examples(examples: list[Example], cwd: Path) -> list[str]:
    """Run the blocks in one process, one namespace; return what each block printed."""
    program = (
        "import json, sys\n"
        "namespace = {'__name__': '__main__'}\n"
        "for number, code in enumerate(json.loads(sys.argv[1])):\n"
        f"    print({MARKER!r}, flush=True)\n"
        "    exec(compile(code, f'<docs block {number}>', 'exec'), namespace)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, json.dumps([e.code for e in examples])],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_environment(),
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split(MARKER + "\n")[1:]


PAGES_WITH_EXAMPLES = [p for p in PAGES if parse_page(p.read_text(encoding="utf-8"))[0]]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda p: p.name)
def test_python_examples_run_and_print_what_the_page_shows(page, tmp_path):
    examples, _ = parse_page(page.read_text(encoding="utf-8"))
    printed = _run_examples(examples, tmp_path)
    assert len(printed) == len(examples)
    for example, output in zip(examples, printed, strict=True):
        if example.expected is not None:
            assert output == example.expected, f"{page.name}, the code-block at line {example.line}"


def _pairs_tsv(folder: Path) -> None:
    """The ``pairs.tsv`` that the command line page describes: three rows, id and two texts."""
    rows = [
        ("id", "sentence1", "sentence2"),
        ("p1", "A man is playing a guitar.", "A man plays the guitar."),
        ("p2", "The cat sits outside", "The dog plays in the garden"),
        ("p3", "A woman watches TV", "The new movie is so great"),
    ]
    (folder / "pairs.tsv").write_text("".join("\t".join(r) + "\n" for r in rows), "utf-8")


@pytest.mark.integration
@pytest.mark.slow
def test_command_lines_print_what_the_page_shows(tmp_path):
    _, commands = parse_page((DOCS / "cli.rst").read_text(encoding="utf-8"))
    assert {c.argv[1] for c in commands} == {"similarity", "encode", "evaluate"}
    _pairs_tsv(tmp_path)
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "skembed", *command.argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # as a terminal shows them: "wrote ..." is on stderr
            text=True,
            cwd=tmp_path,
            env=_environment(),
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout
        # The page's tables are written without the spaces that end some printed lines.
        printed = [row.rstrip() for row in result.stdout.splitlines()]
        assert printed == command.expected, f"cli.rst line {command.line}"


def test_every_page_example_is_found():
    # A block the parser missed would go unchecked: count the directives another way.
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        examples, commands = parse_page(text)
        assert len(examples) == len(re.findall(r"^\.\. code-block:: python$", text, re.M))
        assert len(commands) == len(re.findall(r"^ +\$ skembed ", text, re.M)), page.name
