"""Our template table equals XTuner's, and renders exactly what the tokenizers' chat templates render."""

from __future__ import annotations

import pytest

from tianji_ft.core.templates import bos_text, detect_template
from tianji_ft.core.templates import TEMPLATE_KEYS, TEMPLATES, get_template, split_messages
from tianji_ft.core.errors import UserError

FAMILY_TEMPLATE = {"internlm2": "internlm2_chat", "llama3": "llama3_chat", "internlm": "internlm_chat"}
SYSTEM = "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "祝姐姐生日快乐"}],
    "system, one turn": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "祝老师教师节快乐"}],
    "system, three turns": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "祝爸爸父亲节快乐"},
        {"role": "assistant", "content": "爸爸，父亲节快乐！您辛苦了，愿您永远健康开心。"},
        {"role": "user", "content": "再来一条，小红书风格"},
        {"role": "assistant", "content": "爸爸节日快乐🎉 愿您每天都开开心心呀～"},
        {"role": "user", "content": "谢谢！Happy Father's Day 怎么说？"},
    ],
}


def test_table_equals_xtuner():
    from xtuner.utils.templates import PROMPT_TEMPLATE

    for name, ours in TEMPLATES.items():
        theirs = PROMPT_TEMPLATE[name]
        for key in TEMPLATE_KEYS:
            assert ours.get(key) == theirs.get(key), f"{name}.{key}"


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
def test_render_matches_tokenizer_chat_template(tiny_tokenizer, family, case):
    tok = tiny_tokenizer(family)
    messages = CONVERSATIONS[case]
    ours = get_template(FAMILY_TEMPLATE[family]).render(messages, bos=bos_text(tok))
    theirs = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    ids = tok(ours, add_special_tokens=False)["input_ids"]
    assert ids == tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    # The stop word is one token, so generation can stop on its id.
    stop = TEMPLATES[FAMILY_TEMPLATE[family]]["STOP_WORDS"][0]
    assert len(tok(stop, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_detect_template_from_tokenizer(tiny_tokenizer, family):
    assert detect_template(tiny_tokenizer(family)) == FAMILY_TEMPLATE[family]


def test_render_keeps_answers_with_suffix_and_separator():
    text = get_template("internlm2_chat").render(CONVERSATIONS["system, three turns"], bos="<s>")
    assert text.startswith("<s><|im_start|>system\n" + SYSTEM + "<|im_end|>\n")
    assert "愿您永远健康开心。<|im_end|>\n<|im_start|>user\n再来一条" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("messages, message", [
    ([], "end with a user message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "end with a user message"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "two user messages"),
    ([{"role": "assistant", "content": "a"}], "must follow a user message"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "may only come first"),
    ([{"role": "tool", "content": "a"}], "role must be"),
    ([{"role": "user", "content": 3}], "must be a string"),
])
def test_split_messages_rejects_bad_conversations(messages, message):
    with pytest.raises(ValueError, match=message):
        split_messages(messages)


def test_unknown_template_is_a_user_error():
    with pytest.raises(UserError, match="unknown prompt template 'internlm3'"):
        get_template("internlm3")


def test_a_mistyped_template_or_config_gets_a_did_you_mean():
    from tianji_ft.configs.registry import resolve_config

    with pytest.raises(UserError, match="did you mean 'llama3_chat'"):
        get_template("llama3")
    with pytest.raises(UserError, match="did you mean 'internlm2_chat_7b_qlora_wishes_e3'"):
        resolve_config("internlm2_chat_7b_qlora_wishes_e4")
