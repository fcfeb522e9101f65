"""Sampling defaults, per use, in one place (the flags' defaults, the web page's sliders, the Modelfile).

Each use has its own reason; a flag always overrides.
"""

from __future__ import annotations

DEFAULTS: dict[str, dict] = {
    # xtuner chat's own defaults: near-greedy, room for long answers
    "chat": dict(temperature=0.1, top_p=0.75, top_k=40, repetition_penalty=1.0, max_new_tokens=2048),
    # an API answers many short requests: the same near-greedy sampling, half the length
    "serve": dict(temperature=0.1, top_p=0.75, top_k=40, repetition_penalty=1.0, max_new_tokens=1024),
    # greedy: the same answers on every run, so scores compare across models and days
    "eval": dict(temperature=0.0, top_p=0.75, top_k=40, repetition_penalty=1.0, max_new_tokens=512),
    # the Tianji demo: livelier wishes, a few sentences each
    "web": dict(temperature=0.7, top_p=0.8, top_k=40, repetition_penalty=1.0, max_new_tokens=512),
    # synth pairs: two candidates for one prompt must differ for a judge to prefer one; a blessing fits in 256
    "pairs": dict(temperature=0.8, top_p=0.95, top_k=40, repetition_penalty=1.0, max_new_tokens=256),
    # the Ollama tutorial's Modelfile PARAMETERs
    "ollama": dict(temperature=0.35, top_p=0.9, repeat_penalty=1.1),
}
