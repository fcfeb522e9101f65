"""The training plan: will it fit, how long, will it learn, answered before a GPU hour is spent.

``tianji-ft plan CONFIG ...`` and ``tianji-ft train CONFIG --dry-run`` build it
with :func:`make_plan` from what the launcher would run (the same request, the
same settings), planned for CUDA GPUs whatever machine it runs on:

- memory per GPU from the model's ``config.json`` alone (:mod:`tianji_ft.train.memory`);
- the schedule from the data as XTuner will pack it (:func:`tianji_ft.train.dryrun.data_report`)
  and mmengine's rules (iterations, optimizer steps, warmup);
- warnings for the ways a run wastes GPU hours (:func:`warnings_for`).

Where the plan is kept (the output-safety rule: a dry run never makes a work dir):

- it is always printed (``--json``: as JSON);
- it is saved in the cache under a fingerprint of the run's inputs (config
  hash, model, data hashes, settings, ``--set`` options, GPUs, DeepSpeed);
  ``tianji-ft train`` with the same inputs copies it into the manifest it
  writes at the start of the run, as ``plan``;
- when the work dir already holds a manifest of a run with the same inputs,
  the plan is also written into it at once (under the work dir's lock).

At the end of a finished run the launcher records ``throughput`` in the
manifest (:func:`measure_throughput`); a later plan of the same config, model
and GPU count finds it in the work dir or its siblings and gives an ETA.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import write_json
from tianji_ft.core.manifest import MANIFEST_NAME, now_iso, read_manifest, write_manifest
from tianji_ft.core.paths import cache_dir
from tianji_ft.train.memory import ModelShape, ZeroSetup, activations, count, gib, lora_params, model_states, parse_size

PLAN_VERSION = 1
MIN_STEPS_PER_EPOCH = 10
TRUNCATED_SHARE_WARN = 0.01  # warn when more than 1% of records are cut by max_length
MEMORY_HEADROOM = 0.9  # the estimate must leave 10% for the CUDA context and allocator fragmentation
# model_type in config.json -> the chat template the family's chat models speak.
FAMILY_TEMPLATES = {"internlm2": "internlm2_chat", "internlm": "internlm_chat", "llama3": "llama3_chat",
                    "qwen2": "qwen_chat"}
# Templates any model can learn: plain markers with no special token of a family (XTuner's "default").
ANY_MODEL_TEMPLATES = ("default",)


@dataclass
class PlanOptions:
    gpu_memory: str | None = None  # "80GB"; None: the visible GPU's, if any
    tokens_per_second: float | None = None  # the whole job's; None: an earlier run's
    data: bool = True  # tokenize the data (counts, schedule, truncation); False: shapes only


def make_plan(req, options: PlanOptions | None = None) -> tuple[dict, dict | None]:
    """(plan, dry-run report or None) for a :class:`~tianji_ft.train.train.TrainRequest`."""
    from tianji_ft.configs.registry import config_meta, config_settings
    from tianji_ft.train import train as launcher
    from tianji_ft.train.dryrun import data_report
    from tianji_ft.xtuner.datacheck import environment, load_config

    options = options or PlanOptions()
    p = launcher.plan(req, cuda=True)
    m = p["manifest"]
    config_path = m["config"]["path"]
    meta = config_meta(config_path)
    with environment(p["env"]):
        cfg = load_config(config_path, m["cfg_options"])
        facts = config_facts(cfg)
        report = data_report(cfg, config_path, p["env"], world_size=m["world_size"]) if options.data else None
    world = int(m["world_size"])
    zero = ZeroSetup.from_json(m["deepspeed"])
    model_dir = Path(str(m["model"] or ""))
    shape = ModelShape.from_file(model_dir) if (model_dir / "config.json").is_file() else None
    plan = {
        "version": PLAN_VERSION,
        "made": now_iso(),
        "inputs": fingerprint(m),
        "config": m["config"]["name"],
        "model": m["model"],
        "work_dir": str(p["work_dir"]),
        "setup": {
            "method": facts["method"], "gpus_per_node": req.gpus, "nnodes": req.nnodes, "world_size": world,
            "deepspeed": zero.name, "zero_stage": zero.stage, "offload_optimizer": zero.offload_optimizer,
            "offload_param": zero.offload_param, "batch_size": facts["batch_size"], "accumulative_counts":
            facts["accum"], "max_length": facts["max_length"], "pack": facts["pack"], "epochs": facts["epochs"],
            "gradient_checkpointing": facts["checkpointing"], "template": facts["template"],
            "lora": facts["lora"], "quantization": facts["quantization"], "pairs": facts["pairs"],
        },
        "notes": [],
    }
    plan["memory"] = memory_plan(shape, facts, zero, req, gpu_memory_bytes(options.gpu_memory), plan["notes"])
    if shape is None:
        plan["notes"].append(f"model shape unknown: no config.json in {m['model']}; memory not planned "
                             "(--model a folder with the model's config.json)")
    plan["written_for"] = written_for(meta, config_settings(config_path))
    if report is not None:
        plan["data"] = {k: report[k] for k in ("samples", "packed_rows", "tokens_per_epoch", "truncation",
                                               "template_markers")}
        plan["schedule"] = schedule(report, facts, world, zero.stage is not None)
        plan["schedule"]["eta"] = eta(plan, options.tokens_per_second, p["work_dir"])
    else:
        plan["notes"].append("data not read (--no-data): no counts, schedule, ETA or truncation")
    plan["warnings"] = warnings_for(plan, facts, shape)
    return plan, report


# ------------------------------------------------------------------ the config

def _type_name(value) -> str:
    if isinstance(value, str):
        return value.rsplit(".", 1)[-1]
    return getattr(value, "__name__", type(value).__name__)


def template_name(template) -> str | None:
    """The name in XTuner's PROMPT_TEMPLATE of a template as a config holds it (dict or dotted name)."""
    if template is None:
        return None
    if isinstance(template, str):
        return template.rsplit(".", 1)[-1]
    if hasattr(template, "keys"):
        from xtuner.utils import PROMPT_TEMPLATE

        wanted = dict(template)
        for name, known in PROMPT_TEMPLATE.items():
            if dict(known) == wanted:
                return name
        return "custom"
    return str(template)


def config_facts(cfg) -> dict:
    """What a loaded XTuner config says about memory and schedule."""
    from tianji_ft.xtuner.datacheck import is_preference_dataset, train_dataset_config

    ds_cfg = train_dataset_config(cfg)
    # Preference pairs (DPO, ORPO) are never packed without varlen attention, and are laid out by the
    # tokenizer's chat template, the format the config's prompt_template (its evaluation hook's) names.
    pairs = is_preference_dataset(ds_cfg)
    model = cfg.get("model") or {}
    llm = model.get("llm") or {}
    quant = llm.get("quantization_config") or {}
    lora = model.get("lora")
    four_bit = bool(quant.get("load_in_4bit"))
    method = "qlora" if lora and four_bit else "lora" if lora else "full"
    dtype = str(llm.get("torch_dtype") or "float32").replace("torch.", "")
    warmup = None
    for sched in cfg.get("param_scheduler") or []:
        if _type_name(sched.get("type")) == "LinearLR":
            warmup = {"begin": sched.get("begin", 0), "end": sched.get("end"), "by_epoch": sched.get("by_epoch", True),
                      "convert": sched.get("convert_to_iter_based", False)}
            break
    eval_hook = None
    for hook in cfg.get("custom_hooks") or []:
        if _type_name(hook.get("type")) == "EvaluateChatHook":
            eval_hook = {"prompts": len(hook.get("evaluation_inputs") or []),
                         "template": template_name(hook.get("prompt_template"))}
    template_fn = ds_cfg.get("template_map_fn")
    train_loop = cfg.get("train_cfg") or {}
    return {
        "method": method,
        "dtype": dtype,
        "quantization": ({"bits": 4, "type": quant.get("bnb_4bit_quant_type", "fp4"),
                          "double_quant": bool(quant.get("bnb_4bit_use_double_quant"))} if four_bit else None),
        "lora": ({"r": int(lora.get("r", 8)), "dropout": float(lora.get("lora_dropout", 0.0) or 0.0),
                  "target_modules": lora.get("target_modules")} if lora else None),
        "checkpointing": bool(model.get("use_activation_checkpointing", True)),
        "batch_size": int(cfg.train_dataloader.get("batch_size", 1)),
        "accum": int((cfg.get("optim_wrapper") or {}).get("accumulative_counts", 1) or 1),
        "epochs": int(train_loop.get("max_epochs", 1) or 1),
        "max_length": int(ds_cfg["max_length"]),
        "pack": not pairs and bool(ds_cfg.get("pack_to_max_length", True)),
        "warmup": warmup,
        "template": (template_name(template_fn.get("template")) if hasattr(template_fn, "get")
                     else (eval_hook or {}).get("template") if pairs else None),
        "eval": eval_hook,
        "pairs": pairs,
        # XTuner's DPO also runs a reference forward (the base without the adapter, or a copy for a full
        # fine-tune) whose logits it keeps until the loss; ORPO has no reference
        "reference": _type_name(model.get("type")) == "DPO",
    }


def written_for(meta: dict, settings: dict) -> dict | None:
    """The GPUs, batch and accumulation a config was written for (its tianji_meta and defaults)."""
    if not meta:
        return None

    def default(env: str, fallback: int) -> int:
        try:
            return int((settings.get(env) or {}).get("default") or fallback)
        except (TypeError, ValueError):
            return fallback

    gpus, batch, accum = int(meta.get("gpus") or 1), default("TIANJI_BATCH_SIZE", 1), default("TIANJI_ACCUM", 1)
    return {"gpus": gpus, "batch_size": batch, "accumulative_counts": accum, "global_batch": gpus * batch * accum}


# ------------------------------------------------------------------ memory

def gpu_memory_bytes(text: str | None) -> tuple[int | None, str]:
    """(bytes, where the figure came from): ``--gpu-memory``, else the visible GPU's, else unknown."""
    if text:
        return parse_size(text), "--gpu-memory"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return int(props.total_memory), f"visible GPU 0 ({props.name})"
    return None, "unknown (no --gpu-memory, no visible GPU)"


def memory_plan(shape: ModelShape | None, facts: dict, zero: ZeroSetup, req, gpu: tuple[int | None, str],
                notes: list[str]) -> dict | None:
    if shape is None:
        return None
    world = max(1, req.gpus * req.nnodes)
    lora = facts["lora"]
    targets = shape.lora_linears(lora["target_modules"]) if lora else []
    trainable = lora_params(targets, lora["r"]) if lora else shape.total_params
    quant = facts["quantization"] or {}
    dtype_bytes = {"float32": 4, "float16": 2, "bfloat16": 2}.get(facts["dtype"], 4)
    states = model_states(shape, facts["method"], zero, world, trainable=trainable, load_dtype_bytes=dtype_bytes,
                          double_quant=quant.get("double_quant", True))
    # a preference batch holds two sequences a pair (chosen and rejected), each up to max_length
    sequences = facts["batch_size"] * (2 if facts.get("pairs") else 1)
    acts = activations(shape, sequences, facts["max_length"], lora=targets, r=lora["r"] if lora else 0,
                       lora_dropout=bool(lora and lora["dropout"] > 0))
    acts["reference_logits"] = acts["output_logits"] if facts.get("reference") else 0
    for key in ("with_checkpointing", "without_checkpointing"):
        acts[key] += acts["reference_logits"]
    used = acts["with_checkpointing"] if facts["checkpointing"] else acts["without_checkpointing"]
    total = states["total"] + used
    size, source = gpu
    verdict = "unknown"
    if size:
        verdict = "fits" if total <= MEMORY_HEADROOM * size else "tight" if total <= size else "does not fit"
    if zero.stage is None and facts["method"] == "full" and facts["dtype"] == "float32":
        notes.append("full fine-tune without DeepSpeed: weights, gradients and AdamW states in fp32 (16 bytes per "
                     "parameter); XTuner loads in 16 bits instead when flash-attention 2 is installed")
    return {
        "parameters": shape.total_params,
        "trainable_parameters": trainable,
        "largest_layer_parameters": shape.largest_layer_params,
        "shape": {"source": shape.source, "model_type": shape.model_type, "hidden_size": shape.hidden_size,
                  "num_hidden_layers": shape.num_layers, "intermediate_size": shape.intermediate_size,
                  "num_attention_heads": shape.num_heads, "num_key_value_heads": shape.num_kv_heads,
                  "vocab_size": shape.vocab_size},
        "model_states": states,
        "activations": acts,
        "activations_used": used,
        "total": total,
        "cpu_offload_per_node": states["cpu_offload_per_gpu"] * req.gpus,
        "gpu_memory": size,
        "gpu_memory_source": source,
        "verdict": verdict,
    }


# ------------------------------------------------------------------ schedule

def warmup_iters(warmup: dict | None, iters_per_epoch: int, epochs: int) -> int | None:
    """Warmup iterations as mmengine builds them (``int(end * epoch_length) - int(begin * epoch_length)``
    for an epoch-based scheduler converted to iterations); None when there is no warmup scheduler."""
    if not warmup:
        return None
    begin, end = warmup["begin"] or 0, warmup["end"]
    if end is None:
        end = epochs
    if warmup["by_epoch"] and warmup["convert"]:
        return int(end * iters_per_epoch) - int(begin * iters_per_epoch)
    if warmup["by_epoch"]:
        return int((end - begin) * iters_per_epoch)
    return int(end - begin)


def schedule(report: dict, facts: dict, world: int, deepspeed: bool) -> dict:
    """Iterations, optimizer steps, warmup and tokens, as mmengine and DeepSpeed will count them.

    Iterations per epoch: ``ceil(rows / (batch * GPUs))`` (mmengine's
    DefaultSampler pads every rank to the same count; the last batch is kept).
    Optimizer steps: mmengine's OptimWrapper also steps on the last iteration
    (``ceil(iters / accum)``); DeepSpeed only on every accum-th micro-batch
    (``floor``). Tokens per step: the global batch (GPUs x batch x
    accumulation) times the mean packed row.
    """
    ipe, epochs, accum, batch = report["iters_per_epoch"], facts["epochs"], facts["accum"], facts["batch_size"]
    total_iters = ipe * epochs
    steps = total_iters // accum if deepspeed else math.ceil(total_iters / accum)
    warm = warmup_iters(facts["warmup"], ipe, epochs)
    mean_row = report["tokens_per_epoch"] / max(1, report["packed_rows"])
    global_batch = world * batch * accum
    return {
        "samples": report["samples"],
        "packed_rows": report["packed_rows"],
        "iters_per_epoch": ipe,
        "epochs": epochs,
        "total_iters": total_iters,
        "optimizer_steps_per_epoch": math.ceil(ipe / accum),
        "total_optimizer_steps": steps,
        "warmup_iters": warm or 0,
        "warmup_optimizer_steps": math.ceil((warm or 0) / accum),
        "warmup_valid": warm is None or warm > 0,
        "global_batch": global_batch,
        "tokens_per_iter": round(world * batch * mean_row, 1),
        "tokens_per_step": round(global_batch * mean_row, 1),
        "tokens_per_epoch": report["tokens_per_epoch"],
        "total_tokens": report["tokens_per_epoch"] * epochs,
    }


# ------------------------------------------------------------------ ETA and throughput

def eta(plan: dict, tokens_per_second: float | None, work_dir: Path) -> dict | None:
    """Seconds to train: total tokens over ``--tokens-per-second``, else over an earlier run's throughput."""
    sched = plan["schedule"]
    if tokens_per_second:
        return {"seconds": round(sched["total_tokens"] / tokens_per_second), "tokens_per_second": tokens_per_second,
                "source": "--tokens-per-second"}
    found = earlier_throughput(Path(work_dir), plan["config"], plan["model"], plan["setup"]["world_size"])
    if not found:
        return None
    source, tp = found
    if tp.get("tokens_per_second"):
        return {"seconds": round(sched["total_tokens"] / tp["tokens_per_second"]),
                "tokens_per_second": tp["tokens_per_second"], "source": source}
    setup = plan["setup"]
    if tp.get("seconds_per_iter") and all(tp.get(k) == setup[k] for k in ("batch_size", "max_length", "pack")):
        return {"seconds": round(sched["total_iters"] * tp["seconds_per_iter"]),
                "seconds_per_iter": tp["seconds_per_iter"], "source": source}
    return None


def earlier_throughput(work_dir: Path, config: str, model: str, world_size: int) -> tuple[str, dict] | None:
    """The newest finished run of the same config, model and GPU count that recorded its throughput:
    in ``work_dir`` or a sibling of it."""
    candidates = [work_dir] + (sorted(p for p in work_dir.parent.iterdir() if p.is_dir() and p != work_dir)
                               if work_dir.parent.is_dir() else [])
    best = None
    for folder in candidates:
        try:
            manifest = read_manifest(folder, required=False)
        except UserError:
            continue
        tp = (manifest or {}).get("throughput")
        if not (tp and manifest.get("state") == "finished" and (manifest.get("config") or {}).get("name") == config
                and manifest.get("model") == model and tp.get("world_size") == world_size):
            continue
        if best is None or str(manifest.get("ended") or "") > best[0]:
            best = (str(manifest.get("ended") or ""), str(folder / MANIFEST_NAME), tp)
    return (best[1], best[2]) if best else None


def measure_throughput(work_dir: str | Path, manifest: dict) -> dict | None:
    """A finished run's speed, from mmengine's per-iteration ``time`` in ``vis_data/scalars.json``.

    Tokens per iteration come from the run's plan when it has one, else from
    XTuner's ThroughputHook scalars, else (packed data) GPUs x batch x max_length
    read from the config XTuner dumped into the work dir; without any of them
    only seconds per iteration are kept.
    """
    from tianji_ft.train.lossplot import read_scalars

    records = [r for r in read_scalars(work_dir) if isinstance(r.get("time"), (int, float))]
    if not records:
        return None
    timed = records[1:] if len(records) > 2 else records  # the first iteration carries the warm-up
    seconds = statistics.median(r["time"] for r in timed)
    world = int(manifest.get("world_size") or 1)
    shape = _dumped_shape(Path(work_dir), (manifest.get("config") or {}).get("name"))
    plan = manifest.get("plan") or {}
    tokens, source = None, None
    if (plan.get("schedule") or {}).get("tokens_per_iter"):
        tokens, source = plan["schedule"]["tokens_per_iter"], "plan"
        shape = {k: plan["setup"].get(k) for k in ("batch_size", "max_length", "pack")}
    elif all("tokens_per_sec" in r for r in timed):
        per_gpu = statistics.median(r["tokens_per_sec"] for r in timed)
        tokens, source = per_gpu * seconds * world, "ThroughputHook"
    elif shape.get("pack") and shape.get("batch_size") and shape.get("max_length"):
        tokens, source = world * shape["batch_size"] * shape["max_length"], "packed rows"
    return {
        "seconds_per_iter": round(seconds, 6),
        "tokens_per_iter": round(tokens, 1) if tokens else None,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds > 0 else None,
        "iterations_measured": len(timed),
        "world_size": world,
        **shape,
        "source": "vis_data/scalars.json" + (f" + {source}" if source else ""),
    }


def tokens_per_iter(work_dir: str | Path, manifest: dict) -> float | None:
    """Tokens one iteration trains, where it is known before the run ends: from the run's plan, or
    (packed rows) GPUs x batch x max_length of the config XTuner dumped into the work dir."""
    plan = manifest.get("plan") or {}
    if (plan.get("schedule") or {}).get("tokens_per_iter"):
        return float(plan["schedule"]["tokens_per_iter"])
    shape = _dumped_shape(Path(work_dir), (manifest.get("config") or {}).get("name"))
    if shape.get("pack") and shape.get("batch_size") and shape.get("max_length"):
        return float(int(manifest.get("world_size") or 1) * shape["batch_size"] * shape["max_length"])
    return None


def _dumped_shape(work_dir: Path, name: str | None) -> dict:
    """batch_size, max_length and pack_to_max_length from the config copy XTuner writes into the work dir."""
    import ast

    path = work_dir / f"{name}.py" if name else None
    if not (path and path.is_file()):
        return {}
    found = {}
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            key = {"batch_size": "batch_size", "max_length": "max_length", "pack_to_max_length": "pack"}.get(
                stmt.targets[0].id)
            if key:
                try:
                    found[key] = ast.literal_eval(stmt.value)
                except ValueError:
                    pass
    return found


# ------------------------------------------------------------------ warnings

def model_family(shape: ModelShape | None) -> str | None:
    """The chat family a config.json names unambiguously (LLaMA 3 by its 128k vocabulary)."""
    if shape is None:
        return None
    if shape.model_type == "llama":
        return "llama3" if shape.vocab_size >= 128000 else None
    return shape.model_type if shape.model_type in FAMILY_TEMPLATES else None


def warnings_for(plan: dict, facts: dict, shape: ModelShape | None) -> list[dict]:
    """Each way this run could waste its GPU hours, as ``{"code", "message"}``."""
    found = []

    def warn(code: str, message: str) -> None:
        found.append({"code": code, "message": message})

    setup, sched, memory = plan["setup"], plan.get("schedule"), plan.get("memory")
    if memory and memory["verdict"] in ("tight", "does not fit"):
        warn("memory", f"needs about {gib(memory['total'])} per GPU of {gib(memory['gpu_memory'])} "
                       f"({memory['verdict']}; {int(MEMORY_HEADROOM * 100)}% is the most a plan counts on): "
                       "use more GPUs, a higher ZeRO stage or offload, a smaller batch or max_length")
    if sched:
        if sched["optimizer_steps_per_epoch"] < MIN_STEPS_PER_EPOCH:
            warn("few_steps", f"{sched['optimizer_steps_per_epoch']} optimizer step(s) per epoch "
                              f"({sched['packed_rows']} rows / global batch {sched['global_batch']}): fewer than "
                              f"{MIN_STEPS_PER_EPOCH}, the model may barely change; add data, more epochs, "
                              "or lower --accum / --batch-size")
        if not sched["warmup_valid"]:
            warn("warmup_zero", f"the warmup rounds to 0 iterations of {sched['total_iters']}: mmengine refuses "
                                "a zero-length scheduler and training stops at start; raise --warmup-ratio or "
                                "set it to 0")
        if sched["total_optimizer_steps"] == 0:
            warn("no_steps", f"{sched['total_iters']} iteration(s) with accumulation {setup['accumulative_counts']} "
                             "never complete an optimizer step under DeepSpeed; lower --accum")
    written = plan.get("written_for")
    actual = setup["world_size"] * setup["batch_size"] * setup["accumulative_counts"]
    if written and actual != written["global_batch"]:
        warn("global_batch", f"global batch {actual} (GPUs {setup['world_size']} x batch {setup['batch_size']} x "
                             f"accumulation {setup['accumulative_counts']}) differs from the "
                             f"{written['global_batch']} the config was written for (GPUs {written['gpus']} x "
                             f"batch {written['batch_size']} x accumulation {written['accumulative_counts']}); "
                             "the learning rate was tuned for that; adjust --accum to keep it")
    trunc = (plan.get("data") or {}).get("truncation")
    if trunc and trunc["measured"] and trunc["truncated"] / trunc["measured"] > TRUNCATED_SHARE_WARN:
        lost = trunc["answer_tokens_lost"] / max(1, trunc["answer_tokens"])
        warn("truncation", f"{trunc['truncated'] / trunc['measured']:.1%} of records ({trunc['truncated']} of "
                           f"{trunc['measured']} measured) are longer than max_length {trunc['max_length']}: "
                           f"{lost:.1%} of answer tokens are cut, {trunc['dropped']} record(s) lose their whole "
                           f"answer and are dropped (longest {trunc['longest']} tokens); raise --max-length")
    if setup["method"] == "qlora" and (setup["zero_stage"] or 0) >= 3:
        warn("qlora_zero3", "QLoRA (bitsandbytes 4-bit) with DeepSpeed ZeRO-3: a combination XTuner users report "
                            "failing (4-bit weights cannot be partitioned); use --deepspeed zero2")
    template = facts["template"]
    if template and template not in ANY_MODEL_TEMPLATES:
        family = model_family(shape)
        expected = FAMILY_TEMPLATES.get(family) if family else None
        markers = (plan.get("data") or {}).get("template_markers") or {}
        split = [w for w, single in markers.items() if not single]
        if expected and template != expected and template != "custom":
            warn("template", f"template {template} does not match the model family: {shape.source} is "
                             f"{family}, whose chat template is {expected}")
        elif split:
            warn("template", f"template {template} does not match the model: its tokenizer splits "
                             f"{', '.join(split)} into pieces (not one of its special tokens)")
    hook = facts["eval"]
    if hook and hook["prompts"] and hook["template"] != template:
        how = "raw, with no template" if hook["template"] is None else f"through template {hook['template']}"
        warn("eval_template", f"the evaluation hook sends its {hook['prompts']} prompt(s) {how}, not through the "
                              f"training template {template}: its answers will not show what training taught")
    return found


# ------------------------------------------------------------------ keeping the plan

def fingerprint(manifest: dict) -> str:
    """The run's inputs as a key: what a plan depends on and a manifest records."""
    ds = manifest.get("deepspeed")
    ds_name = Path(ds).name.replace("_cpu_bf16", "") if ds else None
    key = {
        "config": (manifest.get("config") or {}).get("sha256"),
        "model": manifest.get("model"),
        "data": [d.get("sha256") for d in manifest.get("data") or []],
        "env": {k: v for k, v in sorted((manifest.get("env") or {}).items()) if k != "TIANJI_WORK_DIR"},
        "cfg_options": list(manifest.get("cfg_options") or []),
        "world_size": manifest.get("world_size"),
        "deepspeed": ds_name,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def _cache_path(key: str) -> Path:
    return cache_dir() / "plans" / f"{key}.json"


def record_plan(plan: dict, work_dir: str | Path) -> list[str]:
    """Keep the plan (see the module docstring); return what was done, one line each."""
    from tianji_ft.core.lock import WorkDirLock

    write_json(_cache_path(plan["inputs"]), plan)
    work_dir = Path(work_dir)
    later = f"recorded in {work_dir / MANIFEST_NAME} when 'tianji-ft train' starts with the same settings"
    try:
        manifest = read_manifest(work_dir, required=False) if work_dir.is_dir() else None
    except UserError:
        manifest = None
    if manifest is None or fingerprint(manifest) != plan["inputs"]:
        return [f"plan {later}"]
    lock = WorkDirLock(work_dir, "dry run", warn=lambda msg: None)
    try:
        lock.acquire()
    except UserError:
        return [f"plan not written into {work_dir / MANIFEST_NAME}: a run is using it; {later}"]
    try:
        manifest = read_manifest(work_dir)
        manifest["plan"] = plan
        write_manifest(work_dir, manifest)
    finally:
        lock.release()
    return [f"plan written into {work_dir / MANIFEST_NAME}"]


def saved_plan(manifest: dict, previous: dict | None = None) -> dict | None:
    """The plan made for exactly this run's inputs: the previous manifest's, or the cached one."""
    key = fingerprint(manifest)
    if previous and (previous.get("plan") or {}).get("inputs") == key:
        return previous["plan"]
    try:
        plan = json.loads(_cache_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and plan.get("inputs") == key else None


# ------------------------------------------------------------------ printing

def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_plan(plan: dict) -> str:
    """The plan as the lines ``tianji-ft plan`` prints."""
    setup, memory, sched = plan["setup"], plan.get("memory"), plan.get("schedule")
    method = {"qlora": "QLoRA (4-bit {t}{d} + LoRA r={r})", "lora": "LoRA r={r}", "full": "full fine-tune"}[
        setup["method"]]
    quant = setup.get("quantization") or {}
    method = method.format(t=quant.get("type", ""), d=", double quantization" if quant.get("double_quant") else "",
                           r=(setup.get("lora") or {}).get("r"))
    lines = [f"plan: {plan['config']} on {setup['gpus_per_node']} GPU(s) x {setup['nnodes']} node(s), "
             f"{setup['deepspeed']}, {method}"]
    lines.append("will it fit (per GPU):")
    if memory:
        st, act = memory["model_states"], memory["activations"]
        b = memory["trainable_parameters"]
        lines += [
            f"  model             {count(memory['parameters'])} parameters ({memory['shape']['source']}), "
            f"{count(b)} trainable",
            f"  weights           {gib(st['weights'])}"
            + (f" (4-bit {gib(st['quantized_weights'])})" if st["quantized_weights"] else ""),
            f"  LoRA parameters   {gib(st['lora_parameters'])}" if setup["method"] != "full" else None,
            f"  gradients         {gib(st['gradients'])}",
            f"  optimizer states  {gib(st['optimizer_states'])}",
            f"  gathered layer    {gib(st['gathered_layer'])} (ZeRO-3)" if st["gathered_layer"] else None,
            f"  activations       {gib(memory['activations_used'])} (batch {setup['batch_size']}"
            + (" pairs x 2 answers" if setup.get("pairs") else "") + f" x {setup['max_length']} tokens"
            + (f", DPO reference logits {gib(act['reference_logits'])}" if act.get("reference_logits") else "")
            + ", gradient checkpointing "
            f"{'on' if setup['gradient_checkpointing'] else 'off'}; "
            f"{gib(act['with_checkpointing'])} with, {gib(act['without_checkpointing'])} without; "
            f"eager attention scores {gib(act['attention_scores_per_layer'])} of it per layer)",
            f"  CPU (offload)     {gib(memory['cpu_offload_per_node'])} per node" if memory["cpu_offload_per_node"]
            else None,
            f"  total             {gib(memory['total'])}"
            + (f" of {gib(memory['gpu_memory'])} ({memory['gpu_memory_source']}): {memory['verdict']}"
               if memory["gpu_memory"] else f"; GPU size {memory['gpu_memory_source']}"),
        ]
    else:
        lines.append("  not planned (no model config.json)")
    if sched:
        lines.append("how long:")
        lines += [
            f"  samples           {sched['samples']} -> {sched['packed_rows']} rows"
            + (f" packed to {setup['max_length']} tokens" if setup["pack"] else ""),
            f"  iterations        {sched['iters_per_epoch']} per epoch x {sched['epochs']} epoch(s) = "
            f"{sched['total_iters']}",
            f"  optimizer steps   {sched['optimizer_steps_per_epoch']} per epoch, {sched['total_optimizer_steps']} "
            f"in all; warmup {sched['warmup_iters']} iteration(s) (~{sched['warmup_optimizer_steps']} step(s))",
            f"  tokens per step   {sched['tokens_per_step']:g} (global batch {sched['global_batch']} = "
            f"{setup['world_size']} GPU(s) x batch {setup['batch_size']} x accumulation "
            f"{setup['accumulative_counts']}); {sched['total_tokens']} tokens in all",
        ]
        est = sched.get("eta")
        if est:
            speed = (f"{est['tokens_per_second']:g} tokens/s" if est.get("tokens_per_second")
                     else f"{est['seconds_per_iter']:g} s/iteration")
            lines.append(f"  ETA               {_duration(est['seconds'])} at {speed} ({est['source']})")
        else:
            lines.append("  ETA               unknown: pass --tokens-per-second, or finish one run of this "
                         "config and model on as many GPUs")
        trunc = plan["data"]["truncation"]
        if trunc["measured"]:
            every = f" (1 in {trunc['every']})" if trunc["every"] > 1 else ""
            lines.append(f"  truncated         {trunc['truncated']} of {trunc['measured']} records measured{every} "
                         f"exceed max_length {trunc['max_length']}; answer tokens lost "
                         f"{trunc['answer_tokens_lost'] / max(1, trunc['answer_tokens']):.1%}")
    lines.append("will it learn:")
    lines += [f"  warning [{w['code']}]: {w['message']}" for w in plan["warnings"]] or ["  no warnings"]
    lines += [f"note: {n}" for n in plan.get("notes", [])]
    return "\n".join(line for line in lines if line is not None)


def plan_json(plan: dict) -> str:
    return json.dumps(plan, ensure_ascii=False, indent=2)

