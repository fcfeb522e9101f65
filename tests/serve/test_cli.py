"""``tianji-ft serve`` as a real process: it starts, prints where it listens, and answers the tutorial's request."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from tianji_ft.xtuner.runner import free_port

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_serve_process_answers_the_ollama_request(taught_model_dir, wishes, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=PROJECT_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", "serve", str(taught_model_dir), "--port", str(port),
                             "--name", "tianji", "--temperature", "0", "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if re.search(rf"serving .* at http://127\.0\.0\.1:{port}", (tmp_path / "serve.log").read_text()):
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"server did not start:\n{(tmp_path / 'serve.log').read_text()[-2000:]}")
        body = json.dumps({"model": "tianji", "stream": False,
                           "messages": [{"role": "user", "content": wishes[5][0]}]}).encode("utf-8")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/chat", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert json.loads(resp.read())["message"]["content"] == wishes[5][1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_serve_flags_default_to_loopback_and_one_at_a_time():
    from tianji_ft.cli import build_parser

    args = build_parser().parse_args(["serve", "some/model"])
    assert (args.host, args.port, args.max_concurrency, args.max_body) == ("127.0.0.1", 8000, 1, 1 << 20)


def test_serve_rejects_a_busy_port(capsys):
    import socket

    from tianji_ft.serve.server import serve

    class Engine:
        name = "m"

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        from tianji_ft.core.errors import UserError

        with pytest.raises(UserError, match="pick another --port"):
            serve(Engine(), "127.0.0.1", busy.getsockname()[1])
