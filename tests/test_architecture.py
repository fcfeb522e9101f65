"""The layers of docs/architecture.md hold (import-linter), and a wrong-way import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    return subprocess.run([str(LINT), "--config", str(ROOT / ".importlinter")], capture_output=True, text=True,
                          env=env, cwd=package_parent, timeout=120)


@pytest.fixture(scope="module")
def copy_of_the_package(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "tianji_ft", parent / "tianji_ft", ignore=shutil.ignore_patterns("__pycache__"))
    return parent


def test_the_tree_keeps_its_layers(copy_of_the_package):
    result = lint(copy_of_the_package)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "KEPT" in result.stdout


@pytest.mark.parametrize("module, wrong", [
    ("core/errors.py", "from tianji_ft.cli import main"),  # at module level
    ("data/schema.py", "    from tianji_ft.train.train import plan"),  # inside a function
    ("train/dryrun.py", "    from tianji_ft.weights.merge import merge"),  # a sibling in the same layer
])
def test_a_wrong_way_import_breaks_the_contract(copy_of_the_package, module, wrong):
    path = copy_of_the_package / "tianji_ft" / module
    original = path.read_text(encoding="utf-8")
    added = f"\n\ndef _wrong_way():\n{wrong}\n" if wrong.startswith(" ") else f"\n{wrong}\n"
    path.write_text(original + added, encoding="utf-8")
    try:
        result = lint(copy_of_the_package)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode != 0
    importer = "tianji_ft." + module[:-3].replace("/", ".")
    imported = wrong.split()[1]
    assert "BROKEN" in result.stdout and f"{importer} -> {imported}" in result.stdout, result.stdout[-3000:]
