"""The training launcher: planning (no GPU needed) and real CPU runs (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXTURES

from tianji_ft.cli import main
from tianji_ft.train import train as launcher
from tianji_ft.core.manifest import read_manifest
from tianji_ft.core.paths import PROJECT_ROOT

FIXTURE_CONFIG = str(FIXTURES / "tiny_lora_config.py")
WISHES = str(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl")


def fake_model(tmp_path) -> str:
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    return str(path)


def test_plan_on_cpu_picks_bf16_deepspeed_and_falls_back_from_qlora(tmp_path):
    req = launcher.TrainRequest(config=FIXTURE_CONFIG, model=fake_model(tmp_path), data=[WISHES],
                                work_dir=str(tmp_path / "wd"), deepspeed="zero2", settings={"TIANJI_EPOCHS": "2"})
    p = launcher.plan(req, cuda=False)
    cmd = p["cmd"]
    assert cmd[cmd.index("--deepspeed") + 1].endswith("deepspeed/zero2_cpu_bf16.json")
    assert p["env"]["TIANJI_FT_DROP_QUANTIZATION"] == "1"
    assert any("QLoRA" in n for n in p["notes"]) and any("bf16" in n for n in p["notes"])
    assert p["env"]["TIANJI_EPOCHS"] == "2" and p["env"]["TIANJI_DATA"] == WISHES
    assert p["env"]["TIANJI_WORK_DIR"] == str((tmp_path / "wd").resolve())
    assert p["manifest"]["data"][0]["sha256"] and p["manifest"]["template"] == "internlm2_chat"
    gpu = launcher.plan(req, cuda=True)
    assert gpu["cmd"][gpu["cmd"].index("--deepspeed") + 1].endswith("deepspeed/zero2.json")
    assert "TIANJI_FT_DROP_QUANTIZATION" not in gpu["env"]


@pytest.mark.parametrize("name", launcher.DEEPSPEED_NAMES)
def test_every_deepspeed_name_has_gpu_and_cpu_json(name):
    for cuda in (True, False):
        path, _ = launcher.resolve_deepspeed(name, cuda)
        cfg = json.loads(Path(path).read_text())
        assert cfg["zero_optimization"]["stage"] in (1, 2, 3)
        if not cuda:
            assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False


def test_plan_multi_gpu_multi_node_and_slurm(tmp_path, monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    base = dict(config=FIXTURE_CONFIG, model=fake_model(tmp_path), data=[WISHES], work_dir=str(tmp_path / "wd"))
    p = launcher.plan(launcher.TrainRequest(**base, gpus=8, nnodes=2, node_rank=1, master_addr="10.1.1.1",
                                            master_port=29500), cuda=True)
    start = p["cmd"].index("torch.distributed.run") - 1
    assert p["cmd"][start:start + 9] == ["-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=2",
                                         "--node_rank=1", "--master_addr=10.1.1.1", "--master_port=29500",
                                         "-m", "tianji_ft.xtuner.entry"]
    assert p["cmd"][-2:] == ["--launcher", "pytorch"]
    # torchrun gives each process its RANK and WORLD_SIZE: the plan must not set one process's for all
    assert not {"RANK", "LOCAL_RANK", "WORLD_SIZE"} & set(p["env"])
    one = launcher.plan(launcher.TrainRequest(**base), cuda=True)["env"]
    assert (one["RANK"], one["WORLD_SIZE"]) == ("0", "1")
    s = launcher.plan(launcher.TrainRequest(**base, gpus=8, nnodes=2, launcher="slurm"), cuda=True)
    assert s["cmd"][0] == "srun" and "--ntasks-per-node=8" in s["cmd"] and s["cmd"][-2:] == ["--launcher", "slurm"]


def test_resume_auto_uses_the_last_checkpoint(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    ckpt = wd / "iter_4.pth"
    ckpt.write_bytes(b"x")
    (wd / "last_checkpoint").write_text(str(ckpt))
    p = launcher.plan(launcher.TrainRequest(config=FIXTURE_CONFIG, model=fake_model(tmp_path), data=[WISHES],
                                            work_dir=str(wd), resume="auto"), cuda=False)
    assert p["cmd"][p["cmd"].index("--resume") + 1] == str(ckpt)


def test_bad_deepspeed_and_missing_data_are_one_line_errors(tmp_path, capsys):
    rc = main(["train", FIXTURE_CONFIG, "--model", fake_model(tmp_path), "--data", str(tmp_path / "nope.jsonl"),
               "--work-dir", str(tmp_path / "wd")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.jsonl: no such file or folder" in err and "Traceback" not in err
    rc = main(["train", FIXTURE_CONFIG, "--model", fake_model(tmp_path), "--data", WISHES,
               "--deepspeed", "zero9", "--work-dir", str(tmp_path / "wd")])
    assert rc == 2 and "zero9" in capsys.readouterr().err


def test_manifest_is_written_before_training_and_completed_after(tmp_path):
    seen = {}

    def fake_runner(cmd, env, log):
        seen["manifest_during"] = read_manifest(tmp_path / "wd")
        seen["env"] = env
        return 0

    req = launcher.TrainRequest(config=FIXTURE_CONFIG, model=fake_model(tmp_path), data=[WISHES],
                                work_dir=str(tmp_path / "wd"), settings={"TIANJI_SYSTEM": "你是医生"})
    assert launcher.train(req, runner=fake_runner, out=open(os.devnull, "w")) == 0
    during = seen["manifest_during"]
    assert during["exit_code"] is None and during["started"] and during["system"] == "你是医生"
    assert during["packages"]["transformers"] == "4.48.0"
    after = read_manifest(tmp_path / "wd")
    assert after["exit_code"] == 0 and after["ended"]
    assert after["config"]["name"] == "tiny_lora_test" and len(after["config"]["sha256"]) == 64


# ---- real runs on CPU (slow) ----

def _train_cmd(tmp_path, work_dir, *extra):
    from tianji_ft.models.tiny import ensure_tiny_model

    return ["train", FIXTURE_CONFIG, "--model", str(ensure_tiny_model("internlm2")), "--data", WISHES,
            "--work-dir", str(work_dir), "--max-length", "128", "--accum", "1", "--warmup-ratio", "0", *extra]


@pytest.mark.slow
def test_failing_config_exits_non_zero_naming_the_train_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TIANJI_FAIL_AT_LOAD", "1")
    rc = main(_train_cmd(tmp_path, tmp_path / "wd"))
    err = capsys.readouterr().err
    assert rc != 0
    assert "step 'train' failed" in err and "config failed on purpose" in err
    assert read_manifest(tmp_path / "wd")["exit_code"] == rc


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint_and_finishes(tmp_path):
    wd = tmp_path / "wd"
    args = _train_cmd(tmp_path, wd, "--epochs", "6", "--deepspeed", "none")
    env = dict(os.environ, TIANJI_SAVE_STEPS="4", TIANJI_WARMUP_RATIO="0")
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(wd.glob("iter_8.pth")):
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = (wd / "last_checkpoint").read_text().strip()
    assert Path(killed_at).name in ("iter_8.pth", "iter_12.pth")
    rc = subprocess.run([sys.executable, "-m", "tianji_ft", *args, "--resume", "auto"], env=env,
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert f"resuming from {killed_at}" in rc.stdout
    manifest = read_manifest(wd)
    assert manifest["exit_code"] == 0
    total = int(Path(manifest["last_checkpoint"]).stem.split("_")[1])
    log = (wd / "train.log").read_text()
    assert f"Iter(train) [{total}/{total}]" in log
    assert (wd / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_two_process_zero2_on_cpu(tmp_path):
    wd = tmp_path / "wd"
    rc = main(_train_cmd(tmp_path, wd, "--epochs", "1", "--gpus", "2", "--deepspeed", "zero2"))
    assert rc == 0, (wd / "train.log").read_text()[-3000:]
    log = (wd / "train.log").read_text()
    assert "world_size = 2" in log or "world size: 2" in log.lower() or "WORLD_SIZE=2" in log
    assert (wd / "last_checkpoint").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in launcher.DEEPSPEED_NAMES if n not in ("zero2", "zero3")])
def test_other_deepspeed_names_train_on_cpu(name, tmp_path):
    """zero2 and zero3 run in the demo, the two-process and the convert tests; these are the rest."""
    wd = tmp_path / "wd"
    rc = main(_train_cmd(tmp_path, wd, "--epochs", "1", "--deepspeed", name))
    assert rc == 0, (wd / "train.log").read_text()[-3000:]
    assert f"{name}_cpu_bf16.json" in read_manifest(wd)["deepspeed"]
    assert (wd / "last_checkpoint").is_file()
