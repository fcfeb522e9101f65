"""Adding a template is one edit to core.templates.TEMPLATES: chat, eval, merge and the Modelfile all see it."""

from __future__ import annotations

import json

import pytest

from tianji_ft.core import templates

NAME = "tianji_test_chat"
SPEC = dict(SYSTEM="<|interpreter|>{system}\n", INSTRUCTION="<|plugin|>用户：{input}\n助手：",
            SUFFIX="<|action_end|>", SEP="\n", STOP_WORDS=["<|action_end|>"])
MESSAGES = [{"role": "system", "content": "你是送祝福大师"}, {"role": "user", "content": " 祝姐姐生日快乐 "}]
# What XTuner's template rendering gives for MESSAGES with SPEC, written out by hand.
RENDERED = "<|interpreter|>你是送祝福大师\n<|plugin|>用户： 祝姐姐生日快乐 \n助手："


@pytest.fixture
def added(monkeypatch):
    monkeypatch.setitem(templates.TEMPLATES, NAME, SPEC)
    return NAME


@pytest.fixture(scope="module")
def tiny_internlm2():
    from tianji_ft.models.tiny import ensure_tiny_model

    return ensure_tiny_model("internlm2")


def test_the_modelfile_uses_it(added):
    from tianji_ft.weights.modelfile import render_modelfile

    text = render_modelfile("m.gguf", added, "你是送祝福大师")
    assert "{{ .System }}" in text and "<|plugin|>用户：{{ .Prompt }}\n助手：{{ end }}{{ .Response }}<|action_end|>\n" in text
    assert 'PARAMETER stop "<|action_end|>"' in text.splitlines()


def test_merge_writes_its_stop_token_into_generation_config(added, tiny_internlm2, tmp_path):
    from tianji_ft.weights.merge import write_model

    out = write_model(tiny_internlm2, tmp_path / "merged", template=added)
    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    stop_id = next(t["id"] for t in vocab["added_tokens"] if t["content"] == "<|action_end|>")
    eos = json.loads((out / "generation_config.json").read_text(encoding="utf-8"))["eos_token_id"]
    assert stop_id in (eos if isinstance(eos, list) else [eos])


@pytest.mark.slow  # loads the tiny model twice
def test_chat_and_eval_render_and_stop_with_it(added, tiny_internlm2, tmp_path):
    from tianji_ft.chat.engine import ChatEngine, GenerationParams
    from tianji_ft.chat.evaluate import EvalItem, evaluate

    engine = ChatEngine(tiny_internlm2, template=added, device="cpu")
    try:
        assert engine.prompter.render(MESSAGES) == engine.prompter.bos + RENDERED
        assert "<|action_end|>" in engine.prompter.stop_words
    finally:
        engine.close()
    summary = evaluate(str(tiny_internlm2), [EvalItem("1", MESSAGES)], tmp_path / "eval", template=added,
                       params=GenerationParams(temperature=0.0, max_new_tokens=4))
    assert summary["model"]["template"] == added
