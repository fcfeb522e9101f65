"""Where the template and system prompt come from: run manifest, tokenizer, flag."""

from __future__ import annotations

import copy

import pytest

from tianji_ft.chat.prompting import TOKENIZER_TEMPLATE, resolve_prompter
from tianji_ft.core.manifest import write_manifest
from tianji_ft.core.errors import UserError

USER = [{"role": "user", "content": "祝朋友考试顺利"}]


@pytest.fixture
def tok(tiny_tokenizer):
    return copy.deepcopy(tiny_tokenizer("internlm2"))


def _model_dir(tmp_path, name="model", **manifest):
    path = tmp_path / name
    path.mkdir()
    if manifest:
        write_manifest(path, manifest)
    return path


def test_manifest_gives_template_and_system(tok, tmp_path):
    model = _model_dir(tmp_path, template="internlm_chat", system="你是医生")
    p = resolve_prompter(tok, model)
    assert (p.name, p.source, p.system, p.warnings) == ("internlm_chat", "manifest", "你是医生", [])
    assert p.render(USER).startswith("<s><|System|>:你是医生\n<|User|>:祝朋友考试顺利<eoh>\n")


def test_adapter_manifest_comes_before_the_model_manifest(tok, tmp_path):
    model = _model_dir(tmp_path, template="internlm_chat")
    adapter = _model_dir(tmp_path, "adapter", template="internlm2_chat", system="S")
    assert resolve_prompter(tok, model, adapter).name == "internlm2_chat"


def test_flag_that_differs_from_manifest_wins_with_a_warning(tok, tmp_path):
    model = _model_dir(tmp_path, template="internlm2_chat")
    p = resolve_prompter(tok, model, template="llama3_chat")
    assert (p.name, p.source) == ("llama3_chat", "flag")
    assert len(p.warnings) == 1 and "internlm2_chat" in p.warnings[0] and "llama3_chat" in p.warnings[0]
    assert resolve_prompter(tok, model, template="internlm2_chat").warnings == []


def test_without_manifest_the_tokenizer_template_is_recognised(tok, tmp_path):
    p = resolve_prompter(tok, _model_dir(tmp_path))
    assert (p.name, p.source, p.system) == ("internlm2_chat", "tokenizer", None)
    assert p.stop_words == ("<|im_end|>",)


def test_unrecognised_chat_template_is_used_as_is(tok, tmp_path):
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"
    p = resolve_prompter(tok, _model_dir(tmp_path), system="S")
    assert p.name == TOKENIZER_TEMPLATE and p.stop_words == ()
    assert p.render(USER) == "[system]S[user]祝朋友考试顺利[assistant]"


def test_no_manifest_and_no_chat_template_asks_for_a_flag(tok, tmp_path):
    tok.chat_template = None
    with pytest.raises(UserError, match="pass --template NAME"):
        resolve_prompter(tok, _model_dir(tmp_path))
    assert resolve_prompter(tok, _model_dir(tmp_path, "m2"), template="internlm2_chat").source == "flag"


def test_system_flag_overrides_manifest_and_empty_means_none(tok, tmp_path):
    model = _model_dir(tmp_path, template="internlm2_chat", system="你是医生")
    assert resolve_prompter(tok, model, system="你是老师").system == "你是老师"
    p = resolve_prompter(tok, model, system="")
    assert "system" not in p.render(USER)


def test_a_system_message_in_the_request_replaces_the_default(tok, tmp_path):
    p = resolve_prompter(tok, _model_dir(tmp_path, template="internlm2_chat", system="默认"))
    text = p.render([{"role": "system", "content": "自定义"}, *USER])
    assert "自定义" in text and "默认" not in text
