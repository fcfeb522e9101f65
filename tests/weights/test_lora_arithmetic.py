"""The LoRA merge arithmetic against a numpy oracle, with no model and no torch.

Adapters are written as PEFT lays them out (``base_model.model.<module>.lora_A.weight``,
``adapter_config.json``), with small random fp32 tensors; the oracle is
``W + scale * B @ A`` in float64, with ``scale = alpha / r`` or, for rsLoRA,
``alpha / sqrt(r)``, computed here from the config, not read from the code.
"""

from __future__ import annotations

import ctypes
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.weights import lora
from tianji_ft.weights.lora import check_fits, load_adapter, single_threaded_blas, tensor_slices
from tianji_ft.weights.safetensors_io import read_safetensors_header

PREFIX = "base_model.model."
Q, V, EMBED = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.embed_tokens"


def save(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


def make_adapter(folder: Path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    save(folder / "adapter_model.safetensors", tensors)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}), encoding="utf-8")
    return folder


def merged(entry, pair, dtype="F32") -> np.ndarray:
    numpy_dtype = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[dtype]
    parts = [np.array(part, copy=True).view(numpy_dtype).reshape(-1) for part in tensor_slices(entry, dtype, pair)]
    return np.concatenate(parts).reshape(entry.shape)


@pytest.fixture
def rng():
    return np.random.default_rng(18)


@pytest.mark.parametrize("rank, use_rslora, scale", [(4, False, 8 / 4), (4, True, 8 / 2), (9, True, 8 / 3),
                                                      (9, False, 8 / 9)])
def test_the_merge_is_w_plus_scale_b_a_with_rslora_dividing_by_the_root_of_the_rank(tmp_path, rng, rank,
                                                                                   use_rslora, scale):
    w = rng.standard_normal((6, 5)).astype(np.float32)
    a, b = rng.standard_normal((rank, 5)).astype(np.float32), rng.standard_normal((6, rank)).astype(np.float32)
    base = read_safetensors_header(save(tmp_path / "base" / "model.safetensors", {f"{Q}.weight": w}))
    adapter = load_adapter(make_adapter(tmp_path / "adapter", {"r": rank, "lora_alpha": 8, "use_rslora": use_rslora},
                                        {f"{PREFIX}{Q}.lora_A.weight": a, f"{PREFIX}{Q}.lora_B.weight": b}))
    pair = adapter.pairs[f"{Q}.weight"]
    assert pair.scale == pytest.approx(scale, rel=1e-12)
    oracle = w.astype(np.float64) + scale * (b.astype(np.float64) @ a.astype(np.float64))
    np.testing.assert_allclose(merged(base[f"{Q}.weight"], pair), oracle, rtol=1e-5, atol=1e-5)


def test_alpha_pattern_overrides_lora_alpha_for_the_modules_it_names(tmp_path, rng):
    tensors = {}
    for module in (Q, V):
        tensors[f"{PREFIX}{module}.lora_A.weight"] = rng.standard_normal((2, 3)).astype(np.float32)
        tensors[f"{PREFIX}{module}.lora_B.weight"] = rng.standard_normal((3, 2)).astype(np.float32)
    config = {"r": 2, "lora_alpha": 4, "alpha_pattern": {"v_proj": 16}}
    adapter = load_adapter(make_adapter(tmp_path / "adapter", config, tensors))
    assert adapter.pairs[f"{Q}.weight"].scale == 2.0
    assert adapter.pairs[f"{V}.weight"].scale == 8.0
    # a pattern matches whole name parts: "proj" is not "v_proj"
    config["alpha_pattern"] = {"proj": 16}
    assert load_adapter(make_adapter(tmp_path / "adapter2", config, tensors)).pairs[f"{V}.weight"].scale == 2.0


@pytest.mark.parametrize("how", ["embedding", "fan_in_fan_out"])
def test_embeddings_and_fan_in_fan_out_layers_add_the_transposed_product(tmp_path, rng, how):
    rows, cols, rank = 7, 4, 2  # the base is (rows, cols); B @ A is (cols, rows)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    a, b = rng.standard_normal((rank, rows)).astype(np.float32), rng.standard_normal((cols, rank)).astype(np.float32)
    parts = ("lora_embedding_A", "lora_embedding_B") if how == "embedding" else ("lora_A", "lora_B")
    name = EMBED if how == "embedding" else Q
    config = {"r": rank, "lora_alpha": 2, "fan_in_fan_out": how == "fan_in_fan_out"}
    adapter = load_adapter(make_adapter(tmp_path / "adapter", config, {f"{PREFIX}{name}.{parts[0]}": a,
                                                                       f"{PREFIX}{name}.{parts[1]}": b}))
    pair = adapter.pairs[f"{name}.weight"]
    assert pair.transpose and pair.delta_shape() == (rows, cols)
    base = read_safetensors_header(save(tmp_path / "base.safetensors", {f"{name}.weight": w}))
    oracle = w + 1.0 * (b.astype(np.float64) @ a.astype(np.float64)).T
    np.testing.assert_allclose(merged(base[f"{name}.weight"], pair), oracle, rtol=1e-5, atol=1e-5)


def test_a_tensor_merged_in_many_slices_equals_one_merged_whole(tmp_path, rng, monkeypatch):
    w = rng.standard_normal((37, 8)).astype(np.float32)
    a, b = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((37, 3)).astype(np.float32)
    base = read_safetensors_header(save(tmp_path / "base.safetensors", {f"{Q}.weight": w}))
    adapter = load_adapter(make_adapter(tmp_path / "adapter", {"r": 3, "lora_alpha": 6},
                                        {f"{PREFIX}{Q}.lora_A.weight": a, f"{PREFIX}{Q}.lora_B.weight": b}))
    whole = merged(base[f"{Q}.weight"], adapter.pairs[f"{Q}.weight"])
    monkeypatch.setattr(lora, "SLICE_BYTES", 5 * 8 * 4)  # 5 rows a slice: 8 slices, the last of 2 rows
    assert len(list(tensor_slices(base[f"{Q}.weight"], "F32", adapter.pairs[f"{Q}.weight"]))) == 8
    np.testing.assert_array_equal(merged(base[f"{Q}.weight"], adapter.pairs[f"{Q}.weight"]), whole)
    np.testing.assert_allclose(whole, w + 2.0 * (b.astype(np.float64) @ a), rtol=1e-5, atol=1e-5)


def test_fp32_is_rounded_once_to_fp16_and_bf16(tmp_path, rng):
    w = (rng.standard_normal((4, 6)) * 3).astype(np.float32)
    a, b = rng.standard_normal((2, 6)).astype(np.float32), rng.standard_normal((4, 2)).astype(np.float32)
    base = read_safetensors_header(save(tmp_path / "base.safetensors", {f"{Q}.weight": w}))
    adapter = load_adapter(make_adapter(tmp_path / "adapter", {"r": 2, "lora_alpha": 2},
                                        {f"{PREFIX}{Q}.lora_A.weight": a, f"{PREFIX}{Q}.lora_B.weight": b}))
    pair = adapter.pairs[f"{Q}.weight"]
    f32 = merged(base[f"{Q}.weight"], pair)
    np.testing.assert_array_equal(merged(base[f"{Q}.weight"], pair, "F16"), f32.astype(np.float16))
    # bf16 by round-to-nearest-even on the fp32 bits, done here in float64 arithmetic
    bits = f32.view(np.uint32).astype(np.float64)
    expected = np.round(bits / 65536.0).astype(np.uint64)  # np.round is half-to-even
    np.testing.assert_array_equal(merged(base[f"{Q}.weight"], pair, "BF16"), expected.astype(np.uint16))


def test_a_tensor_without_a_pair_is_copied_byte_for_byte_or_converted(tmp_path, rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    entry = read_safetensors_header(save(tmp_path / "base.safetensors", {"norm.weight": w}))["norm.weight"]
    raw = b"".join(bytes(part) for part in tensor_slices(entry, "F32"))
    assert raw == w.tobytes()
    np.testing.assert_array_equal(merged(entry, None, "F16"), w.astype(np.float16))
    ids = read_safetensors_header(save(tmp_path / "ids.safetensors", {"ids": np.arange(6, dtype=np.int64)}))["ids"]
    assert b"".join(bytes(p) for p in tensor_slices(ids, "I64")) == np.arange(6, dtype=np.int64).tobytes()
    with pytest.raises(UserError, match="cannot convert I64 tensor to F16"):
        list(tensor_slices(ids, "F16"))


def test_keys_with_and_without_the_peft_prefix_and_adapter_names_are_read(tmp_path, rng):
    a, b = rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    tensors = {f"{PREFIX}{Q}.lora_A.default.weight": a, f"{PREFIX}{Q}.lora_B.default.weight": b,
               f"{V}.lora_A.weight": a, f"{V}.lora_B.weight": b,
               f"{PREFIX}lm_head.modules_to_save.default.weight": b,
               f"{PREFIX}{Q}.base_layer.bias": a[0]}
    adapter = load_adapter(make_adapter(tmp_path / "adapter", {"r": 2, "lora_alpha": 2}, tensors))
    assert sorted(adapter.pairs) == [f"{Q}.weight", f"{V}.weight"]
    assert sorted(adapter.replaced) == ["lm_head.modules_to_save.default.weight", f"{Q}.bias"]
    assert adapter.pairs[f"{Q}.weight"].a.shape == (2, 3) and adapter.pairs[f"{Q}.weight"].b.shape == (3, 2)
    assert not adapter.pairs[f"{Q}.weight"].transpose and adapter.config["r"] == 2


@pytest.mark.parametrize("config, keys, message", [
    ({"use_dora": True}, ["lora_A", "lora_B"], "DoRA adapters are not supported"),
    ({}, ["lora_A", "lora_B", "lora_magnitude_vector"], "DoRA adapters are not supported"),
    ({}, ["lora_A"], "has only one of lora_A/lora_B"),
    ({}, ["lora_B"], "has only one of lora_A/lora_B"),
    ({"peft_type": "IA3"}, ["lora_A", "lora_B"], "peft_type IA3 is not LoRA"),
])
def test_adapters_that_cannot_merge_are_one_line(tmp_path, rng, config, keys, message):
    tensors = {f"{PREFIX}{Q}.{key}.weight": rng.standard_normal((2, 2)).astype(np.float32) for key in keys}
    with pytest.raises(UserError, match=message):
        load_adapter(make_adapter(tmp_path / "adapter", {"r": 2, "lora_alpha": 2, **config}, tensors))


def test_a_folder_without_adapter_config_says_what_to_pass(tmp_path):
    with pytest.raises(UserError, match="no adapter_config.json.*tianji-ft convert"):
        load_adapter(tmp_path)


def test_check_fits_lists_three_misfits_and_counts_the_rest(tmp_path, rng):
    names = [f"model.layers.{i}.mlp.up_proj" for i in range(5)]
    tensors = {}
    for name in names:
        tensors[f"{PREFIX}{name}.lora_A.weight"] = rng.standard_normal((2, 4)).astype(np.float32)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = rng.standard_normal((6, 2)).astype(np.float32)
    tensors[f"{PREFIX}lm_head.weight"] = rng.standard_normal((3, 4)).astype(np.float32)
    config = {"r": 2, "lora_alpha": 2, "base_model_name_or_path": "internlm/internlm2-chat-1_8b"}
    adapter = load_adapter(make_adapter(tmp_path / "adapter", config, tensors))
    fits = {f"{n}.weight": np.zeros((6, 4), np.float32) for n in names} | {"lm_head.weight": np.zeros((3, 4))}
    check_fits(read_safetensors_header(save(tmp_path / "ok.safetensors", fits)), adapter, tmp_path)
    wrong = {f"{n}.weight": np.zeros((6, 5), np.float32) for n in names[1:]} | {"lm_head.weight": np.zeros((4, 4))}
    with pytest.raises(UserError) as err:
        check_fits(read_safetensors_header(save(tmp_path / "bad.safetensors", wrong)), adapter, tmp_path / "base")
    text = str(err.value)
    assert "(6 tensor(s) differ)" in text and "; and 3 more" in text
    assert f"{names[0]}.weight: not in base" in text
    assert f"{names[1]}.weight: base [6, 5], adapter B@A [6, 4]" in text
    assert "merge onto internlm/internlm2-chat-1_8b" in text and str(tmp_path / "base") in text
    del config["base_model_name_or_path"]
    adapter = load_adapter(make_adapter(tmp_path / "adapter", config, tensors))
    only_head = fits | {"lm_head.weight": np.zeros((4, 4))}
    with pytest.raises(UserError) as err:
        check_fits(read_safetensors_header(save(tmp_path / "head.safetensors", only_head)), adapter, tmp_path)
    assert "lm_head.weight: base [4, 4], adapter [3, 4]; merge onto its base model" in str(err.value)
    assert "more" not in str(err.value)


def _openblas_threads():
    """(get, set) of numpy's own OpenBLAS (None where numpy has another BLAS); other libraries may map theirs."""
    path = next((line.split()[-1] for line in open("/proc/self/maps")
                 if "openblas" in line and ".so" in line and "/numpy" in line), None)
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    for get, put in (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                     ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                     ("openblas_get_num_threads", "openblas_set_num_threads")):
        if hasattr(lib, get):
            return getattr(lib, get), getattr(lib, put)
    return None


def test_blas_runs_on_one_thread_inside_and_as_before_after():
    pytest.importorskip("scipy.linalg")  # maps a second OpenBLAS, as in a full test run: numpy's must be the one set
    found = _openblas_threads()
    if found is None:
        pytest.skip("numpy is not linked with OpenBLAS here")
    get, put = found
    before = get()
    put(2)
    try:
        with single_threaded_blas():
            assert get() == 1
        assert get() == 2
    finally:
        put(before)


def test_refusals_word_for_word(tmp_path, rng):
    with pytest.raises(UserError) as err:
        load_adapter(tmp_path)
    assert str(err.value) == (f"{tmp_path}: no adapter_config.json; pass the folder 'tianji-ft convert' wrote for a "
                              "LoRA run (a full fine-tune needs no merge)")
    a = rng.standard_normal((2, 2)).astype(np.float32)
    cases = [({"peft_type": "IA3"}, ["lora_A", "lora_B"], "peft_type IA3 is not LoRA; only LoRA adapters merge"),
             ({"use_dora": True}, ["lora_A", "lora_B"],
              "DoRA adapters are not supported; merge with PEFT's merge_and_unload"),
             ({}, ["lora_A"], f"{Q} has only one of lora_A/lora_B; the adapter is incomplete")]
    for i, (config, keys, message) in enumerate(cases):
        folder = make_adapter(tmp_path / f"a{i}", {"r": 2, "lora_alpha": 2, **config},
                              {f"{PREFIX}{Q}.{key}.weight": a for key in keys})
        with pytest.raises(UserError) as err:
            load_adapter(folder)
        assert str(err.value) == f"{folder}: {message}"
    ids = read_safetensors_header(save(tmp_path / "ids.safetensors", {"ids": np.arange(3)}))["ids"]
    with pytest.raises(UserError) as err:
        list(tensor_slices(ids, "BF16"))
    assert str(err.value) == f"{tmp_path / 'ids.safetensors'}: cannot convert I64 tensor to BF16"


def test_an_adapter_config_without_peft_type_is_lora(tmp_path, rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    folder = tmp_path / "adapter"
    save(folder / "adapter_model.safetensors", {f"{PREFIX}{Q}.lora_A.weight": a, f"{PREFIX}{Q}.lora_B.weight": a.T})
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}), encoding="utf-8")
    assert load_adapter(folder).pairs[f"{Q}.weight"].scale == 2.0


@pytest.mark.parametrize("misfits, shown, more", [(3, 3, ""), (4, 3, "; and 1 more")])
def test_check_fits_shows_three_misfits(tmp_path, rng, misfits, shown, more):
    names = [f"model.layers.{i}.mlp.up_proj" for i in range(misfits)]
    tensors = {}
    for name in names:
        tensors[f"{PREFIX}{name}.lora_A.weight"] = rng.standard_normal((2, 4)).astype(np.float32)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = rng.standard_normal((6, 2)).astype(np.float32)
    adapter = load_adapter(make_adapter(tmp_path / "adapter", {"r": 2, "lora_alpha": 2}, tensors))
    base = read_safetensors_header(save(tmp_path / "b.safetensors", {"other.weight": np.zeros((1, 1), np.float32)}))
    with pytest.raises(UserError) as err:
        check_fits(base, adapter, tmp_path / "base")
    listed = "; ".join(f"{name}.weight: not in base" for name in names[:shown])
    assert str(err.value) == (f"{tmp_path / 'adapter'} does not fit base {tmp_path / 'base'} ({misfits} tensor(s) "
                              f"differ): {listed}{more}; merge onto its base model, the model it was trained on")


def test_a_tensor_copied_as_it_is_comes_whole_in_many_slices(tmp_path, rng, monkeypatch):
    w = rng.standard_normal((37, 8)).astype(np.float32)
    entry = read_safetensors_header(save(tmp_path / "base.safetensors", {"norm.weight": w}))["norm.weight"]
    monkeypatch.setattr(lora, "SLICE_BYTES", 5 * 8 * 4)
    assert b"".join(bytes(part) for part in tensor_slices(entry, "F32")) == w.tobytes()


def test_blas_threads_are_restored_whatever_they_were():
    found = _openblas_threads()
    if found is None:
        pytest.skip("numpy is not linked with OpenBLAS here")
    get, put = found
    before = get()
    try:
        for threads in (1, 2):
            put(threads)
            with single_threaded_blas():
                assert get() == 1
            assert get() == threads
    finally:
        put(before)
