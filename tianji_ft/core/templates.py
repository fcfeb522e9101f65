"""XTuner's prompt templates, rendered the way ``xtuner chat`` renders them.

The strings are copies of ``xtuner.utils.templates.PROMPT_TEMPLATE`` (a test
checks they stay equal) so this module never imports xtuner, which is slow.

A conversation renders as::

    [bos] SYSTEM(system) INSTRUCTION(q1) a1 SUFFIX SEP INSTRUCTION(q2) ...

which is what XTuner trains on and what ``xtuner chat`` feeds the model, and
for the chat families we test it equals the tokenizer's own chat template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tianji_ft.core.errors import UserError

_IM_SYSTEM = "<|im_start|>system\n{system}<|im_end|>\n"
_IM_INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"

# Same names, same strings as XTuner (only the keys used for rendering).
TEMPLATES: dict[str, dict] = {
    "default": dict(SYSTEM="<|System|>:{system}\n", INSTRUCTION="<|User|>:{input}\n<|Bot|>:", SEP="\n"),
    "zephyr": dict(SYSTEM="<|system|>\n{system}\n", INSTRUCTION="<|user|>\n{input}\n<|assistant|>\n", SEP="\n"),
    "internlm_chat": dict(
        SYSTEM="<|System|>:{system}\n", INSTRUCTION="<|User|>:{input}<eoh>\n<|Bot|>:",
        SUFFIX="<eoa>", SEP="\n", STOP_WORDS=["<eoa>"],
    ),
    "internlm2_chat": dict(
        SYSTEM=_IM_SYSTEM, INSTRUCTION=_IM_INSTRUCTION, SUFFIX="<|im_end|>", SEP="\n",
        STOP_WORDS=["<|im_end|>"],
    ),
    "qwen_chat": dict(
        SYSTEM=_IM_SYSTEM, INSTRUCTION=_IM_INSTRUCTION, SUFFIX="<|im_end|>", SEP="\n",
        STOP_WORDS=["<|im_end|>", "<|endoftext|>"],
    ),
    "chatglm3": dict(SYSTEM="<|system|>\n{system}", INSTRUCTION="<|user|>\n{input}<|assistant|>\n", SEP="\n"),
    "baichuan2_chat": dict(SYSTEM="{system}\n", INSTRUCTION="<reserved_106>{input}<reserved_107>", SEP="\n"),
    "mistral": dict(SYSTEM="[INST] {system} [/INST]\n", INSTRUCTION="[INST] {input} [/INST]", SEP="\n"),
    "gemma": dict(
        SYSTEM="<start_of_turn>system\n{system}<end_of_turn>\n",
        INSTRUCTION="<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model\n",
        SUFFIX="<end_of_turn>", SEP="\n", STOP_WORDS=["<end_of_turn>"],
    ),
    "llama3_chat": dict(
        SYSTEM="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        INSTRUCTION=("<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        SUFFIX="<|eot_id|>", STOP_WORDS=["<|eot_id|>"],
    ),
    "phi3_chat": dict(
        SYSTEM="<|system|>\n{system}<|end|>\n", INSTRUCTION="<|user|>\n{input}<|end|>\n<|assistant|>\n",
        SUFFIX="<|end|>", SEP="\n", STOP_WORDS=["<|end|>"],
    ),
}
TEMPLATE_KEYS = ("SYSTEM", "INSTRUCTION", "SUFFIX", "SEP", "STOP_WORDS")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str = ""
    instruction: str = "{input}"
    suffix: str = ""
    sep: str = ""
    stop_words: tuple[str, ...] = field(default_factory=tuple)

    def render(self, messages: list[dict], bos: str = "") -> str:
        """Render ``messages`` (system?, then user/assistant turns ending on a
        user turn) as the prompt for the next assistant answer."""
        system, turns = split_messages(messages)
        text = bos
        if system and self.system:
            text += self.system.format(system=system, round=1, bot_name="BOT")
        for i, (question, answer) in enumerate(turns):
            text += self.instruction.format(input=question, round=i + 1, bot_name="BOT")
            if answer is not None:
                text += answer + self.suffix + self.sep
        return text


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise UserError(f"unknown prompt template {name!r}; choose one of {', '.join(sorted(TEMPLATES))}")
    raw = TEMPLATES[name]
    return PromptTemplate(
        name=name, system=raw.get("SYSTEM", ""), instruction=raw["INSTRUCTION"],
        suffix=raw.get("SUFFIX", ""), sep=raw.get("SEP", ""), stop_words=tuple(raw.get("STOP_WORDS", ())),
    )


def split_messages(messages: list[dict]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """``(system, [(user, assistant or None), ...])``; the last turn has no answer.

    Raises :class:`ValueError` with a message fit for an HTTP 400 when the
    roles do not alternate user/assistant and end on a user turn.
    """
    system = None
    turns: list[tuple[str, str | None]] = []
    pending: str | None = None
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        if role == "system":
            if i != 0:
                raise ValueError(f"messages[{i}]: a system message may only come first")
            system = content
        elif role == "user":
            if pending is not None:
                raise ValueError(f"messages[{i}]: two user messages in a row")
            pending = content
        elif role == "assistant":
            if pending is None:
                raise ValueError(f"messages[{i}]: an assistant message must follow a user message")
            turns.append((pending, content))
            pending = None
        else:
            raise ValueError(f"messages[{i}].role must be system, user or assistant, not {role!r}")
    if pending is None:
        raise ValueError("messages must end with a user message")
    turns.append((pending, None))
    return system, turns
