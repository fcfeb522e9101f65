"""A config whose behaviour changes must get a new version.

``config_versions.json`` records, per config, the version and a fingerprint
of its rendered code (comments and blank lines left out). Changing the table
or template changes the fingerprint; the test then asks for a version bump
and a CHANGELOG line before the new fingerprint is recorded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tianji_ft.configs import render, table

RECORD = Path(__file__).with_name("config_versions.json")


def fingerprint(text: str) -> str:
    code = [line.rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return hashlib.sha256("\n".join(code).encode("utf-8")).hexdigest()[:16]


def current() -> dict:
    return {name: {"version": row["version"], "fingerprint": fingerprint(render.render_config(name))}
            for name, row in sorted(table.WORKFLOWS.items())}


def test_behaviour_changes_come_with_a_version_bump():
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    now = current()
    stale = []
    for name, entry in now.items():
        old = recorded.get(name)
        if old == entry:
            continue
        if old and old["version"] == entry["version"]:
            stale.append(f"{name}: behaviour changed but version is still {entry['version']}; bump it in "
                         "tianji_ft/configs/table.py and add a line to xtuner_configs/CHANGELOG.md")
        else:
            stale.append(f"{name}: new version {entry['version']} not recorded")
    assert not stale, "\n".join(stale) + f"\nthen record the new state in {RECORD.name}:\n" + json.dumps(now, indent=2)


def test_comment_changes_do_not_count():
    text = render.render_config("internlm2_chat_7b_qlora_wishes_e3")
    assert fingerprint(text.replace("# Save (work_dir None", "# Checkpoints (work_dir None")) == fingerprint(text)
    assert fingerprint(text.replace('"TIANJI_EVAL_FREQ", "50"', '"TIANJI_EVAL_FREQ", "100"')) != fingerprint(text)
