"""Benchmark of dataset preparation at launch, side by side with XTuner and with the tokenizer itself.

Part 1: 50,000 seeded wishes-like records (Chinese, a system prompt and one
turn), the tiny InternLM2 tokenizer, the internlm2_chat template, max_length
2048, XTuner's defaults otherwise (map_num_proc=32, shuffle before packing).
Each run in its own subprocess, timing only the dataset call (imports are
outside the timer, as a training launch has them loaded already):

- floor: the tokenizer's own batch encode, ``tokenizer(texts,
  add_special_tokens=False)`` in one call, of every text the records give
  XTuner's ``encode_fn`` (each turn's templated input and output), the texts
  built outside the timer; once with one thread and once with the
  tokenizer's own threads on all cores; the faster is the floor.
- XTuner cold: XTuner's ``process`` with NumPy's global generator seeded as
  the cache seeds it (``dataset_cache.build``; the old cold path), empty
  datasets cache; XTuner warm: the same with that datasets cache.
- ours cold (empty datasets cache and dataset cache), ours warm (its cache),
  ours cold #2 (another cache).
- identity: every record through the fast encoder (the token files a cold
  build packs from) and through XTuner's ``template_map_fn`` and
  ``encode_fn`` one record at a time; the records that differ are counted.

Part 2: firefly-like records (Chinese instructions and answers, some
multi-turn, some with a system prompt), the tiny Llama-3 tokenizer, the
llama3_chat template, max_length 2048: ours cold on 100,000 and on 1,000,000
records (seconds, records/s, peak RSS of the process and of its worker
processes, read before anything touches the packed rows), and the identity
check over every record. The 1M part takes about 6 minutes on 2 cores
(``--big 0`` skips it).

Goals (exit 1 when one is missed): ours cold <= 1.5x the floor; ours cold at
least 5x faster than XTuner cold; ours warm <= 10% of ours cold; the two cold
runs, the warm run and XTuner's seeded cold run pack the same input_ids
(sha256 of every packed row); 0 differing records; with ``--big``, peak RSS
of the 1M run <= 1.5x that of the 100k run. Run with ``make bench`` or
``.venv/bin/python tools/bench_launch.py [--records 50000] [--firefly 100000] [--big 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
WORK = Path(tempfile.gettempdir()) / "tianji_ft_bench"
SEED = 20240521
WARM_GOAL = 0.10
FLOOR_GOAL = 1.5
XTUNER_GOAL = 5.0
RSS_GOAL = 1.5
BIG = 1_000_000

SYSTEM = "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
NAMES = ("妈妈", "爸爸", "姐姐", "哥哥", "弟弟", "妹妹", "爷爷", "奶奶", "外公", "外婆", "老师", "同学", "同事",
         "领导", "闺蜜", "兄弟", "师傅", "客户", "邻居", "朋友", "女朋友", "男朋友", "老婆", "老公", "叔叔", "阿姨")
SCENES = ("生日", "春节", "元宵节", "端午节", "七夕节", "中秋节", "重阳节", "除夕", "腊八节", "周年纪念",
          "新婚", "乔迁", "升职", "毕业", "高考", "开业", "退休", "教师节", "母亲节", "父亲节")
ASKS = ("祝{name}{scene}快乐", "我想祝{name}{scene}快乐", "送祝福给{name}{scene}", "帮我给{name}写一段{scene}祝福",
        "{scene}到了，想对{name}说点什么", "给{name}的{scene}祝福语，要{style}一点")
STYLES = ("温馨", "幽默", "文艺", "正式", "简短", "小红书风格", "古风", "真诚")
OPENINGS = ("亲爱的{name}，", "{name}，", "致最好的{name}：", "嘿，{name}！", "尊敬的{name}，")
WISHES = ("{scene}快乐！", "愿你岁岁平安，年年有余。", "愿你笑口常开，好运连连。", "祝你身体健康，万事如意。",
          "愿所有的美好都如期而至。", "感谢你一直以来的陪伴与照顾。", "新的一年，前程似锦，步步高升。",
          "愿你被这个世界温柔以待。", "日子红红火火，生活甜甜蜜蜜。", "愿你的每一天都阳光灿烂。",
          "心想事成，阖家幸福。", "愿你眼里有光，心中有爱。", "工作顺利，事业有成。", "平安喜乐，得偿所愿。")
CLOSINGS = ("🎉", "❤️", "爱你哟！", "永远支持你！", "干杯！", "（此处应有掌声）", "")

# Firefly-like: the task kinds of firefly-train-1.1M, with Chinese sentence pieces to fill them.
FF_TASKS = ("请把下面的句子翻译成英文：", "写一首关于{t}的诗。", "根据标题生成一篇文章：{t}", "请解释一下什么是{t}？",
            "对下面的评论进行情感分类：", "从下文中抽取关键词：", "续写下面的故事：", "{t}的成因有哪些？",
            "请用简洁的语言概括下文：", "给出三个关于{t}的建议。", "把这句话改写成古文：", "问题：{t}怎么做？")
FF_TOPICS = ("春天", "人工智能", "长江", "故宫", "睡眠", "理财", "高铁", "茶文化", "环境保护", "篮球", "量子计算",
             "中医", "孔子", "宇宙", "城市化", "网络安全", "月饼", "敦煌", "微积分", "新能源汽车")
FF_PIECES = ("在这个快速发展的时代，", "我们需要认真思考这个问题。", "首先，", "其次，", "最后，", "总的来说，",
             "它不仅影响着我们的生活，", "也改变了人们的思维方式。", "研究表明，", "专家认为，", "例如，",
             "这是一个值得关注的现象。", "春风又绿江南岸，", "明月何时照我还。", "只要坚持不懈，",
             "就一定能够取得成功。", "Python是一种编程语言，", "The quick brown fox jumps over the lazy dog. ",
             "数据显示，2023年增长了12.5%，", "答案是42。", "其中最重要的是保持良好的习惯，", "多喝水，早睡早起，",
             "历史上有许多著名的人物，", "他们的故事至今仍被传颂。", "请注意安全。", "天气晴朗，万里无云，")
FF_SYSTEMS = ("你是一个乐于助人的助手。", "You are a helpful assistant.", "你是一位知识渊博的老师，请耐心回答学生的问题。")


def wishes_records(n: int, seed: int = SEED):
    rng = random.Random(seed)
    for _ in range(n):
        name, scene, style = rng.choice(NAMES), rng.choice(SCENES), rng.choice(STYLES)
        ask = rng.choice(ASKS).format(name=name, scene=scene, style=style)
        body = "".join(rng.choice(WISHES).format(scene=scene) for _ in range(rng.randint(2, 7)))
        answer = rng.choice(OPENINGS).format(name=name) + body + rng.choice(CLOSINGS)
        yield {"conversation": [{"system": SYSTEM, "input": ask, "output": answer}]}


def firefly_records(n: int, seed: int = SEED):
    rng = random.Random(seed)
    pieces = FF_PIECES
    for _ in range(n):
        turns = []
        for _ in range(1 if rng.random() < 0.9 else rng.randint(2, 3)):
            ask = rng.choice(FF_TASKS).format(t=rng.choice(FF_TOPICS))
            if rng.random() < 0.5:
                ask += "".join(rng.choices(pieces, k=rng.randint(1, 4)))
            answer = "".join(rng.choices(pieces, k=max(1, int(rng.expovariate(1 / 6)))))
            turns.append({"input": ask, "output": answer})
        if rng.random() < 0.05:
            turns[0]["system"] = rng.choice(FF_SYSTEMS)
        yield {"conversation": turns}


def data_file(n: int, kind: str = "wishes") -> Path:
    path = WORK / f"{kind}_{n}_{SEED}.jsonl"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        records = wishes_records(n) if kind == "wishes" else firefly_records(n)
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(path)
    return path


# ------------------------------------------------------------ worker (child)

def packed_hash(dataset) -> str:
    """sha256 over every row's length and input_ids, in order."""
    import hashlib

    import numpy as np
    import pyarrow.compute as pc

    if dataset._indices is not None:
        dataset = dataset.flatten_indices()
    column = dataset.data.column("input_ids").combine_chunks()
    h = hashlib.sha256()
    h.update(pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    h.update(column.flatten().to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return h.hexdigest()


def process_kwargs(args) -> dict:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from xtuner.dataset.map_fns import template_map_fn_factory
    from xtuner.utils import PROMPT_TEMPLATE

    return dict(
        dataset=dict(type=load_dataset, path="json", data_files=[args.data]),
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=args.tokenizer,
                       trust_remote_code=True, padding_side="right"),
        max_length=args.max_length, dataset_map_fn=None,
        template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE[args.template]),
        remove_unused_columns=True, shuffle_before_pack=True, pack_to_max_length=True, use_varlen_attn=False,
    )


def rss_mb(who) -> float:
    import resource

    return resource.getrusage(who).ru_maxrss / 1024


def worker(args) -> dict:
    import resource

    kwargs = process_kwargs(args)
    if args.worker == "floor":
        return floor(kwargs)
    if args.worker == "identity":
        return identity(kwargs)
    from tianji_ft.xtuner.dataset_cache import build, cached_process_hf_dataset

    rss_before = rss_mb(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if args.worker == "xtuner":
        dataset = build(kwargs, 0)  # XTuner's process() with NumPy seeded, as the cache always built
    else:
        dataset = cached_process_hf_dataset(**kwargs, cache_dir=args.cache)
    seconds = time.perf_counter() - start
    # Peaks before the hash below reads every packed row.
    peak_self, peak_children = rss_mb(resource.RUSAGE_SELF), rss_mb(resource.RUSAGE_CHILDREN)
    return {"seconds": seconds, "rows": len(dataset), "tokens": int(sum(dataset.length)),
            "hash": packed_hash(dataset), "rss_before_mb": rss_before, "rss_peak_mb": peak_self,
            "rss_children_peak_mb": peak_children}


def floor(kwargs) -> dict:
    """The tokenizer's own batch encode of every text encode_fn encodes, one thread and all threads."""
    from xtuner.registry import BUILDER

    tokenizer = BUILDER.build(kwargs["tokenizer"])
    template_fn = BUILDER.build(kwargs["template_map_fn"])
    texts = []
    with open(kwargs["dataset"]["data_files"][0], encoding="utf-8") as fh:
        for line in fh:
            for turn in template_fn(json.loads(line))["conversation"]:
                texts += [turn["input"], turn["output"]]
    result = {"texts": len(texts)}
    for threads in ("one", "all"):
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == "one" else "true"
        start = time.perf_counter()
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        result[f"seconds_{threads}"] = time.perf_counter() - start
        result["tokens"] = sum(map(len, ids))
        del ids
    result["seconds"] = min(result["seconds_one"], result["seconds_all"])
    return result


_CHECK = None


def identity(kwargs) -> dict:
    """Every record: the fast encoder's tokens (as a cold build stores them) against XTuner's encode_fn."""
    import multiprocessing

    from tianji_ft.xtuner import fast_encode
    from xtuner.registry import BUILDER

    global _CHECK
    work = Path(tempfile.mkdtemp(prefix="identity_", dir=WORK))
    try:
        start = time.perf_counter()
        encoded = fast_encode.encode_records(kwargs, 0, work)
        encode_seconds = time.perf_counter() - start
        first_record, n = [], 0
        for part in encoded.parts:
            first_record.append(n)
            n += part["records"]
        # XTuner's own template function (its ConfigDict template), not the fast build's copy.
        _CHECK = (encoded, BUILDER.build(kwargs["template_map_fn"]), kwargs["max_length"])
        jobs = [(p["lo"], p["hi"], first) for p, first in zip(encoded.parts, first_record)]
        start = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            results = pool.starmap(_identity_range, jobs)
        return {"records": n, "rows": encoded.source.rows, "differing": sum(r["differing"] for r in results),
                "first_difference": next((r["first"] for r in results if r["first"] is not None), None),
                "checked": sum(r["checked"] for r in results), "encode_seconds": encode_seconds,
                "check_seconds": time.perf_counter() - start}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _identity_range(lo: int, hi: int, first_record: int) -> dict:
    import numpy as np
    from xtuner.dataset.utils import encode_fn
    from xtuner.utils import IGNORE_INDEX

    from tianji_ft.xtuner.fast_encode import decode_tokens

    encoded, template_fn, max_length = _CHECK
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    lens = encoded.lengths()
    starts = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=starts[1:])
    words = encoded.token_words()
    tokenizer = encoded.tokenizer
    k, differing, checked, first = first_record, 0, 0, None
    for rows in encoded.source.batches(lo, hi, 1000):
        for row in rows:
            row = {**row, **template_fn(row)}
            if not len(row["conversation"]) > 0:
                continue
            out = encode_fn(row, tokenizer, max_length, input_ids_with_output=True, with_image_token=False)
            if not any(label >= 0 for label in out["labels"]):
                continue
            checked += 1
            ids, lab = decode_tokens(words[starts[k]:starts[k + 1]])
            ours = (ids.tolist(), np.where(lab > 0, ids, IGNORE_INDEX).tolist()) if k < len(lens) else None
            # (a record XTuner keeps and ours does not, or the reverse, shifts k: every later one differs)
            if ours != (out["input_ids"], out["labels"]):
                differing += 1
                first = first if first is not None else k
            k += 1
    return {"differing": differing, "checked": checked, "first": first}


# ------------------------------------------------------------ driver

def run(kind: str, data: Path, tokenizer: Path, template: str, max_length: int, hf_cache: Path,
        cache: Path | None) -> dict:
    cmd = [PY, __file__, "--worker", kind, "--data", str(data), "--tokenizer", str(tokenizer), "--template", template,
           "--max-length", str(max_length)] + (["--cache", str(cache)] if cache else [])
    env = dict(os.environ, HF_DATASETS_CACHE=str(hf_cache), PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"bench worker {kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def show(label: str, r: dict) -> None:
    print(f"  {label:<22} {r['seconds']:8.2f} s  {r['rows']:>8} packed rows  {r['tokens']:>11} tokens  "
          f"input_ids sha256 {r['hash'][:16]}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000, help="wishes records (part 1)")
    parser.add_argument("--firefly", type=int, default=100_000, help="firefly-like records (part 2)")
    parser.add_argument("--big", type=int, default=BIG,
                        help=f"firefly-like records of the memory run (default {BIG:,}, about 6 minutes; 0 skips it)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", choices=["xtuner", "ours", "floor", "identity"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--template", default="internlm2_chat", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0

    sys.path.insert(0, str(ROOT))
    from tianji_ft.models.tiny import ensure_tiny_model

    internlm2, llama3 = ensure_tiny_model("internlm2"), ensure_tiny_model("llama3")
    wishes = data_file(args.records)
    sizes = [args.firefly] + ([args.big] if args.big else [])
    firefly = {n: data_file(n, "firefly") for n in sizes}
    scratch = Path(tempfile.mkdtemp(prefix="bench_launch_", dir=WORK))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} cores; each run in a fresh process, imports not timed")
    results: dict = {}
    try:
        print(f"part 1: {args.records} wishes records ({wishes.stat().st_size / 1e6:.1f} MB), tiny InternLM2 "
              f"tokenizer, internlm2_chat, max_length {args.max_length}")
        ml = args.max_length
        plan = [
            ("floor", "floor", "hf_f", None),
            ("XTuner cold", "xtuner", "hf_a", None),
            ("XTuner warm", "xtuner", "hf_a", None),
            ("ours cold", "ours", "hf_c", "cache_x"),
            ("ours warm", "ours", "hf_c", "cache_x"),
            ("ours cold #2", "ours", "hf_d", "cache_y"),
            ("identity", "identity", "hf_e", None),
        ]
        for label, kind, hf, cache in plan:
            r = run(kind, wishes, internlm2, "internlm2_chat", ml, scratch / hf, scratch / cache if cache else None)
            results[label] = r
            if kind == "floor":
                print(f"  {'floor (tokenizer)':<22} {r['seconds']:8.2f} s  {r['texts']} texts, {r['tokens']} tokens in "
                      f"one batch call (one thread {r['seconds_one']:.2f} s, all cores {r['seconds_all']:.2f} s)",
                      flush=True)
            elif kind == "identity":
                print(f"  {'identity':<22} {r['differing']} of {r['checked']} records differ from XTuner's encode_fn "
                      f"({r['records']} kept by ours, of {r['rows']} rows)", flush=True)
            else:
                show(label, r)
        for n, data in firefly.items():
            print(f"part 2: {n} firefly-like records ({data.stat().st_size / 1e6:.1f} MB), tiny Llama-3 tokenizer, "
                  f"llama3_chat, max_length {ml}")
            r = run("ours", data, llama3, "llama3_chat", ml, scratch / f"hf_ff{n}", scratch / f"cache_ff{n}")
            r["records_per_s"] = n / r["seconds"]
            results[f"firefly {n} ours cold"] = r
            show("ours cold", r)
            print(f"  {'':<22} {r['records_per_s']:,.0f} records/s; peak RSS {r['rss_peak_mb']:.0f} MB "
                  f"(before the call {r['rss_before_mb']:.0f} MB), worker processes {r['rss_children_peak_mb']:.0f} MB",
                  flush=True)
            shutil.rmtree(scratch / f"cache_ff{n}", ignore_errors=True)
            shutil.rmtree(scratch / f"hf_ff{n}", ignore_errors=True)
            ri = run("identity", data, llama3, "llama3_chat", ml, scratch / f"hf_ffi{n}", None)
            results[f"firefly {n} identity"] = ri
            print(f"  {'identity':<22} {ri['differing']} of {ri['checked']} records differ from XTuner's encode_fn",
                  flush=True)
            shutil.rmtree(scratch / f"hf_ffi{n}", ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    t = {label: r["seconds"] for label, r in results.items() if "seconds" in r}
    checks = []

    def goal(text: str, ok: bool) -> None:
        checks.append(ok)
        print(f"  {text:<64} {'PASS' if ok else 'FAIL'}")

    floor_ratio = t["ours cold"] / t["floor"]
    speedup = t["XTuner cold"] / t["ours cold"]
    warm_ratio = t["ours warm"] / t["ours cold"]
    hashes = {label: results[label]["hash"] for label in ("ours cold", "ours cold #2", "ours warm", "XTuner cold")}
    print("goals:")
    goal(f"ours cold / floor = {floor_ratio:.2f}x (goal <= {FLOOR_GOAL}x)", floor_ratio <= FLOOR_GOAL)
    goal(f"XTuner cold / ours cold = {speedup:.1f}x (goal >= {XTUNER_GOAL}x)", speedup >= XTUNER_GOAL)
    goal(f"ours warm / ours cold = {warm_ratio:.1%} (goal <= {WARM_GOAL:.0%})", warm_ratio <= WARM_GOAL)
    goal("ours cold, cold #2, warm and XTuner cold (seeded) pack identical input_ids", len(set(hashes.values())) == 1)
    for label, r in results.items():
        if label.endswith("identity"):
            goal(f"{label}: {r['differing']} differing of {r['checked']} records (goal 0)",
                 r["differing"] == 0 and r["checked"] == r["records"])
    if args.big:
        small, big = results[f"firefly {args.firefly} ours cold"], results[f"firefly {args.big} ours cold"]
        for key, what in (("rss_peak_mb", "process"), ("rss_children_peak_mb", "workers")):
            ratio = big[key] / small[key]
            goal(f"peak RSS {what}, {args.big:,} / {args.firefly:,} records = {ratio:.2f}x (goal <= {RSS_GOAL}x)",
                 ratio <= RSS_GOAL)
    if args.json:
        Path(args.json).write_text(json.dumps({"records": args.records, "max_length": args.max_length,
                                               "runs": results}, indent=2))
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
