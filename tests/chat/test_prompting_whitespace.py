"""What chat, eval and serve show a model: the text XTuner trained it on, whitespace and all.

A Llama-3 model with no run manifest is recognised from its tokenizer's chat
template, and then rendered by our template, which keeps a message's
surrounding whitespace as XTuner's training text does; the tokenizer's own
template (``--template tokenizer``) trims it, and is used only when asked for.
"""

from __future__ import annotations

import json

from helpers.upstream_templates import JinjaTokenizer, render_upstream

from tianji_ft.chat.prompting import TOKENIZER_TEMPLATE, resolve_prompter

SPACED = [{"role": "user", "content": "  祝妈妈母亲节快乐\n"}]


def test_auto_renders_a_recognised_llama3_as_trained_keeping_whitespace(tmp_path):
    prompter = resolve_prompter(JinjaTokenizer("llama3"), tmp_path, template="auto")
    assert (prompter.name, prompter.source) == ("llama3_chat", "tokenizer")
    text = prompter.render(SPACED)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n  祝妈妈母亲节快乐\n<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert text != render_upstream("llama3", SPACED)


def test_the_manifests_template_wins_over_the_tokenizers(tmp_path):
    (tmp_path / "tianji_run.json").write_text(json.dumps({"template": "internlm2_chat"}), encoding="utf-8")
    prompter = resolve_prompter(JinjaTokenizer("llama3"), tmp_path, template="auto")
    assert (prompter.name, prompter.source) == ("internlm2_chat", "manifest")
    assert "<|im_start|>user\n  祝妈妈母亲节快乐\n<|im_end|>" in prompter.render(SPACED)


def test_the_tokenizers_own_template_is_used_only_when_asked_for_and_trims(tmp_path):
    prompter = resolve_prompter(JinjaTokenizer("llama3"), tmp_path, template=TOKENIZER_TEMPLATE)
    assert prompter.render(SPACED) == render_upstream("llama3", SPACED)
    assert "\n\n祝妈妈母亲节快乐<|eot_id|>" in prompter.render(SPACED)
