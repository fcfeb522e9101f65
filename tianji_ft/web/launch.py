"""Start the Streamlit demo as a child process: ``python -m streamlit run app.py -- MODEL ...``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

APP_FILE = Path(__file__).with_name("app.py")


def web_command(app_args: list[str], host: str = "127.0.0.1", port: int = 8501,
                python: str | None = None) -> list[str]:
    return [
        python or sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--", *app_args,
    ]


def check_port_free(host: str, port: int) -> None:
    """One line now, instead of a URL printed and then Streamlit's own 'Port N is not available'."""
    import socket

    from tianji_ft.core.errors import UserError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise UserError(f"{host}:{port} is not available ({err.strerror}); pick another with --port") from None


def run_web(app_args: list[str], host: str = "127.0.0.1", port: int = 8501) -> int:
    """Run the demo until it exits or Ctrl-C / SIGTERM, which stop Streamlit too."""
    check_port_free(host, port)
    project_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    print(f"web demo at http://{host}:{port} (Ctrl-C stops)", file=sys.stderr, flush=True)
    proc = subprocess.Popen(web_command(app_args, host, port), env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
