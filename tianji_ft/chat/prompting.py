"""Which template and system prompt a model gets, and how messages become text.

Precedence for ``--template auto``: the run manifest beside the model (or
adapter) written by our pipeline, then the tokenizer's own chat template
(matched to an XTuner template by rendering a probe conversation, so the stop
words are known), else the user must name one. A named ``--template`` wins
over the manifest, with a warning when they differ: chatting with a template
the model was not trained on is the usual cause of answers that never end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tianji_ft.core.templates import TEMPLATES, PromptTemplate, bos_text, detect_template, get_template, split_messages
from tianji_ft.core.manifest import model_manifest
from tianji_ft.core.errors import UserError

TOKENIZER_TEMPLATE = "tokenizer"  # render with tokenizer.apply_chat_template


@dataclass
class Prompter:
    """Turns a message list into the exact prompt text the model sees."""

    tokenizer: object
    template: PromptTemplate | None  # None: the tokenizer's chat template
    system: str | None = None
    source: str = "flag"  # where the template came from: manifest, tokenizer, flag
    warnings: list[str] = field(default_factory=list)
    bos: str | None = None  # computed once: tokenizing from several threads at once is not safe

    def __post_init__(self):
        if self.bos is None:
            self.bos = bos_text(self.tokenizer)

    @property
    def name(self) -> str:
        return self.template.name if self.template else TOKENIZER_TEMPLATE

    @property
    def stop_words(self) -> tuple[str, ...]:
        return self.template.stop_words if self.template else ()

    def with_default_system(self, messages: list[dict]) -> list[dict]:
        if self.system and not (messages and messages[0].get("role") == "system"):
            return [{"role": "system", "content": self.system}, *messages]
        return list(messages)

    def render(self, messages: list[dict]) -> str:
        """Prompt text including any BOS; encode it with ``add_special_tokens=False``."""
        messages = self.with_default_system(messages)
        split_messages(messages)  # same validation whichever renderer runs
        if self.template is None:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.template.render(messages, bos=self.bos)


def read_model_manifest(model: str | Path, adapter: str | Path | None = None) -> dict | None:
    """The run manifest copied beside the adapter or the model, if either has one."""
    for where in (adapter, model):
        manifest = model_manifest(where) if where and Path(where).is_dir() else None
        if manifest:
            return manifest
    return None


def resolve_prompter(tokenizer, model: str | Path, adapter: str | Path | None = None,
                     template: str | None = "auto", system: str | None = None) -> Prompter:
    manifest = read_model_manifest(model, adapter) or {}
    from_manifest = manifest.get("template")
    warnings = []
    if template and template != "auto":
        if template != TOKENIZER_TEMPLATE:
            get_template(template)  # unknown names fail here, before anything loads
        if from_manifest and from_manifest != template:
            warnings.append(f"--template {template} differs from the template this model was trained with "
                            f"({from_manifest}, from its run manifest); answers may not stop")
        name, source = template, "flag"
    elif from_manifest:
        name, source = from_manifest, "manifest"
    else:
        detected = detect_template(tokenizer)
        if detected:
            name, source = detected, "tokenizer"
        elif getattr(tokenizer, "chat_template", None):
            name, source = TOKENIZER_TEMPLATE, "tokenizer"
        else:
            raise UserError(f"{model}: no run manifest and no chat template in its tokenizer; "
                            f"pass --template NAME (one of {', '.join(sorted(TEMPLATES))})")
    if name == TOKENIZER_TEMPLATE and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{model}: its tokenizer has no chat template; pass --template NAME")
    chosen = None if name == TOKENIZER_TEMPLATE else get_template(name)
    if system is None:
        system = manifest.get("system") or None
    return Prompter(tokenizer, chosen, system=system, source=source, warnings=warnings)
