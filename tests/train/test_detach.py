"""Background training: pid file, log, status until it finishes (slow)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from helpers import FIXTURES

from tianji_ft.cli import main
from tianji_ft.train.detach import follow_log, status
from tianji_ft.core.manifest import write_manifest
from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import PROJECT_ROOT

FIXTURE_CONFIG = str(FIXTURES / "tiny_lora_config.py")


def test_status_of_a_failed_run_and_logs_of_a_missing_one(tmp_path, capsys):
    write_manifest(tmp_path, {"config": {"name": "x"}, "exit_code": 3, "started": "t0", "ended": "t1",
                              "last_checkpoint": None})
    assert status(tmp_path)["state"] == "failed"
    assert main(["status", str(tmp_path)]) == 1
    with pytest.raises(UserError, match="no train.log"):
        follow_log(tmp_path)


@pytest.mark.slow
def test_detached_run_finishes_and_is_followed(tmp_path, capsys):
    from tianji_ft.models.tiny import ensure_tiny_model

    wd = tmp_path / "wd"
    rc = main(["train", FIXTURE_CONFIG, "--model", str(ensure_tiny_model("internlm2")), "--data",
               str(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl"), "--work-dir", str(wd), "--epochs", "1",
               "--max-length", "128", "--accum", "1", "--warmup-ratio", "0", "--detach"])
    assert rc == 0 and "in the background" in capsys.readouterr().out
    assert (wd / "train.pid").is_file()
    out = io.StringIO()
    assert follow_log(wd, follow=True, out=out, poll_s=0.2) == 0  # returns once the run ends
    deadline = time.monotonic() + 60
    while status(wd)["state"] in ("starting", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    info = status(wd)
    assert info["state"] == "finished" and info["exit_code"] == 0, (wd / "train.log").read_text()[-2000:]
    assert "Iter(train)" in (wd / "train.log").read_text()
