"""A Llama-family Hugging Face model -> GGUF (f16 / q8_0 / q5_1) + an Ollama Modelfile.

Written with the ``gguf`` package (llama.cpp's own Python library) the way
llama.cpp's ``convert_hf_to_gguf.py`` writes Llama models: q/k rows permuted
for llama.cpp's rotary layout, norms in f32, the byte-level BPE vocabulary
with the Llama-3 pre-tokenizer, and the special tokens and chat template
from the tokenizer config. Tensors are read, converted and written a slice of
rows at a time, so memory stays near one slice whatever the model size.

InternLM2 checkpoints (fused ``wqkv``) need llama.cpp's own converter; for
them the export stops and prints the commands to use instead.
"""

from __future__ import annotations

import errno
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.weights.safetensors_io import FLOAT_DTYPES, read_weights, to_f32
from tianji_ft.core.manifest import model_manifest
from tianji_ft.core.templates import get_template, trained_template
from tianji_ft.weights.modelfile import render_modelfile, stop_token_ids
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_dir
from tianji_ft.core.outputs import Output, check_outputs

LLAMA_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
SLICE_ELEMENTS = 8 << 20


def _quant_types():
    import gguf

    Q = gguf.GGMLQuantizationType
    F = gguf.LlamaFileType
    return {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0),
            "q5_1": (Q.Q5_1, F.MOSTLY_Q5_1)}


class OtherConverterNeeded(UserError):
    """The model is fine, but not a family this exporter writes; ``commands`` says what to run."""

    def __init__(self, message: str, commands: str):
        super().__init__(message)
        self.commands = commands


@dataclass
class Export:
    gguf: Path
    modelfile: Path
    name: str


def ollama_name(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "model"


def _refuse_internlm2(model_dir: Path, out_dir: Path, name: str) -> None:
    commands = "\n".join([
        "# serve it now with lmdeploy (OpenAI-compatible API on port 23333):",
        f"lmdeploy serve api_server {model_dir} --model-name {name} --server-port 23333",
        "# or chat with it in the terminal:",
        f"lmdeploy chat {model_dir}",
        "# for Ollama, convert with llama.cpp's own script, then use a Modelfile as export writes for Llama:",
        f"python llama.cpp/convert_hf_to_gguf.py {model_dir} --outtype f16 --outfile {out_dir}/{name}-f16.gguf",
    ])
    raise OtherConverterNeeded(
        f"{model_dir}: InternLM2 weights need llama.cpp's own converter (convert_hf_to_gguf.py), not the gguf "
        f"package; serve it with: lmdeploy serve api_server {model_dir} --model-name {name}", commands)


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


def _vocab(model_dir: Path, vocab_size: int):
    """(tokens, token types) as llama.cpp's converter builds them for a GPT-2-style BPE vocabulary."""
    import gguf

    from tianji_ft.models.tiny import LLAMA3_SPLIT

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{model_dir}: no tokenizer.json; a SentencePiece (tokenizer.model) Llama needs "
                        "llama.cpp's convert_hf_to_gguf.py")
    data = json.loads(path.read_text(encoding="utf-8"))
    pre = data.get("pre_tokenizer") or {}
    splits = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", [pre]) if p.get("type") == "Split"]
    if data.get("model", {}).get("type") != "BPE" or LLAMA3_SPLIT not in splits:
        raise UserError(f"{path}: not Llama-3's byte-level BPE pre-tokenizer, which is the one written here; "
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
            special = added[i].get("special") or (token.startswith("<|") and token.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


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


def write_gguf(model_dir: str | Path, path: str | Path, quant: str = "f16", name: str | None = None) -> Path:
    """Write the Llama-family model in ``model_dir`` as one GGUF file at ``path``."""
    import gguf
    import numpy as np

    model_dir, path = Path(model_dir), Path(path)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    qtype, file_type = _quant_types()[quant]
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    n_layers = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    entries = read_weights(model_dir)
    plan = []  # (gguf name, entry or array, permute heads, type)
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type == "llama3":
        plan.append((gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _rope_freqs(config), 0,
                     gguf.GGMLQuantizationType.F32))
    elif rope_type not in (None, "default", "linear"):
        raise UserError(f"{model_dir}: rope scaling {rope_type!r} is not written here; use llama.cpp's converter")
    for hf_name, entry in entries.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise UserError(f"{model_dir}: tensor {hf_name} has no GGUF name for a Llama model")
        if entry.dtype not in FLOAT_DTYPES:
            raise UserError(f"{model_dir}: tensor {hf_name} is {entry.dtype}; export a float model")
        heads = n_head if ".q_proj." in hf_name else n_kv if ".k_proj." in hf_name else 0
        plan.append((new_name, entry, heads, _tensor_type(new_name, entry.shape, qtype)))

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name or model_dir.name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
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
    tokens, types = _vocab(model_dir, config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
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
        if isinstance(source, np.ndarray):
            yield source
            return
        rows = source.rows()
        step = rows if heads else max(1, SLICE_ELEMENTS // max(1, math.prod(source.shape[1:])))
        for row0 in range(0, rows, step):
            values = to_f32(source.read_raw(row0, min(rows, row0 + step)), source.dtype)
            values = values.reshape(-1, *source.shape[1:]) if source.shape else values.reshape(())
            if heads:
                values = _permute_rows(values, heads)
            yield gguf.quants.quantize(values, ttype)

    for _, source, heads, ttype in plan:
        _write_tensor_slices(writer, slices(source, heads, ttype))
    writer.close()
    return path


EXPORT_KIND = "ollama"


def export_ollama(model_dir: str | Path, out_dir: str | Path, quant: str = "f16", name: str | None = None,
                  overwrite: bool = False) -> Export:
    """Write ``NAME-QUANT.gguf`` and a ``Modelfile`` for the model in ``model_dir`` into ``out_dir``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quant not in _quant_types():
        raise UserError(f"--quant {quant!r}: choose one of f16, q8_0, q5_1")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{model_dir}: no config.json; export a merged model (tianji-ft merge) or a converted "
                        "full fine-tune, not an adapter")
    check_outputs({"model": model_dir}, [Output(out_dir, "-o", kind=EXPORT_KIND)], overwrite=overwrite)
    name = ollama_name(name or model_dir.name)
    architecture = (json.loads(config_path.read_text(encoding="utf-8")).get("architectures") or ["?"])[0]
    if architecture == "InternLM2ForCausalLM":
        _refuse_internlm2(model_dir, out_dir, name)
    if architecture not in LLAMA_ARCHITECTURES:
        raise UserError(f"{model_dir}: {architecture} is not a Llama-family model; this export writes "
                        f"{', '.join(LLAMA_ARCHITECTURES)}; use llama.cpp's convert_hf_to_gguf.py")
    template = trained_template(model_dir)
    if template is None:
        raise UserError(f"{model_dir}: cannot tell its chat template (no tianji_run.json); export the folder "
                        "tianji-ft merge or convert wrote")
    gguf_name = f"{name}-{quant}.gguf"
    try:
        with atomic_dir(out_dir, EXPORT_KIND, overwrite) as tmp:
            write_gguf(model_dir, tmp / gguf_name, quant=quant, name=name)
            system = model_manifest(model_dir).get("system")
            (tmp / "Modelfile").write_text(render_modelfile(gguf_name, template, system), encoding="utf-8")
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise UserError(f"{out_dir}: disk full while writing the GGUF ({err.strerror}); nothing was left "
                            "behind; free some space or write elsewhere with -o") from None
        raise
    return Export(out_dir / gguf_name, out_dir / "Modelfile", name)
