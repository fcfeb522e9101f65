"""Mutation testing of the modules that guard user data and model correctness.

Each module of ``modules.toml`` is mutated by mutmut in its own copy of the
working tree (never the tree itself: others may be running its tests), and
each mutant runs only that module's fast tests, listed beside it. Modules run
``--jobs`` at a time. The report (``work_dirs/mutation/report.md`` and
``report.json``) gives killed / timeout / survived per module, the kill rate,
and every survivor with its diff and, where ``accepted.toml`` lists its line,
the reason it is accepted.

    python tools/mutation/run.py [--jobs 2] [--only data/split.py ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import write_report  # noqa: E402


def load_modules(only: list[str]) -> dict[str, dict]:
    modules = tomllib.loads((HERE / "modules.toml").read_text(encoding="utf-8"))["modules"]
    unknown = set(only) - set(modules)
    if unknown:
        raise SystemExit(f"not in tools/mutation/modules.toml: {', '.join(sorted(unknown))}")
    return {name: spec for name, spec in modules.items() if not only or name in only}


def load_accepted() -> dict[str, dict[str, str]]:
    """module -> {stripped source line: reason} of survivors accepted as equivalent."""
    accepted: dict[str, dict[str, str]] = {}
    for item in tomllib.loads((HERE / "accepted.toml").read_text(encoding="utf-8")).get("accepted", []):
        accepted.setdefault(item["module"], {})[item["line"].strip()] = item["reason"]
    return accepted


def copy_tree(dest: Path) -> None:
    """The working tree as it is (tracked and new files, not ignored ones) into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    shutil.rmtree(dest, ignore_errors=True)
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def runner_command(spec: dict) -> str:
    """The module's tests, run by ``runner.py``: exit 1 on any failure, 0 only on a full pass."""
    tests = " ".join(shlex.quote(t) for t in spec["tests"])
    return f"{shlex.quote(sys.executable)} tools/mutation/runner.py {tests}"


STALL = 300  # seconds without a new verdict after which a mutmut run is taken as hung
ATTEMPTS = 5


def mutate(module: str, spec: dict, work: Path) -> dict:
    copy = work / module.replace("/", "_").removesuffix(".py")
    copy_tree(copy)
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    mutmut = [sys.executable, "-m", "mutmut"]
    with (work / f"{copy.name}.log").open("w", encoding="utf-8") as log:
        cpu = run_mutmut(mutmut + ["run", "--paths-to-mutate", f"tianji_ft/{module}", "--tests-dir", "tests",
                                   "--runner", runner_command(spec), "--no-progress", "--simple-output"],
                         copy, copy / "tianji_ft" / module, env, log)
    mutants = read_cache(copy, mutmut, env)
    recheck(mutants, copy, copy / "tianji_ft" / module, runner_command(spec), mutmut, env)
    return {"module": module, "seconds": round(time.monotonic() - started), "cpu_seconds": round(cpu),
            "tests": spec["tests"], "mutants": mutants}


def recheck(mutants: list[dict], copy: Path, source: Path, runner: str, mutmut: list[str], env: dict) -> None:
    """Run each survivor's tests once more, on its own.

    mutmut 2 takes only pytest's exit status 1 (tests failed) as a kill, so a
    mutant that breaks the module's import (a syntax error, a name that no
    longer exists at import time) stops pytest with status 2 and is recorded as
    a survivor. A survivor is one only if its tests pass (status 0) here;
    otherwise it is counted as killed, marked ``rechecked``.
    """
    pristine = source.read_bytes()
    for mutant in mutants:
        if mutant["status"] != "bad_survived":
            continue
        subprocess.run(mutmut + ["apply", str(mutant["id"])], cwd=copy, env=env, capture_output=True)
        try:
            passed = subprocess.run(runner, shell=True, cwd=copy, env=env, capture_output=True).returncode == 0
        finally:
            source.write_bytes(pristine)
        if not passed:
            mutant["status"], mutant["rechecked"] = "ok_killed", True


def run_mutmut(command: list[str], copy: Path, source: Path, env: dict, log) -> float:
    """Run mutmut in ``copy`` until every mutant has a verdict; the CPU seconds it took.

    mutmut 2 keeps the module's lines in its cache and re-reads them from disk
    whenever anything asks it for a diff (``mutmut show``); asked while a
    mutant is applied, it records the mutant's text, and its worker then fails
    to find its lines and leaves mutmut waiting for ever. Nothing here asks
    before the run ends, but a run that gives no verdict for STALL seconds is
    ended and started again with the module restored, as a safeguard.
    CPU time is counted with wait4: mutmut and every test run it waited for,
    which, unlike the wall clock, does not grow when other work shares the machine.
    """
    pristine, cpu = source.read_bytes(), 0.0
    for _ in range(ATTEMPTS):
        source.write_bytes(pristine)
        proc = subprocess.Popen(command, cwd=copy, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        last, since = untested(copy), time.monotonic()
        while True:
            pid, _, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(2)
            now = untested(copy)
            if now is None:  # the cache was busy: no news
                continue
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > STALL:
                log.write(f"\n[run.py] no verdict for {STALL} s: mutmut ended and started again\n")
                log.flush()
                os.killpg(proc.pid, signal.SIGKILL)
                _, _, usage = os.wait4(proc.pid, 0)
                break
        proc.returncode = 0  # reaped by wait4
        cpu += usage.ru_utime + usage.ru_stime
        if untested(copy) == 0:
            break
    source.write_bytes(pristine)
    return cpu


def untested(copy: Path) -> int | None:
    """Mutants still without a verdict (None before mutmut has listed them)."""
    try:
        with sqlite3.connect(f"file:{copy / '.mutmut-cache'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM Mutant WHERE status = 'untested'").fetchone()[0]
    except sqlite3.Error:
        return None


def read_cache(copy: Path, mutmut: list[str], env: dict) -> list[dict]:
    cache = copy / ".mutmut-cache"
    if not cache.exists():
        return []
    with sqlite3.connect(cache) as db:
        rows = db.execute("SELECT m.id, m.status, l.line_number, l.line FROM Mutant m JOIN Line l ON m.line = l.id"
                          " ORDER BY m.id").fetchall()
    mutants = []
    for mutant_id, status, line_number, line in rows:
        item = {"id": mutant_id, "status": status, "line": line_number + 1, "source": line}
        if status == "bad_survived":
            item["diff"] = subprocess.run(mutmut + ["show", str(mutant_id)], cwd=copy, env=env,
                                          capture_output=True, text=True).stdout.strip()
        mutants.append(item)
    return mutants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="modules mutated at once (default 2)")
    parser.add_argument("--only", nargs="*", default=[], help="modules of modules.toml (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "work_dirs" / "mutation")
    args = parser.parse_args(argv)
    modules = load_modules(args.only)
    work = args.out / "copies"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # the slowest first, so that the last ones to finish are short
    order = sorted(modules, key=lambda m: -modules[m].get("weight", 1))
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda m: mutate(m, modules[m], work), order))
    results.sort(key=lambda r: r["module"])
    passed = write_report(args.out, results, load_accepted(), round(time.monotonic() - started), args.jobs)
    print(f"report: {args.out / 'report.md'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
