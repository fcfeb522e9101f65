"""Live training progress: mmengine's log lines read back, followed while they are written, and shown."""

from __future__ import annotations

import io
import threading
import time

from tianji_ft.train.live import LiveProgress, describe, event_of, last_progress, parse_iter_line

# Lines as mmengine 0.10.6 writes them (the first from a real tiny run's train.log).
ITER = ("12/02 00:22:10 - mmengine - INFO - Iter(train) [ 8/80]  lr: 7.6120e-06  eta: 0:01:02  time: 0.2807  "
        "data_time: 0.0078  memory: 1234  loss: 9.8090  grad_norm: 3.2500")
EPOCH = "12/02 00:22:10 - mmengine - INFO - Epoch(train) [1][ 10/100]  lr: 2.0000e-04  eta: 0:05:12  loss: 1.2345"


class Screen(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_iteration_lines_are_read_field_by_field():
    info = parse_iter_line(ITER)
    assert info == {"iter": 8, "max_iters": 80, "lr": 7.612e-06, "eta": "0:01:02", "time": 0.2807,
                    "data_time": 0.0078, "memory": 1234.0, "loss": 9.809, "grad_norm": 3.25}
    assert parse_iter_line(EPOCH)["iter"] == 10 and parse_iter_line(EPOCH)["max_iters"] == 100
    assert parse_iter_line("12/02 00:22:10 - mmengine - INFO - Iter(val) [1/5]") is None
    assert parse_iter_line("训练开始") is None


def test_described_with_tokens_per_second_from_the_log_or_the_tokens_per_iteration():
    info = parse_iter_line(ITER)
    assert describe(info) == "iter 8/80 (10%), loss 9.8090, lr 7.6e-06, ETA 0:01:02"
    assert describe(info, tokens_per_iter=2807.0) == "iter 8/80 (10%), loss 9.8090, lr 7.6e-06, 10,000 tokens/s, ETA 0:01:02"
    assert "123 tokens/s" in describe(dict(info, tokens_per_sec=123.0), tokens_per_iter=2807.0)
    assert "None" not in describe({"iter": 1, "max_iters": 2})


def test_phases_are_named_and_other_lines_are_not_shown():
    assert event_of("... - mmengine - INFO - Saving checkpoint at 8 iterations") == ("saving checkpoint at 8 iterations", None)
    assert event_of("... - INFO - before_train in EvaluateChatHook.") == ("sample answers before training", None)
    assert event_of("... - INFO - dataset preparation: 4,000/10,000 rows (40%)")[0] == \
        "dataset preparation: 4,000/10,000 rows (40%)"
    assert event_of("    betas=(0.9, 0.999),") is None


def test_last_progress_is_the_last_iteration_line(tmp_path):
    log = tmp_path / "train.log"
    assert last_progress(log) is None  # no log yet
    log.write_text(ITER.replace("[ 8/80]", "[ 4/80]") + "\n" + ITER + "\nSaving checkpoint at 8 iterations\n",
                   encoding="utf-8")
    assert last_progress(log)["iter"] == 8


def _write_slowly(path, lines):
    with open(path, "a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line[: len(line) // 2])  # half a line at a time: only whole lines are shown
            fh.flush()
            time.sleep(0.05)
            fh.write(line[len(line) // 2:] + "\n")
            fh.flush()


def test_following_a_log_shows_only_what_is_written_after_the_start(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(ITER.replace("[ 8/80]", "[ 1/80]") + "\n", encoding="utf-8")  # an earlier run's line
    out = io.StringIO()
    lines = ["noise", "x - Checkpoints will be saved to /w.", ITER, ITER.replace("[ 8/80]", "[16/80]")]
    with LiveProgress(log, stream=out, poll_s=0.02, tokens_per_iter=lambda: 2807.0):
        writer = threading.Thread(target=_write_slowly, args=(log, lines))
        writer.start()
        writer.join()
    assert out.getvalue().splitlines() == [
        "[tianji-ft] training started",
        "[tianji-ft] iter 8/80 (10%), loss 9.8090, lr 7.6e-06, 10,000 tokens/s, ETA 0:01:02",
        "[tianji-ft] iter 16/80 (20%), loss 9.8090, lr 7.6e-06, 10,000 tokens/s, ETA 0:01:02"]


def test_on_a_terminal_one_line_is_redrawn_and_quiet_shows_nothing(tmp_path):
    log = tmp_path / "train.log"
    screen = Screen()
    with LiveProgress(log, stream=screen, poll_s=0.02):
        _write_slowly(log, [ITER, ITER.replace("[ 8/80]", "[16/80]")])
    shown = screen.getvalue()
    assert shown.count("\r") == 2 and shown.endswith("\n") and "\n" not in shown[:-1]
    assert "iter 16/80 (20%)" in shown.rsplit("\r", 1)[1]
    hushed = Screen()
    with LiveProgress(log, stream=hushed, quiet=True, poll_s=0.02):
        _write_slowly(log, [ITER])
    assert hushed.getvalue() == ""
