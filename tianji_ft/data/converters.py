"""Converters from public dataset formats into XTuner's conversation format.

Each is a generator ``f(rows, **options)`` yielding one result per input row:
a record ``{"conversation": [{"system"?, "input", "output"}, ...]}`` or a
``Rejected(reason)``. Use them from Python directly::

    from tianji_ft.data.converters import firefly
    for result in firefly([{"kind": "Couplet", "input": "上联：春风得意", "target": "下联：秋水长天"}]):
        print(result)

or through ``tianji-ft data convert KIND SRC... -o OUT``.

Text fields take text: a JSON string, or a number or boolean (written as its
text, as a spreadsheet cell would be: ``3`` -> ``"3"``); ``null`` is empty.
A JSON array or object where text is expected (a nested value) rejects the
record with the reason ``nested value in 'FIELD'``, in every converter: it
is never turned into training text (a Python or JSON dump of a structure
teaches the model to answer with one). The only lists read as text are the
ones a format defines: OpenAI content parts ``[{"type": "text", "text":
...}]`` and MSAgent's ``conversations`` string.

A record holding a lone surrogate (``"\\ud800"``, not valid Unicode) never
reaches a converter: the pipeline rejects it (reason ``lone surrogate``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable, Iterator

from tianji_ft.data.accounting import Reject, Rejected
from tianji_ft.data.registry import converter, rowwise
from tianji_ft.data.schema import record_problems, show
from tianji_ft.data.sources import as_text

DOCTOR_PROMPT = (
    "You are a professional, highly experienced doctor professor. You always provide accurate, "
    "comprehensive, and detailed answers based on the patients' questions."
)
PLACEHOLDER_ANSWERS = ("", "n/a", "na", "none", "no answer", "no answers", "unanswerable")


# ----------------------------------------------------------------- helpers

def require_object(row: Any) -> dict:
    if not isinstance(row, dict):
        kind = "array" if isinstance(row, list) else type(row).__name__
        raise Reject("not an object", f"the record is a JSON {kind}")
    return row


def nested_reject(name: str, value: Any, where: str = "") -> Reject:
    """The one rejection of a JSON array or object found where text is expected."""
    kind = "object" if isinstance(value, dict) else "array"
    return Reject(f"nested value in '{show(name)}'", f"{where}'{show(name)}' is a JSON {kind}, not text")


def text_of(value: Any, name: str, where: str = "") -> str:
    """``value`` as text (see the module docstring); a nested value rejects the row, naming ``name``."""
    if isinstance(value, (dict, list)):
        raise nested_reject(name, value, where)
    return as_text(value)


def check_turn_texts(turns: Iterable) -> None:
    """Reject turns whose system/input/output hold a nested value (before the schema check words it less plainly)."""
    for i, turn in enumerate(turns):
        if isinstance(turn, dict):
            for key in ("system", "input", "output"):
                if isinstance(turn.get(key), (dict, list)):
                    raise nested_reject(key, turn[key], f"turn {i}: ")


def field(row: dict, key: str) -> str:
    """``row[key]`` as text; a missing key or a nested value rejects the row."""
    if key not in row:
        raise Reject(f"missing field '{show(key)}'", f"fields present: {', '.join(map(show, row)) or 'none'}")
    return text_of(row[key], key)


def make_turn(inp: str, out: str, system: str | None = None) -> dict:
    if not inp.strip():
        raise Reject("empty input")
    if not out.strip():
        raise Reject("empty output")
    return {"system": system, "input": inp, "output": out} if system else {"input": inp, "output": out}


def pair_messages(messages: Iterable[tuple[str, str]], system: str | None = None,
                  notes: Counter | None = None) -> list[dict]:
    """Turn a message list into turns; roles are ``system``, ``user``, ``assistant``.

    A system message may only come first (it overrides ``system``). Users and
    assistants must alternate, starting with a user. A trailing user message
    without an answer is dropped and counted in ``notes``.
    """
    turns: list[dict] = []
    pending = None
    for i, (role, text) in enumerate(messages):
        if role == "system":
            if turns or pending is not None:
                raise Reject("roles out of order", f"message {i}: a system message after the first turn")
            system = text if text.strip() else system
        elif role == "user":
            if pending is not None:
                raise Reject("roles out of order", f"message {i}: two user messages in a row")
            pending = text
        elif role == "assistant":
            if pending is None:
                raise Reject("roles out of order", f"message {i}: an assistant message without a user message before it")
            turns.append(make_turn(pending, text, None if turns else system))
            pending = None
        else:
            raise Reject("unsupported role", f"message {i}: role {role!r}")
    if not turns:
        raise Reject("no answered turn")
    if pending is not None and notes is not None:
        notes["trailing unanswered turn dropped"] += 1
    return turns


def one_turn(rows: Iterable, input_key: str, output_key: str, system: str | None, convert_row) -> Iterator:
    """One-turn conversions: well-formed rows take a fast path, the rest
    ``convert_row`` (which raises :class:`Reject` with the precise reason)."""
    for row in rows:
        if row.__class__ is dict:
            inp, out = row.get(input_key), row.get(output_key)
            if inp.__class__ is str and out.__class__ is str and inp and out and not inp.isspace() and not out.isspace():
                turn = {"system": system, "input": inp, "output": out} if system else {"input": inp, "output": out}
                yield {"conversation": [turn]}
                continue
        try:
            yield convert_row(row)
        except Reject as err:
            yield Rejected(err.reason, err.detail)


def _system(system: str | None) -> str | None:
    return system if system and system.strip() else None


# --------------------------------------------------------------- converters

@converter("medqa", fields=lambda o: (o["question_col"], o["answer_col"]),
           hint="name the columns with --question-col / --answer-col")
def medqa(rows: Iterable, *, system: str | None = DOCTOR_PROMPT, question_col: str = "Question",
          answer_col: str = "Answer", placeholders: Iterable[str] = PLACEHOLDER_ANSWERS) -> Iterator:
    """MedQA-style question/answer tables (xlsx, csv) -> one-turn conversations.

    in:  {"Question": "布洛芬一天最多吃几次？", "Answer": "成人一般每日不超过4次……"}
    out: {"conversation": [{"system": "<doctor prompt>", "input": "布洛芬一天最多吃几次？", "output": "成人一般每日不超过4次……"}]}
    Placeholder answers (n/a, No answers, Unanswerable, ...) and exact duplicate
    (question, answer) pairs are rejected.
    """
    bad = {p.strip().casefold() for p in placeholders}
    longest = max(map(len, bad), default=0)
    # Python's keyed 64-bit hash of the pair: no copy of the texts is kept;
    # the odds of any false match among a million rows are about 1 in 30 million.
    seen: set[int] = set()
    system = _system(system)
    for row in rows:
        if row.__class__ is not dict or question_col not in row or answer_col not in row:
            try:
                field(require_object(row), question_col), field(row, answer_col)
            except Reject as err:
                yield Rejected(err.reason, err.detail)
                continue
        question, answer = row[question_col], row[answer_col]
        if question.__class__ is not str or answer.__class__ is not str:
            try:
                question, answer = text_of(question, question_col), text_of(answer, answer_col)
            except Reject as err:
                yield Rejected(err.reason, err.detail)
                continue
        # Only short or space-padded answers can be placeholders: long ones are not copied to strip them.
        trimmed = answer.strip() if len(answer) <= longest or answer[:1].isspace() or answer[-1:].isspace() else answer
        if not question or question.isspace():
            yield Rejected("empty question")
        elif not trimmed:
            yield Rejected("empty answer")
        elif len(trimmed) <= longest and trimmed.casefold() in bad:
            yield Rejected("placeholder answer", trimmed)
        else:
            key = hash((question, answer))
            if key in seen:
                yield Rejected("duplicate question and answer")
                continue
            seen.add(key)
            turn = {"system": system, "input": question, "output": answer} if system else {
                "input": question, "output": answer}
            yield {"conversation": [turn]}


@converter("firefly", fields=("input", "target"))
def firefly(rows: Iterable, *, system: str | None = None) -> Iterator:
    """YeungNLP/firefly-train-1.1M rows -> one-turn conversations.

    in:  {"kind": "Couplet", "input": "上联：春风得意马蹄疾\\n下联：", "target": "秋水无声雁影斜"}
    out: {"conversation": [{"input": "上联：春风得意马蹄疾\\n下联：", "output": "秋水无声雁影斜"}]}
    """
    system = _system(system)

    def one(row):
        row = require_object(row)
        return {"conversation": [make_turn(field(row, "input"), field(row, "target"), system)]}

    return one_turn(rows, "input", "target", system, one)


@converter("moss", fields=("conversation",))
def moss(rows: Iterable, *, system: str | None = None) -> Iterator:
    """moss-003-sft rows (multi-turn human/assistant) -> multi-turn conversations.

    in:  {"conversation_id": 1, "conversation": [{"human": "你好", "assistant": "你好！有什么可以帮你？"},
                                                 {"human": "讲个笑话", "assistant": "……"}]}
    out: {"conversation": [{"input": "你好", "output": "你好！有什么可以帮你？"}, {"input": "讲个笑话", "output": "……"}]}
    """
    system = _system(system)

    def one(row):
        turns = require_object(row).get("conversation")
        if not isinstance(turns, list) or not turns:
            raise Reject("no turns", "'conversation' is not a non-empty list")
        out = []
        for turn in turns:
            if not isinstance(turn, dict):
                raise Reject("malformed turn", "a turn is not an object")
            out.append(make_turn(field(turn, "human"), field(turn, "assistant"), None if out else system))
        return {"conversation": out}

    return rowwise(rows, one)


@converter("alpaca", fields=("instruction", "output"))
def alpaca(rows: Iterable, *, system: str | None = None) -> Iterator:
    """Alpaca-style rows (alpaca_zh, BELLE, school_math, ruozhiba) -> conversations.

    in:  {"instruction": "把下面的句子翻译成英文", "input": "今天天气很好", "output": "The weather is nice today."}
    out: {"conversation": [{"input": "把下面的句子翻译成英文\\n今天天气很好", "output": "The weather is nice today."}]}
    ``input`` is optional (ruozhiba has none). A row's own ``system`` field and
    a ``history`` of [question, answer] pairs (LLaMA-Factory's layout) become
    the system prompt and the earlier turns.
    """
    default_system = _system(system)

    def one(row):
        row = require_object(row)
        instruction, extra = field(row, "instruction"), text_of(row.get("input"), "input")
        question = "\n".join(part for part in (instruction, extra) if part.strip())
        sys_text = _system(text_of(row.get("system"), "system")) or default_system
        turns = []
        history = row.get("history") or []
        if not isinstance(history, list):
            raise Reject("malformed history", "'history' is not a list of [question, answer] pairs")
        for i, pair in enumerate(history):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise Reject("malformed history", "a history entry is not a [question, answer] pair")
            turns.append(make_turn(text_of(pair[0], "history", f"entry {i}: "), text_of(pair[1], "history", f"entry {i}: "),
                                   None if turns else sys_text))
        turns.append(make_turn(question, field(row, "output"), None if turns else sys_text))
        return {"conversation": turns}

    return rowwise(rows, one)


_GUANACO_MARK = re.compile(r"###\s*(Human|Assistant)\s*:")


@converter("guanaco", fields=("text",))
def guanaco(rows: Iterable, *, system: str | None = None, notes: Counter | None = None) -> Iterator:
    """openassistant-guanaco / oasst1 text -> multi-turn conversations.

    in:  {"text": "### Human: 什么是光合作用？### Assistant: 植物利用光能……### Human: 谢谢"}
    out: {"conversation": [{"input": "什么是光合作用？", "output": "植物利用光能……"}]}
    Only ``### Human:`` / ``### Assistant:`` split turns (a markdown ``### Step 1``
    heading inside an answer does not). A trailing Human turn without an answer
    is dropped and counted.
    """
    system = _system(system)

    def one(row):
        parts = _GUANACO_MARK.split(field(require_object(row), "text"))
        if len(parts) == 1:
            raise Reject("no '### Human:' markers")
        if parts[0].strip():
            raise Reject("text before the first '### Human:'", parts[0][:80])
        roles = ("user" if role == "Human" else "assistant" for role in parts[1::2])
        return {"conversation": pair_messages(zip(roles, (p.strip() for p in parts[2::2])), system, notes)}

    return rowwise(rows, one)


_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user",
                   "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant"}


@converter("sharegpt", fields=("conversations",))
def sharegpt(rows: Iterable, *, system: str | None = None, notes: Counter | None = None) -> Iterator:
    """ShareGPT rows -> multi-turn conversations.

    in:  {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}
    out: {"conversation": [{"input": "你好", "output": "你好！"}]}
    A leading ``system`` message becomes the system prompt; tool roles are rejected.
    """
    system = _system(system)

    def one(row):
        messages = require_object(row).get("conversations")
        own = text_of(row.get("system"), "system")
        sys_text = own if own.strip() else system
        return {"conversation": pair_messages(_messages(messages, "from", "value", _SHAREGPT_ROLES), sys_text, notes)}

    return rowwise(rows, one)


@converter("openai", fields=("messages",))
def openai(rows: Iterable, *, system: str | None = None, notes: Counter | None = None) -> Iterator:
    """OpenAI chat rows -> multi-turn conversations.

    in:  {"messages": [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "1+1=?"},
                       {"role": "assistant", "content": "2"}]}
    out: {"conversation": [{"system": "你是助手", "input": "1+1=?", "output": "2"}]}
    ``content`` may be a list of ``{"type": "text", "text": ...}`` parts.
    """
    system = _system(system)
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

    def one(row):
        messages = require_object(row).get("messages")
        return {"conversation": pair_messages(_messages(messages, "role", "content", roles), system, notes)}

    return rowwise(rows, one)


def _messages(messages: Any, role_key: str, text_key: str, roles: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise Reject("no messages", "the message list is missing or empty")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise Reject("malformed message", f"message {i} is not an object")
        role = msg.get(role_key, "")
        role = roles.get(role.lower()) if isinstance(role, str) else None
        if role is None:
            raise Reject("unsupported role", f"message {i}: role {show(repr(msg.get(role_key)))}")
        yield role, _content_text(msg.get(text_key), i, text_key)


def _content_text(content: Any, i: int, key: str) -> str:
    if isinstance(content, list):  # OpenAI content parts
        if not all(isinstance(part, dict) and "type" in part for part in content):  # not parts: a nested value
            raise nested_reject(key, content, f"message {i}: ")
        texts = []
        for part in content:
            if part.get("type") != "text":
                raise Reject("non-text content", f"message {i} has a non-text part")
            texts.append(text_of(part.get("text"), key, f"message {i}: a part's 'text' in "))
        return "".join(texts)
    return text_of(content, key, f"message {i}: ")


@converter("generic", fields=lambda o: tuple(c for c in (o["input_col"], o["output_col"], o["system_col"]) if c),
           hint="name the columns with --input-col / --output-col / --system-col")
def generic(rows: Iterable, *, input_col: str = "input", output_col: str = "output",
            system_col: str | None = None, system: str | None = None) -> Iterator:
    """Any JSON/JSONL/CSV/XLSX with an input and an output column -> one-turn conversations.

    in:  {"问题": "高血压要注意什么？", "回答": "少盐、规律服药……"}   (--input-col 问题 --output-col 回答)
    out: {"conversation": [{"input": "高血压要注意什么？", "output": "少盐、规律服药……"}]}
    The system prompt comes from ``system_col`` when that cell is not empty, else ``system``.
    """
    system = _system(system)

    def one(row):
        row = require_object(row)
        sys_text = _system(field(row, system_col)) if system_col else None
        return {"conversation": [make_turn(field(row, input_col), field(row, output_col), sys_text or system)]}

    return rowwise(rows, one) if system_col else one_turn(rows, input_col, output_col, system, one)


@converter("conversation", fields=("conversation",))
def conversation(rows: Iterable) -> Iterator:
    """Already-converted records: validated and passed through (only ``conversation`` kept).

    in:  {"conversation": [{"input": "你好", "output": "你好！"}], "id": 7}
    out: {"conversation": [{"input": "你好", "output": "你好！"}]}
    """

    def one(row):
        if isinstance(row, dict) and isinstance(row.get("conversation"), list):
            check_turn_texts(row["conversation"])
        problems = record_problems(row)
        if problems:
            raise Reject("invalid record", "; ".join(problems))
        return {"conversation": row["conversation"]}

    return rowwise(rows, one)


def ok_records(results: Iterable) -> Iterator[dict]:
    """Only the records from a converter's results (drop the Rejected)."""
    return (r for r in results if not isinstance(r, Rejected))

