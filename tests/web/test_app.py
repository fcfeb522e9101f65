"""The Streamlit demo with Streamlit's AppTest, on the taught tiny model."""

from __future__ import annotations

import pytest

from tianji_ft.web.app import STYLES, conversation, with_style
from tianji_ft.web.options import WISHES_SYSTEM


def test_styles_are_phrased_like_the_wishes_data():
    # The wishes data asks "祝{name}{scene},{style}风格"; 正常 adds nothing.
    assert list(STYLES) == ["正常", "小红书", "严肃"]
    assert with_style("祝姐姐生日快乐", "小红书") == "祝姐姐生日快乐,小红书风格"
    assert with_style("祝姐姐生日快乐", "正常") == with_style("祝姐姐生日快乐", None) == "祝姐姐生日快乐"


def test_conversation_keeps_the_newest_turns_and_always_sends_the_system_box():
    turns = []
    for n in range(3):
        turns += [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
    messages = conversation("S", turns, "q3", history_turns=2)
    assert [m["content"] for m in messages] == ["S", "q1", "a1", "q2", "a2", "q3"]
    assert conversation("", [], "q", 5)[0] == {"role": "system", "content": ""}


@pytest.mark.slow
def test_page_loads_with_the_wishes_master_styles_and_flag_defaults(app):
    at = app("--temperature", "0.3", "--max-new-tokens", "64")
    assert at.title[0].value == "天机 · 送祝福大师"
    assert at.text_area(key="system").value == WISHES_SYSTEM
    assert at.segmented_control(key="style").options == list(STYLES)
    assert at.slider(key="temperature").value == 0.3 and at.slider(key="max_new_tokens").value == 64
    assert "internlm2_chat" in " ".join(c.value for c in at.sidebar.caption)
    assert len(at.chat_input) == 1 and not at.chat_message


@pytest.mark.slow
def test_a_prompt_gets_a_streamed_answer_and_reset_clears_the_chat(app, wishes):
    at = app("--temperature", "0")
    question, answer = wishes[0]
    at.chat_input[0].set_value(question).run()
    assert not at.exception
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    assert at.chat_message[1].markdown[0].value == answer
    at.segmented_control(key="style").set_value("严肃").run()
    at.chat_input[0].set_value(wishes[1][0]).run()
    turns = at.session_state.turns
    assert turns[2]["content"] == wishes[1][0] + ",严肃风格" and len(turns) == 4
    assert len(at.chat_message) == 4  # the earlier turn is still shown
    at.button(key="reset").click().run()
    assert at.session_state.turns == [] and not at.chat_message


@pytest.mark.slow
def test_system_prompt_box_is_what_the_model_sees(app, wishes, monkeypatch):
    from tianji_ft.chat.engine import ChatEngine

    prompts = []
    original = ChatEngine.stream

    def spy(self, messages, params=None):
        prompts.append(self.render(messages))
        return original(self, messages, params)

    monkeypatch.setattr(ChatEngine, "stream", spy)
    at = app("--temperature", "0")
    at.text_area(key="system").set_value("你是一位诗人").run()
    at.chat_input[0].set_value(wishes[0][0]).run()
    at.text_area(key="system").set_value("").run()
    at.chat_input[0].set_value(wishes[1][0]).run()
    assert "<|im_start|>system\n你是一位诗人<|im_end|>" in prompts[0] and WISHES_SYSTEM not in prompts[0]
    # An empty box means no system prompt, not the model's default one.
    assert "<|im_start|>system" not in prompts[1]
    assert wishes[0][0] in prompts[1]  # the first turn is still in the context
