"""tianji-ft doctor's report: each package once, a bf16 line on any machine, optional packages as notes, --json."""

from __future__ import annotations

import json

from tianji_ft.cli import main
from tianji_ft.workflows import doctor


def test_text_lists_each_package_once_and_says_bf16_on_any_machine(capsys, tmp_path):
    main(["doctor", "--work-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.split()[0] == "torch" for line in lines if line.strip()) == 1
    assert any(line.startswith("bf16 ") for line in lines)


def test_a_missing_optional_package_is_a_note_with_its_fix_not_a_problem(monkeypatch, capsys, tmp_path):
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: None if name == "flash-attn" else real(name))
    report = doctor.diagnose(tmp_path)
    [note] = report["notes"]
    assert "pip install flash-attn" in note and not any("flash-attn" in p for p in report["problems"])
    monkeypatch.setattr(doctor, "installed_version", lambda name: "2.6.3" if name == "flash-attn" else real(name))
    assert doctor.diagnose(tmp_path)["notes"] == []


def test_json_report_and_exit_code_follow_the_problems(monkeypatch, capsys, tmp_path):
    assert main(["doctor", "--work-dir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == [] and report["checks"]["xtuner"] == "0.2.0"
    monkeypatch.setattr(doctor, "MIN_FREE_GB", 10**9)  # no disk is that big: a problem
    assert main(["doctor", "--work-dir", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "GiB free" in report["problems"][0]
    assert main(["doctor", "--work-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("1 problem(s) found") and "all checks passed" not in out
