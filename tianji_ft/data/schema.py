"""XTuner's single-file conversation format: the record and its one validator.

A record::

    {"conversation": [
        {"system": "你是一位医生", "input": "头疼怎么办？", "output": "先休息……"},
        {"input": "还是疼呢？", "output": "请及时就医。"}
    ]}

``system`` is optional. In the first turn it is the system prompt. A later
turn may carry one too: XTuner renders it as a system message before that
turn's input, which is how MS-Agent tool responses are trained
(``msagent_react_map_fn`` produces such turns); such a turn may have an empty
``input``. Every other turn needs a non-empty ``input``, and every turn a
non-empty ``output``. Keys other than ``conversation`` at the top level are
allowed (XTuner ignores them); keys other than system/input/output inside a
turn are not.

Text must be Unicode: a string holding a lone surrogate (a ``\\ud800``
escape without its pair, which JSON parsers accept but no UTF-8 file or
tokenizer can hold) makes the record invalid (:func:`lone_surrogate`).
NUL and U+10FFFF are ordinary characters. Files are read by
:mod:`tianji_ft.data.reader` and written by :mod:`tianji_ft.data.writer`.
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

from tianji_ft.core.jsonfast import encodes

TURN_KEYS = frozenset(("system", "input", "output"))
JSON_SUFFIXES = (".jsonl", ".json")


class Turn(TypedDict, total=False):
    system: str
    input: str
    output: str


def record_problems(record: Any) -> list[str]:
    """What is wrong with ``record`` as a conversation record (empty list: nothing)."""
    surrogate = lone_surrogate(record)
    problems = [surrogate_problem(*surrogate)] if surrogate else []
    if not isinstance(record, dict):
        return problems + [f"record is a JSON {_json_type(record)}, not an object"]
    conv = record.get("conversation")
    if conv is None:
        keys = ", ".join(map(show, record)) or "none"
        return problems + [f"missing 'conversation' (keys present: {keys}); convert it first with 'tianji-ft data convert'"]
    if not isinstance(conv, list) or not conv:
        return problems + ["'conversation' must be a non-empty list of turns"]
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            problems.append(f"turn {i}: a JSON {_json_type(turn)}, not an object")
            continue
        unknown = [k for k in turn if k not in TURN_KEYS]
        if unknown:
            problems.append(f"turn {i}: unknown key(s) {', '.join(repr(show(k)) for k in unknown)}; "
                            "allowed: system, input, output")
        for key in ("system", "input", "output"):
            if key in turn and not isinstance(turn[key], str):
                problems.append(f"turn {i}: '{key}' is a JSON {_json_type(turn[key])}, not text")
        if "output" not in turn:
            problems.append(f"turn {i}: missing 'output'")
        elif isinstance(turn["output"], str) and not turn["output"].strip():
            problems.append(f"turn {i}: empty 'output'")
        has_system = isinstance(turn.get("system"), str) and turn["system"].strip()
        if "input" not in turn:
            problems.append(f"turn {i}: missing 'input'")
        elif isinstance(turn["input"], str) and not turn["input"].strip() and not has_system:
            problems.append(f"turn {i}: empty 'input'")
    return problems


_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters that would break a one-line message: controls, line and paragraph
# separators, and lone surrogates (which cannot even be printed).
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def show(text: Any) -> str:
    """``text`` safe inside a one-line message: control characters, line
    separators and lone surrogates written as escapes (Chinese stays readable)."""
    text = text if isinstance(text, str) else str(text)
    return _UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def lone_surrogate(value: Any) -> tuple[str, str] | None:
    """Where a parsed JSON value holds a lone surrogate, and which one:
    ``("conversation[0].input", "\\ud800")``; None when it holds none.

    JSON text may spell one (``"\\ud800"``) and Python's parser accepts it,
    but it is not a character: it cannot be written as UTF-8, and tokenizers
    refuse it. Looking costs a fraction of a microsecond for the usual record.
    """
    if encodes(value):
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found:
                return where or "the record", f"\\u{ord(found.group()):04x}"
        elif isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and (found := _SURROGATE.search(key)):
                    return f"{where + ' ' if where else ''}key '{show(key)}'", f"\\u{ord(found.group()):04x}"
            for key, sub in reversed(list(item.items())):
                name = show(key)
                stack.append((sub, f"{where}.{name}" if where else name))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, f"{where}[{i}]") for i, sub in reversed(list(enumerate(item))))
    return None


def surrogate_problem(where: str, char: str) -> str:
    """The one wording of a lone surrogate, for a problem line or a reject's detail."""
    return (f"{where}: text with a lone surrogate ({char}, half of a UTF-16 pair), which is not valid Unicode; "
            "fix or remove it at the source")


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__
