"""Tiny chat models built locally and deterministically, for tests, the demo and ``--tiny``.

Three families, each with a byte-level BPE tokenizer trained on the project's
own text (so Chinese and English round-trip) whose chat-template special
tokens are single tokens:

- ``internlm2``: ``InternLM2ForCausalLM`` loaded with ``trust_remote_code``;
  the modeling code is copied at build time from the installed xtuner package.
- ``llama3``: native transformers Llama with the Llama-3 chat template.
- ``internlm``: native Llama weights with the InternLM (v1) chat markers.

Models are cached under ``cache_dir()/tiny`` keyed on everything that goes
into them, so a second call is instant and a change rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tianji_ft.core.fsio import atomic_dir
from tianji_ft.core.paths import DATA_DIR, cache_dir

SEED = 20240521
VOCAB_SIZE = 2048
# Llama-3's pre-tokenizer split, so GGUF readers that know "llama-bpe"
# tokenize exactly as transformers does.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

INTERNLM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
INTERNLM_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|System|>:' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|User|>:' + message['content'] + '<eoh>\n' }}{% else %}"
    "{{ '<|Bot|>:' + message['content'] + '<eoa>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Bot|>:' }}{% endif %}"
)

FAMILIES = {
    "internlm2": dict(
        specials=["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|action_start|>",
                  "<|action_end|>", "<|interpreter|>", "<|plugin|>"],
        bos="<s>", eos="</s>", pad="</s>", unk="<unk>", stop="<|im_end|>",
        template=INTERNLM2_TEMPLATE, xtuner_template="internlm2_chat",
    ),
    "llama3": dict(
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|end_of_text|>", unk=None,
        stop="<|eot_id|>", template=LLAMA3_TEMPLATE, xtuner_template="llama3_chat",
    ),
    "internlm": dict(
        specials=["<unk>", "<s>", "</s>", "<|User|>", "<|Bot|>", "<eoh>", "<eoa>",
                  "<|System|>", "<eosys>"],
        bos="<s>", eos="</s>", pad="</s>", unk="<unk>", stop="<eoa>",
        template=INTERNLM_TEMPLATE, xtuner_template="internlm_chat",
    ),
}
# A LoRA leaves the random output layer frozen; at the usual init (0.02) its
# rows are so short that no hidden state reaches a logit far above the rest
# (loss stalls near 4.5), so the tiny models start from a wider init (0.2),
# where LoRA memorises a small dataset in about a hundred steps.
MODEL_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  initializer_range=0.2)


def _corpus_files() -> list[Path]:
    return [DATA_DIR / "tiny" / "corpus.txt", DATA_DIR / "demo" / "wishes.jsonl"]


def _corpus_lines() -> list[str]:
    lines = []
    for path in _corpus_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if path.suffix == ".jsonl":
                for turn in json.loads(line)["conversation"]:
                    lines.extend(v for v in turn.values() if v)
            elif line.strip():
                lines.append(line)
    return lines


def _build_key(family: str) -> str:
    import tokenizers
    import transformers

    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    for path in _corpus_files():
        h.update(path.read_bytes())
    h.update(f"{family}|{transformers.__version__}|{tokenizers.__version__}".encode())
    return h.hexdigest()[:16]


def build_tokenizer(family: str, out_dir: Path):
    """Train the family's byte-level BPE tokenizer on the project's text and save it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=spec["specials"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    bos_id = tok.token_to_id(spec["bos"])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{spec['bos']} $A", pair=f"{spec['bos']} $A $B",
                                      special_tokens=[(spec["bos"], bos_id)]),
    ])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spec["bos"], eos_token=spec["eos"], pad_token=spec["pad"],
        unk_token=spec["unk"], additional_special_tokens=spec["specials"],
        chat_template=spec["template"], clean_up_tokenization_spaces=False,
        # The InternLM2 remote code's generate() rejects token_type_ids.
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(out_dir)
    return fast


def _model_config(family: str, tokenizer, out_dir: Path):
    from transformers import AutoConfig, LlamaConfig

    spec = FAMILIES[family]
    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.convert_tokens_to_ids(spec["eos"]),
               pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    if family != "internlm2":
        return LlamaConfig(**MODEL_DIMS, **ids, rope_theta=500000.0, torch_dtype="float32")
    import xtuner

    src = Path(xtuner.__file__).parent / "_lite" / "modelings" / "internlm2"
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):
        shutil.copy(src / name, out_dir / name)
    raw = dict(MODEL_DIMS, **ids, model_type="internlm2", architectures=["InternLM2ForCausalLM"],
               bias=False, rope_theta=1000000, attn_implementation="eager", torch_dtype="float32",
               auto_map={
                   "AutoConfig": "configuration_internlm2.InternLM2Config",
                   "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                   "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
               })
    (out_dir / "config.json").write_text(json.dumps(raw, indent=2))
    return AutoConfig.from_pretrained(out_dir, trust_remote_code=True)


def build_tiny_model(family: str, out_dir: str | Path) -> Path:
    """Build the tiny ``family`` model (seeded weights, fp32 safetensors) into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose from {sorted(FAMILIES)}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, "tiny-model", overwrite=True) as tmp:
        tokenizer = build_tokenizer(family, tmp)
        config = _model_config(family, tokenizer, tmp)
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True, torch_dtype=torch.float32)
        stop_id = tokenizer.convert_tokens_to_ids(FAMILIES[family]["stop"])
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted({config.eos_token_id, stop_id}),
        )
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "tiny_model.json").write_text(json.dumps(
            {"family": family, "xtuner_template": FAMILIES[family]["xtuner_template"], "seed": SEED}))
    return out_dir


def ensure_tiny_model(family: str = "internlm2") -> Path:
    """Path of the cached tiny ``family`` model, building it on first use."""
    path = cache_dir() / "tiny" / f"{family}-{_build_key(family)}"
    if not (path / "tiny_model.json").is_file():
        build_tiny_model(family, path)
    return path
