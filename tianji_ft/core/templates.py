"""The one template registry: XTuner's prompt templates, how they render, stop, are detected and
become an Ollama TEMPLATE.

Adding a template is one edit to :data:`TEMPLATES`; chat, eval, serve, merge's
``generation_config.json`` and the export's Modelfile all read it from here.
The strings are copies of ``xtuner.utils.templates.PROMPT_TEMPLATE`` (a test
checks they stay equal) so this module never imports xtuner, which is slow.

A conversation renders as::

    [bos] SYSTEM(system) INSTRUCTION(q1) a1 SUFFIX SEP INSTRUCTION(q2) ...

which is what XTuner trains on and what ``xtuner chat`` feeds the model, and
for the chat families we test it equals the tokenizer's own chat template.

Messages are rendered as they are, surrounding whitespace included, because
XTuner's training text keeps it (its ``template_map_fn`` formats the input
untouched). Llama-3's own chat template trims every message, so for text with
leading or trailing whitespace it differs from the training text; chat, eval
and serve therefore render with this module (``--template auto`` picks the
XTuner template a tokenizer's chat template matches), and the tokenizer's
template is used only when asked for (``--template tokenizer``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tianji_ft.core.errors import UserError, did_you_mean
from tianji_ft.core.manifest import model_manifest

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
# A conversation rendered by both a tokenizer's chat template and ours, to tell which of ours it is.
_PROBE = [
    {"role": "system", "content": "系统提示"},
    {"role": "user", "content": "你好"},
    {"role": "assistant", "content": "你好！有什么可以帮你？"},
    {"role": "user", "content": "再见"},
]
# The families we train, tried first when a vocabulary is all there is to go by.
DETECT_FIRST = ("internlm2_chat", "llama3_chat", "internlm_chat")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str = ""
    instruction: str = "{input}"
    suffix: str = ""
    sep: str = ""
    stop_words: tuple[str, ...] = field(default_factory=tuple)  # the template's, then its SUFFIX

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

    def ollama_template(self) -> str:
        """The Modelfile TEMPLATE rendering one turn exactly as XTuner formatted it in training."""
        if "{round}" in self.instruction:
            raise UserError(f"template {self.name!r} numbers its rounds, which an Ollama TEMPLATE cannot; "
                            "write the Modelfile by hand")
        system = _go_literal(self.system or "{system}").replace("{system}", "{{ .System }}")
        instruction = _go_literal(self.instruction).replace("{input}", "{{ .Prompt }}")
        tail = _go_literal(self.suffix + self.sep)
        return (f"{{{{ if .System }}}}{system}{{{{ end }}}}{{{{ if .Prompt }}}}{instruction}{{{{ end }}}}"
                f"{{{{ .Response }}}}{tail}")


def _go_literal(text: str) -> str:
    # Template text between Go actions is literal; only "{{" would start an action.
    return text.replace("{{", '{{ "{{" }}')


def get_template(name: str) -> PromptTemplate:
    """Template ``name`` from :data:`TEMPLATES`, or from XTuner's own table for the rarer ones."""
    raw = TEMPLATES.get(name) or _xtuner_template(name)
    words = list(raw.get("STOP_WORDS") or ())
    suffix = raw.get("SUFFIX", "")
    if suffix.strip() and suffix not in words:
        words.append(suffix)
    return PromptTemplate(
        name=name, system=raw.get("SYSTEM", ""), instruction=raw["INSTRUCTION"],
        suffix=suffix, sep=raw.get("SEP", ""), stop_words=tuple(words),
    )


def _xtuner_template(name: str) -> dict:
    unknown = UserError(f"unknown prompt template {name!r}{did_you_mean(name, TEMPLATES)}")
    try:
        from xtuner.utils.templates import PROMPT_TEMPLATE
    except ImportError:
        raise unknown from None
    if name not in PROMPT_TEMPLATE:
        raise unknown
    return dict(PROMPT_TEMPLATE[name])


def _vocab_has(model_dir: Path, token: str) -> bool:
    for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json"):
        path = model_dir / name
        if path.is_file() and json.dumps(token)[1:-1] in path.read_text(encoding="utf-8"):
            return True
    return False


def bos_text(tokenizer) -> str:
    """The BOS token's text when the tokenizer adds one by itself, else ''.

    XTuner encodes the first turn with special tokens on; rendering BOS as
    text and encoding without them gives the same ids and lets one string be
    compared with the tokenizer's chat template.
    """
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return ""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token if ids and ids[0] == bos_id else ""


def detect_template(tokenizer) -> str | None:
    """The XTuner template whose rendering equals a loaded tokenizer's chat template, if any
    (:func:`trained_template` tells from a model folder's files alone)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    bos = bos_text(tokenizer)
    for probe in (_PROBE, _PROBE[1:]):
        try:
            expected = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        except Exception:  # templates that reject a system turn raise from jinja
            continue
        for name in TEMPLATES:
            template = get_template(name)
            if template.render(probe, bos=bos) == expected or template.render(probe) == expected:
                return name
    return None


def trained_template(*model_dirs: str | Path) -> str | None:
    """The template a model was trained with: its run manifest's, the tiny model marker's, or
    the first template whose stop token its vocabulary has."""
    for model_dir in model_dirs:
        model_dir = Path(model_dir)
        name = model_manifest(model_dir).get("template")
        if name:
            return name
        marker = model_dir / "tiny_model.json"
        if marker.is_file():
            return json.loads(marker.read_text(encoding="utf-8"))["xtuner_template"]
    order = (*DETECT_FIRST, *(n for n in TEMPLATES if n not in DETECT_FIRST))
    for model_dir in model_dirs:
        for name in order:
            words = TEMPLATES[name].get("STOP_WORDS")
            if words and _vocab_has(Path(model_dir), words[0]):
                return name
    return None


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
