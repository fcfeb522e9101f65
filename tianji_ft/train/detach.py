"""Background training (the tutorials' ``nohup xtuner train ... &``), its log and status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tianji_ft.core.manifest import read_manifest
from tianji_ft.core.errors import UserError

PID_FILE = "train.pid"


def start_detached(req, work_dir: Path) -> int:
    """Start ``python -m tianji_ft.train.detach REQUEST_JSON`` in its own session; return its pid."""
    from tianji_ft.core.lock import check_free
    from tianji_ft.train.train import TRAIN_LOG, request_to_json

    check_free(work_dir)  # refuse now, not in the background where nobody reads it
    work_dir.mkdir(parents=True, exist_ok=True)
    log = open(work_dir / TRAIN_LOG, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft.train.detach", request_to_json(req)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    (work_dir / PID_FILE).write_text(f"{proc.pid}\n")
    return proc.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child that nobody reaped is a zombie, not a running job.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def status(work_dir: str | Path) -> dict:
    """``starting`` (launched, no manifest yet), ``running``, ``finished``, ``failed``, ``interrupted``
    (stopped by a signal it could act on) or ``stopped`` (killed outright: SIGKILL, a crash)."""
    work_dir = Path(work_dir)
    pid_path = work_dir / PID_FILE
    pid = int(pid_path.read_text().strip()) if pid_path.is_file() else None
    alive = bool(pid and pid_alive(pid))
    manifest = read_manifest(work_dir, required=not alive and pid is None) or {}
    exit_code = manifest.get("exit_code")
    state = manifest.get("state")
    if not manifest:
        state = "starting" if alive else "failed"
    elif state in (None, "running"):  # an older manifest has no state: read it from the exit code
        if exit_code is None:
            state = "running" if alive or (state == "running" and pid is None and _lock_held(work_dir)) \
                else "stopped"
        else:
            state = "finished" if exit_code == 0 else "failed"
    from tianji_ft.train.live import last_progress
    from tianji_ft.train.plan import tokens_per_iter
    from tianji_ft.train.train import TRAIN_LOG

    progress = last_progress(work_dir / TRAIN_LOG)
    if progress and "tokens_per_sec" not in progress and isinstance(progress.get("time"), float) \
            and progress["time"] > 0:
        tokens = tokens_per_iter(work_dir, manifest)
        if tokens:
            progress["tokens_per_sec"] = round(tokens / progress["time"], 1)
    return {"state": state, "signal": manifest.get("signal"), "pid": pid,
            "config": manifest.get("config", {}).get("name"), "started": manifest.get("started"),
            "ended": manifest.get("ended"), "exit_code": exit_code,
            "last_checkpoint": manifest.get("last_checkpoint"),
            "progress": progress}


def _lock_held(work_dir: Path) -> bool:
    from tianji_ft.core.lock import check_free

    try:
        check_free(work_dir)
    except UserError:
        return True
    return False


def follow_log(work_dir: str | Path, follow: bool = False, lines: int = 40, out=sys.stdout,
               poll_s: float = 0.5) -> int:
    from tianji_ft.xtuner.runner import log_tail
    from tianji_ft.train.train import TRAIN_LOG

    path = Path(work_dir) / TRAIN_LOG
    if not path.is_file():
        raise UserError(f"{work_dir}: no {TRAIN_LOG}; start a run with 'tianji-ft train ... --work-dir {work_dir}'")
    print(log_tail(path, lines), file=out, flush=True)
    if not follow:
        return 0
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        fh.seek(0, os.SEEK_END)
        while True:
            chunk = fh.read()
            if chunk:
                out.write(chunk)
                out.flush()
            elif status(work_dir)["state"] not in ("starting", "running"):
                return 0
            else:
                time.sleep(poll_s)


def _main() -> None:
    from tianji_ft.core import signals
    from tianji_ft.train.train import TrainRequest, train

    signals.install()
    req = TrainRequest(**json.loads(sys.argv[1]))
    req.log_to_terminal = True  # our stdout is already the log file
    try:
        sys.exit(train(req))
    except UserError as err:  # StepFailed included
        print(f"tianji-ft: error: {err}", flush=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt as err:  # the manifest already says how it ended
        print(f"tianji-ft: interrupted ({signals.signal_name(err)})", flush=True)
        sys.exit(signals.exit_code(err))


if __name__ == "__main__":
    _main()
