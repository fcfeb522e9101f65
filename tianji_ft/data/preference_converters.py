"""Converters from public preference-data shapes into preference records.

Each is a generator ``f(rows, **options)`` yielding one result per input row,
like the conversation converters (:mod:`tianji_ft.data.converters`): a record
made by :func:`tianji_ft.data.preference.make_preference` (prompt / chosen /
rejected message lists, as XTuner's preference dataset reads), or a
``Rejected(reason)``. Every record written passes
:func:`~tianji_ft.data.preference.preference_problems`. Text follows the
conversation converters' rules: a JSON array or object where text is expected
rejects the record (``nested value in 'FIELD'``); OpenAI content parts are text.

A converter sees one row at a time, so a pair lives in one row: two files of
answers are not paired by position (a file that lost a line would pair every
later answer with the wrong prompt).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator

from tianji_ft.data.accounting import Reject
from tianji_ft.data.converters import _messages, check_turn_texts, field, nested_reject, require_object, text_of
from tianji_ft.data.preference import PREFERENCE, PREFERENCE_FIELDS, make_preference, preference_problems
from tianji_ft.data.registry import converter, rowwise
from tianji_ft.data.schema import show

_ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
          "gpt": "assistant"}


def _system(system: str | None) -> str | None:
    return system if system and system.strip() else None


def _finish(prompt: list[dict], chosen: str, rejected: str, system: str | None) -> dict:
    """The record, with ``system`` first when the prompt has none; checked by the format's validator."""
    if system and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system}, *prompt]
    for i, message in enumerate(prompt):
        if not message["content"].strip() and message["role"] != "system":
            raise Reject("empty turn", f"prompt message {i} ({message['role']}) is empty")
    if not chosen.strip() or not rejected.strip():
        raise Reject("empty answer", f"the {'chosen' if not chosen.strip() else 'rejected'} answer is empty")
    if chosen == rejected:
        raise Reject("same answer", "chosen and rejected are the same text")
    record = make_preference(prompt, chosen, rejected)
    problems = preference_problems(record)
    if problems:
        raise Reject("invalid record", "; ".join(problems))
    return record


def _message_list(value: Any, name: str) -> list[dict]:
    """A message list as ``[{"role", "content"}]`` with the roles named as OpenAI names them."""
    try:
        return [{"role": role, "content": text} for role, text in _messages(value, "role", "content", _ROLES)]
    except Reject as err:
        raise Reject(err.reason, f"'{name}': {err.detail}") from None


def _split_answer(messages: list[dict], name: str) -> tuple[list[dict], str]:
    """``(the turns before the last answer, the last answer)``."""
    if messages[-1]["role"] != "assistant":
        raise Reject("no answer", f"'{name}' does not end with an assistant message")
    return messages[:-1], messages[-1]["content"]


def _score(row: dict, key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Reject("malformed score", f"'{key}' is {show(repr(value))[:40]}, not a number")
    return value


@converter("ultrafeedback", fields=("chosen", "rejected"), produces=PREFERENCE,
           hint="UltraFeedback-style rows have 'chosen' and 'rejected' (message lists, or answers with a 'prompt')")
def ultrafeedback(rows: Iterable, *, system: str | None = None) -> Iterator:
    """UltraFeedback-binarized-style rows (HuggingFaceH4/ultrafeedback_binarized, orpo-dpo-mix) -> preference records.

    in:  {"prompt": "给妈妈写一句生日祝福", "score_chosen": 9.0, "score_rejected": 4.0,
          "chosen": [{"role": "user", "content": "给妈妈写一句生日祝福"}, {"role": "assistant", "content": "妈妈，生日快乐！"}],
          "rejected": [{"role": "user", "content": "给妈妈写一句生日祝福"}, {"role": "assistant", "content": "生日快乐。"}]}
    out: {"prompt": [{"role": "user", "content": "给妈妈写一句生日祝福"}],
          "chosen": [{"role": "assistant", "content": "妈妈，生日快乐！"}],
          "rejected": [{"role": "assistant", "content": "生日快乐。"}]}
    chosen and rejected share the turns before their last answer (the prompt,
    multi-turn too); a row whose shared turns differ is rejected. chosen and
    rejected may instead be the answers alone (a message list of one
    assistant message, or text) beside a 'prompt' text. 'messages' and other
    fields are not read; scores, when given, must rank chosen above rejected.
    """
    system = _system(system)

    def one(row):
        row = require_object(row)
        chosen_score, rejected_score = _score(row, "score_chosen"), _score(row, "score_rejected")
        if chosen_score is not None and rejected_score is not None and chosen_score <= rejected_score:
            raise Reject("chosen not scored above rejected",
                         f"score_chosen {chosen_score}, score_rejected {rejected_score}")
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if not isinstance(chosen, list) and not isinstance(rejected, list):  # answers as text beside a prompt
            field(row, "chosen"), field(row, "rejected")  # a missing one or a nested value rejects the row
            answers = text_of(chosen, "chosen"), text_of(rejected, "rejected")
            return _finish(_prompt_text(row), *answers, system)
        if not isinstance(chosen, list) or not isinstance(rejected, list):
            raise Reject("chosen and rejected differ in shape",
                         f"'{'rejected' if isinstance(chosen, list) else 'chosen'}' is not a message list")
        chosen_turns, chosen_answer = _split_answer(_message_list(chosen, "chosen"), "chosen")
        rejected_turns, rejected_answer = _split_answer(_message_list(rejected, "rejected"), "rejected")
        if chosen_turns != rejected_turns:
            raise Reject("prompts differ", _first_difference(chosen_turns, rejected_turns))
        prompt = chosen_turns or _prompt_text(row)
        if prompt[-1]["role"] != "user":
            raise Reject("no user turn before the answers", "the turns before the answers end with a "
                         f"{prompt[-1]['role']} message")
        return _finish(prompt, chosen_answer, rejected_answer, system)

    return rowwise(rows, one)


def _prompt_text(row: dict) -> list[dict]:
    """The row's ``prompt`` text as a one-message prompt."""
    if "prompt" not in row:
        raise Reject("no prompt", "chosen and rejected hold only the answers and the row has no 'prompt'")
    prompt = field(row, "prompt")
    if not prompt.strip():
        raise Reject("empty prompt")
    return [{"role": "user", "content": prompt}]


def _first_difference(a: list[dict], b: list[dict]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"message {i} differs between chosen and rejected"
    return f"chosen has {len(a)} message(s) before its answer, rejected {len(b)}"


_HH_MARK = re.compile(r"(?:^|\n\n)(Human|Assistant):")


def _transcript(text: str, name: str) -> list[dict]:
    parts = _HH_MARK.split(text)
    if len(parts) == 1:
        raise Reject("no 'Human:' turn", f"'{name}' has no '\\n\\nHuman:' marker")
    if parts[0].strip():
        raise Reject("text before the first turn", f"'{name}': {show(parts[0][:60])}")
    messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        role = "user" if role == "Human" else "assistant"
        if messages and messages[-1]["role"] == role:
            raise Reject("roles out of order", f"'{name}': two {role} turns in a row")
        if not messages and role != "user":
            raise Reject("roles out of order", f"'{name}' starts with an Assistant turn")
        messages.append({"role": role, "content": content.strip()})
    return messages


@converter("hh-rlhf", fields=("chosen", "rejected"), produces=PREFERENCE,
           hint="HH-RLHF rows have 'chosen' and 'rejected' transcripts ('\\n\\nHuman: ...\\n\\nAssistant: ...')")
def hh_rlhf(rows: Iterable, *, system: str | None = None) -> Iterator:
    """Anthropic HH-RLHF-style rows (chosen/rejected transcripts sharing a prefix) -> preference records.

    in:  {"chosen": "\\n\\nHuman: 给老师写一句教师节祝福\\n\\nAssistant: 老师，节日快乐！感谢您的教导。",
          "rejected": "\\n\\nHuman: 给老师写一句教师节祝福\\n\\nAssistant: 不知道。"}
    out: {"prompt": [{"role": "user", "content": "给老师写一句教师节祝福"}],
          "chosen": [{"role": "assistant", "content": "老师，节日快乐！感谢您的教导。"}],
          "rejected": [{"role": "assistant", "content": "不知道。"}]}
    The turns before the last Assistant answer are the prompt; a row whose two
    transcripts differ before it is rejected (reason 'prompts differ'), as is
    one whose last turn is not an Assistant answer, or is empty.
    """
    system = _system(system)

    def one(row):
        row = require_object(row)
        chosen_turns, chosen = _split_answer(_transcript(field(row, "chosen"), "chosen"), "chosen")
        rejected_turns, rejected = _split_answer(_transcript(field(row, "rejected"), "rejected"), "rejected")
        if chosen_turns != rejected_turns:
            raise Reject("prompts differ", _first_difference(chosen_turns, rejected_turns))
        return _finish(chosen_turns, chosen, rejected, system)

    return rowwise(rows, one)


@converter("conversation-pairs", fields=("conversation",), produces=PREFERENCE,
           hint="conversation-pairs rows are conversation records whose last turn has 'chosen' (or 'output') "
                "and 'rejected'")
def conversation_pairs(rows: Iterable, *, system: str | None = None) -> Iterator:
    """Conversation records whose last turn holds two answers -> preference records.

    in:  {"conversation": [{"system": "你是送祝福大师", "input": "祝姐姐生日快乐", "output": "姐，生日快乐！"},
                           {"input": "再长一点", "chosen": "姐姐，生日快乐！愿你被温柔以待。", "rejected": "好的。"}]}
    out: {"prompt": [{"role": "system", "content": "你是送祝福大师"}, {"role": "user", "content": "祝姐姐生日快乐"},
                     {"role": "assistant", "content": "姐，生日快乐！"}, {"role": "user", "content": "再长一点"}],
          "chosen": [{"role": "assistant", "content": "姐姐，生日快乐！愿你被温柔以待。"}],
          "rejected": [{"role": "assistant", "content": "好的。"}]}
    Earlier turns are the history, as in any conversation record. In the last
    turn 'output' may stand for 'chosen' (an SFT record plus a worse answer).
    The first turn's 'system' is the system prompt (else --system).
    """
    system = _system(system)

    def one(row):
        turns = require_object(row).get("conversation")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
            raise Reject("no turns", "'conversation' is not a non-empty list of turn objects")
        *history, last = turns
        check_turn_texts(history)
        prompt = []
        for i, turn in enumerate(history):
            prompt += _turn_messages(turn, i, text_of(turn.get("output"), "output", f"turn {i}: "))
        if "chosen" in last and "output" in last:
            raise Reject("two chosen answers", "the last turn has both 'chosen' and 'output'")
        chosen_key = "chosen" if "chosen" in last else "output"
        if chosen_key not in last or "rejected" not in last:
            raise Reject("no pair in the last turn", f"the last turn's keys: {', '.join(map(show, last)) or 'none'}; "
                         "it needs 'chosen' (or 'output') and 'rejected'")
        i = len(history)
        chosen = text_of(last[chosen_key], chosen_key, f"turn {i}: ")
        rejected = text_of(last["rejected"], "rejected", f"turn {i}: ")
        prompt += _turn_messages(last, i, None)
        return _finish(prompt, chosen, rejected, system)

    return rowwise(rows, one)


def _turn_messages(turn: dict, i: int, output: str | None) -> list[dict]:
    """A turn's system (the first turn's, or a later tool turn's), input and output as messages."""
    messages = []
    sys_text = text_of(turn.get("system"), "system", f"turn {i}: ")
    if sys_text.strip():
        messages.append({"role": "system", "content": sys_text})
    inp = text_of(turn.get("input"), "input", f"turn {i}: ")
    if not inp.strip():
        raise Reject("empty input", f"turn {i}")
    messages.append({"role": "user", "content": inp})
    if output is not None:
        if not output.strip():
            raise Reject("empty output", f"turn {i}")
        messages.append({"role": "assistant", "content": output})
    return messages


@converter("preference", fields=PREFERENCE_FIELDS, produces=PREFERENCE,
           hint="preference records have prompt, chosen and rejected message lists; other shapes convert with "
                "ultrafeedback, hh-rlhf or conversation-pairs")
def preference(rows: Iterable) -> Iterator:
    """Preference records already in XTuner's format: validated and passed through (the three fields kept).

    in:  {"prompt": [{"role": "user", "content": "祝姐姐生日快乐"}], "chosen": [{"role": "assistant", "content": "姐，生日快乐！"}],
          "rejected": [{"role": "assistant", "content": "生日快乐"}], "judge": {"reason": "更贴心"}}
    out: {"prompt": [{"role": "user", "content": "祝姐姐生日快乐"}], "chosen": [{"role": "assistant", "content": "姐，生日快乐！"}],
          "rejected": [{"role": "assistant", "content": "生日快乐"}]}
    For mixing preference sets (``tianji-ft data mix``) and checking a file into a clean copy.
    """

    def one(row):
        for key in PREFERENCE_FIELDS if isinstance(row, dict) else ():
            for i, message in enumerate(row[key] if isinstance(row.get(key), list) else ()):
                if isinstance(message, dict) and isinstance(message.get("content"), (dict, list)):
                    raise nested_reject("content", message["content"], f"{key}[{i}]: ")
        problems = preference_problems(row)
        if problems:
            raise Reject("invalid record", "; ".join(problems))
        return {key: row[key] for key in PREFERENCE_FIELDS}

    return rowwise(rows, one)
