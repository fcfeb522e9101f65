"""MSAgent-Bench rows -> the conversations XTuner's MS-Agent config trains on.

The config in ``xtuner_configs`` maps raw rows with XTuner's
``msagent_react_map_fn``. This converter applies the same transformation
ahead of time, so the converted file trains with no map fn (just the
chat template) and can be validated, counted and inspected first:

* the system message becomes XTuner's tool-use prompt listing the APIs
  (JSON objects with ``name`` and ``description`` found in it);
* user messages up to the next assistant message become the turn's input;
* ``<|startofthink|>`` JSON blocks become ``Thought:`` / ``Action:`` /
  ``Action Input:`` lines, a reply without one becomes ``Final Answer:``;
* a ``<|startofexec|>`` result becomes a further turn whose ``system`` is
  ``Response:<result>`` and whose output is the ``Final Answer:`` after it.

Where XTuner's function returns an empty conversation or silently skips a
part (a malformed block, a role it does not know), this converter rejects
the row with the reason instead. Turns carry ``system`` only when it is
not empty and always an ``input`` (``""`` in a tool-response turn); both
render identically in XTuner's ``template_map_fn``.

Rows of the ReAct-text variant (iic/ms_agent: ``Action:`` / ``Observation:``
written out, no think/exec tags) keep their own system prompt, and each
``Observation:`` becomes a tool-response turn the same way.

With ``keep_raw=True`` the rows are validated the same way and written
unchanged, for the config as shipped (which applies the map fn itself).
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from typing import Any, Iterable, Iterator

from tianji_ft.data.accounting import Reject
from tianji_ft.data.converters import nested_reject
from tianji_ft.data.registry import converter, rowwise
from tianji_ft.data.schema import record_problems

_THINK = re.compile(r"(.*?)(<\|startofthink\|\>)(.*?)(<\|endofthink\|\>)", re.DOTALL)
_EXEC = re.compile(r"(<\|startofexec\|\>)(.*?)(<\|endofexec\|\>)(.*?)$", re.DOTALL)
_REACT_STEP = re.compile(r"^\s*(Thought|Action|Action Input|Final Answer)\s*:", re.MULTILINE)
_OBSERVATION = re.compile(r"^Observation:", re.MULTILINE)
_AFTER_OBSERVATION = re.compile(r"^(Thought|Action|Final Answer)\s*:", re.MULTILINE)
_ROLES = ("system", "user", "assistant")

TOOL_PROMPT_HEAD = "你是一个可以调用外部工具的助手，可以使用的工具包括：\n"
TOOL_PROMPT_TAIL = (
    "如果使用工具请遵循以下格式回复：\n```\n"
    "Thought:思考你当前步骤需要解决什么问题，是否需要使用工具\n"
    "Action:工具名称，你的工具必须从 [{tools}] 选择\n"
    "Action Input:工具输入参数\n```\n工具返回按照以下格式回复：\n```\n"
    "Response:调用工具后的结果\n```\n如果你已经知道了答案，或者你不需要工具，"
    "请遵循以下格式回复\n```\n"
    "Thought:给出最终答案的思考过程\n"
    "Final Answer:最终答案\n```\n开始!\n"
)


def parse_conversations(value: Any) -> list:
    """The ``conversations`` list, also when stored as a string holding a list.

    The string is parsed as JSON, or as a Python literal (the dataset has
    both); it is never executed, unlike ``eval`` in XTuner's map fn.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise Reject("malformed conversations", "a string that is neither a JSON nor a Python list") from None
    if not isinstance(value, list):
        raise Reject("malformed conversations", "'conversations' is not a list")
    for i, msg in enumerate(value):
        if isinstance(msg, dict) and isinstance(msg.get("value"), (dict, list)):
            raise nested_reject("value", msg["value"], f"message {i}: ")
        if not isinstance(msg, dict) or not isinstance(msg.get("value"), str):
            raise Reject("malformed conversations", f"message {i} lacks a text 'value'")
        if msg.get("from") not in _ROLES:
            raise Reject("unknown role", f"message {i}: 'from' is {msg.get('from')!r}; expected system, user or assistant")
    return value


def check_roles(messages: list) -> None:
    """System messages first, then user/assistant with a user before every assistant."""
    if len(messages) < 2:
        raise Reject("fewer than 2 messages")
    started = user_waiting = False
    for i, msg in enumerate(messages):
        role = msg["from"]
        if role == "system" and started:
            raise Reject("roles out of order", f"message {i}: a system message after the dialogue started")
        if role == "assistant" and not user_waiting:
            raise Reject("roles out of order", f"message {i}: an assistant message without a user message before it")
        started = started or role != "system"
        user_waiting = role == "user" or (user_waiting and role != "assistant")
    if not any(m["from"] == "assistant" for m in messages):
        raise Reject("no assistant reply")


def api_objects(text: str) -> list[dict]:
    """JSON objects with ``name`` and ``description`` inside a system message."""
    decoder, pos, found = json.JSONDecoder(), 0, []
    while (start := text.find("{", pos)) != -1:
        try:
            obj, length = decoder.raw_decode(text[start:])
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and "description" in obj:
            found.append(obj)
            pos = start + length
        else:
            pos = start + 1
    return found


def tool_prompt(system_value: str) -> str:
    apis: dict = {}
    for obj in api_objects(system_value):
        apis[obj["name"]] = obj["description"]
        try:
            params = {p["name"]: p["description"] for p in obj["paths"][0]["parameters"]}
            apis[obj["name"]] += f"\n输入参数: {params}"
        except Exception:  # APIs without parameter lists are listed without them
            pass
    return TOOL_PROMPT_HEAD + f"{apis}\n" + TOOL_PROMPT_TAIL.format(tools=str(list(apis.keys())))


def _block_json(text: str, what: str) -> dict:
    try:
        return json.loads(text.replace("```JSON", "").replace("```", "").replace("\n", ""))
    except (ValueError, RecursionError):
        raise Reject(f"malformed {what} block", text[:120]) from None


def _think(match: re.Match) -> str:
    out = f"Thought:{match.group(1).strip()}\n" if match.group(1).strip() else ""
    call = _block_json(match.group(3), "<|startofthink|>")
    try:
        return out + f"Action:{call['api_name']}\nAction Input:{call['parameters']}\n"
    except (KeyError, TypeError):
        raise Reject("malformed <|startofthink|> block", "no api_name / parameters") from None


def _exec(match: re.Match) -> str:
    out = f"Response:{_block_json(match.group(2), '<|startofexec|>')}\n"
    if match.group(4).strip():
        out += f"Final Answer:{match.group(4).strip()}\n"
    return out


def _assistant_turns(value: str, notes: Counter | None) -> list[tuple[str, str]]:
    """(system, output) pairs for one assistant message in tag format."""
    output, response = value, None
    if "<|startofexec|>" in output:
        parts = output.split("<|startofexec|>")
        if len(parts) != 2:
            raise Reject("malformed <|startofexec|> block", "more than one <|startofexec|> in a reply")
        output, response = parts[0], "<|startofexec|>" + parts[1]
    output, thinks = _THINK.subn(_think, output)
    turns = [("", f"{output}\n" if thinks else f"Final Answer:{output}\n")]
    if response is not None:
        response = _EXEC.sub(_exec, response)
        if "Final Answer:" in response:
            pieces = response.split("Final Answer:")
            if len(pieces) != 2:
                raise Reject("malformed <|startofexec|> block", "more than one Final Answer after a tool result")
            turns.append((pieces[0], "Final Answer:" + pieces[1]))
        elif notes is not None:
            notes["tool result without a final answer dropped"] += 1
    return turns


def _react_turns(value: str) -> list[tuple[str, str]]:
    """(system, output) pairs for one assistant message in ReAct text."""
    pieces = _OBSERVATION.split(value)
    turns = [("", pieces[0])]
    for piece in pieces[1:]:
        m = _AFTER_OBSERVATION.search(piece)
        if m is None or not piece[m.start():].strip():
            raise Reject("observation without a reply after it")
        turns.append(("Observation:" + piece[:m.start()], piece[m.start():]))
    return turns


def is_react_text(messages: list) -> bool:
    texts = [m["value"] for m in messages if m["from"] == "assistant"]
    return not any("<|startofthink|>" in t or "<|startofexec|>" in t for t in texts) and any(
        _REACT_STEP.search(t) and "Observation:" in t for t in texts)


def react_conversation(messages: list, notes: Counter | None = None) -> list[dict]:
    """XTuner turns for one validated message list (see the module docstring)."""
    react = is_react_text(messages)
    turns: list[dict] = []
    system, user = "", ""
    for msg in messages:
        role, value = msg["from"], msg["value"]
        if role == "system":
            system += value if react else tool_prompt(value)
        elif role == "user":
            user += f"{value}\n"
        else:
            pieces = _react_turns(value) if react else _assistant_turns(value, notes)
            for i, (extra_system, output) in enumerate(pieces):
                turn_system = system if i == 0 else extra_system
                turn = {"system": turn_system} if turn_system else {}
                turn["input"] = user if i == 0 else ""
                turn["output"] = output
                turns.append(turn)
            system, user = "", ""
    if user and notes is not None:
        notes["trailing unanswered turn dropped"] += 1
    problems = record_problems({"conversation": turns})
    if problems:
        raise Reject("invalid conversation", "; ".join(problems))
    return turns


@converter("msagent", fields=("conversations",))
def msagent(rows: Iterable, *, keep_raw: bool = False, notes: Counter | None = None) -> Iterator:
    """MSAgent-Bench rows -> XTuner conversations, as msagent_react_map_fn makes them.

    in:  {"id": "MS_Agent_Bench_20", "conversations": [{"from": "system", "value": "…{\\"name\\": \\"modelscope_text-ie\\", \\"description\\": …}"},
          {"from": "user", "value": "抽取人物和地点：…"},
          {"from": "assistant", "value": "<|startofthink|>```JSON\\n{\\"api_name\\": …}```<|endofthink|>\\n\\n<|startofexec|>```JSON\\n{…}\\n```<|endofexec|>\\n结果如下…"}]}
    out: {"conversation": [{"system": "你是一个可以调用外部工具的助手…", "input": "抽取人物和地点：…\\n", "output": "Action:…\\nAction Input:…\\n\\n"},
          {"system": "Response:{…}\\n", "input": "", "output": "Final Answer:结果如下…\\n"}]}
    ``conversations`` may be a list or a string holding one. ``keep_raw``:
    validate only, and write the rows unchanged.
    """

    def one(row):
        if not isinstance(row, dict) or "conversations" not in row:
            raise Reject("missing field 'conversations'")
        messages = parse_conversations(row["conversations"])
        check_roles(messages)
        if keep_raw:
            if is_react_text(messages):
                raise Reject("ReAct-text row", "msagent_react_map_fn mis-reads it; convert without --keep-raw")
            react_conversation(messages)
            return row
        return {"conversation": react_conversation(messages, notes)}

    return rowwise(rows, one)
