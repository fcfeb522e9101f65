"""A converted file of each kind loads with XTuner's ``process_hf_dataset`` and
the matching chat template, using the project's tiny tokenizers."""

from __future__ import annotations

import pytest

from tianji_ft.data.records import convert_files
from tianji_ft.data.reader import iter_records
from tianji_ft.core.paths import PROJECT_ROOT

FAMILY_TEMPLATE = {"internlm2": "internlm2_chat", "llama3": "llama3_chat"}

CASES = [  # kind, source (fixture name, or a path under the project), family, output suffix
    ("medqa", "medqa.csv", "internlm2", ".jsonl"),
    ("guanaco", "guanaco.jsonl", "internlm2", ".jsonl"),
    ("msagent", "msagent.jsonl", "internlm2", ".jsonl"),
    ("msagent", "msagent_react.json", "llama3", ".jsonl"),
    ("firefly", "firefly.jsonl", "llama3", ".jsonl"),
    ("moss", "moss.jsonl", "llama3", ".jsonl"),
    ("alpaca", "alpaca.json", "llama3", ".json"),
    ("sharegpt", "sharegpt.json", "internlm2", ".json"),
    ("openai", "openai.jsonl", "llama3", ".jsonl"),
    ("generic", "generic.csv", "internlm2", ".jsonl"),
    ("wishes-merge", "wishes", "internlm2", ".json"),
    ("conversation", PROJECT_ROOT / "data" / "samples_small" / "llama3_mix.jsonl", "llama3", ".jsonl"),
]
OPTIONS = {"generic": {"input_col": "问题", "output_col": "回答", "system_col": "系统"}}


@pytest.fixture(scope="module")
def tokenizers():
    pytest.importorskip("xtuner")
    from transformers import AutoTokenizer

    from tianji_ft.models.tiny import ensure_tiny_model

    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = AutoTokenizer.from_pretrained(str(ensure_tiny_model(family)), trust_remote_code=True)
        return cache[family]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("kind, source, family, suffix", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_converted_file_loads_in_xtuner(kind, source, family, suffix, fixtures_dir, tmp_path, tokenizers):
    from datasets import load_dataset
    from xtuner.dataset.huggingface import process_hf_dataset
    from xtuner.dataset.map_fns import template_map_fn_factory
    from xtuner.utils import PROMPT_TEMPLATE

    out = tmp_path / f"{kind}{suffix}"
    src = source if not isinstance(source, str) else fixtures_dir / source
    tally = convert_files(kind, [src], out, options=OPTIONS.get(kind))
    records = [r for _, r in iter_records(out)]
    assert tally.written == len(records) > 0

    tokenizer = tokenizers(family)
    dataset = process_hf_dataset(
        dataset=load_dataset("json", data_files=str(out), cache_dir=str(tmp_path / "hf")),
        tokenizer=tokenizer, max_length=8192, split="train",
        template_map_fn=template_map_fn_factory(template=PROMPT_TEMPLATE[FAMILY_TEMPLATE[family]]),
        remove_unused_columns=True, shuffle_before_pack=False, pack_to_max_length=False, map_num_proc=1)

    assert len(dataset) == len(records)  # every record has trained (non-masked) tokens
    first = dataset[0]
    assert len(first["input_ids"]) == len(first["labels"])
    trained = tokenizer.decode([t for t, label in zip(first["input_ids"], first["labels"]) if label >= 0])
    assert records[0]["conversation"][0]["output"].strip()[:20] in trained
