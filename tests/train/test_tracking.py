"""Experiment tracking: --report-to tensorboard leaves event files with the loss, read back with TensorBoard."""

from __future__ import annotations

import pytest

from tianji_ft.cli import main
from tianji_ft.train import train as launcher


def test_an_unknown_tracker_or_a_missing_package_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    base = ["train", "internlm2_chat_7b_qlora_wishes_e3", "--tiny", "--work-dir", str(tmp_path / "wd"), "--dry-run"]
    assert main([*base, "--report-to", "mlflow"]) == 2
    assert "unknown tracker 'mlflow'" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(Exception, match="pip install wandb"):
        launcher.check_report_to("tensorboard,wandb")


@pytest.mark.slow
def test_tensorboard_event_files_hold_a_decreasing_loss(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    wd = tmp_path / "wd"
    rc = main(["train", "internlm2_chat_7b_qlora_wishes_e3", "--tiny", "--work-dir", str(wd), "--report-to",
               "tensorboard", "--epochs", "6", "--lr", "2e-3", "--deepspeed", "none", "--eval-freq", "100000"])
    assert rc == 0, (wd / "train.log").read_text(errors="replace")[-3000:]
    [events] = sorted(wd.glob("*/vis_data/events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent), size_guidance={"tensors": 0})
    acc.Reload()
    assert {"loss", "lr"} <= set(acc.Tags()["scalars"])
    losses = [e.value for e in acc.Scalars("loss")]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    # the evaluation hook's sample answers (before and after training) are on the board's text tab
    samples = acc.Tensors("eval/samples/text_summary")
    assert len(samples) >= 2 and all(e.tensor_proto.string_val[0].decode("utf-8").strip() for e in samples)
    capsys.readouterr()
    assert main(["logs", str(wd), "--tensorboard"]) == 0
    assert capsys.readouterr().out.strip() == f"tensorboard --logdir {wd}"


@pytest.mark.slow
def test_wandb_offline_keeps_the_run_with_its_loss_in_the_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wd = tmp_path / "wd"
    rc = main(["train", "internlm2_chat_7b_qlora_wishes_e3", "--tiny", "--work-dir", str(wd), "--report-to", "wandb",
               "--epochs", "2", "--deepspeed", "none", "--eval-freq", "100000"])
    assert rc == 0, (wd / "train.log").read_text(errors="replace")[-3000:]
    [run_log] = sorted(wd.glob("*/vis_data/wandb/offline-run-*/run-*.wandb"))
    # wandb 0.31 reads its log with its Go core only (no Python reader): the history records, written
    # as training logs, carry the scalar names
    records = run_log.read_bytes()
    assert records.count(b"loss") >= 2 and b"lr" in records and b"grad_norm" in records
    assert b"eval/samples" in records  # the sample answers' table
