"""GGUF + Modelfile export: read back with gguf's reader, and run by llama.cpp where it is installed.

The llama.cpp check needs ``llama-cpp-python``, which compiles llama.cpp from
source (11 minutes measured here on 2 shared cores); without it that test skips.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tianji_ft.cli import main
from tianji_ft.weights.gguf import export_ollama
from tianji_ft.core.templates import DETECT_FIRST, TEMPLATES, get_template
from tianji_ft.weights.modelfile import render_modelfile

BLOCK_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                 "ffn_down")
PROMPTS = ("祝姐姐生日快乐", "给老师写一段新年祝福", "Happy birthday to my friend")


def render_go(template: str, system: str, prompt: str, response: str) -> str:
    """The subset of Go templates the Modelfile uses: if-blocks and three variables."""
    values = {"System": system, "Prompt": prompt}
    text = re.sub(r"\{\{ if \.(\w+) \}\}(.*?)\{\{ end \}\}", lambda m: m.group(2) if values[m.group(1)] else "",
                  template, flags=re.S)
    return text.replace("{{ .System }}", system).replace("{{ .Prompt }}", prompt).replace("{{ .Response }}", response)


def test_modelfile_templates_are_ollamas_for_llama3_and_internlm2():
    assert get_template("llama3_chat").ollama_template() == (
        "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
        "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}{{ .Response }}<|eot_id|>")
    assert get_template("internlm2_chat").ollama_template() == (
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n{{ end }}"
        "{{ .Response }}<|im_end|>\n")


@pytest.mark.parametrize("name", DETECT_FIRST)
def test_modelfile_turn_is_the_text_xtuner_trained_on(name):
    spec = TEMPLATES[name]
    trained = (spec["SYSTEM"].format(system="你是送祝福大师") + spec["INSTRUCTION"].format(input="祝姐姐生日快乐")
               + "生日快乐！" + spec["SUFFIX"] + spec.get("SEP", ""))
    assert render_go(get_template(name).ollama_template(), "你是送祝福大师", "祝姐姐生日快乐", "生日快乐！") == trained
    modelfile = render_modelfile("m.gguf", name, "你是送祝福大师")
    assert 'SYSTEM """你是送祝福大师"""' in modelfile
    for line in ("FROM ./m.gguf", "PARAMETER temperature 0.35", "PARAMETER top_p 0.9", "PARAMETER repeat_penalty 1.1",
                 f'PARAMETER stop "{spec["STOP_WORDS"][0]}"'):
        assert line in modelfile.splitlines()


@pytest.fixture(scope="module")
def exports(llama3_merged, tmp_path_factory):
    out = tmp_path_factory.mktemp("ollama")
    return {q: export_ollama(llama3_merged, out / q, quant=q) for q in ("f16", "q8_0", "q5_1")}


def hf_weights(model_dir: Path) -> dict:
    from safetensors.numpy import load_file

    return {k: v for p in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(p).items()}


def permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["f16", "q8_0", "q5_1"])
def test_gguf_reads_back_with_names_shapes_types_values_and_tokenizer(exports, llama3_merged, quant):
    import gguf
    import numpy as np
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(exports[quant].gguf)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    config = json.loads((llama3_merged / "config.json").read_text())
    assert field("general.architecture") == "llama"
    assert field("general.file_type") == {"f16": 1, "q8_0": 7, "q5_1": 9}[quant]
    assert field("llama.block_count") == config["num_hidden_layers"] == 2
    assert field("llama.embedding_length") == 128 and field("llama.feed_forward_length") == 256
    assert field("llama.attention.head_count") == 4 and field("llama.attention.head_count_kv") == 2
    assert field("llama.rope.freq_base") == config["rope_theta"]

    tokenizer = AutoTokenizer.from_pretrained(llama3_merged)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "llama-bpe"
    assert field("tokenizer.ggml.tokens") == tokenizer.convert_ids_to_tokens(list(range(config["vocab_size"])))
    assert len(field("tokenizer.ggml.merges")) > 0
    assert field("tokenizer.ggml.bos_token_id") == tokenizer.bos_token_id
    assert field("tokenizer.ggml.eot_token_id") == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert field("tokenizer.chat_template") == tokenizer.chat_template

    weights = hf_weights(llama3_merged)
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
             "q5_1": gguf.GGMLQuantizationType.Q5_1}[quant]
    tensors = {t.name: t for t in reader.tensors}
    expected = {"token_embd.weight", "output.weight", "output_norm.weight"}
    expected |= {f"blk.{b}.{n}.weight" for b in range(2) for n in BLOCK_TENSORS}
    assert set(tensors) == expected
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
             "blk.1.attn_q.weight": "model.layers.1.self_attn.q_proj.weight",
             "blk.1.attn_k.weight": "model.layers.1.self_attn.k_proj.weight",
             "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
             "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight"}
    for name, hf_name in pairs.items():
        tensor, want = tensors[name], weights[hf_name]
        assert list(tensor.shape) == list(reversed(want.shape))  # ggml order
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if want.ndim == 1 else qtype)
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            want = permute(want, 4 if "attn_q" in name else 2)
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        if tensor.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            assert np.array_equal(got, want.astype(np.float16 if want.ndim == 2 else np.float32).astype(np.float32))
        else:
            assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


@pytest.mark.slow
def test_modelfile_beside_the_gguf_has_the_runs_system_prompt_and_stop(exports):
    export = exports["q5_1"]
    lines = export.modelfile.read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"FROM ./{export.gguf.name}" and export.gguf.parent == export.modelfile.parent
    assert 'SYSTEM """你是一位送祝福的大师。"""' in lines and 'PARAMETER stop "<|eot_id|>"' in lines


@pytest.mark.slow
def test_cli_export_prints_the_ollama_commands(llama3_merged, tmp_path, capsys):
    code = main(["export", "ollama", str(llama3_merged), "-o", str(tmp_path / "out"), "--quant", "q8_0",
                 "--name", "Tianji Wishes"])
    out = capsys.readouterr().out
    assert code == 0 and "ollama create tianji-wishes -f Modelfile" in out
    assert (tmp_path / "out" / "tianji-wishes-q8_0.gguf").is_file()


@pytest.fixture(scope="module")
def internlm2_merged(tmp_path_factory):
    """The tiny InternLM2 as merge writes it (safetensors, tokenizer, manifest with a system prompt)."""
    from tianji_ft.models.tiny import ensure_tiny_model
    from tianji_ft.weights.merge import write_model

    base = tmp_path_factory.mktemp("i2base") / "internlm2"
    shutil.copytree(ensure_tiny_model("internlm2"), base)
    (base / "tianji_run.json").write_text(json.dumps(
        {"template": "internlm2_chat", "family": "internlm2", "system": "你是送祝福大师", "lora": True},
        ensure_ascii=False), encoding="utf-8")
    return write_model(base, tmp_path_factory.mktemp("i2merged") / "internlm2-tianji")


@pytest.fixture(scope="module")
def internlm2_exports(internlm2_merged, tmp_path_factory):
    out = tmp_path_factory.mktemp("i2ollama")
    return {q: export_ollama(internlm2_merged, out / q, quant=q) for q in ("f16", "q8_0", "q5_1")}


def wqkv_split_as_the_modeling_code_does(wqkv, config):
    """q, k, v weights from InternLM2's fused wqkv, following modeling_internlm2.py's
    rearrange "b q (h gs d) -> b q h gs d" with gs = 2 + q heads per kv head: for each kv head h,
    its q heads, then its k head, then its v head."""
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config["hidden_size"] // n_head
    gs = 2 + n_head // n_kv
    rows = {"q": [], "k": [], "v": []}
    for h in range(n_kv):
        base = h * gs * d
        for j in range(gs - 2):
            rows["q"].append(wqkv[base + j * d: base + (j + 1) * d])
        rows["k"].append(wqkv[base + (gs - 2) * d: base + (gs - 1) * d])
        rows["v"].append(wqkv[base + (gs - 1) * d: base + gs * d])
    return {k: np.concatenate(v) for k, v in rows.items()}


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q5_1"])
def test_internlm2_gguf_has_the_architecture_split_attention_vocabulary_and_stop(internlm2_exports,
                                                                               internlm2_merged, quant):
    import gguf

    config = json.loads((internlm2_merged / "config.json").read_text(encoding="utf-8"))
    reader = gguf.GGUFReader(internlm2_exports[quant].gguf)
    fields = {k: f.contents() for k, f in reader.fields.items() if k != "tokenizer.ggml.merges"}
    assert fields["general.architecture"] == "internlm2"
    assert fields["internlm2.block_count"] == config["num_hidden_layers"]
    assert fields["internlm2.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["internlm2.context_length"] == config["max_position_embeddings"]
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 3 + config["num_hidden_layers"] * 9  # wqkv became three tensors
    weights = hf_weights(internlm2_merged)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    split = wqkv_split_as_the_modeling_code_does(weights["model.layers.1.attention.wqkv.weight"], config)
    want = {"q": permute(split["q"], n_head), "k": permute(split["k"], n_kv), "v": split["v"]}
    for part, values in want.items():
        tensor = tensors[f"blk.1.attn_{part}.weight"]
        assert tuple(tensor.shape[::-1]) == values.shape
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(values.shape)
        # q8_0: 8-bit blocks of 32 with an f16 scale; q5_1: 5-bit blocks with a scale and a minimum
        tolerance = {"f16": 1e-3, "q8_0": 0.02, "q5_1": 0.1}[quant]
        assert np.abs(got - values).max() <= tolerance * np.abs(values).max(), part
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    assert tensors["token_embd.weight"].tensor_type.name == quant.upper()
    tokenizer = json.loads((internlm2_merged / "tokenizer.json").read_text(encoding="utf-8"))
    added = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert len(fields["tokenizer.ggml.tokens"]) == config["vocab_size"]
    assert fields["tokenizer.ggml.bos_token_id"] == added["<s>"] and fields["tokenizer.ggml.eos_token_id"] == added["</s>"]
    assert fields["tokenizer.ggml.eot_token_id"] == added["<|im_end|>"]
    tokens = fields["tokenizer.ggml.tokens"]
    for special in ("<|im_start|>", "<|im_end|>", "<|action_start|>", "<|interpreter|>"):
        assert tokens[added[special]] == special
        assert fields["tokenizer.ggml.token_type"][added[special]] == gguf.TokenType.CONTROL


def test_internlm2_modelfile_renders_the_trained_text_with_the_runs_system_prompt(internlm2_exports):
    text = internlm2_exports["f16"].modelfile.read_text(encoding="utf-8")
    spec = TEMPLATES["internlm2_chat"]
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    trained = (spec["SYSTEM"].format(system="你是送祝福大师") + spec["INSTRUCTION"].format(input="祝姐姐生日快乐")
               + "生日快乐！" + spec["SUFFIX"] + spec["SEP"])
    assert render_go(template, "你是送祝福大师", "祝姐姐生日快乐", "生日快乐！") == trained
    assert 'SYSTEM """你是送祝福大师"""' in text and 'PARAMETER stop "<|im_end|>"' in text.splitlines()
    assert text.startswith(f"FROM ./{internlm2_exports['f16'].gguf.name}\n")


def test_an_architecture_or_tokenizer_it_cannot_write_is_one_line_and_leaves_nothing(internlm2_merged, tmp_path,
                                                                                  capsys):
    other = tmp_path / "gpt2"
    shutil.copytree(internlm2_merged, other)
    config = json.loads((other / "config.json").read_text(encoding="utf-8"))
    (other / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    assert main(["export", "ollama", str(other), "-o", str(tmp_path / "out1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GPT2LMHeadModel is not exported here" in err
    odd = tmp_path / "odd_tokenizer"
    shutil.copytree(internlm2_merged, odd)
    tokenizer = json.loads((odd / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["pre_tokenizer"] = {"type": "Whitespace"}
    (odd / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    assert main(["export", "ollama", str(odd), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not Llama-3's byte-level BPE pre-tokenizer" in err
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_adapter_folder_is_refused_in_one_line(llama3_adapter, tmp_path, capsys):
    code = main(["export", "ollama", str(llama3_adapter), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "no config.json" in err and not (tmp_path / "out").exists()


def llama_cpp_or_skip():
    return pytest.importorskip("llama_cpp", exc_type=ImportError, reason=(
        "llama-cpp-python is not importable; .venv/bin/pip install llama-cpp-python==0.3.36 (builds llama.cpp)"))


def transformers_at_f16(model_dir: Path):
    """The model as an f16 GGUF stores it: matrices rounded to f16, norms kept in f32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, trust_remote_code=True)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(param.half().float())
    return tokenizer, model


def greedy_transformers(model, tokenizer, ids: list[int], n: int) -> list[int]:
    import torch

    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def greedy_llama_cpp(llm, ids: list[int], n: int) -> list[int]:
    got = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        got.append(token)
        if len(got) == n:
            return got
    return got


def modelfile_prompt(modelfile: Path, prompt: str) -> str:
    """The text Ollama sends the model for one user turn, from the Modelfile's own TEMPLATE."""
    template = modelfile.read_text(encoding="utf-8").split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    return render_go(template, "", prompt, "").removesuffix(render_go(template, "", "", ""))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama3", "internlm2"])
def test_llama_cpp_generates_the_greedy_tokens_transformers_does(family, request):
    llama_cpp = llama_cpp_or_skip()
    exports = request.getfixturevalue("exports" if family == "llama3" else "internlm2_exports")
    model_dir = request.getfixturevalue("llama3_merged" if family == "llama3" else "internlm2_merged")
    tokenizer, model = transformers_at_f16(model_dir)
    llm = llama_cpp.Llama(model_path=str(exports["f16"].gguf), n_ctx=256, n_threads=1, verbose=False)
    try:
        for prompt in PROMPTS:
            messages = [{"role": "user", "content": prompt}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
            # What Ollama renders from the Modelfile is the same text, BOS aside.
            assert llm.tokenize(modelfile_prompt(exports["f16"].modelfile, prompt).encode(), add_bos=True,
                                special=True) == ids
            assert greedy_llama_cpp(llm, ids, 12) == greedy_transformers(model, tokenizer, ids, 12), prompt
    finally:
        llm.close()


@pytest.mark.slow
def test_llama_cpp_logits_of_a_quantized_internlm2_are_close(internlm2_exports, internlm2_merged):
    """q5_1 (5 bits per weight) through llama.cpp; q8_0 is checked weight by weight above, since the
    llama.cpp of llama-cpp-python 0.3.36 crashes on Q8_0 matrices of the tiny model's shapes on this CPU
    even when llama.cpp quantizes the file itself."""
    llama_cpp = llama_cpp_or_skip()
    import torch

    tokenizer, model = transformers_at_f16(internlm2_merged)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0, -1].numpy()
    llm = llama_cpp.Llama(model_path=str(internlm2_exports["q5_1"].gguf), n_ctx=256, n_threads=1, verbose=False)
    try:
        llm.eval(ids)
        logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)  # the last position's
        got = np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).copy()
    finally:
        llm.close()
    # 5-bit blocks of 32 on a random tiny model (init 0.2: every weight matters). Measured here: the
    # largest difference 14% of the logits' spread, correlation 0.967, the same top 5. Bounds with room:
    spread = want.max() - want.min()
    assert np.abs(got - want).max() <= 0.2 * spread
    assert np.corrcoef(got, want)[0, 1] >= 0.95
    assert len(set(np.argsort(got)[-5:]) & set(np.argsort(want)[-5:])) >= 4
    assert int(got.argmax()) == int(want.argmax())


def test_a_full_disk_during_export_leaves_no_half_written_gguf(tiny_llama3, tmp_path, monkeypatch):
    import errno

    from tianji_ft.weights import gguf as export_gguf
    from tianji_ft.core.errors import UserError

    def half_written(model_dir, path, **kwargs):
        path.write_bytes(b"GGUF" + b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_gguf, "write_gguf", half_written)
    with pytest.raises(UserError, match="disk full") as err:
        export_ollama(tiny_llama3, tmp_path / "out" / "ollama")
    assert "\n" not in str(err.value) and list((tmp_path / "out").iterdir()) == []


# ---- a LoRA adapter as a GGUF LoRA on the base GGUF ----

@pytest.fixture(scope="module")
def internlm2_lora(internlm2_merged, tmp_path_factory):
    """A random rank-4 LoRA on every linear layer of the tiny InternLM2 (fused wqkv included), its GGUF
    export beside the base, and the same adapter merged and exported, for comparison."""
    from helpers.runs import make_adapter
    from tianji_ft.weights.merge import merge

    base = internlm2_merged
    adapter = make_adapter(base, tmp_path_factory.mktemp("i2lora") / "wishes-lora", r=4, lora_alpha=8, seed=3)
    (adapter / "tianji_run.json").write_text((base / "tianji_run.json").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path_factory.mktemp("i2lora_out")
    with_adapter = export_ollama(base, out / "lora", quant="f16", adapter=adapter)
    merged = merge(base, adapter, out / "merged_model")
    return {"base": base, "adapter": adapter, "export": with_adapter, "merged": merged,
            "merged_export": export_ollama(merged, out / "merged", quant="f16")}


def gguf_tensors(path: Path) -> dict:
    import gguf

    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(t.shape[::-1]))
            for t in gguf.GGUFReader(path).tensors}


def test_a_lora_gguf_on_its_base_equals_the_merged_models_weights(internlm2_lora):
    import gguf

    lora_path = internlm2_lora["export"].adapter
    reader = gguf.GGUFReader(lora_path)
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "internlm2" and fields["adapter.lora.alpha"] == 4.0
    lora = gguf_tensors(lora_path)
    base = gguf_tensors(internlm2_lora["export"].gguf)
    merged = gguf_tensors(internlm2_lora["merged_export"].gguf)
    changed = sorted({name.rsplit(".", 1)[0] for name in lora})
    assert "blk.0.attn_q.weight" in changed and "blk.1.attn_v.weight" in changed and "blk.0.ffn_down.weight" in changed
    for name in changed:  # W + B @ A in the GGUF's own row order, rounded to f16 as both files are
        delta = lora[f"{name}.lora_b"] @ lora[f"{name}.lora_a"]
        scale = np.abs(merged[name]).max()
        assert np.abs(base[name] + delta - merged[name]).max() <= 2e-3 * scale, name
    assert internlm2_lora["export"].adapter.stat().st_size < internlm2_lora["export"].gguf.stat().st_size


def test_the_modelfile_loads_the_adapter_on_the_base(internlm2_lora):
    export = internlm2_lora["export"]
    lines = export.modelfile.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == [f"FROM ./{export.gguf.name}", f"ADAPTER ./{export.adapter.name}"]
    assert 'PARAMETER stop "<|im_end|>"' in lines and 'SYSTEM """你是送祝福大师"""' in lines


def test_an_adapter_that_replaces_whole_tensors_is_refused_in_one_line(internlm2_merged, tmp_path, capsys):
    from helpers.runs import make_adapter

    adapter = make_adapter(internlm2_merged, tmp_path / "embed", r=2, target_modules=["wo"],
                           modules_to_save=["output"])
    assert main(["export", "gguf", str(internlm2_merged), "--adapter", str(adapter), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "replaces whole tensors" in err and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_llama_cpp_with_the_lora_gguf_generates_the_adapted_models_tokens(internlm2_lora):
    llama_cpp = llama_cpp_or_skip()
    import torch

    from peft import PeftModel

    # llama.cpp computes W x + B (A x) with W, A and B in f16: so does this PEFT model, unmerged.
    tokenizer, base = transformers_at_f16(internlm2_lora["base"])
    model = PeftModel.from_pretrained(base, internlm2_lora["adapter"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(param.half().float())
    export = internlm2_lora["export"]
    llm = llama_cpp.Llama(model_path=str(export.gguf), lora_path=str(export.adapter), n_ctx=256, n_threads=1,
                          verbose=False)
    try:
        for prompt in PROMPTS:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            assert greedy_llama_cpp(llm, ids, 12) == greedy_transformers(model, tokenizer, ids, 12), prompt
    finally:
        llm.close()


def test_a_sentencepiece_vocabulary_is_written_with_scores_types_and_added_tokens(internlm2_merged, tmp_path):
    """InternLM2's released checkpoints ship tokenizer.model (SentencePiece); a small one trained here."""
    import gguf
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["祝姐姐生日快乐，愿你天天开心。", "给老师写一段新年祝福。", "Happy birthday to my friend!",
                                 "春节快乐，万事如意，身体健康。"] * 50), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   byte_fallback=True, character_coverage=1.0, model_type="bpe",
                                   user_defined_symbols=["<|im_start|>", "<|im_end|>"])
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    model = tmp_path / "internlm2-spm"
    shutil.copytree(internlm2_merged, model)
    (model / "tokenizer.json").unlink()
    shutil.copy(tmp_path / "sp.model", model / "tokenizer.model")
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps({**config, "vocab_size": sp.vocab_size() + 2}), encoding="utf-8")
    im_end = sp.piece_to_id("<|im_end|>")
    (model / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {
        str(im_end): {"content": "<|im_end|>", "special": True}}}), encoding="utf-8")
    path = export_gguf_file(model, tmp_path / "out.gguf")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()}
    assert fields["tokenizer.ggml.model"] == "llama"
    tokens, scores, types = (fields[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    assert len(tokens) == sp.vocab_size() + 2 and tokens[-1] == f"[PAD{sp.vocab_size() + 1}]"
    for i in range(sp.vocab_size()):
        if i == im_end:
            continue
        assert tokens[i] == sp.id_to_piece(i) and scores[i] == pytest.approx(sp.get_score(i))
    byte = next(i for i in range(sp.vocab_size()) if sp.is_byte(i))
    assert types[byte] == gguf.TokenType.BYTE and types[sp.unk_id()] == gguf.TokenType.UNKNOWN
    assert types[sp.bos_id()] == gguf.TokenType.CONTROL
    assert tokens[im_end] == "<|im_end|>" and types[im_end] == gguf.TokenType.CONTROL and scores[im_end] == -1000.0
    assert fields["tokenizer.ggml.add_space_prefix"] is True


def export_gguf_file(model_dir: Path, path: Path) -> Path:
    from tianji_ft.weights.gguf import write_gguf

    return write_gguf(model_dir, path, quant="f16")
