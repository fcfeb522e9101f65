"""The wishes generator against our own ``tianji-ft serve`` on loopback (slow): the happy path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tianji_ft.xtuner.runner import free_port

API_KEY = "sk-tianji-test-secret-0123456789"


@pytest.fixture(scope="module")
def served_tiny_model(tmp_path_factory):
    from tianji_ft.models.tiny import ensure_tiny_model

    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", "serve", str(ensure_tiny_model("internlm2")),
                             "--port", str(port), "--name", "tiny", "--max-concurrency", "2"],
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "tianji-ft serve exited early"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("tianji-ft serve did not come up in 180 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_generator_covers_the_grid_through_our_server(served_tiny_model, tmp_path):
    out = tmp_path / "gen"
    grid = ["--names", "姐姐", "同事", "--scenes", "生日", "春节", "--styles", "正常", "严肃"]
    env = dict(os.environ, TIANJI_TEST_KEY=API_KEY)
    dry = subprocess.run([sys.executable, "-m", "tianji_ft", "synth", "wishes", "--dry-run", "-o", str(out), *grid],
                         capture_output=True, text=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    run = subprocess.run([sys.executable, "-m", "tianji_ft", "synth", "wishes", "--base-url", served_tiny_model + "/v1",
                          "--api-model", "tiny", "--api-key-env", "TIANJI_TEST_KEY", "--max-tokens", "12",
                          "--concurrency", "2", "--backoff-base", "0.1", "-o", str(out), *grid],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    records = [json.loads(line) for line in (out / "wishes.jsonl").read_text(encoding="utf-8").splitlines()]
    inputs = {r["conversation"][0]["input"] for r in records}
    assert len(records) == len(inputs) > 0
    assert str(len(records)) in dry.stdout  # the dry run announced exactly this many requests
    assert all(r["meta"]["model"] == "tiny" and r["meta"]["style"] in ("正常", "严肃") for r in records)
    for path in out.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(encoding="utf-8", errors="replace")
    assert API_KEY not in run.stdout + run.stderr
