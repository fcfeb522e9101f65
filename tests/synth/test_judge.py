"""The pairwise judge against a scripted loopback judge: verdicts, retries, reconciliation, rates."""

from __future__ import annotations

import io
import json

import pytest
from helpers.fake_judge import FakeJudge, verdict

from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import DATA_DIR
from tianji_ft.synth.chat_client import RetryPolicy
from tianji_ft.synth.judge import JOURNAL_FILE, JudgeEndpoint, JudgePair, judge_pairs, parse_verdict, summary_line
from tianji_ft.synth.judge_stats import rates, reconcile
from tianji_ft.synth.rubric import load_rubric

FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02)


@pytest.fixture
def judge_server():
    with FakeJudge() as server:
        yield server


@pytest.fixture
def endpoint(judge_server, monkeypatch):
    monkeypatch.setenv("TIANJI_JUDGE_KEY", "sk-judge-test")
    return JudgeEndpoint(judge_server.url, "judge-model", "TIANJI_JUDGE_KEY", concurrency=2, policy=FAST)


def pair(n: int, a: str, b: str, **meta) -> JudgePair:
    return JudgePair(str(n), [{"role": "user", "content": f"祝妈妈生日快乐（第{n}条）"}], a, b, meta)


def test_reconcile_puts_both_orders_in_model_a_terms():
    assert reconcile("A", "B") == "win"  # A first and chosen, then A second and chosen
    assert reconcile("B", "A") == "loss"
    assert reconcile("tie", "tie") == "tie"
    assert reconcile("A", "A") == "inconsistent"  # the first position won both times
    assert reconcile("A", "tie") == "inconsistent"


def test_rates_and_bootstrap_interval_match_a_hand_computation():
    # 3 wins, 1 loss: resampled win counts follow Binomial(4, 3/4): P(<=0) = 0.004, P(<=1) = 0.051, P(4) = 0.32,
    # so the 2.5th percentile of the win rate is 1/4 and the 97.5th is 1.
    r = rates(["win", "win", "win", "loss"], seed=7)
    assert r["counts"] == {"win": 3, "tie": 0, "loss": 1, "inconsistent": 0}
    assert r["win"] == {"rate": 0.75, "ci": [0.25, 1.0]}
    assert r["loss"] == {"rate": 0.25, "ci": [0.0, 0.75]}
    assert r["tie"] == {"rate": 0.0, "ci": [0.0, 0.0]}
    assert rates(["win"] * 5)["win"]["ci"] == [1.0, 1.0]
    assert rates(["win", "loss", "tie"] * 4, seed=3) == rates(["win", "loss", "tie"] * 4, seed=3)  # seeded


def test_rubrics_load_and_the_wishes_length_rule_is_the_generators():
    wishes = load_rubric("wishes")
    styles = json.loads((DATA_DIR / "wishes" / "styles.json").read_text(encoding="utf-8"))
    assert wishes.length_limits == {name: s["length_limit"] for name, s in styles.items()}
    ids = [c["id"] for c in wishes.criteria]
    assert ids == ["recipient_fit", "occasion_fit", "style_fit", "length_rule", "no_artefacts"]
    prompt = wishes.user_prompt([{"role": "user", "content": "祝妈妈生日快乐"}], "甲", "乙",
                                {"style": "正常", "scene": "生日", "name": "妈妈"})
    assert "风格：正常（不超过20字）" in prompt and prompt.endswith("[回答A]\n甲\n[回答B]\n乙")
    assert load_rubric("generic").criteria


def test_a_bad_rubric_is_one_line_naming_file_and_field(tmp_path):
    bad = tmp_path / "mine.json"
    bad.write_text(json.dumps({"name": "mine", "system": "评审", "criteria": [{"id": "x"}]}), encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_rubric(bad)
    assert str(bad) in str(err.value) and "criteria.0.text" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="shipped rubrics: generic, wishes"):
        load_rubric("wishs")


def test_parse_verdict_is_strict():
    assert parse_verdict('```json\n{"winner": "B", "reason": "更贴切"}\n```') == ("B", "更贴切")
    assert parse_verdict('<think>\n先比较称呼……\n</think>\n{"winner": "tie", "reason": "相当"}') == ("tie", "相当")
    for bad in ("A更好", '{"winner": "a", "reason": "x"}', '{"winner": "A"}', '["A"]', '<think>{"winner": "A", "reason": "x"}'):
        with pytest.raises(ValueError):
            parse_verdict(bad)


def test_verdicts_retries_failures_and_rates(judge_server, endpoint, tmp_path):
    # 1: A better both ways; 2: B better both ways; 3: a tie both ways; 4: the judge always says "A";
    # 5: never a valid reply. 1 meets a 429 and 2 a 500 first: retried by the client.
    pairs = [pair(1, "好好好", "差", style="正常", scene="生日"), pair(2, "差劲", "好好好好", style="正常", scene="生日"),
             pair(3, "平平", "平平！", style="严肃", scene="生日"), pair(4, "偏偏偏", "位位", style="严肃", scene="春节"),
             pair(5, "坏坏", "回复", style="严肃", scene="春节")]
    script = {("好好好", "差"): "A", ("差劲", "好好好好"): "B", ("好好好好", "差劲"): "A", ("差", "好好好"): "B", ("平平", "平平！"): "tie", ("平平！", "平平"): "tie",
              ("偏偏偏", "位位"): "A", ("位位", "偏偏偏"): "A"}

    def behaviour(first, second, n):
        if (first, second) == ("好好好", "差") and n == 1:
            return ("429", "0")
        if (first, second) == ("差劲", "好好好好") and n == 1:
            return "500"
        if (first, second) in script:
            return verdict(script[(first, second)])
        return ["A更好", '{"winner": "C", "reason": "?"}', "{"][n - 1]  # pair 5: three malformed replies

    judge_server.behaviour = behaviour
    endpoint.price_in, endpoint.price_out = 2.0, 8.0
    err = io.StringIO()
    result = judge_pairs(pairs, load_rubric("wishes"), endpoint, tmp_path / "run", err=err)
    s = result.summary
    assert s["outcomes"] == {"1": "win", "2": "loss", "3": "tie", "4": "inconsistent", "5": "failed"}
    overall = s["overall"]
    assert overall["prompts"] == 4 and s["failed"] == 1 and result.exit_code == 3
    assert (overall["win"]["rate"], overall["tie"]["rate"], overall["loss"]["rate"]) == (0.25, 0.5, 0.25)
    assert overall["inconsistent"]["rate"] == 0.25
    assert s["position_bias"] == pytest.approx(4 / 6)  # decisive verdicts: 1 A,B; 2 B,A; 4 A,A
    assert s["by_style"]["正常"]["counts"] == {"win": 1, "tie": 0, "loss": 1, "inconsistent": 0}
    assert s["by_scene"]["春节"]["counts"] == {"win": 0, "tie": 0, "loss": 0, "inconsistent": 1}
    judged = judge_server.judged()
    assert judged[("好好好", "差")] == 2 and judged[("差劲", "好好好好")] == 2  # one retry each
    assert judged[("差", "好好好")] == 1 and judged[("好好好好", "差劲")] == 1
    assert judged[("坏坏", "回复")] == 3 and judged[("回复", "坏坏")] == 3  # asked again, then recorded
    failed = result.verdicts["5"]["AB"]
    assert failed["status"] == "failed" and "malformed verdict in 3 replies" in failed["reason"]
    assert result.verdicts["1"]["BA"]["reason"] == "更贴合对象和场景"
    assert "win 25%" in summary_line(s) and "1 position-inconsistent" in summary_line(s)
    # 14 answered replies (8 verdicts, 6 malformed) of 50 + 10 tokens; the 429 and the 500 carry none
    assert (s["this_run"]["tokens_in"], s["this_run"]["tokens_out"]) == (700, 140)
    assert s["this_run"]["cost"] == pytest.approx((700 * 2 + 140 * 8) / 1e6) and "cost 0.0025" in summary_line(s)

    # A rerun asks only what failed; the saved verdicts are not asked again.
    before = judge_server.total
    judge_server.behaviour = lambda first, second, n: verdict("tie")
    again = judge_pairs(pairs, load_rubric("wishes"), endpoint, tmp_path / "run", err=io.StringIO())
    assert judge_server.total - before == 2 and again.summary["outcomes"]["5"] == "tie" and again.exit_code == 0
    assert (tmp_path / "run" / JOURNAL_FILE).read_text(encoding="utf-8").count("\n") == 12


def test_a_position_biased_judge_wins_nothing(judge_server, endpoint, tmp_path):
    judge_server.behaviour = lambda first, second, n: verdict("A")
    pairs = [pair(n, f"回答{n}甲", f"回答{n}乙乙") for n in range(1, 7)]
    s = judge_pairs(pairs, load_rubric("generic"), endpoint, tmp_path / "run", err=io.StringIO()).summary
    assert s["overall"]["counts"]["inconsistent"] == 6 and s["overall"]["win"]["rate"] == 0.0
    assert s["overall"]["tie"]["rate"] == 1.0 and s["position_bias"] == 1.0
    assert "by_style" not in s


def test_max_requests_stops_with_judgments_pending(judge_server, endpoint, tmp_path):
    endpoint.max_requests = 3
    result = judge_pairs([pair(1, "长长的祝福", "短"), pair(2, "短", "长长的祝福")], load_rubric("generic"), endpoint,
                         tmp_path / "run", err=io.StringIO())
    assert judge_server.total == 3 and result.exit_code == 4 and result.summary["pending"] == 1


def test_missing_key_names_the_variable(judge_server, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(UserError, match="NO_SUCH_JUDGE_KEY is not set"):
        judge_pairs([pair(1, "甲", "乙")], load_rubric("generic"),
                    JudgeEndpoint(judge_server.url, "m", "NO_SUCH_JUDGE_KEY"), tmp_path, err=io.StringIO())
    assert judge_server.total == 0
