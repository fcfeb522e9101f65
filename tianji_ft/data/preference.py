"""Preference records: the format XTuner's preference dataset reads (DPO, ORPO, reward models).

A record::

    {"prompt": [{"role": "system", "content": "你是天机……"},
                {"role": "user", "content": "给妈妈写一句生日祝福"}],
     "chosen": [{"role": "assistant", "content": "妈妈，生日快乐！……"}],
     "rejected": [{"role": "assistant", "content": "生日快乐。"}]}

``prompt`` is a conversation in OpenAI chat-message form that ends with a user
turn; ``chosen`` and ``rejected`` are the two answers to it, each a list of
assistant messages (one, usually). Other top-level keys (``judge``, ``meta``)
are allowed and ignored by XTuner. This module is the format's one home: its
validator and its constructor, and how the data tools tell a file of preference
records from a file of conversation records (:func:`sniff`): by the first
record that is plainly one or the other. A file holding both is refused
(:func:`mixed_error`): XTuner reads one format per dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tianji_ft.core.errors import UserError
from tianji_ft.data.reader import iter_records
from tianji_ft.data.schema import _json_type, lone_surrogate, record_problems, show, surrogate_problem

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")
CONVERSATION, PREFERENCE = "conversation", "preference"
SNIFF_RECORDS = 100  # records looked at to tell a file's format: a raw file is not read to its end


def is_preference(record: Any) -> bool:
    """Whether ``record`` is meant as a preference record (it has the three fields)."""
    return isinstance(record, dict) and all(key in record for key in PREFERENCE_FIELDS)


def record_kind(record: Any) -> str | None:
    """``"preference"`` for a record with any of prompt/chosen/rejected and no conversation,
    ``"conversation"`` for one with a conversation and none of those, None for anything else."""
    if not isinstance(record, dict):
        return None
    conversation = "conversation" in record
    preference = "prompt" in record or "chosen" in record or "rejected" in record
    if conversation != preference:
        return CONVERSATION if conversation else PREFERENCE
    return None


def sniff(path: str | Path, encoding: str = "utf-8") -> tuple[str, int | None]:
    """A file's format and the index of the record that shows it.

    The first of the first :data:`SNIFF_RECORDS` records whose kind is plain
    decides; a file without one is taken as conversation records (index None),
    whose validator says what a record lacks.
    """
    for index, record in iter_records(path, encoding):
        kind = record_kind(record)
        if kind is not None:
            return kind, index
        if index + 1 >= SNIFF_RECORDS:
            break
    return CONVERSATION, None


def validator(kind: str) -> Callable[[Any], list[str]]:
    """The one validator of records of ``kind``."""
    return preference_problems if kind == PREFERENCE else record_problems


def mixed_error(path: str | Path, index: int, kind: str, file_kind: str, first: int | None) -> UserError:
    """The one line for a record of the other format in a file."""
    shown = f" (record {first} is one)" if first is not None else ""
    return UserError(f"{path}:{index}: a {kind} record in a file of {file_kind} records{shown}; XTuner reads one "
                     "format per file: keep conversation and preference records in separate files")


def _message_problems(field: str, messages: Any, roles: tuple[str, ...]) -> list[str]:
    if isinstance(messages, str):  # a raw public row (UltraFeedback's prompt, HH-RLHF's transcripts)
        return [f"'{field}' is text, not a list of messages; convert the file first with 'tianji-ft data "
                "convert' (kinds ultrafeedback, hh-rlhf)"]
    if not isinstance(messages, list) or not messages:
        return [f"'{field}' must be a non-empty list of messages"]
    problems = []
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            problems.append(f"{where}: a JSON {_json_type(message)}, not a message object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in roles:
            problems.append(f"{where}: role {show(role)!r} where {' or '.join(roles)} is expected")
        if not isinstance(content, str):
            problems.append(f"{where}: 'content' is a JSON {_json_type(content)}, not text")
        elif not content.strip() and role != "system":
            problems.append(f"{where}: empty 'content'")
    return problems


def preference_problems(record: Any) -> list[str]:
    """What is wrong with ``record`` as a preference record (empty list: nothing)."""
    surrogate = lone_surrogate(record)
    problems = [surrogate_problem(*surrogate)] if surrogate else []
    if not isinstance(record, dict):
        return problems + [f"record is a JSON {_json_type(record)}, not an object"]
    missing = [key for key in PREFERENCE_FIELDS if key not in record]
    if missing:
        keys = ", ".join(map(show, record)) or "none"
        raw = any(isinstance(record.get(k), str) for k in PREFERENCE_FIELDS)  # e.g. HH-RLHF's transcripts
        todo = ("; convert the file first with 'tianji-ft data convert' (kinds ultrafeedback, hh-rlhf)" if raw
                else "")
        return problems + [f"missing {', '.join(repr(k) for k in missing)} (keys present: {keys}); a preference "
                           f"record has prompt, chosen and rejected message lists{todo}"]
    prompt = record["prompt"]
    problems += _message_problems("prompt", prompt, ROLES)
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict) and prompt[-1].get("role") != "user":
        problems.append("'prompt' must end with a user message")
    for field in ("chosen", "rejected"):
        problems += _message_problems(field, record[field], ("assistant",))
    if not problems and record["chosen"] == record["rejected"]:
        problems.append("'chosen' and 'rejected' are the same answer")
    return problems


def make_preference(prompt: list[dict], chosen: str, rejected: str, **extra: Any) -> dict:
    """A preference record for one prompt (message list ending with the user turn) and two answers."""
    record = {"prompt": [dict(m) for m in prompt],
              "chosen": [{"role": "assistant", "content": chosen}],
              "rejected": [{"role": "assistant", "content": rejected}]}
    record.update(extra)
    return record
