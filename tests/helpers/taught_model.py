"""A tiny model taught to answer the demo wishes and stop, for tests where stopping matters.

A randomly initialised tiny model never emits its stop token, so the tests
that need answers which end properly (stop rate 1.0, the server, the web
demo) use the tiny InternLM2 model fine-tuned in-process for a few hundred
steps on the eight demo wishes rendered with the ``internlm2_chat`` template.
The result is built once per test session (serve/ and web/ load this file
too) and carries a run manifest, as models from our pipeline do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tianji_ft.core.paths import DATA_DIR

WISHES_SYSTEM = "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
TEMPLATE = "internlm2_chat"


def wishes() -> list[tuple[str, str]]:
    """(question, answer) of the demo wishes file."""
    rows = []
    for line in (DATA_DIR / "demo" / "wishes.jsonl").read_text(encoding="utf-8").splitlines():
        turn = json.loads(line)["conversation"][0]
        rows.append((turn["input"], turn["output"]))
    return rows


def teach_to_stop(base_dir: Path, out_dir: Path, steps: int = 200, lr: float = 3e-3) -> Path:
    """Fine-tune ``base_dir`` (tiny internlm2) on the wishes; save it with a run manifest to ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tianji_ft.core.templates import get_template
    from tianji_ft.core.manifest import write_manifest

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(base_dir, trust_remote_code=True, torch_dtype=torch.float32)
    template = get_template(TEMPLATE)
    rows = []
    for question, answer in wishes():
        prompt = template.render([{"role": "system", "content": WISHES_SYSTEM},
                                  {"role": "user", "content": question}], bos=tok.bos_token)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(answer + template.suffix, add_special_tokens=False)["input_ids"]
        rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base_dir, tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    write_manifest(tmp, {"template": TEMPLATE, "system": WISHES_SYSTEM, "family": "internlm2",
                         "model": str(base_dir), "final_loss": round(float(loss.detach()), 4)})
    tmp.rename(out_dir)
    return out_dir


def taught_model(base_temp: Path) -> Path:
    """The taught model under the session's base temp dir, built on first use."""
    from tianji_ft.models.tiny import ensure_tiny_model

    out = Path(base_temp) / "taught-internlm2"
    if not (out / "tianji_run.json").is_file():
        teach_to_stop(ensure_tiny_model("internlm2"), out)
    return out
