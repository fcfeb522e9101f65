"""The preference configs (DPO, ORPO) on the shipped pairs: XTuner's own dataset code reads them, and DPO learns.

Each preference config also trains two or more iterations with ``--tiny`` in
``test_configs_tiny.py``, which walks every config of the pack.
"""

from __future__ import annotations

import io
import json

import pytest
from helpers.threads import no_threads_left

from tianji_ft.configs.registry import config_meta, resolve_config
from tianji_ft.configs.table import WORKFLOWS
from tianji_ft.core.paths import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "data" / "samples_small" / "wishes_pairs.jsonl"
PREFERENCE = sorted(name for name, row in WORKFLOWS.items() if row.get("objective"))
DPO = "internlm2_chat_7b_qlora_wishes_dpo_e1"


@pytest.fixture()
def xtuner_threads_joined(monkeypatch):
    with no_threads_left(monkeypatch):
        yield


def records() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_preference_config_trains_tiny_on_the_sample():
    for name in PREFERENCE:
        meta = config_meta(resolve_config(name))
        assert meta["data_format"] == "preference" and meta["tiny_data"] == ["data/samples_small/wishes_pairs.jsonl"]


@pytest.mark.parametrize("family", sorted({config_meta(resolve_config(n))["family"] for n in PREFERENCE}))
def test_the_sample_loads_through_xtuners_preference_dataset(family, tiny_model, tmp_path, monkeypatch,
                                                             xtuner_threads_joined):
    """``build_preference_dataset`` lays each pair out in the config's chat format and trains only the answers."""
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from xtuner.dataset.preference_dataset import build_preference_dataset
    from xtuner.utils import PROMPT_TEMPLATE

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    template_name = next(config_meta(resolve_config(n))["template"] for n in PREFERENCE
                         if config_meta(resolve_config(n))["family"] == family)
    template = PROMPT_TEMPLATE[template_name]
    tokenizer = dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=str(tiny_model(family)),
                     trust_remote_code=True, padding_side="right")
    dataset = build_preference_dataset(dataset=dict(type=load_dataset, path="json", data_files=[str(SAMPLE)]),
                                       tokenizer=tokenizer, max_length=256, num_proc=1)
    tok = AutoTokenizer.from_pretrained(tiny_model(family), trust_remote_code=True)
    pairs = records()
    assert len(dataset) == len(pairs)
    for pair, item in zip(pairs, dataset):
        system, user = (m["content"] for m in pair["prompt"])
        for side in ("chosen", "rejected"):
            ids, labels = item[f"{side}_ids"], item[f"{side}_labels"]
            answer = pair[side][0]["content"]
            start = next(i for i, label in enumerate(labels) if label != -100)
            # The prompt is the chat format XTuner's template (and so chat, eval and serve) writes ...
            prompt = tok.decode(ids[:start])
            assert prompt.endswith(template["SYSTEM"].format(system=system) + template["INSTRUCTION"].format(input=user))
            # ... and the trained tokens are the answer and the end of its turn, nothing of the prompt.
            assert tok.decode(labels[start:]).strip() == answer + template["SUFFIX"]
        assert item["chosen_ids"][:start] == item["rejected_ids"][:start]


def scalars(work_dir) -> list[dict]:
    """What XTuner logged per iteration (mmengine's scalars.json under the run's vis_data)."""
    (path,) = work_dir.glob("*/vis_data/scalars.json")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_dpo_reward_margin_grows_on_the_tiny_pairs(tmp_path, monkeypatch):
    from tianji_ft.train.train import TrainRequest, train

    work_dir = tmp_path / "dpo"
    # Two epochs over the pairs; a learning rate a tiny model moves at (the config's 5e-7 suits 7B);
    # no evaluation prompts and no DeepSpeed (test_configs_tiny.py runs the config with both), and
    # every iteration logged as it is (no 10-iteration window).
    request = TrainRequest(config=DPO, tiny=True, work_dir=str(work_dir), deepspeed="none",
                           settings={"TIANJI_LR": "1e-3", "TIANJI_EPOCHS": "2", "TIANJI_EVAL_PROMPTS": "[]"},
                           cfg_options=["default_hooks.logger.interval=1", "log_processor.window_size=1"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert train(request, out=io.StringIO()) == 0
    logged = scalars(work_dir)
    margins = [row["reward_margin"] for row in logged if "reward_margin" in row]
    accuracy = [row["reward_acc"] for row in logged if "reward_acc" in row]
    assert len(margins) == 2 * len(records())
    # The policy starts as the reference (a LoRA adds nothing before its first step) ...
    assert abs(margins[0]) < 0.05
    # ... and ends preferring the chosen answers by a clear margin.
    first, last = sum(margins[:6]) / 6, sum(margins[-6:]) / 6
    assert last > first + 0.5 and last > 0.5, margins
    assert sum(accuracy[-6:]) / 6 >= 0.8, accuracy


def test_dry_run_counts_pairs_as_xtuners_preference_dataset_builds_them(tiny_model, tmp_path, monkeypatch,
                                                                         xtuner_threads_joined):
    """``train --dry-run`` on a DPO config: one unpacked row per pair, the tokens XTuner's dataset holds."""
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from xtuner.dataset.preference_dataset import build_preference_dataset

    from tianji_ft.train.dryrun import dry_run

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    model = str(tiny_model("internlm2"))
    env = {"TIANJI_MODEL": model, "TIANJI_DATA": str(SAMPLE), "TIANJI_MAX_LENGTH": "40"}
    report = dry_run(resolve_config(DPO), env, [])
    tokenizer = dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=model, trust_remote_code=True)
    built = build_preference_dataset(dataset=dict(type=load_dataset, path="json", data_files=[str(SAMPLE)]),
                                     tokenizer=tokenizer, max_length=40, num_proc=1)
    assert report["samples"] == report["packed_rows"] == report["iters_per_epoch"] == len(built) == len(records())
    assert report["pack"] is False
    assert report["tokens_per_epoch"] == sum(len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in built)
    # 40 tokens cut the longer chosen answers (the system prompt alone is ~30), not the short rejected ones
    trunc = report["truncation"]
    assert 0 < trunc["truncated"] <= len(records()) and trunc["answer_tokens_lost"] > 0
    assert report["examples"][0].rstrip().endswith(records()[0]["chosen"][0]["content"] + "<|im_end|>")


def test_a_setting_the_config_does_not_read_is_noted():
    """--pack means nothing to a preference config (pairs are packed only with varlen attention): the run says so."""
    from tianji_ft.train.train import TrainRequest, plan

    notes = plan(TrainRequest(config=DPO, tiny=True, settings={"TIANJI_PACK": "1", "TIANJI_LR": "1e-3"}),
                 cuda=False)["notes"]
    assert f"{DPO}.py does not read --pack: ignored" in notes
    sft = plan(TrainRequest(config="internlm2_chat_7b_qlora_wishes_e3", tiny=True, settings={"TIANJI_PACK": "1"}),
               cuda=False)["notes"]
    assert not any("does not read" in n for n in sft)
