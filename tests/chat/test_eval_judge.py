"""``tianji-ft eval --judge`` and ``--judge-answers`` against a scripted loopback judge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.fake_judge import ANSWERS, FakeJudge, verdict

from tianji_ft.chat.metrics import answer_metrics
from tianji_ft.cli import main
from tianji_ft.synth.judge import JOURNAL_FILE

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-eval-judge-DO-NOT-LEAK"
PROMPTS = [("祝妈妈生日快乐", "正常", "生日"), ("祝老师教师节快乐", "严肃", "教师节"),
           ("祝朋友新婚快乐", "小红书", "新婚"), ("祝爷爷新年快乐", "正常", "新年")]


@pytest.fixture
def judge_server(monkeypatch):
    monkeypatch.setenv("TIANJI_JUDGE_KEY", KEY)
    with FakeJudge() as server:
        yield server


def judge_args(server, out, *extra):
    return ["--base-url", server.url, "--api-model", "judge-model", "--api-key-env", "TIANJI_JUDGE_KEY",
            "-o", str(out), *extra]


def write_eval(folder: Path, name: str, answers: list[str], prompts=PROMPTS) -> Path:
    """An eval output folder as ``tianji-ft eval --data`` writes it (answers.jsonl, metrics.json)."""
    folder.mkdir(parents=True)
    with open(folder / "answers.jsonl", "w", encoding="utf-8") as fh:
        for n, ((prompt, style, scene), answer) in enumerate(zip(prompts, answers), 1):
            fh.write(json.dumps({"id": str(n), "prompt": prompt, "reference": None,
                                 "context": [{"role": "system", "content": "你现在是一个送祝福大师"}],
                                 "meta": {"style": style, "scene": scene}, "answer": answer,
                                 "finish_reason": "stop", "tokens": len(answer)}, ensure_ascii=False) + "\n")
    metrics = answer_metrics(answers, ["stop"] * len(answers), [len(a) for a in answers], [None] * len(answers))
    info = {"model": f"work_dirs/{name}", "adapter": None, "template": "internlm2_chat", "template_source": "manifest",
            "system": "你现在是一个送祝福大师", "metrics": metrics}
    settings = {"prompts": len(answers), "batch_size": 8, "temperature": 0.0, "seed": 0, "max_new_tokens": 512}
    (folder / "metrics.json").write_text(json.dumps({"model": info, "settings": settings}, ensure_ascii=False), "utf-8")
    return folder


def test_judge_answers_of_two_evals_side_by_side(judge_server, tmp_path, capsys):
    a = write_eval(tmp_path / "sft", "sft", ["妈妈，生日快乐！岁岁平安", "老师，节日快乐", "新婚快乐，百年好合！🎉", "爷爷新年好"])
    b = write_eval(tmp_path / "dpo", "dpo", ["生日快乐", "老师，教师节快乐！桃李满天下", "新婚快乐", "爷爷过年好"])
    out = tmp_path / "judged"
    assert main(["eval", "--judge-answers", str(a), str(b), *judge_args(judge_server, out)]) == 0
    printed = capsys.readouterr().out
    # The longer answer wins: prompts 1 and 3 for A, 2 for B, 4 a tie.
    assert "A vs B over 4 prompts: win 50%" in printed and "tie 25%" in printed and "loss 25%" in printed
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"]["model"] == "work_dirs/sft" and metrics["base"]["model"] == "work_dirs/dpo"
    judge = metrics["judge"]
    assert judge["rubric"] == "wishes" and judge["overall"]["counts"] == {"win": 2, "tie": 1, "loss": 1, "inconsistent": 0}
    assert judge["by_style"]["正常"]["counts"] == {"win": 1, "tie": 1, "loss": 0, "inconsistent": 0}
    assert set(judge["by_scene"]) == {"生日", "教师节", "新婚", "新年"}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| judge: wins (95% CI) | 50% [" in report and "| distinct-2" in report  # beside the other metrics
    assert "## Judge" in report and "| style | prompts |" in report and "**Judge:** B wins — A shown first: B (更贴合对象和场景); B shown first: B (" in report
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["outcome"] for r in rows] == ["win", "loss", "win", "tie"]
    # The judge saw the system prompt and the style's length rule.
    seen = next(m for m in judge_server.snapshot() if "爷爷新年好" in m)
    assert "系统：你现在是一个送祝福大师" in seen and "风格：正常（不超过20字）" in seen
    assert not any(KEY in p.read_text(encoding="utf-8") for p in out.iterdir() if p.is_file())


def test_judge_answers_refuses_different_prompts_and_a_missing_key(judge_server, tmp_path, capsys, monkeypatch):
    a = write_eval(tmp_path / "a", "a", ["甲", "乙", "丙", "丁"])
    b = write_eval(tmp_path / "b", "b", ["甲", "乙"], prompts=PROMPTS[1:3])
    assert main(["eval", "--judge-answers", str(a), str(b), *judge_args(judge_server, tmp_path / "o")]) == 2
    assert main(["eval", "--judge-answers", str(a), *judge_args(judge_server, tmp_path / "o")]) == 2
    assert main(["eval", "--judge-answers", str(a), str(a), "--data", "x.jsonl", *judge_args(judge_server, tmp_path / "o")]) == 2
    monkeypatch.delenv("TIANJI_JUDGE_KEY")
    assert main(["eval", "--judge-answers", str(a), str(a), *judge_args(judge_server, tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and "answered different prompts (prompt 1 differs" in err[0]
    assert "has no base answers" in err[1] and "leave out --data" in err[2] and "TIANJI_JUDGE_KEY is not set" in err[3]
    assert judge_server.total == 0


def test_judge_needs_a_second_model(judge_server, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("祝妈妈生日快乐\n", encoding="utf-8")
    assert main(["eval", str(tmp_path), "--prompts", str(prompts), "--judge", *judge_args(judge_server, tmp_path / "o")]) == 2
    assert "pass --compare BASE_MODEL" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkilled_judge_resumes_without_asking_a_saved_judgment_again(judge_server, tmp_path, capsys):
    n_prompts, kill_after = 12, 8
    prompts = [(f"祝第{n}位朋友生日快乐", "正常", "生日") for n in range(1, n_prompts + 1)]
    a = write_eval(tmp_path / "a", "a", [f"朋友{n}，生日快乐！" for n in range(1, n_prompts + 1)], prompts)
    b = write_eval(tmp_path / "b", "b", [f"生日快乐{n}" for n in range(1, n_prompts + 1)], prompts)
    gate = threading.Event()  # requests after the first kill_after wait here, so the run cannot finish first
    judge_server.on_request = lambda total: total > kill_after and gate.wait(30)
    out = tmp_path / "judged"
    args = ["eval", "--judge-answers", str(a), str(b), *judge_args(judge_server, out, "--concurrency", "2")]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", *args], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = out / JOURNAL_FILE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        # kill_after verdicts saved, and both workers waiting on their next request: nothing more can be sent
        if journal.exists() and journal.read_bytes().count(b"\n") >= kill_after and judge_server.total == kill_after + 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
    proc.send_signal(signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=10)
    gate.set()
    saved = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert len(saved) == kill_after and all(e["status"] == "ok" for e in saved)
    answers = {"a": {str(n): f"朋友{n}，生日快乐！" for n in range(1, n_prompts + 1)},
               "b": {str(n): f"生日快乐{n}" for n in range(1, n_prompts + 1)}}
    shown = {(answers["a"][e["pair"]], answers["b"][e["pair"]]) if e["order"] == "AB" else
             (answers["b"][e["pair"]], answers["a"][e["pair"]]) for e in saved}
    at_kill = judge_server.total
    assert at_kill == kill_after + 2

    judge_server.on_request = None
    assert main(args) == 0
    judged = judge_server.judged()
    assert all(judged[pair] == 1 for pair in shown), "a saved judgment was asked again"
    assert all(ANSWERS.search(m) for m in judge_server.snapshot())
    # Every judgment not saved at the kill (sent or not) is asked once now; nothing else.
    assert judge_server.total - at_kill == 2 * n_prompts - kill_after
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["judge"]["overall"]["counts"]["win"] == n_prompts  # the longer answer, A's, in both orders
    assert f"{kill_after} judgments already saved" in capsys.readouterr().err
    assert KEY not in stdout.decode() + stderr.decode()


@pytest.mark.slow
def test_eval_judges_model_against_compare(taught_model_dir, tiny_model, wishes, judge_server, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"conversation": [{"input": q, "output": a}], "meta": {"style": "正常"}},
                                       ensure_ascii=False) + "\n" for q, a in wishes[:2]), encoding="utf-8")
    out = tmp_path / "eval"
    assert main(["eval", str(taught_model_dir), "--data", str(data), "--compare", str(tiny_model("internlm2")),
                 "--template", "internlm2_chat", "--device", "cpu", "--max-new-tokens", "16", "--judge",
                 *judge_args(judge_server, out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert {"model", "base", "settings", "judge"} <= set(metrics) and "rouge_l" in metrics["model"]["metrics"]
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = ["win" if len(r["answer"]) > len(r["base_answer"]) else "loss" if len(r["answer"]) < len(r["base_answer"])
                else "tie" for r in rows]  # the scripted judge prefers the longer answer
    assert list(metrics["judge"]["outcomes"].values()) == expected and rows[0]["meta"] == {"style": "正常"}
    assert metrics["judge"]["by_style"]["正常"]["prompts"] == 2 and "judge (wishes, judge-model)" in printed
    assert "## Judge" in (out / "report.md").read_text(encoding="utf-8")
    assert judge_server.total == 4
