"""Our renderer against the real tokenizers' chat templates and against XTuner's training text.

The chat templates are the upstream Jinja strings, stored with their source in
``helpers/fixtures/upstream_chat_templates.json`` and rendered with jinja2 the
way transformers' ``apply_chat_template`` renders them. XTuner's training
text comes from its own ``template_map_fn`` (read from the installed file):
each turn's input and output joined as its ``encode_fn`` joins them.

Whitespace around a message is where the two disagree: Llama-3's template
trims every message, XTuner trains on the text as it is. The renderer follows
XTuner, since chat, eval and serve must show a fine-tuned model what it was
trained on (see the module docstring of ``tianji_ft.core.templates``).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from helpers.upstream_templates import UPSTREAM, JinjaTokenizer, render_upstream

from tianji_ft.core.errors import UserError
from tianji_ft.core.templates import (TEMPLATE_KEYS, TEMPLATES, PromptTemplate, bos_text, detect_template, get_template, split_messages,
                                      trained_template)
from tianji_ft.models import tiny

FAMILY_TEMPLATE = {"internlm2": "internlm2_chat", "llama3": "llama3_chat"}
SYSTEM = "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
PLAIN = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "祝爸爸父亲节快乐"},
    {"role": "assistant", "content": "爸爸，父亲节快乐！您辛苦了。"},
    {"role": "user", "content": "再来一条，小红书风格"},
]
SPACED = [  # what users paste: a leading space, a trailing newline, a trailing full-width space
    {"role": "system", "content": " " + SYSTEM + "\n"},
    {"role": "user", "content": "  祝姐姐生日快乐\n"},
    {"role": "assistant", "content": "姐姐，生日快乐！🎂\n\n"},
    {"role": "user", "content": "\t再写一条英文的：Happy birthday!　"},
]


class _Template(dict):
    """XTuner's templates are mmengine ConfigDicts: keys read as attributes."""

    __getattr__ = dict.__getitem__


def xtuner_template_map_fn():
    """``template_map_fn`` from XTuner's file, without importing mmengine (seconds) for its other function."""
    spec = importlib.util.find_spec("xtuner")
    if spec is None:
        pytest.skip("xtuner is not installed")
    path = Path(spec.submodule_search_locations[0]) / "dataset" / "map_fns" / "template_map_fn.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    fn = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "template_map_fn")
    scope: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), scope)
    return scope["template_map_fn"]


def xtuner_training_text(name: str, messages: list[dict], bos: str) -> str:
    """bos, then each turn's templated input and output (+ SEP), then the last question's input."""
    system, turns = messages[0]["content"], []
    users = [m["content"] for m in messages if m["role"] == "user"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"] + [""]
    for i, (question, answer) in enumerate(zip(users, answers)):
        turns.append({"input": question, "output": answer, **({"system": system} if i == 0 else {})})
    template = _Template(TEMPLATES[name])
    mapped = xtuner_template_map_fn()({"conversation": turns}, template)["conversation"]
    text = bos
    for turn in mapped[:-1]:
        text += turn["input"] + turn["output"] + turn["sep"]  # encode_fn: input, output, then sep
    return text + mapped[-1]["input"]


def xtuner_prompt_templates() -> dict:
    """XTuner's PROMPT_TEMPLATE, read from its file with ConfigDict as dict (no mmengine, no torch)."""
    spec = importlib.util.find_spec("xtuner")
    if spec is None:
        pytest.skip("xtuner is not installed")
    path = Path(spec.submodule_search_locations[0]) / "utils" / "templates.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom))]
    scope: dict = {"ConfigDict": dict}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), scope)
    return scope["PROMPT_TEMPLATE"]


def test_our_table_is_xtuners_key_for_key():
    theirs = xtuner_prompt_templates()
    for name, ours in TEMPLATES.items():
        for key in TEMPLATE_KEYS:
            assert ours.get(key) == theirs[name].get(key), f"{name}.{key}"
    # the keys compared are every key the table uses, and every key XTuner renders with
    assert set(TEMPLATE_KEYS) == {key for template in TEMPLATES.values() for key in template}
    assert set(TEMPLATE_KEYS) == {key for t in theirs.values() for key in t} - {"SUFFIX_AS_EOS"}


def test_a_bare_template_renders_only_the_question_and_is_immutable():
    bare = PromptTemplate("bare")
    assert bare.render([{"role": "system", "content": "系统"}, {"role": "user", "content": "祝福"},
                        {"role": "assistant", "content": "快乐"}, {"role": "user", "content": "再来"}]) == "祝福快乐再来"
    assert bare.stop_words == () and (bare.system, bare.suffix, bare.sep) == ("", "", "")
    with pytest.raises(AttributeError):
        bare.name = "other"


def test_rounds_and_the_bot_name_are_numbered_as_xtuner_numbers_them(monkeypatch):
    monkeypatch.setitem(TEMPLATES, "rounds", dict(SYSTEM="<{bot_name}|{round}>{system}\n",
                                                  INSTRUCTION="[Round {round}]\n问：{input}\n{bot_name}：", SEP="\n"))
    text = get_template("rounds").render(PLAIN)
    assert text == (f"<BOT|1>{SYSTEM}\n[Round 1]\n问：祝爸爸父亲节快乐\nBOT：爸爸，父亲节快乐！您辛苦了。\n"
                    "[Round 2]\n问：再来一条，小红书风格\nBOT：")


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_without_surrounding_whitespace_ours_is_the_upstream_chat_template(family):
    ours = get_template(FAMILY_TEMPLATE[family]).render(PLAIN, bos=UPSTREAM[family]["bos_token"])
    assert ours == render_upstream(family, PLAIN)


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_one_question_without_system(family):
    one = [{"role": "user", "content": "祝老师教师节快乐"}]
    assert get_template(FAMILY_TEMPLATE[family]).render(one, bos=UPSTREAM[family]["bos_token"]) == \
        render_upstream(family, one)


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_whitespace_is_kept_as_xtuner_trains_on_it(family):
    name, bos = FAMILY_TEMPLATE[family], UPSTREAM[family]["bos_token"]
    ours = get_template(name).render(SPACED, bos=bos)
    assert ours == xtuner_training_text(name, SPACED, bos)
    for message in SPACED:
        assert message["content"] in ours  # every message, its whitespace included


def test_internlm2s_template_keeps_whitespace_too():
    assert get_template("internlm2_chat").render(SPACED, bos="<s>") == render_upstream("internlm2", SPACED)


def test_llama3s_template_trims_each_message_where_training_text_does_not():
    ours = get_template("llama3_chat").render(SPACED, bos="<|begin_of_text|>")
    upstream = render_upstream("llama3", SPACED)
    assert upstream != ours
    trimmed = [{**m, "content": m["content"].strip()} for m in SPACED]
    assert upstream == get_template("llama3_chat").render(trimmed, bos="<|begin_of_text|>")
    assert "<|end_header_id|>\n\n祝姐姐生日快乐<|eot_id|>" in upstream
    assert "<|end_header_id|>\n\n  祝姐姐生日快乐\n<|eot_id|>" in ours


@pytest.mark.parametrize("family, constant", [("internlm2", "INTERNLM2_TEMPLATE"), ("llama3", "LLAMA3_TEMPLATE")])
def test_the_tiny_models_carry_the_upstream_chat_templates(family, constant):
    assert getattr(tiny, constant) == UPSTREAM[family]["chat_template"]


def test_internlm_chat_renders_answers_with_its_suffix_and_separator():
    text = get_template("internlm_chat").render(PLAIN, bos="<s>")
    assert text == ("<s><|System|>:" + SYSTEM + "\n<|User|>:祝爸爸父亲节快乐<eoh>\n<|Bot|>:爸爸，父亲节快乐！您辛苦了。<eoa>\n"
                    "<|User|>:再来一条，小红书风格<eoh>\n<|Bot|>:")
    assert text == xtuner_training_text("internlm_chat", PLAIN, "<s>")


def test_a_template_without_a_system_slot_drops_the_system_message():
    assert get_template("llama3_chat").render(PLAIN[1:]) == get_template("llama3_chat").render(
        [{"role": "system", "content": ""}] + PLAIN[1:])
    assert get_template("chatglm3").render(PLAIN).startswith("<|system|>\n" + SYSTEM + "<|user|>\n")


# --- stop words, Ollama TEMPLATE ------------------------------------------------------------------


@pytest.mark.parametrize("name, words", [
    ("internlm2_chat", ("<|im_end|>",)),
    ("qwen_chat", ("<|im_end|>", "<|endoftext|>")),
    ("llama3_chat", ("<|eot_id|>",)),
    ("default", ()),  # no SUFFIX, no STOP_WORDS
    ("zephyr", ()),
])
def test_stop_words_are_the_templates_then_its_suffix(name, words):
    assert get_template(name).stop_words == words


def test_a_suffix_that_is_not_a_stop_word_is_added_to_them(monkeypatch):
    monkeypatch.setitem(TEMPLATES, "suffixed", dict(INSTRUCTION="Q:{input}\nA:", SUFFIX="</a>", SEP="\n"))
    monkeypatch.setitem(TEMPLATES, "blank_suffix", dict(INSTRUCTION="Q:{input}\nA:", SUFFIX="\n"))
    assert get_template("suffixed").stop_words == ("</a>",)
    assert get_template("blank_suffix").stop_words == ()
    template = get_template("suffixed")
    assert (template.suffix, template.sep, template.system) == ("</a>", "\n", "")


def test_the_ollama_template_is_one_turn_in_go_template_syntax():
    assert get_template("internlm2_chat").ollama_template() == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ end }}"
        "{{ .Response }}<|im_end|>\n")
    # no SYSTEM slot: the system prompt alone; literal braces are escaped for Go
    assert get_template("default").ollama_template().startswith("{{ if .System }}<|System|>:{{ .System }}\n")


def test_the_ollama_template_escapes_braces_and_refuses_numbered_rounds(monkeypatch):
    monkeypatch.setitem(TEMPLATES, "braces", dict(INSTRUCTION="{{x}} {input}", SUFFIX="}}"))
    assert get_template("braces").ollama_template() == (
        '{{ if .System }}{{ .System }}{{ end }}{{ if .Prompt }}{{ "{{" }}x}} {{ .Prompt }}{{ end }}{{ .Response }}}}')
    monkeypatch.setitem(TEMPLATES, "rounds", dict(INSTRUCTION="[Round {round}]\n{input}"))
    with pytest.raises(UserError) as err:
        get_template("rounds").ollama_template()
    assert str(err.value) == ("template 'rounds' numbers its rounds, which an Ollama TEMPLATE cannot; "
                              "write the Modelfile by hand")


# --- which template a model has -------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_a_tokenizer_with_an_upstream_chat_template_is_detected_as_its_family(family):
    assert detect_template(JinjaTokenizer(family)) == FAMILY_TEMPLATE[family]


def test_no_chat_template_or_one_we_do_not_know_is_none():
    tok = JinjaTokenizer("llama3")
    tok.chat_template = None
    assert detect_template(tok) is None
    tok = JinjaTokenizer("llama3")
    tok.apply_chat_template = lambda messages, **kw: "\n".join(m["content"] for m in messages)
    assert detect_template(tok) is None


def test_a_template_that_refuses_a_system_turn_is_probed_without_one():
    tok = JinjaTokenizer("internlm2")

    def no_system(messages, **kw):
        if messages[0]["role"] == "system":
            raise ValueError("System role not supported")
        return render_upstream("internlm2", messages)

    tok.apply_chat_template = no_system
    assert detect_template(tok) == "internlm2_chat"


def test_bos_text_is_the_bos_only_when_the_tokenizer_adds_it():
    assert bos_text(JinjaTokenizer("llama3")) == "<|begin_of_text|>"
    assert bos_text(JinjaTokenizer("llama3", adds_bos=False)) == ""
    tok = JinjaTokenizer("llama3")
    tok.bos_token_id = None
    assert bos_text(tok) == ""


def test_trained_template_reads_the_manifest_then_the_tiny_marker_then_the_vocabulary(tmp_path):
    manifest, marker, vocab, nothing = (tmp_path / n for n in ("manifest", "marker", "vocab", "nothing"))
    for folder in (manifest, marker, vocab, nothing):
        folder.mkdir()
    (manifest / "tianji_run.json").write_text(json.dumps({"template": "qwen_chat"}), encoding="utf-8")
    (marker / "tiny_model.json").write_text(json.dumps({"xtuner_template": "internlm_chat"}), encoding="utf-8")
    (vocab / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": "<|eot_id|>"},
                                                                       {"content": "<|im_end|>"}]}), "utf-8")
    assert trained_template(manifest) == "qwen_chat"
    assert trained_template(marker) == "internlm_chat"
    assert trained_template(nothing, marker) == "internlm_chat"
    assert trained_template(vocab) == "internlm2_chat"  # the families we train are tried first, in order
    (vocab / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": "<end_of_turn>"}]}), "utf-8")
    assert trained_template(vocab) == "gemma"
    (nothing / "added_tokens.json").write_text(json.dumps({"<|eot_id|>": 5}), encoding="utf-8")
    assert trained_template(nothing) == "llama3_chat"
    config = tmp_path / "config_only"
    config.mkdir()
    (config / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}), encoding="utf-8")
    assert trained_template(config) == "internlm2_chat"
    # a token counts only whole: a vocabulary with a piece of one has none
    (config / "tokenizer_config.json").write_text(json.dumps({"x": "|im_end|> <|eot_id| |eot_id|>"}), "utf-8")
    assert trained_template(config) is None
    assert trained_template(tmp_path / "absent") is None


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": ["x"]}], "messages[0].content must be a string"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
     "messages[1]: a system message may only come first"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "messages[1]: two user messages in a row"),
    ([{"role": "assistant", "content": "a"}], "messages[0]: an assistant message must follow a user message"),
    ([{"role": "tool", "content": "a"}], "messages[0].role must be system, user or assistant, not 'tool'"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "messages must end with a user message"),
    ([], "messages must end with a user message"),
])
def test_split_messages_names_the_message_at_fault(messages, message):
    with pytest.raises(ValueError) as err:
        split_messages(messages)
    assert str(err.value) == message  # the server sends it as the 400's message


def test_split_messages_pairs_questions_with_answers():
    assert split_messages(PLAIN) == (SYSTEM, [("祝爸爸父亲节快乐", "爸爸，父亲节快乐！您辛苦了。"), ("再来一条，小红书风格", None)])
    assert split_messages(PLAIN[1:2]) == (None, [("祝爸爸父亲节快乐", None)])


def fake_xtuner(monkeypatch, table: dict | None) -> None:
    """XTuner's template table as ``table`` (None: XTuner not installed), without importing XTuner (torch)."""
    module = None if table is None else type(sys)("xtuner.utils.templates")
    if module is not None:
        module.PROMPT_TEMPLATE = table
    for name in ("xtuner", "xtuner.utils"):
        monkeypatch.setitem(sys.modules, name, type(sys)(name))
    monkeypatch.setitem(sys.modules, "xtuner.utils.templates", module)


def test_a_template_only_xtuner_has_is_read_from_its_table(monkeypatch):
    fake_xtuner(monkeypatch, {"vicuna": {"SYSTEM": "{system}\n", "INSTRUCTION": "USER: {input} ASSISTANT:",
                                         "SUFFIX": "</s>", "SEP": "\n"}})
    template = get_template("vicuna")
    assert template.render(PLAIN) == (SYSTEM + "\nUSER: 祝爸爸父亲节快乐 ASSISTANT:爸爸，父亲节快乐！您辛苦了。</s>\n"
                                      "USER: 再来一条，小红书风格 ASSISTANT:")
    assert template.stop_words == ("</s>",)


@pytest.mark.parametrize("table", [None, {"vicuna": {"INSTRUCTION": "{input}"}}], ids=["no xtuner", "not in xtuner"])
def test_an_unknown_template_is_a_user_error_with_a_suggestion(monkeypatch, table):
    fake_xtuner(monkeypatch, table)
    with pytest.raises(UserError) as err:
        get_template("llama3_chta")
    assert str(err.value).startswith("unknown prompt template 'llama3_chta'") and "llama3_chat" in str(err.value)
    assert str(err.value).endswith("?")
