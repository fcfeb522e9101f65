"""Dedupe's promise record by record: what counts as the same, which copy is kept, what each reject says.

Conversation records come from the project's fixture (``wishes10.jsonl``)
with copies made here by hand (exact, re-spaced, re-punctuated, full-width);
preference pairs from ``fixtures/preference/records.jsonl``.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.data.accounting import Rejected, rejects_path
from tianji_ft.data.dedupe import (SAME_PROMPT, SWAPPED, dedupe_file, dedupe_records, exact_key, normalise,
                                   normalised_key, normalised_preference_key, preference_key, prompt_key)
from tianji_ft.data.reader import iter_records

WISHES10 = Path(__file__).resolve().parents[1] / "helpers" / "fixtures" / "wishes10.jsonl"
EXACT, NEAR = "exact duplicate", "duplicate after normalising whitespace/punctuation"


def wishes() -> list[dict]:
    return [json.loads(line) for line in WISHES10.read_text(encoding="utf-8").splitlines()]


def turn(record: dict, **changes) -> dict:
    return {"conversation": [{**record["conversation"][0], **changes}]}


@pytest.mark.parametrize("a, b", [
    ("祝妈妈生日快乐！", "祝妈妈生日快乐"),         # CJK punctuation
    ("祝妈妈 生日快乐", "祝妈妈生日快乐"),           # an ASCII space
    ("祝妈妈\u3000生日快乐", "祝妈妈生日快乐"),      # an ideographic space
    ("Happy Birthday, Mom!", "happybirthdaymom"),  # case and ASCII punctuation
    ("ＡＢＣ１２３", "abc123"),                        # full-width letters and digits (NFKC)
    ("《祝福》——“快乐”", "祝福快乐"),                  # brackets, dashes, quotes
    ("line\nbreak\ttab", "linebreaktab"),
])
def test_normalise_drops_whitespace_punctuation_width_and_case(a, b):
    assert normalise(a) == normalise(b) == b.casefold()


@pytest.mark.parametrize("a, b", [("祝妈妈生日快乐", "祝爸爸生日快乐"), ("1+1=2", "1+1=3"), ("a", "b"),
                                  ("＄5", "$6")])
def test_normalise_keeps_what_tells_texts_apart(a, b):
    assert normalise(a) != normalise(b)


def test_the_first_copy_is_kept_and_each_later_one_names_it(tmp_path):
    records = wishes()
    first, second = records[0], records[1]
    spaced = turn(first, input=" " + first["conversation"][0]["input"] + "！ ")
    other_system = turn(second, system="你是祝福大师。")
    rows = records + [first, spaced, dict(second), other_system]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tally = dedupe_file(src, out, report=tmp_path / "report.json")
    assert [r for _, r in iter_records(out)] == records + [other_system]
    rejects = [json.loads(line) for line in rejects_path(out).read_text(encoding="utf-8").splitlines()]
    assert [(r["index"], r["reason"], r["detail"], r["record"]) for r in rejects] == [
        (10, EXACT, "same as record 0", first), (11, NEAR, "same as record 0", spaced),
        (12, EXACT, "same as record 1", second)]
    assert (tally.read, tally.written, tally.rejected) == (14, 11, 3)
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["reasons"] == {EXACT: 2, NEAR: 1}


def test_exact_only_keeps_near_copies_and_rejects_exact_ones():
    records = wishes()[:2]
    near = turn(records[0], output=records[0]["conversation"][0]["output"] + " ")
    results = list(dedupe_records([*records, near, records[1]], normalised=False))
    assert results[:3] == [*records, near] and results[3] == Rejected(EXACT, "same as record 1")


def test_a_near_copy_of_a_near_copy_names_the_first_record():
    a = {"conversation": [{"input": "你好", "output": "好"}]}
    b = {"conversation": [{"input": "你好！", "output": "好"}]}
    c = {"conversation": [{"input": "你好 ！", "output": "好。"}]}
    assert list(dedupe_records([a, b, c])) == [a, Rejected(NEAR, "same as record 0"), Rejected(NEAR, "same as record 0")]


def test_keys_tell_fields_and_turns_apart():
    one = {"conversation": [{"input": "祝福", "output": "快乐"}]}
    swapped = {"conversation": [{"input": "快乐", "output": "祝福"}]}
    joined = {"conversation": [{"input": "祝福快乐", "output": ""}]}
    two_turns = {"conversation": [{"input": "祝福", "output": ""}, {"input": "快乐", "output": ""}]}
    keys = [normalised_key(r) for r in (one, swapped, joined, two_turns)]
    assert len(set(keys)) == 4
    assert normalised_key(one) == normalised_key({"conversation": [{"input": "祝福", "output": "快乐", "system": ""}]})
    assert exact_key(one) != exact_key({"conversation": [{"input": "祝福", "output": "快乐", "system": ""}]})
    assert exact_key(one) == exact_key({**one, "id": 7})  # only the conversation counts
    assert len(exact_key(one)) == len(normalised_key(one)) == 16


def test_records_that_are_not_conversations_are_compared_as_they_are():
    assert normalised_key(["祝福"]) == exact_key(["祝福"]) != exact_key(["祝福！"])
    assert normalised_key({"conversation": "祝福"}) == exact_key({"conversation": "祝福"})
    odd = {"conversation": ["祝福！", "快乐"]}
    assert normalised_key(odd) == normalised_key({"conversation": ["祝福", "快乐。"]})
    assert list(dedupe_records([["a"], ["a"]])) == [["a"], Rejected(EXACT, "same as record 0")]


# --- preference pairs -----------------------------------------------------------------------------


def pairs() -> list[dict]:
    path = Path(__file__).parent / "fixtures" / "preference" / "records.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_preference_pairs_are_duplicates_only_when_prompt_chosen_and_rejected_all_match():
    first = pairs()[0]
    respaced = {**first, "chosen": [{"role": "assistant", "content": first["chosen"][0]["content"] + " "}]}
    swapped = {**first, "chosen": first["rejected"], "rejected": first["chosen"]}
    same_prompt = {**first, "rejected": [{"role": "assistant", "content": "祝你生日快乐。"}]}
    notes = Counter()
    results = list(dedupe_records([first, dict(first), respaced, swapped, same_prompt], kind="preference",
                                  notes=notes))
    assert results == [first, Rejected(EXACT, "same as record 0"), Rejected(NEAR, "same as record 0"), swapped,
                       same_prompt]
    assert notes == Counter({SWAPPED: 1, SAME_PROMPT: 2})


def test_preference_exact_only_keeps_respaced_pairs_and_still_notes():
    first = pairs()[0]
    respaced = {**first, "rejected": [{"role": "assistant", "content": " 生日快乐。"}]}
    notes = Counter()
    assert list(dedupe_records([first, respaced], normalised=False, kind="preference", notes=notes)) == \
        [first, respaced]
    assert notes == Counter({SAME_PROMPT: 1})


def test_preference_keys():
    first = pairs()[0]
    assert preference_key(first) != preference_key({**first, "chosen": first["rejected"]})
    assert normalised_preference_key(first, swapped=True) == normalised_preference_key(
        {**first, "chosen": first["rejected"], "rejected": first["chosen"]})
    assert normalised_preference_key(first) != normalised_preference_key(first, swapped=True)
    # a role is part of a message: the same words from another role are another prompt
    other_role = {**first, "prompt": [{**m, "role": "user"} for m in first["prompt"]]}
    assert prompt_key(other_role) != prompt_key(first)
    assert prompt_key({"chosen": []}) is None and prompt_key(["x"]) is None
    assert normalised_preference_key({"prompt": "文本", "chosen": [], "rejected": []}) == \
        preference_key({"prompt": "文本", "chosen": [], "rejected": []})
    assert normalised_preference_key(["x"]) == preference_key(["x"]) == exact_key(["x"])
    assert prompt_key({"prompt": ["祝福！"]}) == prompt_key({"prompt": ["祝福"]})


def test_a_file_of_pairs_is_deduped_as_pairs_and_a_mixed_file_is_refused(tmp_path):
    records = pairs()[:2]  # two prompts: the fixture's later lines are its own copies of these
    src, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records + records[:1]), "utf-8")
    tally = dedupe_file(src, out)
    assert [r for _, r in iter_records(out)] == records
    assert (tally.read, tally.rejected) == (len(records) + 1, 1)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[:2] + wishes()[:1]), "utf-8")
    with pytest.raises(UserError, match=r"mixed.jsonl:2: a conversation record in a file of preference records"):
        dedupe_file(mixed, tmp_path / "mixed_out.jsonl")
    assert not (tmp_path / "mixed_out.jsonl").exists()


@pytest.mark.parametrize("field", ["system", "input", "output"])
def test_records_that_differ_in_one_field_only_are_not_duplicates(field):
    base = {"system": "你是祝福大师", "input": "祝姐姐生日", "output": "姐，生日快乐！"}
    other = {**base, field: base[field] + "再来一条"}
    a, b = {"conversation": [base]}, {"conversation": [other]}
    assert normalised_key(a) != normalised_key(b) and exact_key(a) != exact_key(b)
    assert list(dedupe_records([a, b])) == [a, b]


@pytest.mark.parametrize("field", ["prompt", "chosen", "rejected"])
def test_pairs_that_differ_in_one_part_only_are_not_duplicates(field):
    first = pairs()[0]
    other = {**first, field: [{**first[field][-1], "content": first[field][-1]["content"] + "再来"}]}
    assert preference_key(first) != preference_key(other)
    assert normalised_preference_key(first) != normalised_preference_key(other)
    notes = Counter()
    assert list(dedupe_records([first, other], kind="preference", notes=notes)) == [first, other]


def test_a_message_without_content_is_an_empty_one():
    bare = {"prompt": [{"role": "user"}], "chosen": [{"role": "assistant", "content": "好"}], "rejected": []}
    empty = {**bare, "prompt": [{"role": "user", "content": ""}]}
    assert normalised_preference_key(bare) == normalised_preference_key(empty)
    assert prompt_key(bare) == prompt_key(empty) != prompt_key({**bare, "prompt": [{"role": "user", "content": "x"}]})


def test_the_report_names_its_notes_in_words_and_counts_each_swap(tmp_path):
    first = pairs()[0]
    swapped = {**first, "chosen": first["rejected"], "rejected": first["chosen"]}
    other = {**first, "rejected": [{"role": "assistant", "content": "祝你生日快乐。"}]}
    src, report = tmp_path / "pairs.jsonl", tmp_path / "report.json"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [first, swapped, other, swapped]),
                   encoding="utf-8")
    dedupe_file(src, tmp_path / "out.jsonl", report=report)
    notes = json.loads(report.read_text(encoding="utf-8"))["notes"]
    assert notes == {"pair for a prompt seen before (kept)": 2,
                     "pair repeating an earlier one with chosen and rejected swapped (kept)": 1}
    notes = Counter()
    other_swapped = {**other, "chosen": other["rejected"], "rejected": other["chosen"]}
    list(dedupe_records([first, swapped, other, other_swapped], kind="preference", notes=notes, normalised=False))
    assert notes[SWAPPED] == 2


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_dedupe_is_quiet_unless_asked(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    dedupe_file(WISHES10, tmp_path / "quiet.jsonl")
    assert terminal.getvalue() == ""
    dedupe_file(WISHES10, tmp_path / "shown.jsonl", quiet=False)
    assert terminal.getvalue().startswith("\rdedupe shown.jsonl: ")
