"""Benchmark of dataset preparation at launch, side by side with plain XTuner.

50,000 seeded wishes-like conversation records (Chinese), the tiny InternLM2
tokenizer, the internlm2_chat template, max_length 2048, XTuner's defaults
otherwise (map_num_proc=32, shuffle before packing). Six runs, each in its
own subprocess, timing only the dataset call (imports are outside the timer,
as a training launch has them loaded already):

- XTuner ``process_hf_dataset``: cold (empty datasets cache), warm (the
  datasets cache of the cold run), and a second cold run.
- ``cached_process_hf_dataset``: cold (empty datasets cache and dataset
  cache), warm (its cache), and a second cold run into a separate cache.

Goals: our warm launch takes at most 10% of a cold one; our two cold runs
pack the same rows token for token (hash of every packed input_id). Exits 1
when a goal is missed. Run with ``make bench`` or
``.venv/bin/python tools/bench_launch.py [--records 50000] [--max-length 2048]``.
"""

from __future__ import annotations

import argparse
import json
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


def wishes_records(n: int, seed: int = SEED):
    rng = random.Random(seed)
    for _ in range(n):
        name, scene, style = rng.choice(NAMES), rng.choice(SCENES), rng.choice(STYLES)
        ask = rng.choice(ASKS).format(name=name, scene=scene, style=style)
        body = "".join(rng.choice(WISHES).format(scene=scene) for _ in range(rng.randint(2, 7)))
        answer = rng.choice(OPENINGS).format(name=name) + body + rng.choice(CLOSINGS)
        yield {"conversation": [{"system": SYSTEM, "input": ask, "output": answer}]}


def data_file(n: int) -> Path:
    path = WORK / f"wishes_{n}_{SEED}.jsonl"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for record in wishes_records(n):
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


def worker(args) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from xtuner.dataset import process_hf_dataset
    from xtuner.dataset.map_fns import template_map_fn_factory
    from xtuner.utils import PROMPT_TEMPLATE

    from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

    kwargs = dict(
        dataset=dict(type=load_dataset, path="json", data_files=[args.data]),
        tokenizer=dict(type=AutoTokenizer.from_pretrained, pretrained_model_name_or_path=args.tokenizer,
                       trust_remote_code=True, padding_side="right"),
        max_length=args.max_length, dataset_map_fn=None,
        template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE.internlm2_chat),
        remove_unused_columns=True, shuffle_before_pack=True, pack_to_max_length=True, use_varlen_attn=False,
    )
    start = time.perf_counter()
    if args.worker == "xtuner":
        dataset = process_hf_dataset(**kwargs)
    else:
        dataset = cached_process_hf_dataset(**kwargs, cache_dir=args.cache)
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"seconds": seconds, "rows": len(dataset), "tokens": int(sum(dataset.length)),
                                  "hash": packed_hash(dataset)}))


# ------------------------------------------------------------ driver

def run(kind: str, data: Path, tokenizer: Path, max_length: int, hf_cache: Path, cache: Path | None) -> dict:
    cmd = [PY, __file__, "--worker", kind, "--data", str(data), "--tokenizer", str(tokenizer),
           "--max-length", str(max_length)] + (["--cache", str(cache)] if cache else [])
    env = dict(__import__("os").environ, HF_DATASETS_CACHE=str(hf_cache), PYTHONPATH=str(ROOT),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"bench worker {kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", choices=["xtuner", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    sys.path.insert(0, str(ROOT))
    from tianji_ft.models.tiny import ensure_tiny_model

    tokenizer = ensure_tiny_model("internlm2")
    data = data_file(args.records)
    scratch = Path(tempfile.mkdtemp(prefix="bench_launch_", dir=WORK))
    print(f"{args.records} wishes records ({data.stat().st_size / 1e6:.1f} MB), tiny InternLM2 tokenizer, "
          f"max_length {args.max_length}; each run in a fresh process, imports not timed")
    try:
        plan = [
            ("XTuner cold", "xtuner", "hf_a", None),
            ("XTuner warm", "xtuner", "hf_a", None),
            ("XTuner cold #2", "xtuner", "hf_b", None),
            ("ours cold", "ours", "hf_c", "cache_x"),
            ("ours warm", "ours", "hf_c", "cache_x"),
            ("ours cold #2", "ours", "hf_d", "cache_y"),
        ]
        results = {}
        for label, kind, hf, cache in plan:
            r = run(kind, data, tokenizer, args.max_length, scratch / hf, scratch / cache if cache else None)
            results[label] = r
            print(f"  {label:<15} {r['seconds']:8.2f} s  {r['rows']:>7} packed rows  {r['tokens']:>10} tokens  "
                  f"input_ids sha256 {r['hash'][:16]}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    t = {label: r["seconds"] for label, r in results.items()}
    warm_ratio = t["ours warm"] / t["ours cold"]
    same_ours = results["ours cold"]["hash"] == results["ours cold #2"]["hash"] == results["ours warm"]["hash"]
    same_xtuner = results["XTuner cold"]["hash"] == results["XTuner cold #2"]["hash"]
    print("ratios:")
    print(f"  XTuner warm / XTuner cold  {t['XTuner warm'] / t['XTuner cold']:6.1%}")
    print(f"  ours cold / XTuner cold    {t['ours cold'] / t['XTuner cold']:6.1%}")
    print(f"  ours warm / XTuner cold    {t['ours warm'] / t['XTuner cold']:6.1%}")
    print(f"  ours warm / ours cold      {warm_ratio:6.1%}   goal <= {WARM_GOAL:.0%}: "
          f"{'PASS' if warm_ratio <= WARM_GOAL else 'FAIL'}")
    print("determinism (two cold runs, same data, config and seed):")
    print(f"  XTuner: {results['XTuner cold']['rows']} vs {results['XTuner cold #2']['rows']} rows, "
          f"{'identical' if same_xtuner else 'different'} input_ids")
    print(f"  ours:   {results['ours cold']['rows']} vs {results['ours cold #2']['rows']} rows, "
          f"{'identical' if same_ours else 'different'} input_ids   goal identical: {'PASS' if same_ours else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": args.records, "max_length": args.max_length,
                                               "runs": results, "warm_ratio": warm_ratio,
                                               "deterministic": same_ours}, indent=2))
    return 0 if warm_ratio <= WARM_GOAL and same_ours else 1


if __name__ == "__main__":
    sys.exit(main())
