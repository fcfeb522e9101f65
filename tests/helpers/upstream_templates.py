"""The real tokenizers' chat templates (InternLM2, Llama-3), rendered as transformers renders them.

The Jinja strings are stored verbatim, with the repository each was copied
from, in ``fixtures/upstream_chat_templates.json``; rendering needs jinja2
only, so template tests stay fast and load no tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

UPSTREAM = json.loads((Path(__file__).parent / "fixtures" / "upstream_chat_templates.json").read_text("utf-8"))


def render_upstream(family: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False)`` of ``family``'s real tokenizer
    (transformers' jinja2 settings: a sandbox, trim_blocks, lstrip_blocks, loop controls)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    spec = UPSTREAM[family]
    return env.from_string(spec["chat_template"]).render(messages=messages, bos_token=spec["bos_token"],
                                                         add_generation_prompt=add_generation_prompt)


class JinjaTokenizer:
    """A tokenizer as far as template detection and prompting look at one: its upstream chat
    template, its BOS (added by ``__call__`` when ``adds_bos``), one id per character."""

    def __init__(self, family: str, adds_bos: bool = True):
        spec = UPSTREAM[family]
        self.chat_template, self.bos_token, self.bos_token_id = spec["chat_template"], spec["bos_token"], 1
        self.adds_bos, self.family = adds_bos, family

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens and self.adds_bos else []) + [ord(c) for c in text]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        text = render_upstream(self.family, messages, add_generation_prompt)
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text
