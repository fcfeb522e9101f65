"""The shared chat engine on tiny models: batches, streaming, stop handling, sampling, adapters."""

from __future__ import annotations

import threading

import pytest

from tianji_ft.chat.engine import ChatEngine, GenerationParams, _held_back
from tianji_ft.core.errors import UserError

GREEDY = GenerationParams(temperature=0.0, max_new_tokens=48)


def _ask(question):
    return [{"role": "user", "content": question}]


def test_held_back_waits_for_split_characters_and_stop_prefixes():
    assert _held_back("你好\ufffd", []) == 1
    assert _held_back("你好<|e", ["<|end|>"]) == 3
    assert _held_back("你好<", ["<|end|>", "<x"]) == 1
    assert _held_back("你好", ["<|end|>"]) == 0


@pytest.mark.slow
def test_taught_model_answers_and_stops(taught_engine, wishes):
    question, answer = wishes[0]
    reply = taught_engine.chat(_ask(question), GREEDY)
    assert (reply.text, reply.finish_reason) == (answer, "stop")
    assert reply.completion_tokens < GREEDY.max_new_tokens
    assert taught_engine.prompter.source == "manifest"


@pytest.mark.slow
def test_batch_answers_equal_single_answers(taught_engine, wishes):
    conversations = [_ask(q) for q, _ in wishes[:3]] + [_ask("祝你")]
    batch = taught_engine.chat_batch(conversations, GREEDY)
    assert [r.text for r in batch] == [taught_engine.chat(c, GREEDY).text for c in conversations]
    assert [r.text for r in batch[:3]] == [a for _, a in wishes[:3]]


@pytest.mark.slow
def test_stream_pieces_join_to_the_answer_and_never_split_a_character(taught_engine, wishes):
    question, answer = wishes[4]
    stream = taught_engine.stream(_ask(question), GREEDY)
    pieces = list(stream)
    assert "".join(pieces) == answer and len(pieces) > 1
    assert not any("\ufffd" in p for p in pieces)
    assert stream.reply.finish_reason == "stop" and stream.reply.text == answer


@pytest.mark.slow
def test_extra_stop_strings_cut_the_answer(taught_engine, wishes):
    question, answer = wishes[0]  # 姐姐，生日快乐！...
    params = GenerationParams(temperature=0.0, max_new_tokens=48, stop=("快乐",))
    reply = taught_engine.chat(_ask(question), params)
    assert (reply.text, reply.finish_reason) == (answer[:answer.index("快乐")], "stop")
    assert "".join(taught_engine.stream(_ask(question), params)) == reply.text


@pytest.mark.slow
def test_closing_a_stream_early_frees_its_slot(taught_engine, wishes):
    stream = iter(taught_engine.stream(_ask(wishes[1][0]), GREEDY))
    next(stream)
    stream.close()
    done = []
    worker = threading.Thread(target=lambda: done.append(taught_engine.chat(_ask(wishes[2][0]), GREEDY)))
    worker.start()
    worker.join(timeout=60)
    assert done and done[0].text == wishes[2][1]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama3", "internlm"])
def test_random_model_runs_to_the_limit_and_sampling_follows_the_seed(tiny_model, family):
    engine = ChatEngine(tiny_model(family), device="cpu")
    stop = {"llama3": "<|eot_id|>", "internlm": "<eoa>"}[family]
    assert engine.tokenizer.convert_tokens_to_ids(stop) in engine._stop_ids
    reply = engine.chat(_ask("你好"), GenerationParams(temperature=0.0, max_new_tokens=8))
    assert (reply.finish_reason, reply.completion_tokens) == ("length", 8)
    sampled = [engine.chat(_ask("你好"), GenerationParams(temperature=1.0, top_k=0, top_p=1.0,
                                                         max_new_tokens=12, seed=s)).text for s in (1, 1, 2, 3)]
    assert sampled[0] == sampled[1]
    assert len(set(sampled)) > 1


@pytest.mark.slow
def test_adapter_loads_and_its_manifest_gives_the_template(tiny_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tianji_ft.core.manifest import write_manifest

    base = tiny_model("llama3")
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                                      init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    write_manifest(tmp_path / "adapter", {"template": "llama3_chat", "system": "你是助手"})
    engine = ChatEngine(base, adapter=tmp_path / "adapter", device="cpu")
    assert (engine.prompter.source, engine.prompter.system) == ("manifest", "你是助手")
    assert type(engine.model).__name__ == "PeftModelForCausalLM"  # what XTuner's adapters load as
    plain = ChatEngine(base, device="cpu")
    params = GenerationParams(temperature=0.0, max_new_tokens=6)
    assert engine.chat(_ask("你好"), params).text != plain.chat(_ask("你好"), params).text


def test_bad_model_and_adapter_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        ChatEngine(tmp_path)
    with pytest.raises(UserError, match="no such model folder"):
        ChatEngine(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="not a PEFT adapter"):
        ChatEngine(tmp_path, adapter=tmp_path)


def test_bits_need_a_gpu(tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the check is for CPU-only machines")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        ChatEngine(tiny_model("llama3"), bits=4)
