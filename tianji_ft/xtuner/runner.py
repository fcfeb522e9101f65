"""Run XTuner tool modules as child processes and report their real exit codes.

Commands are argument lists (never ``shell=True``). The function that runs
them is injectable (``runner=``), so tests can check a command without a GPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tianji_ft.core import noise
from tianji_ft.core.errors import StepFailed
from tianji_ft.core.signals import Interrupted
from tianji_ft.xtuner.compat import CHECK_DATA_ENV, DROP_QUANTIZATION_ENV, LAUNCH_ENV
from tianji_ft.xtuner.entry import CHILD_ERROR_PREFIX

# Variables only the launcher sets: a value left in the user's shell (or by an
# earlier run's environment) must never reach a training process unchecked.
INTERNAL_ENV = (DROP_QUANTIZATION_ENV, CHECK_DATA_ENV)

# XTuner's tools, run as modules: the ``xtuner`` console script exits 0 when
# the command failed, so it is never used.
XTUNER_TOOLS = {
    "train": "xtuner.tools.train",
    "pth_to_hf": "xtuner.tools.model_converters.pth_to_hf",
    "merge": "xtuner.tools.model_converters.merge",
    "chat": "xtuner.tools.chat",
}
ENTRY_MODULE = "tianji_ft.xtuner.entry"

# (command, environment, log file or None for the terminal) -> exit code
Runner = Callable[[Sequence[str], Mapping[str, str], "Path | None"], int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_command(tool: str, args: Sequence[str], *, python: str | None = None) -> list[str]:
    """``python -m tianji_ft.xtuner.entry <xtuner module> args...`` for one process."""
    return [python or sys.executable, "-m", ENTRY_MODULE, XTUNER_TOOLS[tool], *args]


def torchrun_command(tool: str, args: Sequence[str], *, nproc: int, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str = "127.0.0.1", master_port: int | None = None,
                     python: str | None = None) -> list[str]:
    """torchrun over the entry module, so every rank gets the compatibility layer."""
    return [
        python or sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={nproc}", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
        f"--master_addr={master_addr}", f"--master_port={master_port or free_port()}",
        "-m", ENTRY_MODULE, XTUNER_TOOLS[tool], *args, "--launcher", "pytorch",
    ]


def launch_env(base: Mapping[str, str] | None = None, *, single_process: bool = True,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: LAUNCH_ENV, and for one process the variables
    DeepSpeed would otherwise discover through MPI."""
    env = dict(os.environ if base is None else base)
    for key in INTERNAL_ENV:
        env.pop(key, None)
    for key, value in noise.SET_HERE.items():  # the CLI's quieting is for its own process, not the logs
        if env.get(key) == value:
            env.pop(key)
    for key, value in LAUNCH_ENV.items():
        env.setdefault(key, value)
    # DeepSpeed JIT-builds its CPU comm op; one build per environment, not a
    # rebuild whenever another venv used the shared ~/.cache/torch_extensions.
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    if single_process:
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(free_port()))
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def subprocess_runner(cmd: Sequence[str], env: Mapping[str, str], log_path: Path | None) -> int:
    """Run ``cmd``; output goes to ``log_path`` (appended) or the terminal.

    The child stays in our process group, so Ctrl-C in a terminal reaches
    every rank torchrun started. A SIGTERM or SIGHUP sent to this process
    alone, and a SIGINT the child did not get, are passed on to the child; we
    wait for it to stop cleanly (it saves nothing half-written), then raise
    :class:`KeyboardInterrupt` / :class:`Interrupted` so the caller records
    how the run ended.
    """
    log = open(log_path, "ab") if log_path else None
    received: list[int] = []
    try:
        proc = subprocess.Popen(list(cmd), env=dict(env), stdout=log, stderr=subprocess.STDOUT if log else None)

        def forward(signum, frame):
            received.append(signum)
            proc.send_signal(signum)

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            _stop(proc, signal.SIGINT)
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if received:
            _stop(proc, received[0], forwarded=True)
            raise Interrupted(received[0])
        return rc
    finally:
        if log:
            log.close()


def _stop(proc: subprocess.Popen, signum: int, forwarded: bool = False, grace_s: float = 30.0) -> None:
    """Wait for the child to stop on ``signum``: a terminal's Ctrl-C reaches it by itself (we pass
    it on only if it is still running after a while); kill it only as the last resort."""
    if not forwarded:
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            proc.send_signal(signum)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(log_path: Path | None, lines: int = 20) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    with open(log_path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def run_step(step: str, cmd: Sequence[str], env: Mapping[str, str], log_path: Path | None = None,
             runner: Runner | None = None, quiet: bool = False) -> float:
    """Run one named step; return its elapsed seconds or raise :class:`StepFailed`.

    On failure the error carries the last lines of the step's log.
    """
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rc = (runner or subprocess_runner)(cmd, env, log_path)
    elapsed = time.monotonic() - start
    if rc != 0:
        tail = log_tail(log_path)
        relayed = [line for line in tail.splitlines() if line.startswith(CHILD_ERROR_PREFIX)]
        if relayed:  # the child said what is wrong in one line: that line is the error, no log dump
            raise StepFailed(step, rc, relayed[-1][len(CHILD_ERROR_PREFIX):])
        detail = f"see {log_path}" if log_path else ""
        if tail and not quiet:
            print(f"--- last lines of {log_path} ---\n{tail}\n---", file=sys.stderr)
        raise StepFailed(step, rc, detail)
    return elapsed
