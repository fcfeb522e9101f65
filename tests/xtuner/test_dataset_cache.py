"""cached_process_hf_dataset: hits, misses, determinism, damaged saves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tianji_ft.xtuner.dataset_cache import MANIFEST, cached_process_hf_dataset, dataset_cache_key

PEOPLE = ["妈妈", "爸爸", "姐姐", "老师", "同事", "朋友", "外婆", "领导"]
EVENTS = ["生日", "春节", "中秋节", "教师节", "新婚", "升职", "乔迁", "毕业"]


def write_records(path: Path, n: int = 40, extra: str = "") -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            person, event = PEOPLE[i % len(PEOPLE)], EVENTS[(i * 3) % len(EVENTS)]
            turn = {"system": "你现在是一个送祝福大师", "input": f"祝{person}{event}快乐{extra}",
                    "output": f"亲爱的{person}，{event}快乐！愿你平安喜乐，万事如意。" * (1 + i % 3)}
            fh.write(json.dumps({"conversation": [turn]}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    from tianji_ft.models.tiny import ensure_tiny_model

    return ensure_tiny_model("internlm2")


def process_args(data: Path, tokenizer_dir: Path, hf_cache: Path, max_length: int = 96) -> dict:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from xtuner.dataset.map_fns import template_map_fn_factory
    from xtuner.utils import PROMPT_TEMPLATE

    return dict(
        dataset=dict(type=load_dataset, path="json", data_files=[str(data)], cache_dir=str(hf_cache)),
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=str(tokenizer_dir),
                       trust_remote_code=True, padding_side="right"),
        max_length=max_length,
        template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE.internlm2_chat),
        remove_unused_columns=True, shuffle_before_pack=True, pack_to_max_length=True,
        map_num_proc=2,
    )


def rows(dataset) -> list:
    return [(r["input_ids"], r["labels"]) for r in dataset]


@pytest.mark.slow
def test_second_call_hits_the_cache_and_returns_the_same_rows(tmp_path, tokenizer_dir, caught_log):
    args = process_args(write_records(tmp_path / "w.jsonl"), tokenizer_dir, tmp_path / "hf")
    first = cached_process_hf_dataset(**args, cache_dir=tmp_path / "cache")
    second = cached_process_hf_dataset(**args, cache_dir=tmp_path / "cache")
    assert first.tianji_cache["hit"] is False and second.tianji_cache["hit"] is True
    assert first.tianji_cache["key"] == second.tianji_cache["key"] == dataset_cache_key(**args)
    assert len(first) > 1 and rows(first) == rows(second)
    assert list(second.length) == [len(ids) for ids, _ in rows(second)]
    assert all(len(ids) <= 96 for ids, _ in rows(second))
    log = "\n".join(caught_log)
    assert "dataset cache miss" in log and "dataset cache hit" in log and first.tianji_cache["key"] in log


@pytest.mark.slow
def test_changed_data_tokenizer_or_max_length_changes_the_key(tmp_path, tokenizer_dir):
    data = write_records(tmp_path / "w.jsonl")
    base = dataset_cache_key(**process_args(data, tokenizer_dir, tmp_path / "hf"))
    # Where the data lives and where datasets caches it do not matter; what it holds does.
    moved = shutil.copy(data, tmp_path / "moved.jsonl")
    assert dataset_cache_key(**process_args(Path(moved), tokenizer_dir, tmp_path / "hf2")) == base
    assert dataset_cache_key(**process_args(data, tokenizer_dir, tmp_path / "hf", max_length=128)) != base
    assert dataset_cache_key(**process_args(data, tokenizer_dir, tmp_path / "hf"), seed=1) != base

    edited_tok = Path(shutil.copytree(tokenizer_dir, tmp_path / "tok"))
    assert dataset_cache_key(**process_args(data, edited_tok, tmp_path / "hf")) == base
    config = json.loads((edited_tok / "tokenizer_config.json").read_text())
    config["model_max_length"] = 4096
    (edited_tok / "tokenizer_config.json").write_text(json.dumps(config))
    assert dataset_cache_key(**process_args(data, edited_tok, tmp_path / "hf")) != base

    write_records(data, extra="！")
    assert dataset_cache_key(**process_args(data, tokenizer_dir, tmp_path / "hf")) != base


@pytest.mark.slow
def test_changed_data_is_rebuilt_not_served_stale(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    data = write_records(tmp_path / "w.jsonl", n=12)
    first = cached_process_hf_dataset(**process_args(data, tokenizer_dir, tmp_path / "hf"), cache_dir=tmp_path / "c")
    write_records(data, n=12, extra="和睦")
    second = cached_process_hf_dataset(**process_args(data, tokenizer_dir, tmp_path / "hf"), cache_dir=tmp_path / "c")
    assert second.tianji_cache["hit"] is False
    assert rows(second) != rows(first)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert "和睦" in tokenizer.decode(second[0]["input_ids"]) and "和睦" not in tokenizer.decode(first[0]["input_ids"])


@pytest.mark.slow
def test_two_cold_builds_pack_token_for_token_alike(tmp_path, tokenizer_dir):
    data = write_records(tmp_path / "w.jsonl", n=60)
    a = cached_process_hf_dataset(**process_args(data, tokenizer_dir, tmp_path / "hf_a"), cache_dir=tmp_path / "a")
    b = cached_process_hf_dataset(**process_args(data, tokenizer_dir, tmp_path / "hf_b"), cache_dir=tmp_path / "b")
    assert a.tianji_cache["hit"] is False and b.tianji_cache["hit"] is False
    assert rows(a) == rows(b)
    # The seed is what fixes the order: another seed packs the same tokens differently.
    c = cached_process_hf_dataset(**process_args(data, tokenizer_dir, tmp_path / "hf_c"), seed=7,
                                  cache_dir=tmp_path / "c")
    assert rows(c) != rows(a)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["no_manifest", "truncated", "garbled"])
def test_a_partial_or_damaged_save_is_rebuilt(tmp_path, tokenizer_dir, damage):
    args = process_args(write_records(tmp_path / "w.jsonl", n=12), tokenizer_dir, tmp_path / "hf")
    good = cached_process_hf_dataset(**args, cache_dir=tmp_path / "c")
    path = Path(good.tianji_cache["path"])
    expected = rows(good)
    del good
    arrow = next(path.glob("*.arrow"))
    if damage == "no_manifest":  # a save interrupted before it was finished
        (path / MANIFEST).unlink()
    elif damage == "truncated":
        arrow.write_bytes(arrow.read_bytes()[:100])
    else:
        arrow.write_bytes(b"\0" * arrow.stat().st_size)
    again = cached_process_hf_dataset(**args, cache_dir=tmp_path / "c")
    assert again.tianji_cache["hit"] is False
    assert rows(again) == expected
    assert (path / MANIFEST).is_file()


@pytest.mark.slow
def test_functions_swapped_for_their_repr_by_xtuner_train_keep_the_key(tmp_path, tokenizer_dir):
    from xtuner.registry import MAP_FUNC

    args = process_args(write_records(tmp_path / "w.jsonl"), tokenizer_dir, tmp_path / "hf")
    swapped = dict(args, template_map_fn=dict(args["template_map_fn"]), dataset=dict(args["dataset"]))
    for cfg in (swapped["template_map_fn"], swapped["dataset"]):
        name = str(cfg["type"])  # "<function ... at 0x...>", as xtuner.tools.train.register_function does
        if name not in MAP_FUNC:
            MAP_FUNC.register_module(module=cfg["type"], name=name)
        cfg["type"] = name
    assert dataset_cache_key(**swapped) == dataset_cache_key(**args)


def test_data_fingerprint_follows_file_contents_and_split_names(tmp_path):
    from tianji_ft.xtuner.dataset_cache import data_fingerprint
    from tianji_ft.core.errors import UserError

    a = write_records(tmp_path / "a.jsonl", n=3)
    b = write_records(tmp_path / "b.jsonl", n=4)
    loader = "datasets.load_dataset"  # a stand-in for the function: only the files matter here
    one = data_fingerprint(dict(type=loader, path="json", data_files=[str(a), str(b)]))
    assert data_fingerprint(dict(type=loader, path="json", data_files=[str(b), str(a)])) != one
    assert data_fingerprint(dict(type=loader, path="json", data_files=str(tmp_path / "*.jsonl"))) == one
    assert data_fingerprint(dict(type=loader, path="json", data_files={"train": [str(a), str(b)]})) != one
    with pytest.raises(UserError, match="missing.jsonl not found"):
        data_fingerprint(dict(type=loader, path="json", data_files=[str(tmp_path / "missing.jsonl")]))


DISTRIBUTED_SCRIPT = r"""
import json, os, sys
import torch.distributed as dist
from datasets import load_dataset
from transformers import AutoTokenizer
from xtuner.dataset.map_fns import template_map_fn_factory
from xtuner.utils import PROMPT_TEMPLATE
from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

rank, tok, data, cache, out = int(sys.argv[1]), *sys.argv[2:]
dist.init_process_group("gloo", rank=rank, world_size=2)
ds = cached_process_hf_dataset(
    dataset=dict(type=load_dataset, path="json", data_files=[data]),
    tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=tok), max_length=96,
    template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE.internlm2_chat),
    map_num_proc=1, cache_dir=cache)
with open(out, "w") as fh:
    json.dump({"cache": ds.tianji_cache, "ids": [r["input_ids"] for r in ds]}, fh)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_in_a_distributed_run_rank_0_builds_and_the_others_load_its_save(tmp_path, tokenizer_dir):
    import os
    import socket
    import subprocess
    import sys

    data = write_records(tmp_path / "w.jsonl", n=12)
    script = tmp_path / "rank.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", HF_DATASETS_CACHE=str(tmp_path / f"hf{rank}"), PYTHONPATH=str(root))
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(rank), str(tokenizer_dir), str(data), str(tmp_path / "cache"),
             str(tmp_path / f"rank{rank}.json")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode()[-2000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["cache"]["hit"] is False and rank1["cache"]["hit"] is None
    assert rank0["cache"]["path"] == rank1["cache"]["path"]
    assert rank0["ids"] == rank1["ids"] and len(rank0["ids"]) > 1
    # Only rank 0 tokenized: rank 1 never loaded the raw JSON into its datasets cache.
    assert not (tmp_path / "hf1").exists() or not any((tmp_path / "hf1").rglob("*.arrow"))
    assert len(list((tmp_path / "cache").iterdir())) == 1
