"""One run per work dir, run state that tells the truth, one data check, the environment a run gets."""

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
from tianji_ft.core.lock import LOCK_NAME, WorkDirLock
from tianji_ft.core.paths import CONFIGS_DIR, PROJECT_ROOT
from tianji_ft.train import train as launcher
from tianji_ft.xtuner.compat import CHECK_DATA_ENV, DROP_QUANTIZATION_ENV, cpu_deepspeed_argv
from tianji_ft.core.manifest import read_manifest

FIXTURE_CONFIG = str(FIXTURES / "tiny_lora_config.py")
WISHES = str(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl")
HOLD = ("import sys, time; from tianji_ft.core.lock import WorkDirLock; "
        "WorkDirLock(sys.argv[1], 'training run').acquire(); print('held', flush=True); time.sleep(120)")


def fake_model(tmp_path) -> str:
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    return str(path)


def _request(tmp_path, **kw):
    return launcher.TrainRequest(config=FIXTURE_CONFIG, model=fake_model(tmp_path), data=[WISHES],
                                 work_dir=str(tmp_path / "wd"), **kw)


def _holder(work_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ---- the lock ----

def test_a_second_run_into_a_busy_work_dir_is_refused_naming_the_holder(tmp_path, capsys):
    wd = tmp_path / "wd"
    holder = _holder(wd)
    ran = []
    try:
        with pytest.raises(Exception) as caught:
            launcher.train(_request(tmp_path), runner=lambda *a: ran.append(a) or 0, out=open(os.devnull, "w"))
        message = str(caught.value)
        assert f"pid {holder.pid}" in message and "in use by another training run" in message
        assert getattr(caught.value, "exit_code", None) == 2 and not ran
        assert not (wd / "tianji_run.json").exists()  # the holder's run is untouched
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_is_taken_over_with_a_warning(tmp_path):
    wd = tmp_path / "wd"
    holder = _holder(wd)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((wd / LOCK_NAME).read_text())["pid"] == holder.pid  # it died holding it
    said = []
    assert launcher.train(_request(tmp_path), runner=lambda *a: 0, out=open(os.devnull, "w")) == 0
    with WorkDirLock(wd, warn=said.append):
        pass
    assert said == []  # the run above took it over and released it
    holder = _holder(wd)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with WorkDirLock(wd, warn=said.append):
        pass
    assert len(said) == 1 and f"pid {holder.pid}" in said[0] and "gone" in said[0]
    assert (wd / LOCK_NAME).read_text() == ""  # released cleanly: nothing to take over next time
    with WorkDirLock(wd, warn=said.append):
        pass
    assert len(said) == 1


def test_detach_refuses_a_busy_work_dir_at_once(tmp_path, capsys):
    wd = tmp_path / "wd"
    holder = _holder(wd)
    try:
        rc = main(["train", FIXTURE_CONFIG, "--model", fake_model(tmp_path), "--data", WISHES, "--work-dir", str(wd),
                   "--detach"])
        err = capsys.readouterr().err
        assert rc == 2 and f"pid {holder.pid}" in err and not (wd / "train.pid").exists()
    finally:
        holder.kill()
        holder.wait()


# ---- run state ----

@pytest.mark.parametrize("exc, state, sig, code", [
    (KeyboardInterrupt(), "interrupted", "SIGINT", 130),
    (None, "failed", None, 7),
    (None, "finished", None, 0),
])
def test_the_manifest_says_how_the_run_ended(tmp_path, exc, state, sig, code):
    from tianji_ft.core.errors import StepFailed

    def runner(cmd, env, log):
        if exc is not None:
            raise exc
        return code

    try:
        launcher.train(_request(tmp_path), runner=runner, out=open(os.devnull, "w"))
    except (KeyboardInterrupt, StepFailed):
        pass
    manifest = read_manifest(tmp_path / "wd")
    assert (manifest["state"], manifest["signal"], manifest["exit_code"]) == (state, sig, code)


def test_status_prints_no_none_and_names_the_signal(tmp_path, capsys):
    from tianji_ft.core.manifest import write_manifest

    write_manifest(tmp_path, {"config": {"name": "x"}, "state": "interrupted", "signal": "SIGTERM",
                              "exit_code": 143, "started": "t0", "ended": "t1", "last_checkpoint": None})
    assert main(["status", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "state: interrupted (SIGTERM)" in out and "None" not in out


# ---- the environment and the slurm plan ----

def test_internal_variables_in_the_users_shell_never_reach_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv(DROP_QUANTIZATION_ENV, "1")
    monkeypatch.setenv(CHECK_DATA_ENV, "0")
    p = launcher.plan(_request(tmp_path), cuda=True)
    assert DROP_QUANTIZATION_ENV not in p["env"]  # QLoRA stays QLoRA on a GPU machine
    assert p["env"][CHECK_DATA_ENV] == "1"


def test_a_slurm_plan_made_on_a_login_node_without_cuda_keeps_qlora_and_fp16(tmp_path):
    p = launcher.plan(_request(tmp_path, launcher="slurm", gpus=8, nnodes=2, deepspeed="zero2"), cuda=False)
    ds = p["cmd"][p["cmd"].index("--deepspeed") + 1]
    assert ds.endswith("deepspeed/zero2.json")
    assert json.loads(Path(ds).read_text())["fp16"]["enabled"] == "auto"
    assert p["env"][DROP_QUANTIZATION_ENV] == "if-no-cuda"  # each task decides on its own machine
    assert "OMP_NUM_THREADS" not in p["env"] or p["env"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
    local = launcher.plan(_request(tmp_path, deepspeed="zero2"), cuda=False)
    assert local["env"][DROP_QUANTIZATION_ENV] == "1"


def test_a_task_without_cuda_swaps_to_the_bf16_deepspeed_json():
    gpu = str(CONFIGS_DIR / "deepspeed" / "zero3.json")
    argv = ["cfg.py", "--deepspeed", gpu, "--launcher", "slurm"]
    assert cpu_deepspeed_argv(argv) == ["cfg.py", "--deepspeed", gpu.replace("zero3.json", "zero3_cpu_bf16.json"),
                                        "--launcher", "slurm"]
    assert cpu_deepspeed_argv(["cfg.py", "--deepspeed", "/elsewhere/mine.json"])[2] == "/elsewhere/mine.json"


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_gpu_deepspeed_jsons_equal_xtuners(name):
    import xtuner

    theirs = Path(xtuner.__file__).parent / "configs" / "deepspeed" / f"deepspeed_{name}.json"
    ours = CONFIGS_DIR / "deepspeed" / f"{name}.json"
    assert json.loads(ours.read_text()) == json.loads(theirs.read_text())
    cpu = json.loads((CONFIGS_DIR / "deepspeed" / f"{name}_cpu_bf16.json").read_text())["zero_optimization"]
    gpu = json.loads(theirs.read_text())["zero_optimization"]
    for offload in ("offload_optimizer", "offload_param"):  # no pinned memory without CUDA
        for zero in (cpu, gpu):
            zero.get(offload, {}).pop("pin_memory", None)
    assert cpu == gpu


# ---- --data ----

def test_data_folder_means_its_json_files_and_a_folder_without_any_is_refused(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("b.jsonl", "a.json", "notes.txt"):
        (folder / name).write_text("[]" if name.endswith(".json") else "x", encoding="utf-8")
    assert launcher.expand_data_args([str(folder)]) == [str(folder / "a.json"), str(folder / "b.jsonl")]
    empty = tmp_path / "空的"
    empty.mkdir()
    rc = main(["train", FIXTURE_CONFIG, "--model", fake_model(tmp_path), "--data", str(empty),
               "--work-dir", str(tmp_path / "wd"), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no .jsonl or .json files" in err and "not found" not in err


# ---- real runs (slow) ----

def _train_args(wd: Path, *extra) -> list[str]:
    from tianji_ft.models.tiny import ensure_tiny_model

    return ["train", FIXTURE_CONFIG, "--model", str(ensure_tiny_model("internlm2")), "--data", WISHES,
            "--work-dir", str(wd), "--max-length", "128", "--accum", "1", "--warmup-ratio", "0", "--deepspeed",
            "none", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_concurrent_runs_and_a_signal_mid_run(tmp_path, signum, code):
    wd = tmp_path / "wd"
    cmd = [sys.executable, "-m", "tianji_ft", *_train_args(wd, "--epochs", "50")]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, log = time.monotonic() + 240, wd / "train.log"
    while not (log.is_file() and "Iter(train)" in log.read_text(errors="replace")):
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "training never reached its first logged iteration"
        time.sleep(0.5)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    first.send_signal(signum)
    _, err = first.communicate(timeout=120)
    assert first.returncode == code, err[-2000:]
    manifest = read_manifest(wd)
    name = signal.Signals(signum).name
    assert (manifest["state"], manifest["signal"], manifest["exit_code"]) == ("interrupted", name, code)
    status = subprocess.run([sys.executable, "-m", "tianji_ft", "status", str(wd)], capture_output=True, text=True)
    assert status.returncode == 1 and f"state: interrupted ({name})" in status.stdout


@pytest.mark.slow
def test_data_validate_rejects_is_refused_by_train_in_one_line_before_a_model_loads(tmp_path, capsys):
    data = tmp_path / "坏.jsonl"
    data.write_text(json.dumps({"conversation": [{"input": "祝妈妈生日快乐", "output": ""}]}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    assert main(["data", "validate", str(data)]) == 1
    capsys.readouterr()
    wd = tmp_path / "wd"
    args = _train_args(wd, "--epochs", "1")
    args[args.index("--data") + 1] = str(data)
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert err.count("\n") == 1 and f"{data}:0: turn 0: empty 'output'" in err and "step 'train' failed" in err
    assert "Loading checkpoint" not in (wd / "train.log").read_text(errors="replace")
    assert read_manifest(wd)["state"] == "failed" and read_manifest(wd)["exit_code"] == 2


# ---- the work dir against the inputs ----

def _sha(folder: Path) -> dict:
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["model", "model/子目录", "data_parent", "data_file"])
def test_a_work_dir_on_an_input_is_refused_and_nothing_is_touched(tmp_path, capsys, where):
    model = Path(fake_model(tmp_path))
    (model / "config.json").write_text("{}", encoding="utf-8")
    data_dir = tmp_path / "数据"
    data_dir.mkdir()
    data = data_dir / "wishes.jsonl"
    data.write_text(Path(WISHES).read_text(encoding="utf-8"), encoding="utf-8")
    work_dir = {"model": model, "model/子目录": model / "子目录", "data_parent": data_dir, "data_file": data}[where]
    before = _sha(tmp_path)
    rc = main(["train", FIXTURE_CONFIG, "--model", str(model), "--data", str(data), "--work-dir", str(work_dir),
               "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(work_dir) in err, err
    assert _sha(tmp_path) == before
    assert not (model / "子目录").exists()


def test_a_strangers_work_dir_needs_overwrite_and_keeps_its_files(tmp_path, capsys):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "notes.md").write_text("我的笔记", encoding="utf-8")
    req = _request(tmp_path)
    with pytest.raises(Exception, match="not empty and tianji-ft did not make it; .*--overwrite"):
        launcher.train(req, runner=lambda *a: 0, out=open(os.devnull, "w"))
    req.overwrite = True
    assert launcher.train(req, runner=lambda *a: 0, out=open(os.devnull, "w")) == 0
    assert (wd / "notes.md").read_text(encoding="utf-8") == "我的笔记"
    req.overwrite = False  # now it is a work dir of ours: a rerun needs no flag
    assert launcher.train(req, runner=lambda *a: 0, out=open(os.devnull, "w")) == 0


def test_a_tiny_run_goes_to_its_own_folder_not_the_real_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = launcher.plan(launcher.TrainRequest(config="internlm2_chat_7b_qlora_wishes_e3", tiny=True), cuda=False)
    real = launcher.plan(launcher.TrainRequest(config="internlm2_chat_7b_qlora_wishes_e3", model=fake_model(tmp_path),
                                               data=[WISHES]), cuda=False)
    assert tiny["work_dir"] == tmp_path / "work_dirs" / "internlm2_chat_7b_qlora_wishes_e3-tiny"
    assert real["work_dir"] == tmp_path / "work_dirs" / "internlm2_chat_7b_qlora_wishes_e3"


def test_status_json_and_the_next_step_of_a_finished_run(tmp_path, capsys):
    from tianji_ft.core.manifest import write_manifest

    write_manifest(tmp_path, {"config": {"name": "x"}, "state": "finished", "exit_code": 0, "started": "t0",
                              "ended": "t1", "last_checkpoint": str(tmp_path / "iter_8.pth")})
    assert main(["status", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["state"] == "finished" and info["exit_code"] == 0 and info["last_checkpoint"].endswith("iter_8.pth")
    assert main(["status", str(tmp_path)]) == 0
    assert f"next: tianji-ft convert {tmp_path}" in capsys.readouterr().out


def test_status_of_a_running_run_shows_iteration_loss_and_eta(tmp_path, capsys):
    from tianji_ft.core.manifest import write_manifest

    write_manifest(tmp_path, {"config": {"name": "x"}, "state": "finished", "exit_code": 0, "started": "t0",
                              "ended": "t1", "world_size": 1})
    (tmp_path / "x.py").write_text("batch_size = 2\nmax_length = 512\npack_to_max_length = True\n", encoding="utf-8")
    (tmp_path / "train.log").write_text(
        "12/02 00:22:10 - mmengine - INFO - Iter(train) [ 40/100]  lr: 2.0000e-04  eta: 0:05:12  time: 0.5120  "
        "data_time: 0.0078  loss: 1.2345\n", encoding="utf-8")
    assert main(["status", str(tmp_path), "--json"]) == 0
    progress = json.loads(capsys.readouterr().out)["progress"]
    assert (progress["iter"], progress["max_iters"], progress["loss"], progress["eta"]) == (40, 100, 1.2345, "0:05:12")
    assert progress["tokens_per_sec"] == 2 * 512 / 0.512  # packed rows: batch x max_length tokens an iteration
    assert main(["status", str(tmp_path)]) == 0
    assert "progress: iter 40/100 (40%), loss 1.2345, lr 2.0e-04, 2,000 tokens/s, ETA 0:05:12" in capsys.readouterr().out
