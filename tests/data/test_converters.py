import json
from collections import Counter

import pytest

from tianji_ft.data import converters
from tianji_ft.data.accounting import Rejected
from tianji_ft.data.converters import DOCTOR_PROMPT, ok_records, pair_messages
from tianji_ft.data.records import convert_files
from tianji_ft.data.registry import all_converters, get_converter
from tianji_ft.data.reader import iter_records
from tianji_ft.data.schema import record_problems
from tianji_ft.data.sources import read_rows
from tianji_ft.core.errors import UserError


def rows_of(path):
    return [row for _, row in read_rows(path)]


def reasons(results):
    return [r.reason for r in results if isinstance(r, Rejected)]


def test_every_converter_is_registered_with_a_docstring_showing_in_and_out():
    kinds = all_converters()
    assert {"medqa", "guanaco", "msagent", "firefly", "moss", "alpaca", "sharegpt", "openai", "generic",
            "wishes-merge", "conversation"} <= set(kinds)
    for conv in kinds.values():
        doc = conv.func.__doc__ or ""
        assert "in:" in doc and "out:" in doc, conv.name


def test_unknown_converter_suggests_the_closest_or_lists_the_known_ones():
    with pytest.raises(UserError, match="known: alpaca"):
        get_converter("xyzzy")
    with pytest.raises(UserError, match="did you mean 'medqa'"):
        get_converter("medqaa")


def test_converters_yield_one_result_per_row_and_valid_records(fixtures_dir):
    cases = {"firefly": "firefly.jsonl", "moss": "moss.jsonl", "alpaca": "alpaca.json", "guanaco": "guanaco.jsonl",
             "sharegpt": "sharegpt.json", "openai": "openai.jsonl", "medqa": "medqa.csv", "msagent": "msagent.jsonl"}
    for kind, name in cases.items():
        rows = rows_of(fixtures_dir / name)
        results = list(get_converter(kind).func(rows))
        assert len(results) == len(rows), kind
        for result in ok_records(results):
            assert record_problems(result) == [], (kind, result)
        assert any(isinstance(r, Rejected) for r in results), f"{kind} fixture should hold a bad row"


def test_medqa_rejects_placeholders_and_duplicates(fixtures_dir):
    rows = rows_of(fixtures_dir / "medqa.csv")
    results = list(converters.medqa(rows))
    counted = Counter(reasons(results))
    placeholders = {"n/a", "na", "no answers", "unanswerable", "none"}
    expected_placeholders = sum(r["Answer"].strip().casefold() in placeholders for r in rows)
    assert counted["placeholder answer"] == expected_placeholders == 5
    assert counted["duplicate question and answer"] == 1
    assert counted["empty question"] == 1
    kept = list(ok_records(results))
    assert all(r["conversation"][0]["system"] == DOCTOR_PROMPT for r in kept)
    assert {r["conversation"][0]["input"] for r in kept} == {"布洛芬一天最多吃几次？", "高血压药漏服一次怎么办？"}


def test_medqa_options_rename_columns_and_replace_placeholders():
    rows = [{"问题": "头疼吃什么？", "答案": "暂无"}, {"问题": "发烧怎么办？", "答案": "n/a"}]
    results = list(converters.medqa(rows, question_col="问题", answer_col="答案", placeholders=["暂无"], system=""))
    assert reasons(results) == ["placeholder answer"]
    assert results[1] == {"conversation": [{"input": "发烧怎么办？", "output": "n/a"}]}


def test_medqa_on_an_xlsx_end_to_end(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["Question", "Focus (Drug)", "Answer", "Section Title"])
    book.active.append(["布洛芬一天吃几次？", "布洛芬", "不超过4次。", "NA"])
    book.active.append(["头孢能喝酒吗？", "头孢", "n/a", "NA"])
    book.active.append(["剂量是多少？", "某药", 200, "NA"])  # a number where text was expected
    book.save(tmp_path / "q.xlsx")
    tally = convert_files("medqa", [tmp_path / "q.xlsx"], tmp_path / "q.jsonl")
    assert (tally.read, tally.written, tally.rejected) == (3, 2, 1)
    records = [r for _, r in iter_records(tmp_path / "q.jsonl")]
    assert records[1]["conversation"][0]["output"] == "200"


def test_firefly_maps_input_and_target(fixtures_dir):
    rows = rows_of(fixtures_dir / "firefly.jsonl")
    results = list(converters.firefly(rows, system="你是助手"))
    for row, result in zip(rows, results):
        if not isinstance(result, Rejected):
            assert result == {"conversation": [{"system": "你是助手", "input": row["input"], "output": str(row["target"])}]}
    assert reasons(results) == ["empty input", "missing field 'target'"]


def test_moss_keeps_every_turn_in_order(fixtures_dir):
    rows = rows_of(fixtures_dir / "moss.jsonl")
    results = list(converters.moss(rows))
    assert [t["input"] for t in results[0]["conversation"]] == [t["human"] for t in rows[0]["conversation"]]
    assert reasons(results) == ["empty output", "no turns"]


def test_alpaca_joins_instruction_and_input_and_reads_history(fixtures_dir):
    rows = rows_of(fixtures_dir / "alpaca.json")
    results = list(converters.alpaca(rows))
    assert results[0]["conversation"][0]["input"] == "把下面的句子改写得更礼貌一些。\n把门关上。"
    assert results[1]["conversation"][0]["input"] == "只剩一个心脏了还能活吗？"
    assert results[2]["conversation"][0]["input"] == rows[2]["instruction"]  # empty input adds nothing
    history = results[3]["conversation"]
    assert history[0] == {"system": "你是一位耐心的老师。", "input": "什么是分数？", "output": "分数表示把一个整体平均分成若干份。"}
    assert history[1] == {"input": "继续上面的话题", "output": "好的，我们接着说。"}
    assert reasons(results) == ["empty input", "missing field 'output'"]


def test_guanaco_splits_only_on_speaker_markers(fixtures_dir):
    notes = Counter()
    results = list(converters.guanaco(rows_of(fixtures_dir / "guanaco.jsonl"), notes=notes))
    assert len(results[0]["conversation"]) == 2
    answer = results[1]["conversation"][0]["output"]
    assert "### 第一周" in answer and "### 第二周" in answer  # markdown headings stay in the answer
    assert len(results[1]["conversation"]) == 1
    assert notes["trailing unanswered turn dropped"] == 1
    assert reasons(results) == ["no answered turn", "no '### Human:' markers"]


def test_guanaco_matches_xtuner_oasst1_map_fn_on_the_real_record(samples_dir, xtuner_map_fns):
    rows = rows_of(samples_dir / "guanaco" / "openassistant_best_replies_train.record0.reconstructed.jsonl")
    notes = Counter()
    ours = list(converters.guanaco(rows, notes=notes))
    theirs = [xtuner_map_fns["oasst1_map_fn"](dict(row)) for row in rows]
    assert ours == theirs
    assert notes["trailing unanswered turn dropped"] == sum(r["text"].rstrip().rfind("### Human:") >
                                                            r["text"].rfind("### Assistant:") for r in rows)


def test_sharegpt_and_openai_roles(fixtures_dir):
    notes = Counter()
    results = list(converters.sharegpt(rows_of(fixtures_dir / "sharegpt.json"), notes=notes))
    assert results[0]["conversation"][0]["system"] == "你是一个乐于助人的助手。"
    assert "system" not in results[0]["conversation"][1]
    assert notes["trailing unanswered turn dropped"] == 1
    assert reasons(results) == ["roles out of order", "unsupported role"]
    results = list(converters.openai(rows_of(fixtures_dir / "openai.jsonl")))
    assert results[0]["conversation"][0]["system"] == "你是一名营养师。"
    assert results[1]["conversation"][0]["input"] == "一加一等于几？"
    assert reasons(results) == ["roles out of order", "non-text content"]


def test_pair_messages_rejects_bad_orders():
    from tianji_ft.data.accounting import Reject

    with pytest.raises(Reject, match="roles out of order"):
        pair_messages([("user", "a"), ("assistant", "b"), ("system", "late")])
    with pytest.raises(Reject, match="no answered turn"):
        pair_messages([("system", "s"), ("user", "a")])


def test_generic_columns_and_system_column(fixtures_dir):
    rows = rows_of(fixtures_dir / "generic.csv")
    results = list(converters.generic(rows, input_col="问题", output_col="回答", system_col="系统", system="默认"))
    assert results[0]["conversation"][0]["system"] == "你是一名社区医生。"
    assert results[1]["conversation"][0]["system"] == "默认"  # an empty cell falls back
    assert reasons(results) == ["empty output"]


def test_conversation_passthrough_validates(tmp_path):
    rows = [{"conversation": [{"input": "你好", "output": "你好！"}], "id": 1}, {"conversation": [{"input": "x"}]}]
    results = list(converters.conversation(rows))
    assert results[0] == {"conversation": [{"input": "你好", "output": "你好！"}]}
    assert reasons(results) == ["invalid record"]


def test_wrong_kind_stops_with_the_columns_present(fixtures_dir, tmp_path):
    with pytest.raises(UserError, match=r"missing column\(s\) target; columns present: instruction, input, output"):
        convert_files("firefly", [fixtures_dir / "alpaca.json"], tmp_path / "out.jsonl")


# ------------------------------------------------------------- real samples

def _convert(kind, src, tmp_path, **options):
    out = tmp_path / f"{kind}.jsonl"
    tally = convert_files(kind, [src], out, options=options)
    assert tally.read == tally.written + tally.rejected
    records = [r for _, r in iter_records(out)] if tally.written else []
    assert len(records) == tally.written
    assert all(record_problems(r) == [] for r in records)
    return tally, records


def test_real_firefly(samples_dir, tmp_path):
    src = samples_dir / "firefly" / "firefly-train-1.1M.head300.jsonl"
    raw = rows_of(src)
    tally, records = _convert("firefly", src, tmp_path)
    usable = [r for r in raw if str(r["input"]).strip() and str(r["target"]).strip()]
    assert tally.read == len(raw) and tally.written == len(usable)
    assert [r["conversation"][0]["output"] for r in records] == [r["target"] for r in usable]


def test_real_moss(samples_dir, tmp_path):
    src = samples_dir / "moss" / "moss-003-sft.sample33.jsonl"
    raw = rows_of(src)
    tally, records = _convert("moss", src, tmp_path)
    assert tally.written == len(raw)
    assert [len(r["conversation"]) for r in records] == [len(r["conversation"]) for r in raw]


@pytest.mark.parametrize("folder", ["ruozhiba", "alpaca_zh", "school_math", "tianji_wishes_v0.2"])
def test_real_alpaca_style(samples_dir, tmp_path, folder):
    files = sorted(p for p in (samples_dir / folder).iterdir() if p.suffix in (".json", ".jsonl"))
    raw = [row for f in files for row in rows_of(f)]
    tally, records = _convert("alpaca", samples_dir / folder, tmp_path)
    usable = [r for r in raw if r["instruction"].strip() and r["output"].strip()]
    assert tally.read == len(raw) and tally.written == len(usable)
    for row, record in zip(usable, records):
        turn = record["conversation"][0]
        assert turn["input"].startswith(row["instruction"]) and turn["output"] == row["output"]
        assert turn["input"].endswith(row.get("input") or row["instruction"])


def test_real_guanaco_drops_and_counts_the_trailing_human_turn(samples_dir, tmp_path):
    tally, records = _convert("guanaco", samples_dir / "guanaco", tmp_path)
    assert tally.written == 1
    assert tally.notes["trailing unanswered turn dropped"] == 1
    assert records[0]["conversation"][0]["input"].startswith("Can you write a short introduction")


def test_real_wishes_merge_of_the_v02_layout(samples_dir, tmp_path):
    raw = rows_of(samples_dir / "tianji_wishes_v0.2" / "tianji-wishes-chinese-v0.2.head100.json")
    tally, records = _convert("wishes-merge", samples_dir / "tianji_wishes_v0.2", tmp_path)
    assert tally.read == len(raw) == tally.written + tally.rejected
    assert records[0]["conversation"][0]["output"] == raw[0]["output"]
