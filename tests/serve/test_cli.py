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
    assert (args.api_key, args.no_auth, args.cors_origin, args.max_queue) == ([], False, [], 64)
    args = build_parser().parse_args(["serve", "m", "--api-key", "a,b", "--api-key", "c", "--cors-origin", "*"])
    assert (args.api_key, args.cors_origin) == (["a,b", "c"], ["*"])


@pytest.mark.parametrize("argv, words", [
    (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 without an API key"),
    (["--host", "192.168.0.7", "--api-key", "k", "--no-auth"], "contradict"),
    (["--max-queue", "-1"], "--max-queue must be at least 0"),
    (["--request-timeout", "0"], "--request-timeout must be more than 0"),
])
def test_serve_refuses_bad_exposure_in_one_line_before_loading_the_model(argv, words, capsys, monkeypatch):
    from tianji_ft.cli import main

    monkeypatch.delenv("TIANJI_API_KEY", raising=False)
    assert main(["serve", "/no/such/model", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "no such model" not in err


def test_serve_takes_the_key_from_the_environment(capsys, monkeypatch):
    from tianji_ft.cli import main

    monkeypatch.setenv("TIANJI_API_KEY", "env-secret")
    assert main(["serve", "/no/such/model", "--host", "0.0.0.0"]) != 0  # past the key check: the model is missing
    err = capsys.readouterr().err
    assert "no such model" in err and "env-secret" not in err


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
