"""Tianji wishes data: merge the generator's files, then clean them.

``wishes_merge`` (``tianji-ft data convert wishes-merge FOLDER -o OUT``)
streams every record of every file into one dataset keeping each turn's
system/input/output. The generator writes extra keys (``meta`` beside the
conversation; ``src_input`` / ``style_name`` inside a turn): they are left
out of the training file and counted in the report's notes, never dropped
unseen. Records in the v0.2 layout (instruction/input/output) are accepted
too.

``clean_record`` applies the second-pass rules. Each rule is named and can
be switched off (``peer_pronoun`` is off unless asked for). The rewriting
rules run until nothing changes, and the filters run on the result, so a
second run over cleaned data changes nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

from tianji_ft.data.accounting import Reject, Tally
from tianji_ft.data.converters import check_turn_texts, text_of
from tianji_ft.data.preference import PREFERENCE, sniff
from tianji_ft.data.registry import converter, rowwise
from tianji_ft.data.reader import check_encoding, iter_records
from tianji_ft.data.schema import record_problems
from tianji_ft.data.sources import as_text
from tianji_ft.core.errors import UserError


@converter("wishes-merge")
def wishes_merge(rows: Iterable, *, system: str | None = None, notes: Counter | None = None) -> Iterator:
    """Tianji wishes generator output (JSON arrays / JSONL) -> one conversation dataset.

    in:  {"conversation": [{"system": "你现在是一个送祝福大师…", "input": "祝姐姐生日", "output": "姐，生日快乐！…",
                            "src_input": "<prompt>", "style_name": "小红书"}], "meta": {"style": "小红书"}}
    out: {"conversation": [{"system": "你现在是一个送祝福大师…", "input": "祝姐姐生日", "output": "姐，生日快乐！…"}]}
    ``system`` fills in turns 0 that have none.
    """

    def one(row):
        if not isinstance(row, dict):
            raise Reject("not an object")
        if "conversation" not in row and "instruction" in row:  # v0.2 layout
            question = text_of(row["instruction"], "instruction")
            extra = text_of(row.get("input"), "input")
            row = {"conversation": [{"input": f"{question}\n{extra}" if extra.strip() else question,
                                     "output": text_of(row.get("output"), "output")}]}
        turns = row.get("conversation")
        if not isinstance(turns, list):
            raise Reject("not a conversation record", f"keys: {', '.join(row)}")
        kept = []
        for turn in turns:
            if not isinstance(turn, dict):
                raise Reject("invalid record", "a turn is not an object")
            kept.append({k: turn[k] for k in ("system", "input", "output") if k in turn})
            if notes is not None:
                for key in turn.keys() - {"system", "input", "output"}:
                    notes[f"turn key '{key}' left out"] += 1
        if notes is not None:
            for key in row.keys() - {"conversation"}:
                notes[f"record key '{key}' left out"] += 1
        if kept and system and not kept[0].get("system"):  # none, or an empty one
            kept[0] = {"system": system, **{k: v for k, v in kept[0].items() if k != "system"}}
        check_turn_texts(kept)
        problems = record_problems({"conversation": kept})
        if problems:
            raise Reject("invalid record", "; ".join(problems))
        return {"conversation": kept}

    return rowwise(rows, one)


# ------------------------------------------------------------------ cleaning

# Replies about the task instead of a wish: anywhere in the text, or as its opening.
NON_ANSWER_PHRASES = ("当前祝福语如下", "祝福语如下", "作为一个人工智能", "作为一个AI", "作为AI", "我是一个AI")
NON_ANSWER_OPENINGS = ("以下是", "好的", "当然", "很抱歉", "抱歉", "对不起", "请提供")
PEER_TERMS = ("姐姐", "妹妹", "哥哥", "弟弟", "堂兄", "堂弟", "堂姐", "堂妹", "堂哥", "表哥", "表弟", "表姐", "表妹",
              "同学", "同事", "邻居")
# "邻居赵大妈" is a neighbour but an elder: keep the respectful 您.
ELDER_TERMS = ("大妈", "大爷", "阿姨", "叔叔", "伯伯", "奶奶", "爷爷", "老师", "领导")
PARTICLES = "啦哦呀呢吧嘛喔噢哟咯哇呐啊"
_END_PUNCT = "。！？!?.~～…"
# Emoji and pictographs that may close a wish after its particle (🎉, ❤️, 👍🏻, 🇨🇳, ✨, ☀️ ...), with the
# joiners, variation selectors and keycaps that build them, and spaces between them.
_EMOJI = ("\U0001F000-\U0001FAFF\u2190-\u21FF\u2300-\u23FF\u24C2\u25A0-\u27BF\u2900-\u297F\u2B00-\u2BFF"
          "\u3030\u303D\u3297\u3299\u00A9\u00AE\u203C\u2049\u2122\u2139\u200D\u20E3\uFE0E\uFE0F"
          "\U000E0020-\U000E007F")
_PARTICLE_AFTER_PUNCT = re.compile(f"([{_END_PUNCT}]+)([{PARTICLES}]+)([{_END_PUNCT}]*)([{_EMOJI}\\s]*)$")
_LEADING_PUNCT = re.compile(r"^[\s，。、；：！？,.;:!?~～·…—\-]+")
_QUOTES = (('"', '"'), ("“", "”"), ("'", "'"), ("‘", "’"), ("「", "」"), ("『", "』"))


def first_line(text: str, turn: dict) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0].strip() if len(lines) > 1 else text


def wrapping_quotes(text: str, turn: dict) -> str:
    stripped = text.strip()
    for left, right in _QUOTES:
        inner = stripped[1:-1]
        if len(stripped) > 2 and stripped[0] == left and stripped[-1] == right and left not in inner and right not in inner:
            return inner.strip()
    return text


def leading_punct(text: str, turn: dict) -> str:
    return _LEADING_PUNCT.sub("", text)


def particle_after_punct(text: str, turn: dict) -> str:
    """``快乐！啦~`` -> ``快乐啦~``; ``健康。哦！`` -> ``健康哦！``; ``开心！呀`` -> ``开心呀！``.

    Emoji after the particle stay at the end: ``快乐！啦🎉`` -> ``快乐啦！🎉``.
    """
    stripped = text.rstrip()
    m = _PARTICLE_AFTER_PUNCT.search(stripped)
    if not m:
        return text
    return stripped[:m.start()] + m.group(2) + (m.group(3) or m.group(1)) + m.group(4)


def peer_pronoun(text: str, turn: dict) -> str:
    addressee = as_text(turn.get("input"))
    if "您" in text and any(t in addressee for t in PEER_TERMS) and not any(t in addressee for t in ELDER_TERMS):
        return text.replace("您", "你")
    return text


def non_answer(text: str, turn: dict, min_length: int) -> str | None:
    hit = next((p for p in NON_ANSWER_PHRASES if p in text), None)
    hit = hit or next((p for p in NON_ANSWER_OPENINGS if text.lstrip().startswith(p)), None)
    return f"non-answer ({hit})" if hit else None


def too_short(text: str, turn: dict, min_length: int) -> str | None:
    return f"output shorter than {min_length} characters" if len(text.strip()) < min_length else None


REWRITES: dict[str, Callable[[str, dict], str]] = {
    "first_line": first_line, "wrapping_quotes": wrapping_quotes, "leading_punct": leading_punct,
    "particle_after_punct": particle_after_punct, "peer_pronoun": peer_pronoun,
}
FILTERS: dict[str, Callable[[str, dict, int], str | None]] = {"non_answer": non_answer, "min_length": too_short}
RULES = tuple(REWRITES) + tuple(FILTERS)
DEFAULT_RULES = tuple(r for r in RULES if r != "peer_pronoun")


def clean_record(record: dict, rules: Iterable[str] = DEFAULT_RULES, min_length: int = 10,
                 notes: Counter | None = None) -> dict:
    """A cleaned copy of ``record``; raises :class:`Reject` when a filter fails."""
    rules = set(rules)
    problems = record_problems(record)
    if problems:
        raise Reject("invalid record", "; ".join(problems))
    turns = []
    for turn in record["conversation"]:
        text = turn["output"]
        applied = set()
        for _ in range(10):  # to a fixed point: one rule can expose work for another
            before = text
            for name, rule in REWRITES.items():
                if name in rules:
                    changed = rule(text, turn)
                    if changed != text:
                        applied.add(name)
                    text = changed
            if text == before:
                break
        if notes is not None:
            notes.update(f"{name} applied" for name in applied)
        for name, check in FILTERS.items():
            if name in rules and (reason := check(text, turn, min_length)):
                raise Reject(reason.split(" (")[0], reason)
        turns.append({**turn, "output": text})
    return {**record, "conversation": turns}


def check_rules(rules: Iterable[str]) -> tuple[str, ...]:
    rules = tuple(rules)
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise UserError(f"unknown rule(s) {', '.join(unknown)}; rules: {', '.join(RULES)}")
    return rules


def clean_wishes(rows: Iterable, *, rules: Iterable[str] = DEFAULT_RULES, min_length: int = 10,
                 notes: Counter | None = None) -> Iterator:
    """Records in, cleaned records or ``Rejected`` out (one result per record)."""
    rules = check_rules(rules)
    return rowwise(rows, lambda row: clean_record(row, rules, min_length, notes))


def clean_file(path: str | Path, out: str | Path, *, rules: Iterable[str] = DEFAULT_RULES, min_length: int = 10,
               encoding: str = "utf-8", report: str | Path | None = None, also_known: Iterable[str] = (),
               quiet: bool = True) -> Tally:
    """Clean a converted wishes file into ``out``; rejects go to ``OUT.rejects.jsonl``.

    ``also_known``: further rule names to check (e.g. the ones switched off).
    """
    from tianji_ft.data.records import process

    rules = check_rules(rules)
    check_rules(also_known)
    check_encoding(encoding)
    tally = Tally()

    def transform(rows):  # called once the outputs are checked
        kind, first = sniff(path, encoding)
        if kind == PREFERENCE:
            raise UserError(f"{path}: preference records (record {first} is one); the wishes rules clean conversation "
                            "records: clean those before pairs are made from them")
        return clean_wishes(rows, rules=rules, min_length=min_length, notes=tally.notes)

    return process([Path(path)], transform, out, reader=lambda p: iter_records(p, encoding), tally=tally,
                   report=report, label="clean", quiet=quiet)
