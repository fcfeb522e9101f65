"""The fast cold build: token for token XTuner's encode_fn, XTuner's packing, streaming, and its fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tianji_ft.xtuner import fast_encode

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data" / "samples_small"
TEMPLATES = {  # template -> the tiny tokenizer of the model family that trains with it
    "internlm2_chat": "internlm2",
    "internlm_chat": "internlm",
    "llama3_chat": "llama3",
    "default": "internlm",  # the MS-Agent config trains the base InternLM with `default`
}
LONG = "从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事。" * 12


def tricky_records() -> list[dict]:
    """Chinese multi-turn and system turns, empty fields, records longer than max_length."""
    return [
        {"conversation": [{"system": "你现在是一个送祝福大师", "input": "祝妈妈生日快乐", "output": "亲爱的妈妈，生日快乐！🎂"}]},
        {"conversation": [
            {"system": "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福", "input": "祝老师教师节快乐",
             "output": "老师，您辛苦了！"},
            {"input": "再温馨一点", "output": "感谢您一直以来的教导与陪伴，祝您教师节快乐，桃李满天下。"},
            {"input": "Now in English, please.", "output": "Happy Teachers' Day! Thank you for everything."}]},
        {"conversation": [  # a system turn in the middle of a conversation
            {"input": "你好", "output": "你好！有什么可以帮你？"},
            {"system": "换成古风", "input": "写两句中秋的诗", "output": "明月几时有，把酒问青天。"}]},
        {"conversation": [{"system": "", "input": "空的系统提示", "output": "没有系统提示也能回答。"}]},
        {"conversation": [{"input": "", "output": "输入是空的"}]},
        {"conversation": [{"input": "输出是空的", "output": ""}]},
        {"conversation": [{"input": "讲个长故事", "output": LONG}]},  # cut inside the output
        {"conversation": [{"input": LONG, "output": "答案在截断之后"}]},  # no label left: dropped
        {"conversation": [{"input": "多轮里超长", "output": "好的"}, {"input": "继续", "output": LONG}]},
        {"conversation": [{"input": "数字 12345 和 emoji 🎉🎉", "output": "  前后有空格  \n换行\t制表"}]},
        {"conversation": [{"system": "你现在是一个送祝福大师", "input": "祝妈妈生日快乐", "output": "妈妈生日快乐！"}]},
    ]


def write_jsonl(path: Path, records) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny():
    from tianji_ft.models.tiny import ensure_tiny_model

    return {family: ensure_tiny_model(family) for family in ("internlm2", "internlm", "llama3")}


def kwargs_for(data: Path, tokenizer_dir: Path, hf_cache: Path, template: str | None, max_length: int = 64,
               **extra) -> dict:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from xtuner.dataset.map_fns import template_map_fn_factory
    from xtuner.utils import PROMPT_TEMPLATE

    kwargs = dict(
        dataset=dict(type=load_dataset, path="json", data_files=[str(data)], cache_dir=str(hf_cache)),
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=str(tokenizer_dir),
                       trust_remote_code=True, padding_side="right"),
        max_length=max_length,
        template_map_fn=(dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE[template])
                         if template else None),
        remove_unused_columns=True, shuffle_before_pack=True, pack_to_max_length=True, map_num_proc=1,
    )
    kwargs.update(extra)
    return kwargs


def our_records(kwargs: dict, work: Path) -> list:
    """Every kept record as the fast build stores it before packing: (input_ids, labels)."""
    import numpy as np

    work.mkdir()
    encoded = fast_encode.encode_records(kwargs, 0, work)
    ids, flags = fast_encode.decode_tokens(np.asarray(encoded.token_words()))
    out, pos = [], 0
    for n in encoded.lengths().tolist():
        i = ids[pos:pos + n]
        out.append((i.tolist(), np.where(flags[pos:pos + n] > 0, i, -100).tolist()))
        pos += n
    return out


def encode_fn_records(kwargs: dict) -> list:
    """XTuner's own functions one record at a time: map fn, template map fn, encode_fn, process()'s filters."""
    from xtuner.dataset.huggingface import build_origin_dataset
    from xtuner.dataset.utils import encode_fn
    from xtuner.registry import BUILDER

    tokenizer = kwargs["tokenizer"]
    tokenizer = BUILDER.build(tokenizer) if isinstance(tokenizer, dict) else tokenizer
    template_fn = BUILDER.build(kwargs["template_map_fn"]) if kwargs["template_map_fn"] else None
    out = []
    for row in build_origin_dataset(kwargs["dataset"], "train"):
        if kwargs.get("dataset_map_fn"):
            row = {**row, **kwargs["dataset_map_fn"](row)}
        if template_fn:
            row = {**row, **template_fn(row)}
            if not row["conversation"]:
                continue
        enc = encode_fn(row, tokenizer, kwargs["max_length"], input_ids_with_output=True, with_image_token=False)
        if any(label >= 0 for label in enc["labels"]):
            out.append((enc["input_ids"], enc["labels"]))
    return out


def process_records(kwargs: dict) -> list:
    """XTuner's process() itself, unpacked (Arrow round trips included): its records in order."""
    from xtuner.dataset.huggingface import process

    dataset = process(**{**kwargs, "pack_to_max_length": False, "shuffle_before_pack": False})
    return [(r["input_ids"], r["labels"]) for r in dataset]


def rows(dataset) -> list:
    return [tuple(r[c] for c in dataset.column_names) for r in dataset]


@pytest.fixture
def small_batches(monkeypatch):
    """Several backend calls and the prompt memo in play even on a few records."""
    monkeypatch.setattr(fast_encode, "READ_ROWS", 3)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_record_is_what_xtuner_encode_fn_gives(tmp_path, tiny, small_batches, template):
    data = write_jsonl(tmp_path / "d.jsonl", tricky_records())
    kwargs = kwargs_for(data, tiny[TEMPLATES[template]], tmp_path / "hf", template)
    ours = our_records(kwargs, tmp_path / "work")
    expected = encode_fn_records(kwargs)
    assert len(expected) == len(tricky_records()) - 1  # the record whose output starts past max_length
    assert ours == expected
    assert process_records(kwargs) == expected
    # Truncation and masking did happen: a full-length record, prompts without loss.
    assert any(len(ids) == 64 for ids, _ in ours) and all(labels[0] == -100 for _, labels in ours)


def test_an_output_with_loss_key_anywhere_masks_as_xtuner_does(tmp_path, tiny, small_batches):
    """After the Arrow round trip every turn has the key (None where absent), and None means no loss."""
    records = tricky_records()
    records[1]["conversation"][1]["output_with_loss"] = False
    records[2]["conversation"][0]["output_with_loss"] = True
    data = write_jsonl(tmp_path / "d.jsonl", records)
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
    ours = our_records(kwargs, tmp_path / "work")
    assert ours == encode_fn_records(kwargs) == process_records(kwargs)
    assert len(ours) == 1  # only the record with a turn that says True keeps a label


def test_without_a_template_the_record_fields_drive_eos_and_sep(tmp_path, tiny, small_batches):
    records = [{"conversation": [{"input": "问", "output": "答", "need_eos_token": False, "sep": "\n"},
                                 {"input": "再问", "output": "再答", "need_eos_token": True, "sep": ""}]},
               {"conversation": [{"input": "只一轮", "output": "好", "need_eos_token": True, "sep": "##"}]}]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", None)
    ours = our_records(kwargs, tmp_path / "work")
    assert ours == encode_fn_records(kwargs) == process_records(kwargs)
    assert len(ours) == 2


@pytest.mark.parametrize("kind", ["msagent", "oasst1"])
def test_raw_rows_through_xtuner_dataset_map_fns(tmp_path, tiny, small_batches, kind):
    from xtuner.dataset.map_fns import msagent_react_map_fn, oasst1_map_fn

    if kind == "msagent":  # the MS-Agent config: base InternLM, `default` template, raw MSAgent-Bench rows
        data, family, template, map_fn = SAMPLES / "msagent.jsonl", "internlm", "default", msagent_react_map_fn
    else:
        data, family, template, map_fn = SAMPLES / "guanaco.jsonl", "internlm", "internlm_chat", oasst1_map_fn
    kwargs = kwargs_for(data, tiny[family], tmp_path / "hf", template, max_length=2048, dataset_map_fn=map_fn)
    ours = our_records(kwargs, tmp_path / "work")
    expected = encode_fn_records(kwargs)
    assert len(expected) >= 10
    assert ours == expected
    assert process_records(kwargs) == expected


PACKINGS = {
    "one shard, three packer batches": dict(map_num_proc=1),
    "three shards": dict(map_num_proc=3),
    "varlen attention": dict(map_num_proc=2, use_varlen_attn=True),
    # 2,001 rows: a last packer batch of one record, whose short row keeps the residual.
    "max_dataset_length, no shuffle": dict(map_num_proc=1, max_dataset_length=2001, shuffle_before_pack=False),
    "unpacked": dict(map_num_proc=1, pack_to_max_length=False),
}


def many_records(n: int, seed: int = 7, long: int = 0):
    import random

    rng = random.Random(seed)
    people, events = ["妈妈", "老师", "同事", "朋友", "外婆"], ["生日", "春节", "中秋节", "升职", "毕业"]
    chars = sorted(set(LONG + "愿你平安喜乐万事如意岁岁年年笑口常开好运连连身体健康心想事成"))
    for i in range(n):
        turns = [{"input": f"祝{rng.choice(people)}{rng.choice(events)}快乐",
                  "output": "愿你平安喜乐，万事如意。" * rng.randint(1, 5) + "".join(rng.choices(chars, k=long))}]
        if i % 7 == 0:
            turns[0]["system"] = "你现在是一个送祝福大师"
        if i % 5 == 0:
            turns.append({"input": "再来一句", "output": "心想事成！" * rng.randint(1, 3)})
        yield {"conversation": turns}


@pytest.mark.slow
@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_packs_the_rows_the_old_cache_packed(tmp_path, tiny, monkeypatch, packing):
    """Against XTuner's process() under the seeded global generator: the path the cache always built with."""
    from tianji_ft.xtuner.dataset_cache import build, cached_process_hf_dataset

    monkeypatch.setattr(fast_encode, "ROWS_PER_PROCESS", 500)  # encode in two processes where there are two cores

    data = write_jsonl(tmp_path / "d.jsonl", many_records(2100))
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat", max_length=256,
                        **PACKINGS[packing])
    old = build(dict(kwargs), 3)
    new = cached_process_hf_dataset(**kwargs, seed=3, cache_dir=tmp_path / "cache")
    assert new.features == old.features
    assert rows(new) == rows(old)
    assert list(new.length) == list(old.length)


HASH_SCRIPT = r"""
import json, random, sys
from datasets import load_dataset
from transformers import AutoTokenizer
from xtuner.dataset.map_fns import template_map_fn_factory
from xtuner.utils import PROMPT_TEMPLATE
from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

tok, data, cache = sys.argv[1:]
ds = cached_process_hf_dataset(
    dataset=dict(type=load_dataset, path="json", data_files=[data]),
    tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=tok), max_length=512,
    template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE.internlm2_chat),
    cache_dir=cache)
import hashlib
h = hashlib.sha256()
for row in ds:
    h.update(json.dumps([row["input_ids"], row["labels"]]).encode())
print("HASH", ds.tianji_cache["hit"], len(ds), h.hexdigest())
"""
# sha256 of every packed row (input_ids and labels) of 6,000 many_records(seed 7) with the tiny InternLM2
# tokenizer, internlm2_chat, max_length 512, seed 0, XTuner's default 32 shards: what the old cache path
# (XTuner's process under np.random.seed(0)) packed from the same data.
PINNED = "f801a9bb9996eb315b98d94f1e92d17f508a6a322441552ad2ac731917f66823"


@pytest.mark.slow
def test_two_cold_builds_in_two_processes_pack_the_pinned_rows(tmp_path, tiny):
    data = write_jsonl(tmp_path / "d.jsonl", many_records(6000))
    script = tmp_path / "hash.py"
    script.write_text(HASH_SCRIPT)
    procs = []
    for name in ("a", "b"):
        env = dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / f"hf_{name}"), PYTHONPATH=str(ROOT))
        procs.append(subprocess.Popen([sys.executable, str(script), str(tiny["internlm2"]), str(data),
                                       str(tmp_path / f"cache_{name}")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    hashes = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        line = [ln for ln in out.splitlines() if ln.startswith("HASH ")][-1].split()
        assert line[1] == "False"  # both cold
        hashes.append(line[3])
    assert hashes[0] == hashes[1] == PINNED


def slow_tokenizer(tokenizer_dir: Path, where: Path):
    """A slow-only (pure Python) tokenizer with the tiny model's byte-level BPE."""
    from transformers import AutoTokenizer, GPT2Tokenizer

    fast = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    where.mkdir()
    fast.backend_tokenizer.model.save(str(where))
    return GPT2Tokenizer(str(where / "vocab.json"), str(where / "merges.txt"), bos_token="<s>", eos_token="</s>",
                         unk_token="<unk>")


def my_map_fn(example):
    return {"conversation": [{"input": example["q"], "output": example["a"]}]}


@pytest.mark.parametrize("case", ["slow tokenizer", "unknown map fn", "option"])
def test_what_it_does_not_cover_xtuner_builds_with_one_line_saying_why(tmp_path, tiny, caught_log, case):
    from tianji_ft.xtuner.dataset_cache import build, cached_process_hf_dataset

    if case == "unknown map fn":
        data = write_jsonl(tmp_path / "d.jsonl", [{"q": f"问题{i}", "a": f"回答{i}" * (i + 1)} for i in range(12)])
        kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat", dataset_map_fn=my_map_fn)
        why = "dataset_map_fn my_map_fn is not one it knows (msagent_react_map_fn, oasst1_map_fn)"
    else:
        data = write_jsonl(tmp_path / "d.jsonl", tricky_records())
        kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
        if case == "slow tokenizer":
            kwargs["tokenizer"] = slow_tokenizer(tiny["internlm2"], tmp_path / "slow")
            why = "tokenizer GPT2Tokenizer is not a fast tokenizer"
        else:
            kwargs["with_image_token"] = True
            why = "with_image_token=True"
    dataset = cached_process_hf_dataset(**kwargs, cache_dir=tmp_path / "cache")
    lines = [m for m in caught_log if "does not cover" in m]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].endswith(f"the fast build does not cover it: {why}")
    assert dataset.tianji_cache["hit"] is False
    assert rows(dataset) == rows(build(dict(kwargs), 0))


def test_a_covered_build_says_it_was_fast_and_never_falls_back(tmp_path, tiny, caught_log):
    from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

    data = write_jsonl(tmp_path / "d.jsonl", tricky_records())
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
    cached_process_hf_dataset(**kwargs, cache_dir=tmp_path / "cache")
    assert any("fast build of 10 records" in m for m in caught_log)
    assert not any("does not cover" in m for m in caught_log)


def test_split_special_tokens_is_honoured_as_encode_honours_it(tmp_path, tiny, small_batches):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny["internlm2"]))
    tokenizer.split_special_tokens = True  # encode() now spells <|im_start|> out in pieces
    data = write_jsonl(tmp_path / "d.jsonl", tricky_records())
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
    kwargs["tokenizer"] = tokenizer
    ours = our_records(kwargs, tmp_path / "work")
    assert ours == encode_fn_records(kwargs)
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in ours[0][0]


def test_a_batch_encoding_that_disagrees_with_encode_fn_goes_to_xtuner(tmp_path, tiny, caught_log, monkeypatch):
    """The sample check before the build: a difference is never silent, XTuner builds instead."""
    from tianji_ft.xtuner.dataset_cache import build, cached_process_hf_dataset

    ids = fast_encode._Encoder._ids
    monkeypatch.setattr(fast_encode._Encoder, "_ids", lambda self, *a: [i[:-1] for i in ids(self, *a)])
    data = write_jsonl(tmp_path / "d.jsonl", tricky_records())
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
    dataset = cached_process_hf_dataset(**kwargs, cache_dir=tmp_path / "cache")
    assert any(m.endswith("batch encoding differs from XTuner's encode_fn on sample record 0") for m in caught_log)
    assert rows(dataset) == rows(build(dict(kwargs), 0))


MEMORY_SCRIPT = r"""
import json, resource, sys
from datasets import load_dataset
from transformers import AutoTokenizer
from xtuner.dataset.map_fns import template_map_fn_factory
from xtuner.utils import PROMPT_TEMPLATE
from tianji_ft.xtuner import fast_encode
from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

def rss_now():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

encode_range = fast_encode._encode_range
def measured(*args):
    start = rss_now()
    result = encode_range(*args)
    return dict(result, growth=peak() - start)
fast_encode._encode_range = measured
parts = []
encode_all = fast_encode._encode_all
fast_encode._encode_all = lambda *a: parts.extend(encode_all(*a)) or parts

tok, data, cache = sys.argv[1:]
kwargs = dict(
    dataset=dict(type=load_dataset, path="json", data_files=[data]),
    tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=tok), max_length=2048,
    template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE.internlm2_chat), map_num_proc=2)
fast_encode.ROWS_PER_PROCESS = 1000  # two processes even for the small run
load_dataset("json", data_files=[data])  # datasets' own JSON loader (chunked) is not what is measured here
before = rss_now()
ds = cached_process_hf_dataset(**kwargs, cache_dir=cache)
print("MEM " + json.dumps({"parent": peak() - before, "workers": max(p["growth"] for p in parts),
                           "processes": len(parts), "tokens": sum(p["tokens"] for p in parts)}))
"""


@pytest.mark.slow
def test_memory_stays_flat_as_records_grow(tmp_path, tiny):
    """Four times the records (about 3 M tokens more) add next to nothing to the build's peak RSS."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    procs = {}
    for n in (3_000, 12_000):
        data = write_jsonl(tmp_path / f"d{n}.jsonl", many_records(n, long=150))
        env = dict(os.environ, HF_DATASETS_CACHE=str(tmp_path / f"hf{n}"), PYTHONPATH=str(ROOT))
        procs[n] = subprocess.Popen([sys.executable, str(script), str(tiny["internlm2"]), str(data),
                                     str(tmp_path / f"cache{n}")], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
    mem = {}
    for n, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        mem[n] = json.loads([ln for ln in out.splitlines() if ln.startswith("MEM ")][-1][4:])
        assert mem[n]["processes"] == min(2, fast_encode._cores())
    small, big = mem[3_000], mem[12_000]
    assert big["tokens"] - small["tokens"] > 2_500_000
    # Holding the extra tokens as int64 ids and labels would take 16 bytes each (40 MB), as Python lists
    # over 70 bytes each; the build's index grows by about 30 bytes per record (under 0.3 MB here).
    assert big["parent"] - small["parent"] < 10, mem
    assert big["workers"] - small["workers"] < 10, mem
    # The parent's figure is its lifetime peak minus its RSS before the build, so it also holds import-time
    # peaks that vary from machine to machine: only its growth with the records is asserted (above).
    assert big["workers"] < 120, mem


def test_no_record_left_is_the_one_line_error_xtuner_s_path_gave(tmp_path, tiny):
    from tianji_ft.core.errors import UserError
    from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

    data = write_jsonl(tmp_path / "d.jsonl", [{"conversation": [{"input": LONG, "output": "答"}]}] * 3)
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
    with pytest.raises(UserError, match="no training sample left after tokenizing with max_length=64"):
        cached_process_hf_dataset(**kwargs, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # nothing half-built left behind


def test_a_long_build_logs_how_far_it_is(tmp_path, tiny, small_batches, caught_log, monkeypatch):
    from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

    monkeypatch.setattr(fast_encode, "PROGRESS_EVERY_S", 0.0)  # every batch of 3 rows counts as "long"
    records = tricky_records()
    data = write_jsonl(tmp_path / "d.jsonl", records)
    kwargs = kwargs_for(data, tiny["internlm2"], tmp_path / "hf", "internlm2_chat")
    cached_process_hf_dataset(**kwargs, cache_dir=tmp_path / "cache")
    lines = [m for m in caught_log if m.startswith("dataset preparation: ")]
    n = len(records)  # raw rows, before the build filters any
    assert [line.split(" rows")[0] for line in lines] == [
        f"dataset preparation: {done}/{n}" for done in [*range(3, n, 3), n]]
    assert lines[-1].split("rows (")[1].startswith("100%)")
