import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tianji_ft.cli import main
from tianji_ft.synth.wishes import FAILED_FILE, JOURNAL_FILE, SUMMARY_FILE, clean_reply
from tianji_ft.synth.wishes_data import load_wishes_data
from tianji_ft.synth.wishes_plan import item_rng

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAST = ["--backoff-base", "0.01", "--backoff-max", "0.05", "--timeout", "5"]


def wishes_args(server, out, *extra):
    return ["synth", "wishes", "--base-url", server.url, "--api-model", "fake-model", "--api-key-env", "TIANJI_TEST_KEY",
            "-o", str(out), *FAST, *extra]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def journal_ok_prompts(out):
    """Prompts whose answers a (possibly killed) run has saved; a torn last line is not saved."""
    saved = []
    for line in (Path(out) / JOURNAL_FILE).read_bytes().split(b"\n"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry["status"] == "ok":
            saved.append(entry["record"]["meta"]["prompt"])
    return saved


def test_clean_reply_keeps_the_first_line_without_quotes():
    assert clean_reply('\n"新年快乐！"\n以上是祝福') == "新年快乐！"
    assert clean_reply("  \n \n") == ""


def test_happy_path_covers_exactly_the_suitable_grid(fake_llm, api_key, tmp_path, capsys, assert_key_absent):
    out = tmp_path / "out"
    assert main(wishes_args(fake_llm, out, "--concurrency", "8", "--price-in", "2", "--price-out", "8")) == 0
    std = capsys.readouterr()
    data = load_wishes_data()
    records = read_jsonl(out / "wishes.jsonl")
    got = [(r["meta"]["style"], r["meta"]["name"], r["meta"]["scene"]) for r in records]
    expected = {(st, n, sc) for st in data.styles for n in data.names for sc in data.scenes if data.is_suitable(n, sc)}
    assert len(got) == len(set(got)) == len(expected) == 1221 and set(got) == expected
    assert fake_llm.total == 1221 and set(fake_llm.snapshot().values()) == {1}
    first = records[0]
    turn = first["conversation"][0]
    assert turn == {"system": data.dataset_system_prompt, "input": "祝赵老师生日,小红书风格", "output": "祝赵老师生日顺顺利利，万事如意！"}
    assert set(first["meta"]) == {"style", "name", "scene", "prompt", "round", "model"}
    assert first["meta"]["model"] == "fake-model" and first["meta"]["round"] == 1
    assert {r["conversation"][0]["input"] for r in records if r["meta"]["style"] == "正常"} >= {"祝母亲春节"}
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert (summary["done"], summary["failed"], summary["pending"]) == (1221, 0, 0)
    assert (summary["skipped_unsuitable_pairs"], summary["skipped_requests"]) == (97, 291)
    assert summary["this_run"]["cost"] == pytest.approx((1221 * 100 * 2 + 1221 * 20 * 8) / 1e6)
    assert "all requests done" in std.out.splitlines()[-1]
    assert (out / FAILED_FILE).read_text(encoding="utf-8") == ""
    assert_key_absent(out, std.out, std.err)


FAULTS = {  # name -> what its n-th request gets
    "赵老师": lambda n: ("429", "1") if n == 1 else "ok",
    "大舅": lambda n: "500" if n <= 2 else "ok",
    "大伯": lambda n: ("slow", 2.5) if n == 1 else "ok",
    "李总": lambda n: "drop" if n == 1 else "ok",
    "医生": lambda n: "500",
    "母亲": lambda n: "echo_key_400",
}
EXPECTED_COUNTS = {"赵老师": 2, "大舅": 3, "大伯": 2, "李总": 2, "医生": 4, "母亲": 1, "同事": 1}


def by_name(prompt):
    return prompt.split("对象称谓是：")[1].split("，")[0]


def test_every_failure_is_retried_or_recorded(fake_llm, api_key, tmp_path, capsys, assert_key_absent):
    fake_llm.behaviour = lambda prompt, n: FAULTS.get(by_name(prompt), lambda n: "ok")(n)
    out = tmp_path / "out"
    args = wishes_args(fake_llm, out, "--styles", "正常", "--names", *EXPECTED_COUNTS, "--scenes", "春节", "康复",
                       "--concurrency", "4", "--max-attempts", "4", "--timeout", "1.0")
    assert main(args) == 3
    std = capsys.readouterr()
    counts = fake_llm.snapshot()
    assert len(counts) == 14
    for prompt, n in counts.items():
        assert n == EXPECTED_COUNTS[by_name(prompt)], by_name(prompt)
    zhao = [t for p, t in fake_llm.times.items() if by_name(p) == "赵老师"]
    assert all(t[1] - t[0] >= 0.95 for t in zhao)  # Retry-After: 1 honoured
    failed = read_jsonl(out / FAILED_FILE)
    assert sorted((f["name"], f["scene"]) for f in failed) == [("医生", "康复"), ("医生", "春节"), ("母亲", "康复"), ("母亲", "春节")]
    reasons = {f["name"]: f["reason"] for f in failed}
    assert "HTTP 500" in reasons["医生"] and "after 4 attempts" in reasons["医生"]
    assert "HTTP 400" in reasons["母亲"] and "***" in reasons["母亲"]
    assert len(read_jsonl(out / "wishes.jsonl")) == 10
    assert "FAILED: 4 request(s) failed" in std.out.splitlines()[-1]
    assert_key_absent(out, std.out, std.err)

    # A rerun retries only the failed items, once each, and then succeeds.
    fake_llm.behaviour = lambda prompt, n: "ok"
    assert main(args) == 0
    after = fake_llm.snapshot()
    resent = {p for p in after if after[p] != counts[p]}
    assert {by_name(p) for p in resent} == {"医生", "母亲"} and len(resent) == 4
    assert all(after[p] == counts[p] + 1 for p in resent)
    assert len(read_jsonl(out / "wishes.jsonl")) == 14 and read_jsonl(out / FAILED_FILE) == []


def start_run_and_wait_for_requests(fake_llm, args, at_least: int) -> subprocess.Popen:
    """The CLI run in a child, returned once the fake server has received ``at_least`` requests
    (the server's count, not the run's own files: those are what the tests check)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", *args], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and fake_llm.total < at_least:
        time.sleep(0.005)
    assert fake_llm.total >= at_least, f"only {fake_llm.total} requests arrived in time"
    assert proc.poll() is None, "the run finished before it could be stopped"
    return proc


def test_sigkill_mid_run_then_resume_sends_no_saved_item_again(fake_llm, api_key, tmp_path, capsys, assert_key_absent):
    fake_llm.ok_delay = 0.03
    out = tmp_path / "out"
    concurrency = 3
    args = wishes_args(fake_llm, out, "--styles", "正常", "--concurrency", str(concurrency))
    proc = start_run_and_wait_for_requests(fake_llm, args, 40)
    proc.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=10)
    at_kill = fake_llm.snapshot()
    while True:  # a request the killed run sent may still be in a server thread: wait until none moves
        time.sleep(0.3)
        settled = fake_llm.snapshot()
        if settled == at_kill:
            break
        at_kill = settled
    saved = journal_ok_prompts(out)
    assert not (out / "wishes.jsonl").exists()
    # What the journal says was saved, checked against what the server saw: only items it answered,
    # and all of them but the few in flight at the kill (each answer is saved as it arrives).
    assert set(saved) <= set(at_kill) and len(set(saved)) == len(saved)
    assert len(at_kill) - len(saved) <= concurrency and len(saved) >= 40 - concurrency

    fake_llm.ok_delay = 0.0
    assert main(args) == 0
    std = capsys.readouterr()
    final = fake_llm.snapshot()
    assert all(final[p] == 1 for p in saved), "a saved item was requested again"
    assert {p for p in final if final[p] > at_kill.get(p, 0)} == set(final) - set(saved)
    assert fake_llm.total - sum(at_kill.values()) == 407 - len(saved)  # only unsaved items were sent
    records = read_jsonl(out / "wishes.jsonl")
    assert len(records) == len({(r["meta"]["name"], r["meta"]["scene"]) for r in records}) == 407
    assert {r["meta"]["prompt"] for r in records} == set(final)
    assert f"{len(saved)} already saved" in std.err
    assert_key_absent(out, stdout.decode(), stderr.decode(), std.out, std.err)


def test_ctrl_c_saves_what_finished_and_exits_130(fake_llm, api_key, tmp_path, capsys):
    fake_llm.ok_delay = 0.03
    out = tmp_path / "out"
    args = wishes_args(fake_llm, out, "--styles", "正常", "--concurrency", "2")
    proc = start_run_and_wait_for_requests(fake_llm, args, 10)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    at_interrupt = fake_llm.snapshot()
    saved = journal_ok_prompts(out)
    assert set(saved) <= set(at_interrupt) and len(saved) >= 8  # the answers that arrived (2 may be in flight)
    assert sorted(r["meta"]["prompt"] for r in read_jsonl(out / "wishes.jsonl")) == sorted(saved)  # on the way out
    fake_llm.ok_delay = 0.0
    assert main(args) == 0
    assert all(fake_llm.snapshot()[p] == 1 for p in saved) and len(read_jsonl(out / "wishes.jsonl")) == 407


def test_max_requests_stops_cleanly_and_the_rest_follows(fake_llm, api_key, tmp_path, capsys):
    out = tmp_path / "out"
    args = wishes_args(fake_llm, out, "--styles", "严肃", "--names", "同事", "老板")
    assert main([*args, "--max-requests", "5"]) == 4
    assert fake_llm.total == 5 and len(read_jsonl(out / "wishes.jsonl")) == 5
    assert "INCOMPLETE" in capsys.readouterr().out
    assert main(args) == 0
    data = load_wishes_data()
    planned = sum(data.is_suitable(n, s) for n in ("同事", "老板") for s in data.scenes)
    assert fake_llm.total == planned and set(fake_llm.snapshot().values()) == {1}
    assert len(read_jsonl(out / "wishes.jsonl")) == planned


def test_a_bad_key_stops_the_run_early(fake_llm, api_key, tmp_path, capsys):
    fake_llm.behaviour = lambda prompt, n: "401"
    assert main(wishes_args(fake_llm, tmp_path / "out", "--styles", "正常", "--concurrency", "2")) == 3
    assert fake_llm.total <= 4
    assert "stopped early" in capsys.readouterr().out


def test_non_tty_progress_prints_status_lines(fake_llm, api_key, tmp_path, capsys):
    n = 3 * sum(load_wishes_data().is_suitable("同事", s) for s in load_wishes_data().scenes)
    assert main(wishes_args(fake_llm, tmp_path / "out", "--names", "同事", "--status-interval", "0",
                            "--price-in", "1", "--price-out", "1")) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if f"/{n} requests" in line]
    assert len(lines) == n and f"done {n}, failed 0" in lines[-1] and "ETA" in lines[-1]
    assert f"tokens in {n * 100:,} out {n * 20:,}, cost {n * 120 / 1e6:.4f}" in lines[-1]


def test_resume_with_another_model_is_refused(fake_llm, api_key, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(wishes_args(fake_llm, out, "--names", "同事", "--scenes", "生日")) == 0
    args = wishes_args(fake_llm, out, "--names", "同事", "--scenes", "生日")
    args[args.index("fake-model")] = "other-model"
    assert main(args) == 2
    assert "started with model='fake-model'" in capsys.readouterr().err


def test_missing_key_names_the_variable_only(fake_llm, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TIANJI_TEST_KEY", raising=False)
    assert main(wishes_args(fake_llm, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TIANJI_TEST_KEY is not set" in err
    assert fake_llm.total == 0


def test_dry_run_counts_the_grid_shows_seed_prompts_and_sends_nothing(fake_llm, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TIANJI_TEST_KEY", raising=False)  # a dry run needs no key
    assert main(wishes_args(fake_llm, tmp_path / "out", "--dry-run", "--seed", "7")) == 0
    text = capsys.readouterr().out
    assert text.startswith("dry run: 1221 requests = 407 suitable name x scene pairs x 3 style(s)")
    assert "97 unsuitable pairs skipped (291 requests)" in text
    assert text.count("--- sample") == 3 and fake_llm.total == 0 and not (tmp_path / "out").exists()
    data = load_wishes_data()
    rng = item_rng(7, 1, "小红书", "赵老师", "生日")
    style = data.styles["小红书"]
    expected = data.final_prompt.format(style.length_limit, style.template.format(rng.choice(style.examples)),
                                        "赵老师", "生日", rng.choice(data.injection_sentences))
    assert f"[user]{expected}\n" in text


def test_import_is_light_and_help_has_examples():
    code = ("import sys, tianji_ft.synth.wishes, tianji_ft.cli.synth; "
            "print(sorted(m for m in ('openai', 'torch', 'transformers', 'matplotlib') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stderr
    res = subprocess.run([sys.executable, "-m", "tianji_ft", "synth", "wishes", "--help"], cwd=PROJECT_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "example:" in res.stdout and "--api-key-env" in res.stdout
