"""A Llama-family or InternLM2 Hugging Face model -> GGUF (f16 / q8_0 / q5_1) + an Ollama Modelfile.

Written with the ``gguf`` package (llama.cpp's own Python library) the way
llama.cpp's ``convert_hf_to_gguf.py`` writes these models: q/k rows permuted
for llama.cpp's rotary layout, norms in f32, the vocabulary (byte-level BPE
with the Llama-3 pre-tokenizer, or a SentencePiece ``tokenizer.model`` with
scores and token types) and the special tokens and chat template from the
tokenizer config. InternLM2's fused ``wqkv`` is split into q, k and v per
key/value group, as llama.cpp's converter splits it for grouped-query
attention. Tensors are read, converted and written a slice of rows at a
time (a split or permuted matrix one tensor at a time), so memory stays near
one tensor whatever the model size.
"""

from __future__ import annotations

import errno
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tianji_ft.weights.safetensors_io import FLOAT_DTYPES, read_weights, to_f32
from tianji_ft.core.manifest import model_manifest
from tianji_ft.core.templates import get_template, trained_template
from tianji_ft.weights.modelfile import render_modelfile, stop_token_ids
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_dir
from tianji_ft.core.outputs import Output, check_outputs
from tianji_ft.core.progress import Progress

LLAMA_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
# Hugging Face architecture -> llama.cpp architecture written here.
ARCHITECTURES = {**{name: "llama" for name in LLAMA_ARCHITECTURES}, "InternLM2ForCausalLM": "internlm2"}
SLICE_ELEMENTS = 8 << 20


def _quant_types():
    import gguf

    Q = gguf.GGMLQuantizationType
    F = gguf.LlamaFileType
    return {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0),
            "q5_1": (Q.Q5_1, F.MOSTLY_Q5_1)}


@dataclass
class Export:
    gguf: Path
    modelfile: Path  # written only by export ollama
    name: str
    adapter: Path | None = None  # the GGUF LoRA, with --adapter


def ollama_name(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "model"


def _permute_rows(weights, n_head: int):
    # convert_hf_to_gguf's LlamaModel.permute: HF keeps each head's rotary
    # halves apart, llama.cpp wants them interleaved.
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensor_type(new_name: str, shape: tuple, qtype):
    import gguf

    Q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
        return Q.F32
    if qtype not in (Q.F32, Q.F16) and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return Q.F16  # rows not a whole number of blocks, as llama.cpp's converter falls back
    return qtype


def _rope_freqs(config: dict):
    """Llama-3.1-style rope scaling as llama.cpp's converter computes it (a rope_freqs tensor)."""
    import numpy as np

    scaling = config["rope_scaling"]
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / (config.get("rope_theta", 10000.0) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = scaling.get("factor", 8.0), scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_len = scaling.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_len / high:
            out.append(1.0)
        elif wavelen > old_len / low:
            out.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _bpe_vocab(model_dir: Path, vocab_size: int):
    """(tokens, token types) as llama.cpp's converter builds them for a GPT-2-style BPE vocabulary."""
    import gguf

    from tianji_ft.models.tiny import LLAMA3_SPLIT

    path = model_dir / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    pre = data.get("pre_tokenizer") or {}
    splits = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", [pre]) if p.get("type") == "Split"]
    if data.get("model", {}).get("type") != "BPE" or LLAMA3_SPLIT not in splits:
        raise UserError(f"{path}: not Llama-3's byte-level BPE pre-tokenizer, which is the BPE one written here; "
                        "convert with llama.cpp's convert_hf_to_gguf.py")
    reverse = {i: t for t, i in data["model"]["vocab"].items()}
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    reverse.update({i: t["content"] for i, t in added.items()})
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        tokens.append(token)
        if i in added:
            types.append(gguf.TokenType.CONTROL if _special(added[i]) else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _special(added: dict) -> bool:
    token = added.get("content", "")
    return bool(added.get("special")) or (token.startswith("<|") and token.endswith("|>"))


def _spm_vocab(model_dir: Path, vocab_size: int):
    """(tokens, scores, token types, add space prefix) from a SentencePiece ``tokenizer.model``, as
    llama.cpp's converter reads InternLM2's: the tokenizer config's added tokens override their slots."""
    import gguf

    try:
        from sentencepiece import SentencePieceProcessor
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise UserError("the sentencepiece package is needed for a tokenizer.model vocabulary: "
                        "pip install sentencepiece") from None
    path = model_dir / "tokenizer.model"
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    sp = SentencePieceProcessor(model_file=str(path))
    tokens, scores, types = [], [], []
    for i in range(vocab_size):
        if i >= sp.vocab_size():
            tokens.append(f"[PAD{i}]")
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
            continue
        piece = sp.id_to_piece(i)
        # llama.cpp reads a piece that is one NUL byte as an empty string; its converter renames it too
        tokens.append("🐉" if piece == "\x00" else piece)
        scores.append(sp.get_score(i))
        types.append(gguf.TokenType.UNKNOWN if sp.is_unknown(i) else gguf.TokenType.CONTROL if sp.is_control(i)
                     else gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.BYTE if sp.is_byte(i)
                     else gguf.TokenType.NORMAL)
    config_path = model_dir / "tokenizer_config.json"
    decoder = json.loads(config_path.read_text(encoding="utf-8")).get("added_tokens_decoder", {}) \
        if config_path.is_file() else {}
    for key, added in decoder.items():
        i = int(key)
        if i < vocab_size:
            tokens[i], scores[i] = added["content"], -1000.0
            types[i] = gguf.TokenType.CONTROL if _special(added) else gguf.TokenType.USER_DEFINED
    return tokens, scores, types, proto.normalizer_spec.add_dummy_prefix


def _write_vocab(writer, model_dir: Path, vocab_size: int) -> int:
    """The tokenizer into ``writer``; returns the number of tokens written."""
    import gguf

    if (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
        tokens, types = _bpe_vocab(model_dir, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
        load_merges = True
    elif (model_dir / "tokenizer.model").is_file():
        tokens, scores, types, space_prefix = _spm_vocab(model_dir, vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
        writer.add_add_space_prefix(space_prefix)
        load_merges = False
    else:
        raise UserError(f"{model_dir}: no tokenizer.json or tokenizer.model; export the folder tianji-ft merge or "
                        "convert wrote (it copies the tokenizer)")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=load_merges, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    return len(tokens)


@dataclass
class Derived:
    """A tensor computed from stored ones (a slice of InternLM2's ``wqkv``), made whole when written."""

    shape: tuple
    make: Callable[[], object]  # -> float32 ndarray of ``shape``


def _wqkv_parts(entry, config: dict) -> dict[str, Derived]:
    """q, k and v of a fused ``wqkv``: per key/value group its q heads, then one k head and one v head
    (InternLM2's layout), with q and k permuted for llama.cpp's rotary layout."""
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]
    head_dim, q_per_kv = hidden // n_head, n_head // n_kv

    def grouped():
        values = to_f32(entry.read_raw(0, entry.rows()), entry.dtype).reshape(n_kv, q_per_kv + 2, head_dim, -1)
        return values

    def q():
        return _permute_rows(grouped()[:, :q_per_kv].reshape(n_head * head_dim, -1), n_head)

    def k():
        return _permute_rows(grouped()[:, q_per_kv].reshape(n_kv * head_dim, -1), n_kv)

    def v():
        return grouped()[:, q_per_kv + 1].reshape(n_kv * head_dim, -1)

    cols = entry.shape[1]
    return {"wq": Derived((n_head * head_dim, cols), q), "wk": Derived((n_kv * head_dim, cols), k),
            "wv": Derived((n_kv * head_dim, cols), v)}


def _tensor_plan(model_dir: Path, arch: str, config: dict, qtype) -> list:
    """(gguf name, stored entry or Derived or array, heads to permute, type) for every tensor written."""
    import gguf

    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    gguf_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "internlm2": gguf.MODEL_ARCH.INTERNLM2}[arch]
    names = gguf.get_tensor_name_map(gguf_arch, config["num_hidden_layers"])
    plan = []
    scaling = config.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type")) == "llama3":
        plan.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _rope_freqs(config), 0,
                     gguf.GGMLQuantizationType.F32))
    for hf_name, entry in read_weights(model_dir).items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if entry.dtype not in FLOAT_DTYPES:
            raise UserError(f"{model_dir}: tensor {hf_name} is {entry.dtype}; export a float model")
        if arch == "internlm2" and hf_name.endswith(".attention.wqkv.weight"):
            prefix = hf_name[: -len("wqkv.weight")]
            parts = [(f"{prefix}{part}.weight", derived) for part, derived in _wqkv_parts(entry, config).items()]
        else:
            parts = [(hf_name, entry)]
        for name, source in parts:
            new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if new_name is None:
                raise UserError(f"{model_dir}: tensor {name} has no GGUF name for an {arch} model")
            heads = n_head if ".q_proj." in name else n_kv if ".k_proj." in name else 0
            plan.append((new_name, source, heads, _tensor_type(new_name, source.shape, qtype)))
    return plan


def _write_tensor_slices(writer, slices) -> None:
    # GGUFWriter.write_tensor_data takes a whole tensor; this writes one in
    # slices of rows the same way (align, data, pad), in tensor-info order.
    fout = writer.fout[0]
    name = next(iter(writer.tensors[0]))
    info = writer.tensors[0].pop(name)
    writer.write_padding(fout, fout.tell())
    written = sum(fout.write(memoryview(part).cast("B")) for part in slices)
    if written != info.nbytes:
        raise AssertionError(f"{name}: wrote {written} bytes, expected {info.nbytes}")
    writer.write_padding(fout, info.nbytes)


def write_gguf(model_dir: str | Path, path: str | Path, quant: str = "f16", name: str | None = None,
               quiet: bool = True) -> Path:
    """Write the Llama-family or InternLM2 model in ``model_dir`` as one GGUF file at ``path``
    (``quiet=False``: progress in bytes on stderr)."""
    import gguf
    import numpy as np

    model_dir, path = Path(model_dir), Path(path)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = ARCHITECTURES[(config.get("architectures") or ["?"])[0]]
    qtype, file_type = _quant_types()[quant]
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type"))
    # llama.cpp has no dynamic NTK scaling; its converter leaves it out, and so do we (the model then
    # runs unscaled, as trained, up to its max_position_embeddings).
    if rope_type not in (None, "default", "linear", "llama3", "dynamic"):
        raise UserError(f"{model_dir}: rope scaling {rope_type!r} is not written here; use llama.cpp's converter")
    plan = _tensor_plan(model_dir, arch, config, qtype)

    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name or model_dir.name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // n_head)
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write_vocab(writer, model_dir, config["vocab_size"])
    template = trained_template(model_dir)
    stops = stop_token_ids(model_dir, list(get_template(template).stop_words)) if template else []
    if stops:
        writer.add_eot_token_id(stops[0])  # llama.cpp ends a turn here as well as at eos

    for new_name, source, _, ttype in plan:
        nbytes = math.prod(gguf.quant_shape_to_byte_shape(source.shape, ttype))
        # A non-uint8 dtype keeps the element shape; raw_dtype says how it is stored.
        writer.add_tensor_info(new_name, source.shape, np.dtype(np.float32), nbytes, raw_dtype=ttype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    def slices(source, heads, ttype):
        if isinstance(source, (np.ndarray, Derived)):
            yield gguf.quants.quantize(source if isinstance(source, np.ndarray) else source.make(), ttype)
            return
        rows = source.rows()
        step = rows if heads else max(1, SLICE_ELEMENTS // max(1, math.prod(source.shape[1:])))
        for row0 in range(0, rows, step):
            values = to_f32(source.read_raw(row0, min(rows, row0 + step)), source.dtype)
            values = values.reshape(-1, *source.shape[1:]) if source.shape else values.reshape(())
            if heads:
                values = _permute_rows(values, heads)
            yield gguf.quants.quantize(values, ttype)

    sizes = [math.prod(gguf.quant_shape_to_byte_shape(source.shape, ttype)) for _, source, _, ttype in plan]
    with Progress(f"gguf {path.name}", sum(sizes), unit="B", quiet=quiet) as progress:
        for (_, source, heads, ttype), size in zip(plan, sizes):
            _write_tensor_slices(writer, slices(source, heads, ttype))
            progress.update(size)
    writer.close()
    return path


EXPORT_KIND = "ollama"


def export_ollama(model_dir: str | Path, out_dir: str | Path, quant: str = "f16", name: str | None = None,
                  overwrite: bool = False, adapter: str | Path | None = None, modelfile: bool = True,
                  quiet: bool = True) -> Export:
    """Write ``NAME-QUANT.gguf`` and a ``Modelfile`` for the model in ``model_dir`` into ``out_dir``.

    With ``adapter`` (a LoRA trained on ``model_dir``), also ``NAME-lora.gguf``, and the Modelfile
    loads it with ``ADAPTER`` on the base: ship the small adapter, keep one base. Without
    ``modelfile``, only the GGUF files are written (``tianji-ft export gguf``).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quant not in _quant_types():
        raise UserError(f"--quant {quant!r}: choose one of f16, q8_0, q5_1")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{model_dir}: no config.json; export a merged model (tianji-ft merge) or a converted "
                        "full fine-tune, or pass the base model with --adapter ADAPTER_DIR")
    check_outputs({"model": model_dir, "adapter": adapter}, [Output(out_dir, "-o", kind=EXPORT_KIND)],
                  overwrite=overwrite)
    name = ollama_name(name or (Path(adapter).name if adapter else model_dir.name))
    architecture = (json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or ["?"])[0]
    if architecture not in ARCHITECTURES:
        why = (" (InternLM v1: llama.cpp's converter does not support it; serve it with tianji-ft serve "
               f"{model_dir})") if architecture == "InternLMForCausalLM" else ""
        raise UserError(f"{model_dir}: {architecture} is not exported here{why}; this export writes "
                        f"{', '.join(ARCHITECTURES)}")
    sources = [p for p in (adapter, model_dir) if p is not None]
    template = trained_template(*sources)
    if template is None and modelfile:
        raise UserError(f"{model_dir}: cannot tell its chat template (no tianji_run.json); export the folder "
                        "tianji-ft merge or convert wrote")
    base_name = f"{name}-{quant}.gguf" if adapter is None else f"{ollama_name(model_dir.name)}-{quant}.gguf"
    lora_name = f"{name}-lora.gguf" if adapter is not None else None
    try:
        with atomic_dir(out_dir, EXPORT_KIND, overwrite) as tmp:
            if lora_name:
                from tianji_ft.weights.gguf_lora import write_lora_gguf

                write_lora_gguf(adapter, model_dir, tmp / lora_name, name=name)
            write_gguf(model_dir, tmp / base_name, quant=quant, name=ollama_name(model_dir.name), quiet=quiet)
            if modelfile:
                system = next((m["system"] for m in map(model_manifest, sources) if m.get("system")), None)
                (tmp / "Modelfile").write_text(render_modelfile(base_name, template, system, adapter=lora_name),
                                               encoding="utf-8")
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise UserError(f"{out_dir}: disk full while writing the GGUF ({err.strerror}); nothing was left "
                            "behind; free some space or write elsewhere with -o") from None
        raise
    return Export(out_dir / base_name, out_dir / "Modelfile", name, out_dir / lora_name if lora_name else None)
