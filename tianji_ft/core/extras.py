"""Which extra installs what: one line instead of an ImportError when a command's extra is missing.

``pip install tianji_ft`` installs what the data tools need; each other stage
has an extra in pyproject.toml. A verb that imports a package its extra
brings, in an environment without it, gets one line naming the pip command.
"""

from __future__ import annotations

# verb -> the extra it needs (the data tools need only the base install, or [data] for plots)
VERB_EXTRAS = {
    "data": "data", "synth": "synth", "train": "train", "convert": "train", "pipeline": "all", "demo": "all",
    "models": "train", "merge": "export", "export": "export", "chat": "serve", "serve": "serve", "eval": "eval",
    "web": "web", "doctor": "train",
}
# top-level module -> the extra that installs it (for verbs not in VERB_EXTRAS)
MODULE_EXTRAS = {
    "torch": "train", "transformers": "train", "mmengine": "train", "deepspeed": "train", "peft": "train",
    "bitsandbytes": "train", "tensorboard": "train", "fastapi": "serve", "uvicorn": "serve",
    "prometheus_client": "serve", "streamlit": "web", "openai": "synth", "gguf": "export",
    "sentencepiece": "export", "safetensors": "export", "sacrebleu": "eval", "pandas": "data", "datasets": "data",
    "matplotlib": "data", "tokenizers": "data",
}


def missing_extra_line(verb: str | None, module: str) -> str | None:
    """The one line for ``module`` missing under ``verb``, or None when no extra provides it."""
    top = module.split(".")[0]
    if top == "xtuner":
        return ("xtuner is not installed; install the training stack with pip install 'tianji_ft[train]', "
                "then pip install --no-deps xtuner==0.2.0 (its own pins conflict; see the README)")
    if top not in MODULE_EXTRAS:
        return None
    extra = VERB_EXTRAS.get(verb or "", MODULE_EXTRAS[top])
    where = f"tianji-ft {verb}" if verb else "this command"
    return f"{top} is not installed, and {where} needs it: pip install 'tianji_ft[{extra}]'"
