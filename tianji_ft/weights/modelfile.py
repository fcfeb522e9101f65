"""What a model folder says about stopping: ``generation_config.json``'s stop ids and the Ollama Modelfile.

A model answers in the format it was fine-tuned on, which is XTuner's prompt
template (``tianji_run.json`` names it; :mod:`tianji_ft.core.templates` holds
them), not necessarily the tokenizer's own chat template. Merge writes the
template's stop tokens into ``generation_config.json``; export turns the same
template into the Modelfile's TEMPLATE and stop PARAMETERs.
"""

from __future__ import annotations

import json
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.sampling import DEFAULTS
from tianji_ft.core.templates import get_template

SAMPLING_DEFAULTS = DEFAULTS["ollama"]


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
        eos += [i for i in stop_token_ids(tokenizer_dir, list(get_template(template).stop_words)) if i not in eos]
    config["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return config


def _quoted(text: str) -> str:
    if '"""' in text:
        raise UserError('text for the Modelfile contains """, which Modelfile strings cannot hold')
    return f'"""{text}"""'


def render_modelfile(gguf_name: str, template: str, system: str | None,
                     sampling: dict | None = None, adapter: str | None = None) -> str:
    """A Modelfile for ``gguf_name`` (beside it, with the GGUF LoRA ``adapter`` on top if given) in XTuner
    template ``template``."""
    spec = get_template(template)
    lines = [f"FROM ./{gguf_name}", *([f"ADAPTER ./{adapter}"] if adapter else []),
             f"TEMPLATE {_quoted(spec.ollama_template())}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    for key, value in (sampling or SAMPLING_DEFAULTS).items():
        lines.append(f"PARAMETER {key} {value}")
    for word in spec.stop_words:
        lines.append(f"PARAMETER stop {json.dumps(word, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
