"""Chat templates of the trained formats, and the Ollama Modelfile written from them.

A model answers in the format it was fine-tuned on, which is XTuner's prompt
template (``tianji_run.json`` names it), not necessarily the tokenizer's own
chat template. Merge reads the stop tokens from here for
``generation_config.json``; export turns the same template into the
Modelfile's TEMPLATE and stop PARAMETERs.
"""

from __future__ import annotations

import json
from pathlib import Path

from tianji_ft.core.errors import UserError

# Copied from xtuner/utils/templates.py (tests check they still agree), so
# writing a Modelfile does not import XTuner (and torch) for the common cases.
XTUNER_TEMPLATES = {
    "internlm2_chat": dict(
        SYSTEM="<|im_start|>system\n{system}<|im_end|>\n",
        INSTRUCTION="<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n",
        SUFFIX="<|im_end|>", SUFFIX_AS_EOS=True, SEP="\n", STOP_WORDS=["<|im_end|>"],
    ),
    "llama3_chat": dict(
        SYSTEM="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
        INSTRUCTION=("<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        SUFFIX="<|eot_id|>", SUFFIX_AS_EOS=True, STOP_WORDS=["<|eot_id|>"],
    ),
    "internlm_chat": dict(
        SYSTEM="<|System|>:{system}\n", INSTRUCTION="<|User|>:{input}<eoh>\n<|Bot|>:",
        SUFFIX="<eoa>", SUFFIX_AS_EOS=True, SEP="\n", STOP_WORDS=["<eoa>"],
    ),
}
# The tutorial's sampling settings for the Ollama model.
SAMPLING_DEFAULTS = {"temperature": 0.35, "top_p": 0.9, "repeat_penalty": 1.1}


def xtuner_template(name: str) -> dict:
    """XTuner's prompt template ``name`` (SYSTEM, INSTRUCTION, SUFFIX, SEP, STOP_WORDS)."""
    if name in XTUNER_TEMPLATES:
        return XTUNER_TEMPLATES[name]
    from xtuner.utils.templates import PROMPT_TEMPLATE

    if name not in PROMPT_TEMPLATE:
        raise UserError(f"unknown XTuner prompt template {name!r}; "
                        f"known: {', '.join(sorted(PROMPT_TEMPLATE))}")
    return dict(PROMPT_TEMPLATE[name])


def model_manifest(model_dir: str | Path) -> dict:
    """The run manifest copied into a converted/merged model dir, or {}."""
    path = Path(model_dir) / "tianji_run.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {}


def _vocab_has(model_dir: Path, token: str) -> bool:
    for name in ("tokenizer.json", "tokenizer_config.json", "added_tokens.json"):
        path = model_dir / name
        if path.is_file() and json.dumps(token)[1:-1] in path.read_text(encoding="utf-8"):
            return True
    return False


def template_name(*model_dirs: str | Path) -> str | None:
    """The XTuner template a model was trained with: its manifest's, the tiny
    model marker's, or the one whose stop token the vocabulary has."""
    for model_dir in model_dirs:
        model_dir = Path(model_dir)
        name = model_manifest(model_dir).get("template")
        if name:
            return name
        marker = model_dir / "tiny_model.json"
        if marker.is_file():
            return json.loads(marker.read_text(encoding="utf-8"))["xtuner_template"]
    for model_dir in model_dirs:
        for name, spec in XTUNER_TEMPLATES.items():
            if _vocab_has(Path(model_dir), spec["STOP_WORDS"][0]):
                return name
    return None


def stop_words(name: str) -> list[str]:
    """Strings that end the assistant's turn in template ``name``."""
    spec = xtuner_template(name)
    words = list(spec.get("STOP_WORDS") or [])
    if spec.get("SUFFIX") and spec["SUFFIX"].strip() and spec["SUFFIX"] not in words:
        words.append(spec["SUFFIX"])
    return words


def stop_token_ids(model_dir: Path, words: list[str]) -> list[int]:
    """Ids of those ``words`` that are single tokens in the tokenizer of ``model_dir``."""
    table: dict[str, int] = {}
    tokenizer_json, config_json = model_dir / "tokenizer.json", model_dir / "tokenizer_config.json"
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        table.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
        vocab = data.get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            table.update({w: i for w, i in vocab.items() if w in words})
    if config_json.is_file():
        decoder = json.loads(config_json.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        table.update({t["content"]: int(i) for i, t in decoder.items()})
    return [table[w] for w in words if w in table]


def generation_config(base_dir: Path, tokenizer_dir: Path, template: str | None) -> dict:
    """The base's generation config with the template's stop tokens added to ``eos_token_id``."""
    path = base_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    model_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if config.get(key) is None and model_config.get(key) is not None:
            config[key] = model_config[key]
    eos = config.get("eos_token_id")
    eos = [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
    if template:
        eos += [i for i in stop_token_ids(tokenizer_dir, stop_words(template)) if i not in eos]
    config["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return config


def _go_literal(text: str) -> str:
    # Template text between Go actions is literal; only "{{" would start an action.
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(name: str) -> str:
    """The Modelfile TEMPLATE rendering one turn exactly as XTuner formatted it in training."""
    spec = xtuner_template(name)
    if "{round}" in spec["INSTRUCTION"]:
        raise UserError(f"template {name!r} numbers its rounds, which an Ollama TEMPLATE cannot; "
                        "write the Modelfile by hand")
    system = _go_literal(spec.get("SYSTEM", "{system}")).replace("{system}", "{{ .System }}")
    instruction = _go_literal(spec["INSTRUCTION"]).replace("{input}", "{{ .Prompt }}")
    tail = _go_literal(spec.get("SUFFIX", "") + spec.get("SEP", ""))
    return (f"{{{{ if .System }}}}{system}{{{{ end }}}}{{{{ if .Prompt }}}}{instruction}{{{{ end }}}}"
            f"{{{{ .Response }}}}{tail}")


def _quoted(text: str) -> str:
    if '"""' in text:
        raise UserError('text for the Modelfile contains """, which Modelfile strings cannot hold')
    return f'"""{text}"""'


def render_modelfile(gguf_name: str, template: str, system: str | None,
                     sampling: dict | None = None) -> str:
    """A Modelfile for ``gguf_name`` (beside it) in XTuner template ``template``."""
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(ollama_template(template))}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    for key, value in (sampling or SAMPLING_DEFAULTS).items():
        lines.append(f"PARAMETER {key} {value}")
    for word in stop_words(template):
        lines.append(f"PARAMETER stop {json.dumps(word, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
