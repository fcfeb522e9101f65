"""The plan: each warning on a fixture that triggers it, none on the seed configs as written, the
schedule against XTuner's own loop, and where the plan is kept (never in a work dir made for it)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES

from tianji_ft.cli import main
from tianji_ft.configs.registry import config_meta, copy_config, resolve_config
from tianji_ft.core.manifest import read_manifest, write_manifest
from tianji_ft.core.paths import PROJECT_ROOT
from tianji_ft.train import train as launcher
from tianji_ft.train.plan import PlanOptions, eta, fingerprint, make_plan, record_plan, saved_plan

SHAPES = json.loads(Path(__file__).with_name("model_shapes.json").read_text(encoding="utf-8"))
# The model each seed config was written for, as a shape from model_shapes.json.
SEED_SHAPES = {
    "internlm_chat_7b_qlora_oasst1_e3": "internlm-7b",
    "internlm_chat_7b_qlora_medqa2019_e3": "internlm-7b",
    "internlm_7b_qlora_msagent_react_e3_gpu8": "internlm-7b",
    "internlm2_chat_7b_qlora_wishes_e3": "internlm2-7b",
    "internlm2_chat_7b_full_wishes_e1": "internlm2-7b",
    "llama3_8b_instruct_qlora_chinese_e1": "llama3-8b",
    "internlm2_chat_7b_qlora_wishes_dpo_e1": "internlm2-7b",
    "internlm2_chat_7b_qlora_wishes_orpo_e1": "internlm2-7b",
    "llama3_8b_instruct_qlora_dpo_e1": "llama3-8b",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WISHES = "internlm2_chat_7b_qlora_wishes_e3"
FULL = "internlm2_chat_7b_full_wishes_e1"
MSAGENT = "internlm_7b_qlora_msagent_react_e3_gpu8"


def model_dir(tmp_path: Path, shape: str, tokenizer_of: Path | None = None) -> Path:
    """A model folder holding a real model's config.json (and, for the data pass, a tiny tokenizer)."""
    folder = tmp_path / f"model-{shape}"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SHAPES[shape]), encoding="utf-8")
    for name in TOKENIZER_FILES if tokenizer_of else ():
        shutil.copy(tokenizer_of / name, folder / name)
    return folder


def plan_of(tmp_path, config, model, *, gpus=1, nnodes=1, deepspeed=None, data=(), settings=None, sets=(),
            gpu_memory="80GB", with_data=False, tiny=False) -> dict:
    req = launcher.TrainRequest(config=config, model=str(model) if model else None, data=list(data),
                                work_dir=str(tmp_path / "wd"), deepspeed=deepspeed, gpus=gpus, nnodes=nnodes,
                                tiny=tiny, settings=dict(settings or {}), cfg_options=list(sets))
    plan, _ = make_plan(req, PlanOptions(gpu_memory=gpu_memory, data=with_data))
    return plan


def codes(plan: dict) -> list[str]:
    return [w["code"] for w in plan["warnings"]]


def message(plan: dict, code: str) -> str:
    return next(w["message"] for w in plan["warnings"] if w["code"] == code)


def config_copy(tmp_path: Path, seed: str, name: str, *replacements: tuple[str, str]) -> Path:
    """A `tianji-ft configs copy` of a seed config with some lines changed."""
    path = copy_config(seed, tmp_path / f"{name}.py")
    text = path.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return path


# ---- seed configs as written: no warning -------------------------------------------------------

@pytest.mark.parametrize("seed", sorted(SEED_SHAPES))
def test_seed_configs_as_written_fit_and_warn_of_nothing(seed, tmp_path):
    assert set(SEED_SHAPES) == {p.stem for p in resolve_config(WISHES).parent.glob("*.py")}
    gpus = int(config_meta(resolve_config(seed)).get("gpus") or 1)
    plan = plan_of(tmp_path, seed, model_dir(tmp_path, SEED_SHAPES[seed]), gpus=gpus)
    assert plan["warnings"] == []
    assert plan["memory"]["verdict"] == "fits" and plan["setup"]["world_size"] == gpus
    assert plan["written_for"]["global_batch"] == gpus * plan["setup"]["batch_size"] * plan["setup"][
        "accumulative_counts"]


# ---- each warning on a fixture that triggers it -----------------------------------------------

def test_a_config_written_for_8_gpus_launched_on_1_warns_of_the_global_batch(tmp_path):
    plan = plan_of(tmp_path, MSAGENT, model_dir(tmp_path, "internlm-7b"), gpus=1)
    assert codes(plan) == ["global_batch"]
    text = message(plan, "global_batch")
    assert "global batch 8 (GPUs 1 x batch 8 x accumulation 1)" in text and "the 64 the config" in text
    # two nodes of four GPUs make the same 64: no warning
    assert codes(plan_of(tmp_path, MSAGENT, model_dir(tmp_path, "internlm-7b"), gpus=4, nnodes=2)) == []


@pytest.mark.parametrize("deepspeed", ["zero3", "zero3_offload"])
def test_qlora_with_zero3_warns(tmp_path, deepspeed):
    plan = plan_of(tmp_path, WISHES, model_dir(tmp_path, "internlm2-7b"), deepspeed=deepspeed)
    assert codes(plan) == ["qlora_zero3"]
    assert plan["setup"]["zero_stage"] == 3


def test_a_template_of_another_family_warns(tmp_path):
    plan = plan_of(tmp_path, WISHES, model_dir(tmp_path, "llama3-8b"))
    assert codes(plan) == ["template"]
    assert "internlm2_chat" in message(plan, "template") and "llama3_chat" in message(plan, "template")


@pytest.mark.parametrize("hook_template", ["None", "PROMPT_TEMPLATE.default"])
def test_evaluation_prompts_outside_the_training_template_warn(tmp_path, hook_template):
    config = config_copy(tmp_path, WISHES, "eval_raw", (
        "        prompt_template=prompt_template,\n        max_new_tokens=evaluation_max_new_tokens,",
        f"        prompt_template={hook_template},\n        max_new_tokens=evaluation_max_new_tokens,"))
    plan = plan_of(tmp_path, str(config), model_dir(tmp_path, "internlm2-7b"))
    assert codes(plan) == ["eval_template"]
    assert ("raw, with no template" if hook_template == "None" else "through template default") in message(
        plan, "eval_template")


def test_a_run_that_does_not_fit_warns(tmp_path):
    plan = plan_of(tmp_path, FULL, model_dir(tmp_path, "internlm2-7b"), gpus=2, gpu_memory="24GB")
    assert "memory" in codes(plan)
    assert plan["memory"]["verdict"] == "does not fit" and plan["memory"]["total"] > 24 * 2**30
    # the same run on 16 GPUs with ZeRO-3 and offload fits in 24 GB
    roomy = plan_of(tmp_path, FULL, model_dir(tmp_path, "internlm2-7b"), gpus=8, nnodes=2,
                    deepspeed="zero3_offload", gpu_memory="24GB")
    assert roomy["memory"]["verdict"] == "fits"


# ---- the CLI, and where the plan is kept ----------------------------------------------------

def test_plan_prints_json_and_makes_no_work_dir(tmp_path, capsys):
    work_dir = tmp_path / "never_made"
    rc = main(["plan", WISHES, "--model", str(model_dir(tmp_path, "internlm2-7b")), "--no-data", "--json",
               "--gpu-memory", "24GB", "--work-dir", str(work_dir)])
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["memory"]["verdict"] == "fits" and plan["setup"]["method"] == "qlora"
    assert plan["memory"]["model_states"]["quantized_weights"] > 0
    assert not work_dir.exists()
    rc = main(["plan", WISHES, "--model", str(model_dir(tmp_path, "internlm2-7b")), "--no-data",
               "--work-dir", str(work_dir)])
    out = capsys.readouterr().out
    assert rc == 0 and "will it fit (per GPU):" in out and "total" in out and "no warnings" in out
    assert not work_dir.exists()


def fake_model(tmp_path) -> str:
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    return str(path)


def fixture_request(tmp_path, **kw) -> launcher.TrainRequest:
    return launcher.TrainRequest(config=str(FIXTURES / "tiny_lora_config.py"), model=fake_model(tmp_path),
                                 data=[str(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl")],
                                 work_dir=str(tmp_path / "wd"), **kw)


def test_a_dry_run_writes_its_plan_only_into_a_manifest_of_the_same_run(tmp_path):
    req = fixture_request(tmp_path)
    manifest = launcher.plan(req)["manifest"]
    plan = {"inputs": fingerprint(manifest), "config": "tiny_lora_test"}
    wd = tmp_path / "wd"
    assert "when 'tianji-ft train' starts" in record_plan(plan, wd)[0] and not wd.exists()
    wd.mkdir()
    write_manifest(wd, dict(manifest, state="finished"))
    assert record_plan(plan, wd) == [f"plan written into {wd / 'tianji_run.json'}"]
    assert read_manifest(wd)["plan"] == plan and read_manifest(wd)["state"] == "finished"
    other = {"inputs": fingerprint(dict(manifest, world_size=2)), "config": "tiny_lora_test"}
    assert "when 'tianji-ft train' starts" in record_plan(other, wd)[0]
    assert read_manifest(wd)["plan"] == plan


def test_a_dry_run_leaves_the_manifest_of_a_running_training_alone(tmp_path):
    req = fixture_request(tmp_path)
    manifest = launcher.plan(req)["manifest"]
    wd = tmp_path / "wd"
    wd.mkdir()
    write_manifest(wd, dict(manifest, state="running"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom tianji_ft.core.lock import WorkDirLock\n"
        f"WorkDirLock({str(wd)!r}, 'training run').acquire()\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        [note] = record_plan({"inputs": fingerprint(manifest)}, wd)
        assert "a run is using it" in note and "plan" not in read_manifest(wd)
    finally:
        holder.kill()
        holder.wait()


def test_training_keeps_the_dry_runs_plan_and_records_its_throughput_for_the_next_eta(tmp_path):
    req = fixture_request(tmp_path)
    manifest = launcher.plan(req)["manifest"]
    plan = {"inputs": fingerprint(manifest), "config": "tiny_lora_test", "setup": {"batch_size": 1, "max_length": 128,
                                                                                "pack": True},
            "schedule": {"tokens_per_iter": 512.0}}
    record_plan(plan, tmp_path / "wd")
    seen = {}

    def fake_runner(cmd, env, log):
        seen["during"] = read_manifest(tmp_path / "wd")
        vis = tmp_path / "wd" / "20240101_000000" / "vis_data"
        vis.mkdir(parents=True)
        vis.joinpath("scalars.json").write_text("\n".join(
            json.dumps({"iter": i, "loss": 1.0, "time": 5.0 if i == 1 else 0.5}) for i in range(1, 11)) + "\n")
        return 0

    assert launcher.train(req, runner=fake_runner, out=io.StringIO()) == 0
    assert seen["during"]["plan"] == plan
    after = read_manifest(tmp_path / "wd")
    tp = after["throughput"]
    assert tp["seconds_per_iter"] == 0.5 and tp["tokens_per_iter"] == 512.0 and tp["tokens_per_second"] == 1024.0
    assert tp["iterations_measured"] == 9 and tp["world_size"] == 1
    # a later plan of the same config and model, in a sibling work dir, takes its ETA from that run
    later = {"config": "tiny_lora_test", "model": manifest["model"], "setup": {"world_size": 1},
             "schedule": {"total_tokens": 10240, "total_iters": 20}}
    found = eta(later, None, tmp_path / "wd2")
    assert found["seconds"] == 10 and found["source"] == str(tmp_path / "wd" / "tianji_run.json")
    assert eta(later, 2048.0, tmp_path / "wd2") == {"seconds": 5, "tokens_per_second": 2048.0,
                                                    "source": "--tokens-per-second"}
    # a plan for other inputs is not the run's plan
    assert saved_plan(dict(manifest, cfg_options=["x=1"])) is None


# ---- warnings that need the data (slow: tokenizes) -------------------------------------------

@pytest.mark.slow
def test_few_steps_a_zero_warmup_and_no_optimizer_step_warn(tmp_path, capsys):
    """--tiny's 8 packed rows: 8 iterations an epoch; warmup 0.01 x 8 iterations rounds to 0; under DeepSpeed
    accumulation 16 (the config's own, so the global batch is as written) never completes a step."""
    rc = main(["train", WISHES, "--tiny", "--dry-run", "--json", "--work-dir", str(tmp_path / "wd"),
               "--warmup-ratio", "0.01", "--accum", "16", "--deepspeed", "zero2"])
    plan = json.loads(capsys.readouterr().out)
    assert rc == 0 and not (tmp_path / "wd").exists()
    assert set(codes(plan)) == {"few_steps", "warmup_zero", "no_steps"}
    sched = plan["schedule"]
    assert (sched["total_iters"], sched["optimizer_steps_per_epoch"], sched["total_optimizer_steps"]) == (8, 1, 0)
    assert "1 optimizer step(s) per epoch" in message(plan, "few_steps")
    rc = main(["train", WISHES, "--tiny", "--dry-run", "--work-dir", str(tmp_path / "wd")])
    out = capsys.readouterr().out
    assert rc == 0 and "samples: 8" in out and "--- example 1 ---" in out  # the dry run's report, then the plan
    assert "warning [few_steps]: 8 optimizer step(s) per epoch" in out and "how long:" in out
    assert "warning [global_batch]: global batch 1 " in out  # --tiny accumulates 1, the config 16


def long_and_short_records(n_long: int, n_short: int) -> list[dict]:
    long_answer = "祝你生日快乐，天天开心，万事如意，心想事成。" * 6
    return ([{"conversation": [{"input": f"祝同事{i}号生日快乐", "output": long_answer}]} for i in range(n_long)]
            + [{"conversation": [{"input": f"祝朋友{i}号快乐", "output": "快乐！"}]} for i in range(n_short)])


@pytest.mark.slow
def test_records_cut_by_max_length_warn_with_the_share_of_answer_tokens_lost(tmp_path):
    from transformers import AutoTokenizer

    from tianji_ft.models.tiny import ensure_tiny_model

    records = long_and_short_records(5, 15)
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    tiny = ensure_tiny_model("internlm2")
    tok = AutoTokenizer.from_pretrained(str(tiny))
    max_length = 48
    # InternLM2's template as XTuner applies it, written out: <s>, prompt, answer + <|im_end|> (the labels), "\n"
    lost = answers = cut = 0
    for r in records:
        turn = r["conversation"][0]
        prompt = len(tok.encode(f"<|im_start|>user\n{turn['input']}<|im_end|>\n<|im_start|>assistant\n",
                                add_special_tokens=False))
        answer = len(tok.encode(turn["output"] + "<|im_end|>", add_special_tokens=False))
        total = 1 + prompt + answer + len(tok.encode("\n", add_special_tokens=False))
        answers += answer
        if total > max_length:
            cut += 1
            lost += max(0, min(answer, 1 + prompt + answer - max_length))
    assert cut == 5 and 0 < lost < answers
    plan = plan_of(tmp_path, str(FIXTURES / "tiny_sft.py"), tiny, data=[data], with_data=True,
                   settings={"TIANJI_MAX_LENGTH": str(max_length)})
    trunc = plan["data"]["truncation"]
    assert (trunc["measured"], trunc["truncated"], trunc["answer_tokens"], trunc["answer_tokens_lost"]) == (
        20, cut, answers, lost)
    assert "truncation" in codes(plan)
    assert f"25.0% of records ({cut} of 20 measured)" in message(plan, "truncation")
    assert f"{lost / answers:.1%} of answer tokens are cut" in message(plan, "truncation")
    roomy = plan_of(tmp_path, str(FIXTURES / "tiny_sft.py"), tiny, data=[data], with_data=True,
                    settings={"TIANJI_MAX_LENGTH": "2048"})
    assert roomy["data"]["truncation"]["truncated"] == 0 and "truncation" not in codes(roomy)


@pytest.mark.slow
def test_a_tokenizer_that_splits_the_templates_markers_warns(tmp_path):
    """The wishes config's internlm2_chat markers with the tiny Llama-3 tokenizer (a config.json too
    small to name its family): the data pass finds <|im_end|> is not one of its tokens."""
    from tianji_ft.models.tiny import ensure_tiny_model

    plan = plan_of(tmp_path, WISHES, ensure_tiny_model("llama3"), with_data=True,
                   data=[PROJECT_ROOT / "data" / "demo" / "wishes.jsonl"])
    assert "template" in codes(plan) and "<|im_end|>" in message(plan, "template")
    assert plan["data"]["template_markers"] == {"<|im_end|>": False}


@pytest.mark.slow
def test_the_full_finetune_as_written_with_enough_data_warns_of_nothing(tmp_path):
    """Written for 2 GPUs, batch 1, no accumulation, ZeRO-3: 160 records give 80 steps an epoch, and
    the 2.5% warmup 2 iterations (40 records would round it to 0, which mmengine refuses)."""
    from tianji_ft.models.tiny import ensure_tiny_model

    data = tmp_path / "wishes160.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in long_and_short_records(0, 160)) + "\n",
                    encoding="utf-8")
    model = model_dir(tmp_path, "internlm2-7b", tokenizer_of=ensure_tiny_model("internlm2"))
    plan = plan_of(tmp_path, FULL, model, gpus=2, data=[data], with_data=True)
    assert plan["warnings"] == []
    sched = plan["schedule"]
    assert (sched["packed_rows"], sched["iters_per_epoch"], sched["optimizer_steps_per_epoch"]) == (160, 80, 80)
    assert sched["warmup_iters"] == 2
    assert sched["global_batch"] == 2 and plan["data"]["template_markers"] == {"<|im_end|>": True}


# ---- the schedule against XTuner's own loop (one real tiny run) --------------------------------

# A hook for the config copy below: the shape of every batch XTuner's loop trains on.
BATCH_HOOK = """
import json
import os

from mmengine.hooks import Hook


class BatchShapeHook(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        ids = data_batch["data"]["input_ids"]
        with open(os.path.join(runner.work_dir, "batches.jsonl"), "a") as fh:
            fh.write(json.dumps({"iter": runner.iter, "shape": list(ids.shape)}) + "\\n")
"""


@pytest.mark.slow
def test_steps_warmup_and_tokens_per_step_equal_xtuners_loop(tmp_path, monkeypatch):
    """One real run of a copy of the wishes config (plus a hook that records every batch's shape) on the
    tiny model: batch 2, accumulation 4, 2 epochs, warmup 0.3, packing in one process so every row holds
    max_length tokens; the last optimizer step of the run is a partial one."""
    import torch

    (tmp_path / "batch_shape_hook.py").write_text(BATCH_HOOK, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = config_copy(tmp_path, WISHES, "wishes_batches",
                         ("from tianji_ft.configs.dataset_cache import", "from batch_shape_hook import BatchShapeHook\n"
                                                                         "from tianji_ft.configs.dataset_cache import"),
                         ("custom_hooks = [\n", "custom_hooks = [\n    dict(type=BatchShapeHook),\n"))
    data = tmp_path / "wishes60.jsonl"
    records = [{"conversation": [{"system": "你是送祝福的助手", "input": f"祝朋友{i}号生日快乐，小红书风格",
                                  "output": "亲爱的朋友，祝你生日快乐！愿你每天都开心，心想事成，万事如意。" * 2}]}
               for i in range(60)]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    wd = tmp_path / "wd"
    req = launcher.TrainRequest(
        config=str(config), tiny=True, data=[str(data)], work_dir=str(wd), deepspeed="none",
        settings={"TIANJI_BATCH_SIZE": "2", "TIANJI_ACCUM": "4", "TIANJI_EPOCHS": "2", "TIANJI_WARMUP_RATIO": "0.3",
                  "TIANJI_SAVE_STEPS": "1000"},
        cfg_options=["default_hooks.logger.interval=1", "train_dataloader.dataset.map_num_proc=1"])
    plan, _ = make_plan(req, PlanOptions(gpu_memory="24GB"))
    record_plan(plan, wd)
    sched = plan["schedule"]
    assert sched["total_iters"] > sched["iters_per_epoch"] > 3 and sched["total_iters"] % 4  # a last, partial step
    assert launcher.train(req, out=io.StringIO()) == 0

    log = (wd / "train.log").read_text(encoding="utf-8")
    iters = [(int(a), int(b)) for a, b in re.findall(r"Iter\(train\) \[\s*(\d+)/(\d+)\]", log)]
    lrs = [float(x) for x in re.findall(r"Iter\(train\) \[[^\]]*\]\s+lr: ([0-9.e+-]+)", log)]
    assert iters[-1] == (sched["total_iters"], sched["total_iters"]) and len(lrs) == sched["total_iters"]
    # mmengine logs the lr an iteration ran with: the linear warmup reaches the peak on its last iteration
    assert lrs.index(max(lrs)) + 1 == sched["warmup_iters"] == int(0.3 * 2 * sched["iters_per_epoch"])
    # optimizer steps: AdamW's own step count in the last checkpoint
    ckpt = torch.load(wd / f"iter_{sched['total_iters']}.pth", map_location="cpu", weights_only=False)
    assert {int(s["step"]) for s in ckpt["optimizer"]["state"].values()} == {sched["total_optimizer_steps"]}
    # tokens: the batches the loop ran (batch x sequence length each)
    batches = [json.loads(line) for line in (wd / "batches.jsonl").read_text().splitlines()]
    tokens = [b["shape"][0] * b["shape"][1] for b in batches]
    assert len(tokens) == sched["total_iters"] and sum(tokens) == sched["total_tokens"]
    assert sorted(tokens)[len(tokens) // 2] == sched["tokens_per_iter"] == 2 * 256
    assert sched["tokens_per_step"] == 4 * sched["tokens_per_iter"] and sched["global_batch"] == 8
    # the run kept the dry run's plan and recorded its throughput; the next plan has an ETA from it
    manifest = read_manifest(wd)
    assert manifest["plan"]["inputs"] == plan["inputs"]
    assert manifest["throughput"]["tokens_per_iter"] == 512 and manifest["throughput"]["tokens_per_second"] > 0
    again, _ = make_plan(req, PlanOptions(gpu_memory="24GB"))
    assert again["schedule"]["eta"]["source"] == str(wd / "tianji_run.json")


@pytest.mark.parametrize("config, reference", [("internlm2_chat_7b_qlora_wishes_dpo_e1", True),
                                               ("internlm2_chat_7b_qlora_wishes_orpo_e1", False)])
def test_a_preference_batch_holds_both_answers_and_dpo_its_reference_logits(tmp_path, config, reference):
    from tianji_ft.train.memory import ModelShape, activations

    model = model_dir(tmp_path, "internlm2-7b")
    sft = plan_of(tmp_path, WISHES, model, settings={"TIANJI_MAX_LENGTH": "2048"})
    pairs = plan_of(tmp_path, config, model, settings={"TIANJI_MAX_LENGTH": "2048"})
    shape = ModelShape.from_file(model / "config.json")
    targets = shape.lora_linears(pairs["setup"]["lora"]["target_modules"])
    two = activations(shape, 2 * pairs["setup"]["batch_size"], 2048, lora=targets, r=pairs["setup"]["lora"]["r"],
                      lora_dropout=True)  # chosen and rejected: two sequences a pair
    extra = two["output_logits"] if reference else 0
    assert pairs["memory"]["activations_used"] == two["with_checkpointing"] + extra
    assert pairs["memory"]["activations"]["reference_logits"] == extra
    assert pairs["setup"]["pairs"] is True and sft["setup"]["pairs"] is False
