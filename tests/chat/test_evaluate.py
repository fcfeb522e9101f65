"""``tianji-ft eval``: loaders, outputs, and the stop rate that exposes a wrong template."""

from __future__ import annotations

import io
import json
import sys

import pytest

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.chat.evaluate import evaluate, load_prompts, load_test_data
from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import DATA_DIR

PARAMS = GenerationParams(temperature=0.0, max_new_tokens=40)


def test_load_test_data_asks_the_last_turn_with_earlier_turns_as_context(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"conversation": [
        {"system": "你是医生", "input": "头疼怎么办", "output": "多休息。"},
        {"input": "还要吃药吗", "output": "视情况而定。"},
    ]}, ensure_ascii=False) + "\n\n", encoding="utf-8")
    [item] = load_test_data(path)
    assert [m["role"] for m in item.messages] == ["system", "user", "assistant", "user"]
    assert (item.prompt, item.reference) == ("还要吃药吗", "视情况而定。")


def test_load_test_data_reads_json_lists_and_reports_bad_lines(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"conversation": [{"input": "q", "output": "a"}]}]))
    assert load_test_data(tmp_path / "a.json")[0].reference == "a"
    (tmp_path / "b.jsonl").write_text('{"conversation": [{"input": "q"}]}\n{oops\n')
    with pytest.raises(UserError, match=r"b.jsonl:2: not valid JSON"):
        load_test_data(tmp_path / "b.jsonl")
    (tmp_path / "c.jsonl").write_text('{"messages": []}\n')
    with pytest.raises(UserError, match="c.jsonl:1: expected"):
        load_test_data(tmp_path / "c.jsonl")
    with pytest.raises(UserError, match="no such file"):
        load_test_data(tmp_path / "missing.jsonl")


def test_load_prompts_takes_one_prompt_per_line(tmp_path):
    (tmp_path / "p.txt").write_text("祝姐姐生日快乐\n\n  祝老师教师节快乐  \n", encoding="utf-8")
    assert [i.prompt for i in load_prompts(tmp_path / "p.txt")] == ["祝姐姐生日快乐", "祝老师教师节快乐"]
    assert all(i.reference is None for i in load_prompts(tmp_path / "p.txt"))


@pytest.mark.slow
def test_right_template_stops_every_answer_and_writes_the_outputs(taught_model_dir, tmp_path):
    items = load_test_data(DATA_DIR / "demo" / "wishes.jsonl")
    summary = evaluate(str(taught_model_dir), items, tmp_path / "out", params=PARAMS, batch_size=3)
    m = summary["model"]["metrics"]
    assert m["stop_rate"] == 1.0
    assert m["exact_match"] == 1.0 and m["bleu"] == pytest.approx(100.0) and m["rouge_l"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text("utf-8").splitlines()]
    assert [r["answer"] for r in rows] == [i.reference for i in items]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text("utf-8"))["model"]["template"] == "internlm2_chat"
    report = (tmp_path / "out" / "report.md").read_text("utf-8")
    assert "| stop rate (ended on the stop token) | 1.00 |" in report and "Warning" not in report


@pytest.mark.slow
def test_wrong_template_shows_as_a_low_stop_rate_beside_the_right_one(taught_model_dir, tmp_path):
    items = load_test_data(DATA_DIR / "demo" / "wishes.jsonl")[:4]
    summary = evaluate(str(taught_model_dir), items, tmp_path / "out", template="internlm_chat",
                       compare=str(taught_model_dir), params=PARAMS)
    assert summary["model"]["metrics"]["stop_rate"] < 1.0
    assert summary["model"]["template"] == "internlm_chat"
    # --template applies to both models here; the base side proves the comparison columns.
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text("utf-8").splitlines()]
    assert {"answer", "base_answer", "finish_reason", "base_finish_reason"} <= set(rows[0])
    assert "length" in {r["finish_reason"] for r in rows}
    report = (tmp_path / "out" / "report.md").read_text("utf-8")
    assert "**Warning:**" in report and "(base)" in report and "*(cut at the token limit)*" in report


@pytest.mark.slow
def test_sampled_eval_is_deterministic_for_a_seed(taught_model_dir, tmp_path):
    items = load_test_data(DATA_DIR / "demo" / "wishes.jsonl")[:3]
    params = GenerationParams(temperature=1.5, top_k=0, top_p=1.0, max_new_tokens=16, seed=7)
    runs = [evaluate(str(taught_model_dir), items, tmp_path / str(n), params=params) for n in range(2)]
    answers = [(tmp_path / str(n) / "answers.jsonl").read_text("utf-8") for n in range(2)]
    assert answers[0] == answers[1]
    assert runs[0]["model"]["metrics"] == runs[1]["model"]["metrics"]


class _Screen(io.StringIO):
    def isatty(self) -> bool:
        return True


class _CountingEngine:
    """Answers each prompt with its own text; 5 completion tokens a reply."""

    def __init__(self):
        self.batches = []

    def chat_batch(self, conversations, params):
        from tianji_ft.chat.engine import Reply

        self.batches.append(len(conversations))
        return [Reply(f"回答：{c[-1]['content']}", "stop", 3, 5) for c in conversations]


def test_answer_all_keeps_order_and_shows_prompts_and_tokens_per_second(monkeypatch):
    from tianji_ft.chat.evaluate import EvalItem, answer_all

    items = [EvalItem(str(i), [{"role": "user", "content": f"问题{i}"}]) for i in range(7)]
    screen = _Screen()
    monkeypatch.setattr(sys, "stderr", screen)
    engine = _CountingEngine()
    replies = answer_all(engine, items, PARAMS, batch_size=3, label="answering (model)")
    assert [r.text for r in replies] == [f"回答：问题{i}" for i in range(7)]
    assert engine.batches == [3, 3, 1]
    shown = screen.getvalue()
    assert "\ranswering (model): 7/7 prompts" in shown and "100%" in shown and "tokens/s" in shown
    quiet_screen = _Screen()
    monkeypatch.setattr(sys, "stderr", quiet_screen)
    answer_all(_CountingEngine(), items, PARAMS, batch_size=3, quiet=True)
    assert quiet_screen.getvalue() == ""
