"""Judge rubrics: data files (``data/rubrics/NAME.json``) that say what a better answer is.

A rubric::

    {"name": "wishes",
     "description": "one line for people",
     "system": "the judge's role, in the language of the answers",
     "criteria": [{"id": "recipient_fit", "text": "对象贴合：……"}, ...],
     "length_limits": {"小红书": 50, "正常": 20, "严肃": 100},   # optional: characters per style
     "context_fields": {"name": "对象", "scene": "场景", "style": "风格"}}  # optional: meta shown to the judge

The reply format is not part of the rubric: the parser that reads it is code,
so the instruction that asks for it is code too (:data:`REPLY_FORMAT`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import DATA_DIR

REPLY_FORMAT = ('只输出一个JSON对象，不要输出其他任何文字：{"winner": "A" 或 "B" 或 "tie", "reason": "一句话理由"}。'
                '两个回答一样好或一样差时 winner 为 "tie"。')
ROLE_NAMES = {"system": "系统", "user": "用户", "assistant": "助手"}


def rubrics_dir() -> Path:
    return DATA_DIR / "rubrics"


def builtin_rubrics() -> list[str]:
    return sorted(p.stem for p in rubrics_dir().glob("*.json"))


def _model():
    from pydantic import BaseModel, ConfigDict, Field, PositiveInt

    class Criterion(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str = Field(min_length=1)
        text: str = Field(min_length=1)

    class RubricModel(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field(min_length=1)
        description: str = ""
        system: str = Field(min_length=1)
        criteria: list[Criterion] = Field(min_length=1)
        length_limits: dict[str, PositiveInt] = {}
        context_fields: dict[str, str] = {}

    return RubricModel


class Rubric:
    def __init__(self, data: dict, source: Path):
        self.name: str = data["name"]
        self.description: str = data.get("description", "")
        self.system_intro: str = data["system"]
        self.criteria: list[dict] = [dict(c) for c in data["criteria"]]
        self.length_limits: dict[str, int] = dict(data.get("length_limits") or {})
        self.context_fields: dict[str, str] = dict(data.get("context_fields") or {})
        self.source = source
        # Verdicts are reused on resume only for the same rubric text.
        self.digest = hashlib.sha256(json.dumps(data, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:12]

    def system_prompt(self) -> str:
        lines = [self.system_intro, "", "评分标准："]
        lines += [f"{n}. {c['text']}" for n, c in enumerate(self.criteria, 1)]
        return "\n".join(lines + ["", REPLY_FORMAT])

    def context_lines(self, meta: dict | None) -> list[str]:
        meta = meta or {}
        lines = []
        for key, label in self.context_fields.items():
            value = meta.get(key)
            if value in (None, ""):
                continue
            text = f"{label}：{str(value).strip()}"
            if key == "style" and value in self.length_limits:
                text += f"（不超过{self.length_limits[value]}字）"
            lines.append(text)
        return lines

    def user_prompt(self, messages: list[dict], first: str, second: str, meta: dict | None = None) -> str:
        """The request: the conversation, what is known about it, then the two answers as A and B."""
        parts = ["[对话]"]
        parts += [f"{ROLE_NAMES.get(m['role'], m['role'])}：{m['content']}" for m in messages]
        context = self.context_lines(meta)
        if context:
            parts += ["[已知信息]", *context]
        parts += ["[回答A]", first, "[回答B]", second]
        return "\n".join(parts)


def load_rubric(name_or_path: str | Path) -> Rubric:
    """A shipped rubric by name (``wishes``, ``generic``) or a rubric file; a bad one is one clear line."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.exists()):
        path = rubrics_dir() / f"{text}.json"
        if not path.is_file():
            raise UserError(f"unknown rubric {text!r}; shipped rubrics: {', '.join(builtin_rubrics())}, "
                            "or pass a rubric file (docs/judge.md shows the format)")
    if not path.is_file():
        raise UserError(f"{path}: no such rubric file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); fix the rubric file") from None
    from pydantic import ValidationError

    try:
        checked = _model().model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise UserError(f"{path}: not a valid rubric: {where}: {first['msg']} ({err.error_count()} problem(s)); "
                        "docs/judge.md shows the format") from None
    return Rubric(checked.model_dump(), path)
