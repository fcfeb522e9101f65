"""Commands, environment and exit codes of the XTuner tool launcher."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tianji_ft.xtuner import runner
from tianji_ft.core.errors import StepFailed


def test_tool_command_runs_xtuner_modules_through_the_entry_point():
    cmd = runner.tool_command("train", ["cfg.py", "--work-dir", "wd"])
    assert cmd[:4] == [sys.executable, "-m", "tianji_ft.xtuner.entry", "xtuner.tools.train"]
    assert cmd[4:] == ["cfg.py", "--work-dir", "wd"]
    assert "xtuner" not in Path(cmd[0]).name  # never the console script, which exits 0 on failure
    assert runner.tool_command("pth_to_hf", [])[3] == "xtuner.tools.model_converters.pth_to_hf"


def test_torchrun_command_patches_every_rank():
    cmd = runner.torchrun_command("train", ["cfg.py"], nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1",
                                  master_port=29500)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=8" in cmd and "--nnodes=2" in cmd and "--node_rank=1" in cmd
    assert "--master_addr=10.0.0.1" in cmd and "--master_port=29500" in cmd
    i = cmd.index("tianji_ft.xtuner.entry")
    assert cmd[i - 1] == "-m" and cmd[i + 1] == "xtuner.tools.train"
    assert cmd[-2:] == ["--launcher", "pytorch"]


def test_launch_env_sets_tutorial_variables_and_single_process_rank():
    env = runner.launch_env({"PATH": "/bin"}, single_process=True)
    assert env["MKL_SERVICE_FORCE_INTEL"] == "1" and env["MKL_THREADING_LAYER"] == "GNU"
    assert env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("0", "1", "0")
    assert int(env["MASTER_PORT"]) > 0
    multi = runner.launch_env({"PATH": "/bin"}, single_process=False)
    assert "RANK" not in multi


def test_run_step_returns_on_success_and_names_the_failed_step(tmp_path, capsys):
    calls = []

    def fake(cmd, env, log):
        calls.append(cmd)
        Path(log).write_text("line 1\nTraceback: boom\n")
        return 0 if len(calls) == 1 else 7

    runner.run_step("convert", ["a"], {}, tmp_path / "ok.log", runner=fake)
    with pytest.raises(StepFailed) as err:
        runner.run_step("train", ["b"], {}, tmp_path / "bad.log", runner=fake)
    assert err.value.step == "train" and err.value.returncode == 7 and err.value.exit_code == 7
    assert "step 'train' failed with exit code 7" in str(err.value)
    assert "Traceback: boom" in capsys.readouterr().err


def test_subprocess_runner_reports_the_real_exit_code(tmp_path):
    rc = runner.subprocess_runner([sys.executable, "-c", "import sys; print('x'); sys.exit(3)"], {"PATH": "/bin"},
                                  tmp_path / "log")
    assert rc == 3
    assert (tmp_path / "log").read_text().strip() == "x"
