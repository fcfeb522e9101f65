"""`make mutation`'s lists stay true to the tree: every module and test exists, every accepted survivor's line too."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATION = ROOT / "tools" / "mutation"


def test_every_listed_module_and_test_file_exists():
    modules = tomllib.loads((MUTATION / "modules.toml").read_text(encoding="utf-8"))["modules"]
    assert len(modules) >= 12
    for module, spec in modules.items():
        assert (ROOT / "tianji_ft" / module).is_file(), module
        assert spec["tests"], f"{module} has no tests: mutmut would run the whole suite per mutant"
        for test in spec["tests"]:
            assert (ROOT / test).is_file(), f"{module}: {test}"


def test_every_accepted_survivor_names_a_line_that_is_in_its_module_with_a_reason():
    modules = tomllib.loads((MUTATION / "modules.toml").read_text(encoding="utf-8"))["modules"]
    accepted = tomllib.loads((MUTATION / "accepted.toml").read_text(encoding="utf-8"))["accepted"]
    for item in accepted:
        assert item["module"] in modules, item
        lines = {line.strip() for line in (ROOT / "tianji_ft" / item["module"]).read_text("utf-8").splitlines()}
        assert item["line"].strip() in lines, f"stale: {item['module']}: {item['line']}"
        assert len(item["reason"]) > 30, item
