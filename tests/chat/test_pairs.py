"""``tianji-ft synth pairs``: candidates, the judge's verdicts, preference records, skips and resume."""

from __future__ import annotations

import json

import pytest
from helpers.fake_judge import FakeJudge, verdict, longer_wins

from tianji_ft.chat.pairs import CANDIDATES_FILE, PAIRS_FILE, SUMMARY_FILE
from tianji_ft.cli import main
from tianji_ft.data.preference import preference_problems

KEY = "sk-pairs-test-DO-NOT-LEAK"


@pytest.fixture
def judge_server(monkeypatch):
    monkeypatch.setenv("TIANJI_JUDGE_KEY", KEY)
    with FakeJudge() as server:
        yield server


def endpoint_args(server, out):
    return ["--base-url", server.url, "--api-model", "judge-model", "--api-key-env", "TIANJI_JUDGE_KEY",
            "--max-attempts", "2", "-o", str(out)]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# Remote candidates per prompt: the n-th request for a prompt gets the n-th answer (slot 1 first, then slot 2).
CANDIDATES = {
    "祝妈妈生日快乐": ["妈妈生日快乐", "妈妈，生日快乐！愿您岁岁平安"],  # the second, longer, wins
    "祝老师教师节快乐": ["老师，教师节快乐！桃李满天下", "老师节日快乐"],  # the first wins
    "祝朋友新婚快乐": ["百年好合", "百年好合"],  # identical: not judged
    "祝爷爷新年快乐": ["爷爷新年好", "爷爷过年好"],  # same length: a tie
    "祝同事升职快乐": ["恭喜高升啦", "升职快乐！前程似锦"],  # the judge always says "A": inconsistent
    "祝邻居乔迁之喜": ["500", "500"],  # the endpoint fails: candidate failed
}


def test_remote_candidates_judged_into_preference_records_skips_counted_and_resumed(judge_server, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(CANDIDATES) + "\n", encoding="utf-8")
    judge_server.candidate = lambda prompt, n: CANDIDATES[prompt][min(n, 2) - 1]
    judge_server.behaviour = lambda first, second, n: verdict("A") if "升" in first else longer_wins(first, second, n)
    out = tmp_path / "pairs"
    args = ["synth", "pairs", "--prompts", str(prompts), "--candidates", "remote", "remote", *endpoint_args(judge_server, out)]
    assert main(args) == 3  # a candidate failed
    std = capsys.readouterr()
    assert "2 preference records from 6 prompts" in std.out and "1 ties, 1 position-inconsistent, 1 identical" in std.out
    records = read_jsonl(out / PAIRS_FILE)
    assert [r["chosen"][0]["content"] for r in records] == ["妈妈，生日快乐！愿您岁岁平安", "老师，教师节快乐！桃李满天下"]
    assert [r["rejected"][0]["content"] for r in records] == ["妈妈生日快乐", "老师节日快乐"]
    for r in records:
        assert preference_problems(r) == [] and r["judge"]["reason"] and r["judge"]["model"] == "judge-model"
        assert r["prompt"][-1]["role"] == "user"
    assert records[0]["meta"]["chosen_from"] == "remote judge-model"
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert summary["skipped"] == {"tie": 1, "inconsistent": 1, "failed": 0, "pending": 0, "identical": 1,
                                  "candidate_failed": 1, "invalid": 0}

    # The rerun asks only for what is missing: the failed prompt's two candidates and their two verdicts.
    before = judge_server.snapshot()
    judge_server.candidate = lambda prompt, n: ["邻居乔迁大吉", "乔迁之喜，新居生辉！"][n % 2]
    assert main(args) == 0
    after = judge_server.snapshot()
    asked = {m: after[m] - before[m] for m in after if after[m] != before[m]}
    assert asked.pop("祝邻居乔迁之喜") == 2 and len(asked) == 2 and all(n == 1 for n in asked.values())
    assert len(read_jsonl(out / PAIRS_FILE)) == 3
    for path in out.iterdir():
        assert KEY not in path.read_text(encoding="utf-8")


def test_local_candidates_need_a_model_and_sampling(judge_server, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("祝妈妈生日快乐\n", encoding="utf-8")
    assert main(["synth", "pairs", "--prompts", str(prompts), *endpoint_args(judge_server, tmp_path / "o")]) == 2
    assert main(["synth", "pairs", "--prompts", str(prompts), "--model", str(tmp_path), "--temperature", "0",
                 *endpoint_args(judge_server, tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "pass --model DIR" in err[0] and "--temperature above 0" in err[1]
    assert judge_server.total == 0 and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_local_sft_candidates_with_two_seeds(taught_model_dir, wishes, judge_server, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"conversation": [{"input": q, "output": a}],
                                           "meta": {"style": "正常", "scene": "生日"}}, ensure_ascii=False) + "\n"
                               for q, a in wishes[:3]), encoding="utf-8")
    out = tmp_path / "pairs"
    args = ["synth", "pairs", "--prompts", str(prompts), "--model", str(taught_model_dir), "--device", "cpu",
            "--temperature", "2.5", "--top-p", "1.0", "--max-new-tokens", "24", "--seed", "3", *endpoint_args(judge_server, out)]
    assert main(args) == 0
    candidates = read_jsonl(out / CANDIDATES_FILE)
    assert sorted((c["item"], c["slot"]) for c in candidates) == [(i, s) for i in "123" for s in (0, 1)]
    texts = {(c["item"], c["slot"]): c["text"] for c in candidates}
    differing = [i for i in "123" if texts[(i, 0)] != texts[(i, 1)]]
    assert differing, "two seeds gave the same candidates for every prompt"
    records = read_jsonl(out / PAIRS_FILE)
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    assert len(records) + summary["skipped"]["tie"] + summary["skipped"]["identical"] == 3
    for r in records:  # the scripted judge prefers the longer answer
        assert preference_problems(r) == [] and len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"])
        assert r["prompt"][0] == {"role": "system", "content": json.loads(
            (taught_model_dir / "tianji_run.json").read_text(encoding="utf-8"))["system"]}
        assert {r["meta"]["chosen_from"], r["meta"]["rejected_from"]} == {"local seed 3", "local seed 4"}
    capsys.readouterr()
    requests = judge_server.total
    assert main(args) == 0  # all saved: no model load, no request
    assert judge_server.total == requests and "local candidates" not in capsys.readouterr().err


def test_max_requests_is_one_budget_for_candidates_and_verdicts(judge_server, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("祝妈妈生日快乐\n祝老师教师节快乐\n祝爷爷新年快乐\n", encoding="utf-8")
    judge_server.candidate = lambda prompt, n: prompt[1:] + "！" * n  # the second candidate is longer
    out = tmp_path / "pairs"
    args = ["synth", "pairs", "--prompts", str(prompts), "--candidates", "remote", "remote", *endpoint_args(judge_server, out)]
    assert main([*args, "--max-requests", "5"]) == 4
    assert judge_server.total == 5 and "3 not done (--max-requests)" in capsys.readouterr().out
    assert main(args) == 0
    assert judge_server.total == 5 + 1 + 6  # the last candidate, then every verdict
    assert [r["chosen"][0]["content"] for r in read_jsonl(out / PAIRS_FILE)] == ["妈妈生日快乐！！", "老师教师节快乐！！", "爷爷新年快乐！！"]
