"""``tianji-ft pipeline SFT --preference DPO``: SFT -> pairs -> DPO -> judged against SFT, on tiny models and a
loopback judge (helpers.fake_judge: the longer answer wins)."""

from __future__ import annotations

import io
import json

import pytest
from helpers.fake_judge import FakeJudge

from tianji_ft.core.errors import UserError
from tianji_ft.synth.judge import JudgeEndpoint
from tianji_ft.train.train import TrainRequest
from tianji_ft.workflows.pipeline import PipelineRequest
from tianji_ft.workflows.preference import PreferenceRequest, check_request, run_with_preference

SFT, DPO = "internlm2_chat_7b_qlora_wishes_e3", "internlm2_chat_7b_qlora_wishes_dpo_e1"
PAIRS_PROMPTS = ["祝姐姐生日快乐", "祝老师教师节快乐", "祝爸爸父亲节快乐", "祝同事新年快乐", "祝妈妈中秋节快乐",
                 "祝朋友考试顺利", "祝奶奶重阳节快乐", "祝大家元宵节快乐"]
JUDGE_PROMPTS = ["祝哥哥新婚快乐", "祝领导春节快乐，严肃风格"]
QUIET = {"TIANJI_EVAL_PROMPTS": "[]"}  # no sample answers during training: the judge stage answers


def requests(tmp_path, url, **pref) -> tuple[PipelineRequest, PreferenceRequest]:
    (tmp_path / "pairs.txt").write_text("\n".join(PAIRS_PROMPTS) + "\n", encoding="utf-8")
    (tmp_path / "judge.txt").write_text("\n".join(JUDGE_PROMPTS) + "\n", encoding="utf-8")
    sft = PipelineRequest(TrainRequest(config=SFT, tiny=True, work_dir=str(tmp_path / "sft"), settings=dict(QUIET),
                                       deepspeed="none"),  # the DeepSpeed runs are test_configs_tiny's
                          until="merge")
    endpoint = JudgeEndpoint(base_url=url, model="fake-judge", api_key_env="FAKE_JUDGE_KEY", concurrency=2)
    options = dict(judge_prompts=str(tmp_path / "judge.txt"), work_dir=str(tmp_path / "dpo"), settings=dict(QUIET),
                   max_new_tokens=24, rubric="wishes") | pref
    return sft, PreferenceRequest(DPO, str(tmp_path / "pairs.txt"), endpoint, **options)


def test_bad_requests_are_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "k")
    sft, pref = requests(tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(UserError, match="not a preference config"):
        check_request(sft, PreferenceRequest(SFT, pref.pairs_prompts, pref.judge))
    with pytest.raises(UserError, match="--until convert stops before merge"):
        check_request(PipelineRequest(sft.train, until="convert"), pref)
    with pytest.raises(UserError, match="--pairs-prompts .*missing.txt: no such file"):
        check_request(sft, PreferenceRequest(DPO, str(tmp_path / "missing.txt"), pref.judge))
    monkeypatch.delenv("FAKE_JUDGE_KEY")
    with pytest.raises(UserError, match="FAKE_JUDGE_KEY is not set"):
        check_request(sft, pref)
    assert not (tmp_path / "sft").exists()


@pytest.mark.slow
def test_sft_pairs_dpo_and_the_judged_comparison(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", "k")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with FakeJudge() as judge:
        sft, pref = requests(tmp_path, judge.url)
        out = io.StringIO()
        assert run_with_preference(sft, pref, out=out) == 0
        asked = judge.total
        text = out.getvalue()
        # a second run redoes nothing it has: no training, no paid call (and --json says so on stdout)
        again = io.StringIO()
        assert run_with_preference(sft, pref, out=again, as_json=True) == 0
        assert judge.total == asked
    assert "[1/3] pairs" in text and "[2/3] preference" in text and "[3/3] judge" in text
    pairs = [json.loads(x) for x in (tmp_path / "sft" / "pairs" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert pairs and all(len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"]) for p in pairs)
    manifest = json.loads((tmp_path / "dpo" / "tianji_run.json").read_text(encoding="utf-8"))
    assert manifest["config"]["name"] == DPO and manifest["exit_code"] == 0
    assert manifest["model"] == str(tmp_path / "sft" / "merged")  # DPO starts from the merged SFT model
    assert [d["path"] for d in manifest["data"]] == [str(tmp_path / "sft" / "pairs" / "pairs.jsonl")]
    assert (tmp_path / "dpo" / "merged" / "config.json").is_file()
    metrics = json.loads((tmp_path / "dpo" / "judge" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["judge"]["overall"]["prompts"] == len(JUDGE_PROMPTS)
    assert metrics["model"]["model"] == str(tmp_path / "dpo" / "merged")
    assert "preference vs SFT over 2 prompts" in text
    summary = json.loads(again.getvalue())
    assert {s["status"] for s in summary["sft"]["stages"]} == {"skipped"}
    stages = {s["stage"]: s for s in summary["preference"]["stages"]}
    assert list(stages) == ["pairs", "preference", "judge"] and "(up to date)" in stages["preference"]["summary"]
    assert summary["preference"]["judge"] == str(tmp_path / "dpo" / "judge")
