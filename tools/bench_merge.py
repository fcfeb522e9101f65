"""Benchmark of ``tianji-ft merge`` side by side with XTuner's merge.

The model is synthetic and built here from a seeded config (no download): a
~610M-parameter Llama in bf16, saved as five ~300 MB safetensors shards, and
a rank-64 LoRA on every linear layer of every block, saved as a PEFT adapter
(``adapter_config.json`` + ``adapter_model.safetensors``, PEFT key names).

1. Ours: ``python -m tianji_ft merge BASE ADAPTER -o OUT --max-shard-size 2GB``.
2. XTuner: ``python -m xtuner.tools.model_converters.merge BASE ADAPTER OUT
   --max-shard-size 2GB`` through ``tool_command("merge")`` + ``launch_env()``.

Each runs in its own child process; its peak RSS is that child's
``ru_maxrss`` from ``os.wait4``. A child's peak counts the memory of the
process it was started from, so the synthetic model is built in a child of
its own and this process stays small until the timed runs are over. The runs alternate (ours, XTuner, ours, ...)
so a busy machine slows both alike; the best wall time of each is reported.
Then our output is compared with PEFT's ``merge_and_unload`` computed in fp32
and rounded once to bf16 (the max abs difference must be 0).

Targets: our peak RSS <= 0.6 GB; our wall time <= 1/3 of XTuner's.
Run with ``make bench`` or ``.venv/bin/python tools/bench_merge.py [--runs 2] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED = 20240611
# 15 blocks of hidden 1536 / MLP 4096 and a 60,000-token vocabulary: 609M parameters.
LLAMA = dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=15, num_attention_heads=12,
             num_key_value_heads=12, vocab_size=60000, max_position_embeddings=4096, rms_norm_eps=1e-5,
             rope_theta=500000.0, tie_word_embeddings=False, torch_dtype="bfloat16")
RANK, ALPHA = 64, 16
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHARD_BYTES = 300_000_000
TARGET_RSS_GB = 0.6
TARGET_SPEEDUP = 3.0


def build_base(out: Path) -> int:
    """Seeded synthetic Llama in bf16, five ~300 MB shards; returns the parameter count."""
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig

    from tianji_ft.weights.safetensors_io import plan_shards
    from tianji_ft.models.tiny import ensure_tiny_model

    out.mkdir(parents=True)
    config = LlamaConfig(**LLAMA, bos_token_id=0, eos_token_id=4, pad_token_id=1)
    config.save_pretrained(out)
    GenerationConfig(bos_token_id=0, eos_token_id=4, pad_token_id=1).save_pretrained(out)
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    shapes = [("model.embed_tokens.weight", (v, h))]
    for n in range(config.num_hidden_layers):
        p = f"model.layers.{n}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        shapes += [(f"{p}self_attn.{m}.weight", (h, h)) for m in ("q_proj", "k_proj", "v_proj", "o_proj")]
        shapes += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                   (p + "mlp.down_proj.weight", (h, i))]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    gen = torch.Generator().manual_seed(SEED)
    plan = plan_shards([(name, "BF16", shape) for name, shape in shapes], SHARD_BYTES)
    weight_map = {}
    for shard in plan:
        tensors = {}
        for name, _, shape, _ in shard.tensors:
            t = torch.randn(shape, generator=gen) * (0.02 if len(shape) == 2 else 0.1) + (0 if len(shape) == 2 else 1)
            tensors[name] = t.to(torch.bfloat16)
            weight_map[name] = shard.file
        save_file(tensors, out / shard.file, metadata={"format": "pt"})
    total = sum(s.nbytes for s in plan)
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    tiny = ensure_tiny_model("llama3")  # a real tokenizer for XTuner's merge to load and save
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny / name, out / name)
    return total // 2


def build_adapter(base: Path, out: Path) -> int:
    """Rank-64 LoRA on all linear layers with nonzero A and B, saved as PEFT saves it; returns bytes."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from tianji_ft.weights.safetensors_io import read_weights

    gen = torch.Generator().manual_seed(SEED + 1)
    tensors = {}
    for name, entry in read_weights(base, "model").items():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in LORA_TARGETS:
            rows, cols = entry.shape
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(RANK, cols, generator=gen) / cols ** 0.5
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(rows, RANK, generator=gen) * 0.01
    out.mkdir(parents=True)
    save_file(tensors, out / "adapter_model.safetensors", metadata={"format": "pt"})
    LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
               base_model_name_or_path=str(base)).save_pretrained(out)
    return (out / "adapter_model.safetensors").stat().st_size


def timed_child(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one child process."""
    with open(log, "ab") as fh:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd[2:4]} failed with exit code {proc.returncode}; see {log}")
    return wall, usage.ru_maxrss * 1024 / 1e9


def max_abs_diff_vs_peft(base: Path, adapter: Path, outputs: dict[str, Path]) -> dict[str, tuple[float, int]]:
    """Per output: max |output - PEFT merge_and_unload in fp32, rounded once to the output's dtype|."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tianji_ft.weights.safetensors_io import read_weights

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    reference = PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict()
    names = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
    result = {}
    for label, out in outputs.items():
        worst, entries = 0.0, read_weights(out)
        if set(entries) != set(reference):
            sys.exit(f"{label}: tensor names differ from the reference: {sorted(set(entries) ^ set(reference))[:5]}")
        for name, entry in entries.items():
            want = reference[name].to(names[entry.dtype]).float().numpy()
            worst = max(worst, float(np.abs(entry.read_f32() - want).max()))
        result[label] = (worst, len(entries))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each merge, alternating (default 2)")
    parser.add_argument("--keep", type=Path, help="build into (and keep) this folder instead of a temporary one")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the child that builds the model
    args = parser.parse_args()
    if args.build:
        start = time.monotonic()
        params = build_base(args.build / "base")
        adapter_bytes = build_adapter(args.build / "base", args.build / "adapter")
        shards = sorted((args.build / "base").glob("*.safetensors"))
        print(f"built in {time.monotonic() - start:.0f} s: {params / 1e6:.0f}M-parameter Llama (bf16, "
              f"{len(shards)} shards, {sum(p.stat().st_size for p in shards) / 1e9:.2f} GB), "
              f"rank-{RANK} LoRA adapter {adapter_bytes / 1e6:.0f} MB", flush=True)
        return 0

    from tianji_ft.xtuner.runner import launch_env, tool_command

    work = args.keep or Path(tempfile.mkdtemp(prefix="tianji_bench_merge_"))
    base, adapter = work / "base", work / "adapter"
    try:
        if not (base / "model.safetensors.index.json").exists():
            shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(adapter, ignore_errors=True)
            subprocess.run([sys.executable, __file__, "--build", str(work)], check=True)
        ours_cmd = [sys.executable, "-m", "tianji_ft", "merge", str(base), str(adapter), "-o", str(work / "ours"),
                    "--max-shard-size", "2GB"]
        xtuner_cmd = tool_command("merge", [str(base), str(adapter), str(work / "xtuner"), "--max-shard-size", "2GB"])
        env = launch_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        results = {"ours": [], "xtuner": []}
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        print(f"this process: {own:.2f} GB (a floor under every child's peak RSS)", flush=True)
        for _ in range(args.runs):
            for key, cmd in (("ours", ours_cmd), ("xtuner", xtuner_cmd)):
                shutil.rmtree(work / key, ignore_errors=True)
                results[key].append(timed_child(cmd, env, work / f"{key}.log"))
                print(f"  {key:6s} wall {results[key][-1][0]:6.1f} s   peak RSS {results[key][-1][1]:.2f} GB",
                      flush=True)
        diffs = max_abs_diff_vs_peft(base, adapter, {"ours": work / "ours", "XTuner": work / "xtuner"})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    ours_wall = min(w for w, _ in results["ours"])
    xt_wall = min(w for w, _ in results["xtuner"])
    ours_rss = max(r for _, r in results["ours"])
    xt_rss = max(r for _, r in results["xtuner"])
    print(f"\n{'':8s}{'wall (best)':>12s}{'peak RSS':>11s}")
    print(f"{'ours':8s}{ours_wall:10.1f} s{ours_rss:8.2f} GB")
    print(f"{'XTuner':8s}{xt_wall:10.1f} s{xt_rss:8.2f} GB")
    print(f"{'ratio':8s}{ours_wall / xt_wall:11.2f}x{ours_rss / xt_rss:9.2f}x   (ours / XTuner)")
    print(f"speed-up {xt_wall / ours_wall:.1f}x, memory {xt_rss / ours_rss:.1f}x less")
    for label, (worst, count) in diffs.items():
        print(f"max abs diff vs PEFT merge_and_unload in fp32, rounded once: {label} {worst:g} over {count} tensors")
    diff = diffs["ours"][0]
    checks = [(f"peak RSS {ours_rss:.2f} GB <= {TARGET_RSS_GB} GB", ours_rss <= TARGET_RSS_GB),
              (f"wall {ours_wall:.1f} s <= XTuner's {xt_wall:.1f} s / {TARGET_SPEEDUP:g}",
               ours_wall * TARGET_SPEEDUP <= xt_wall),
              ("output equal to PEFT's fp32 merge (max abs diff 0)", diff == 0)]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
