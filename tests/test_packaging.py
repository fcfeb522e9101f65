"""The package people install where they work: a wheel and an sdist, the base install, the notebook.

Slow: it builds the wheel once, makes two fresh virtual environments and
installs into them from the package index (the base install; then the
``data`` extra with nbclient and ipykernel for the notebook).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MEDQA = ROOT / "tests" / "data" / "fixtures" / "medqa.csv"

pytestmark = pytest.mark.slow


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    # A fresh environment sees only what was installed into it: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, env=env, **kw)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, sdist = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheel) == 1 and len(sdist) == 1
    return {"wheel": wheel[0], "sdist": sdist[0]}


def fresh_venv(where: Path, *requirements) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    python = where / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "-q", *requirements)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return python


def test_the_wheel_installs_alone_and_converts_data(dist, tmp_path):
    import zipfile

    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert "tianji_ft/data/converters.py" in names and "tianji_ft/cli/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    python = fresh_venv(tmp_path / "base", dist["wheel"])
    assert run(python, "-c", "import torch").returncode != 0  # the base install brings no torch
    cli = python.parent / "tianji-ft"
    helped = run(cli, "--help")
    assert helped.returncode == 0 and "data" in helped.stdout
    out = tmp_path / "medqa.jsonl"
    converted = run(cli, "data", "convert", "medqa", MEDQA, "-o", out)
    assert converted.returncode == 0, converted.stderr
    assert out.read_text(encoding="utf-8").count("\n") == int(converted.stdout.split("written ")[1].split(",")[0])
    missing = run(cli, "export", "gguf", tmp_path, "-o", tmp_path / "gguf")
    assert missing.returncode == 2 and "pip install 'tianji_ft[export]'" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stderr.count("\n") == 1


def test_the_notebook_runs_green_with_only_the_data_extra(dist, tmp_path):
    python = fresh_venv(tmp_path / "data", f"{dist['wheel']}[data]", "nbclient", "ipykernel")
    assert run(python, "-c", "import torch").returncode != 0  # the data extra brings no torch either
    script = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=300, kernel_name='python3').execute()\n"
        "print(sum(1 for c in nb.cells if c.cell_type == 'code' and c.get('outputs')))\n"
    )
    executed = run(python, "-c", script, ROOT / "docs" / "notebooks" / "data.ipynb", cwd=tmp_path)
    assert executed.returncode == 0, executed.stderr[-4000:]
    assert int(executed.stdout.strip().splitlines()[-1]) >= 6


def test_the_sdist_holds_the_package_and_its_metadata(dist):
    import tarfile

    names = tarfile.open(dist["sdist"]).getnames()
    assert any(n.endswith("tianji_ft/data/converters.py") for n in names)
    assert any(n.endswith("pyproject.toml") for n in names)
