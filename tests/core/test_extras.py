"""Which extra a missing module's one line names, and that the table agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from tianji_ft.core.extras import MODULE_EXTRAS, PROVIDES, missing_extra_line
from tianji_ft.core.paths import PROJECT_ROOT

# pip's name -> the module it installs, where they differ
IMPORT_NAMES = {"prometheus-client": "prometheus_client", "python-calamine": "python_calamine"}


def _extras_from_pyproject() -> dict[str, set[str]]:
    extras = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]

    def modules(name: str) -> set[str]:
        found = set()
        for requirement in extras[name]:
            included = re.fullmatch(r"tianji_ft\[(.+)\]", requirement)
            if included:
                for sub in included.group(1).split(","):
                    found |= modules(sub)
            else:
                dist = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
                found.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
        return found

    return {name: modules(name) for name in extras}


def test_what_each_extra_provides_is_what_pyproject_installs():
    assert PROVIDES == _extras_from_pyproject()


def test_each_module_s_extra_installs_it():
    for module, extra in MODULE_EXTRAS.items():
        assert module in PROVIDES[extra], (module, extra)


def test_the_line_names_the_verb_s_extra_or_adds_the_module_s():
    assert missing_extra_line("eval", "openai") .endswith("pip install 'tianji_ft[eval]'")  # the judge's client
    assert missing_extra_line("synth", "openai").endswith("pip install 'tianji_ft[synth]'")
    # synth pairs with local candidates loads the SFT model: [synth] has no torch
    assert missing_extra_line("synth", "torch").endswith("pip install 'tianji_ft[synth,serve]'")
    assert missing_extra_line("chat", "torch").endswith("pip install 'tianji_ft[serve]'")
    assert missing_extra_line("export", "gguf.constants").startswith("gguf is not installed, and tianji-ft export")
    assert missing_extra_line("chat", "not_a_dependency") is None
