"""One mutant's test run, for mutmut: exit 0 only when every test ran and passed, else 1.

mutmut 2 counts only exit status 1 as a kill. pytest exits 2 when a mutant
breaks an import, and a mutant that makes a forked child return into pytest,
or calls ``os._exit``, can end the run early with status 0; both are folded
into 1 here (a run that wrote no JUnit report did not finish).

    python tools/mutation/runner.py TEST_FILE...
"""

from __future__ import annotations

import os
import subprocess
import sys

# -x: the first failing test kills the mutant; no cache: copies share nothing. The plugins of
# hypothesis and schemathesis load both libraries at start-up, which costs more than most test
# lists take to run (@given works without the plugin).
PLUGINS = ("cacheprovider", "hypothesispytest", "schemathesis", "anyio")
REPORT = ".mutation-junit.xml"


def _die_with_parent() -> None:
    # mutmut ends a run past its timeout by killing this process; pytest must end with it, or,
    # looping on a mutant, it keeps mutmut's output pipe open and mutmut waits for ever
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(tests: list[str]) -> int:
    if os.path.exists(REPORT):
        os.unlink(REPORT)
    command = [sys.executable, "-m", "pytest", "-x", "-q", *(f"-pno:{p}" for p in PLUGINS), "-m", "not slow",
               f"--junitxml={REPORT}", *tests]
    status = subprocess.run(command, preexec_fn=_die_with_parent).returncode
    finished = os.path.exists(REPORT) and os.path.getsize(REPORT) > 0
    return 0 if status == 0 and finished else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
