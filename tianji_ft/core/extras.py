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
# top-level module -> the smallest extra that installs it
MODULE_EXTRAS = {
    "torch": "serve", "transformers": "serve", "mmengine": "train", "deepspeed": "train", "peft": "serve",
    "bitsandbytes": "train", "tensorboard": "train", "fastapi": "serve", "uvicorn": "serve",
    "prometheus_client": "serve", "streamlit": "web", "openai": "synth", "gguf": "export",
    "sentencepiece": "export", "safetensors": "export", "sacrebleu": "eval", "pandas": "data", "datasets": "data",
    "matplotlib": "data", "tokenizers": "data",
}


# extra -> the top-level modules it installs, itself or through the extras it includes (pyproject.toml;
# tests/core/test_extras.py holds the two together)
PROVIDES = {
    "data": {"pandas", "datasets", "matplotlib", "transformers", "tokenizers"},
    "train": {"torch", "transformers", "mmengine", "deepspeed", "peft", "accelerate", "datasets", "bitsandbytes",
              "einops", "sentencepiece", "safetensors", "matplotlib", "tensorboard"},
    "serve": {"torch", "transformers", "peft", "fastapi", "uvicorn", "pydantic", "prometheus_client"},
    "synth": {"openai", "matplotlib"},
    "export": {"numpy", "safetensors", "gguf", "sentencepiece"},
    "wandb": {"wandb"},
}
PROVIDES["web"] = PROVIDES["serve"] | {"streamlit"}
PROVIDES["eval"] = PROVIDES["serve"] | PROVIDES["synth"] | {"sacrebleu"}
PROVIDES["all"] = set().union(*PROVIDES.values())


def extra_for(verb: str | None, top: str) -> str:
    """The extra(s) to name: the verb's, plus the module's own where the verb's does not bring it
    (``synth pairs`` with local candidates needs torch, which [synth] does not install)."""
    extra = VERB_EXTRAS.get(verb or "")
    if extra is None:
        return MODULE_EXTRAS[top]
    if top in PROVIDES.get(extra, set()):
        return extra
    return f"{extra},{MODULE_EXTRAS[top]}"


def missing_extra_line(verb: str | None, module: str) -> str | None:
    """The one line for ``module`` missing under ``verb``, or None when no extra provides it."""
    top = module.split(".")[0]
    if top == "xtuner":
        return ("xtuner is not installed; install the training stack with pip install 'tianji_ft[train]', "
                "then pip install --no-deps xtuner==0.2.0 (its own pins conflict; see the README)")
    if top not in MODULE_EXTRAS:
        return None
    extra = extra_for(verb, top)
    where = f"tianji-ft {verb}" if verb else "this command"
    return f"{top} is not installed, and {where} needs it: pip install 'tianji_ft[{extra}]'"
