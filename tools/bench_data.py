"""Benchmark of the data tools, side by side with what the seed scripts do.

1. MedQA: a 50,000-row xlsx converted to conversations and split 70/30.
   Ours: ``tianji-ft data convert medqa`` + ``tianji-ft data split``.
   Baseline: the InternLM tutorial's scripts (pandas/openpyxl read_excel,
   iterrows, one indented json.dump; then json.load, shuffle, split, dump).
2. JSONL streaming: firefly-like files of 100,000 and 1,000,000 records
   converted; peak memory must not grow with the file.

Every measurement runs in its own subprocess; peak RSS is that child's
``ru_maxrss`` (``os.wait4``). Inputs are generated once (seeded) and cached
in a temporary folder. Run with ``make bench`` or
``.venv/bin/python tools/bench_data.py [--runs 5] [--baseline-runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CACHE = Path(tempfile.gettempdir()) / "tianji_ft_bench"

ZH = ("请问", "这种药", "每天", "服用", "几次", "饭前还是饭后", "孕妇", "可以", "吃吗", "副作用", "有哪些",
      "高血压", "患者", "需要", "注意", "什么", "布洛芬", "对乙酰氨基酚", "剂量", "儿童", "过敏", "症状")
EN = ("how", "often", "should", "I", "take", "metformin", "with", "food", "side", "effects", "dose",
      "ibuprofen", "blood", "pressure", "tablet", "daily", "doctor", "pharmacist", "pregnancy", "safe")
PLACEHOLDERS = ("n/a", "No answers", "Unanswerable", "NA", "none", "")

BASELINE = r'''
import json, random, sys
import pandas as pd

def xlsx2json(file, output_file):
    df = pd.read_excel(file)
    df = df[~df.Answer.isna()].reset_index(drop=True)
    need_cols = ["system", "Question", "Answer"]
    df["system"] = ("You are a professional, highly experienced doctor professor. You always provide accurate, "
                    "comprehensive, and detailed answers based on the patients' questions.")
    final_res = []
    for idx, row in df[need_cols].rename(columns=dict(zip(need_cols[1:], ["input", "output"]))).iterrows():
        final_res.append({"conversation": [row.T.to_dict()]})
    with open(output_file, "w", encoding="utf-8") as f:
        json.dump(final_res, f, indent=4)

def split_train_test(file, out_train_file, out_test_file):
    with open(file, "r", encoding="utf-8") as f:
        data = json.load(f)
    random.shuffle(data)
    split_point = int(len(data) * 0.7)
    with open(out_train_file, "w", encoding="utf-8") as f:
        json.dump(data[:split_point], f, indent=4)
    with open(out_test_file, "w", encoding="utf-8") as f:
        json.dump(data[split_point:], f, indent=4)

src, out = sys.argv[1], sys.argv[2]
xlsx2json(src, out + "/output.jsonl")
split_train_test(out + "/output.jsonl", out + "/train.jsonl", out + "/test.jsonl")
'''


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    words = [rng.choice(ZH) if rng.random() < 0.7 else " " + rng.choice(EN) + " " for _ in range(rng.randint(lo, hi))]
    return "".join(words).strip()


def _medqa_rows(rows: int, seed: int):
    rng = random.Random(seed)
    yield ["Question", "Focus (Drug)", "Question Type", "Answer", "Section Title", "URL"]
    for i in range(rows):
        answer = rng.choice(PLACEHOLDERS) if rng.random() < 0.03 else _sentence(rng, 20, 120)
        yield [_sentence(rng, 4, 20) + f"？#{i}", rng.choice(EN), rng.choice(("usage", "dose", "information")),
               answer, rng.choice(("NA", "Dosage", "Side Effects")), f"https://example.org/drug/{i}"]


def medqa_xlsx(rows: int, seed: int = 0) -> Path:
    """The benchmark sheet. xlsxwriter stores text in a shared-strings table
    as Excel does; openpyxl (the fallback) writes inline strings, which every
    reader parses 2-3x slower, so the figures are only comparable per writer."""
    try:
        import xlsxwriter
    except ImportError:
        xlsxwriter = None
    path = CACHE / f"medqa_{rows}_{seed}_{'xlsxwriter' if xlsxwriter else 'openpyxl'}.xlsx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.xlsx")
    if xlsxwriter is not None:
        book = xlsxwriter.Workbook(str(tmp))
        sheet = book.add_worksheet("DrugQA")
        for r, row in enumerate(_medqa_rows(rows, seed)):
            sheet.write_row(r, 0, row)
        book.close()
    else:
        import openpyxl

        book = openpyxl.Workbook(write_only=True)
        sheet = book.create_sheet("DrugQA")
        for row in _medqa_rows(rows, seed):
            sheet.append(row)
        book.save(tmp)
    os.replace(tmp, path)
    return path


def firefly_jsonl(records: int, seed: int = 0) -> Path:
    path = CACHE / f"firefly_{records}_{seed}.jsonl"
    if path.exists():
        return path
    rng = random.Random(seed)
    pool = [_sentence(rng, 5, 60) for _ in range(2000)]
    kinds = ("BELLE", "Cot", "MRC", "AncientPoem", "Couplet", "NER", "Summary", "Translation")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i in range(records):
            fh.write(json.dumps({"kind": kinds[i % len(kinds)], "input": rng.choice(pool) + f" #{i}",
                                 "target": rng.choice(pool)}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


START_UP = [PY, "-m", "tianji_ft", "data", "--help"]


def run(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds, CPU seconds, peak RSS in MB) of one command, in a subprocess of its own."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure(steps: list[list[str]], runs: int, work: Path) -> tuple[float, float, float]:
    """Median total seconds, median CPU seconds, and the largest peak RSS over ``runs`` runs.

    CPU seconds are printed too because on a shared machine the wall time
    says as much about the neighbours as about the code.
    """
    times, cpus, peaks = [], [], []
    for _ in range(runs):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        results = [run(step) for step in steps]
        times.append(sum(r[0] for r in results))
        cpus.append(sum(r[1] for r in results))
        peaks.append(max(r[2] for r in results))
    return statistics.median(times), statistics.median(cpus), max(peaks)


def _load() -> str:
    return "load average %.1f %.1f %.1f on %d CPUs" % (*os.getloadavg(), os.cpu_count())


def bench_medqa(rows: int, runs: int, baseline_runs: int) -> bool:
    src = medqa_xlsx(rows)
    work = CACHE / "work_medqa"
    ours = [[PY, "-m", "tianji_ft", "data", "convert", "medqa", str(src), "-o", str(work / "medqa.jsonl")],
            [PY, "-m", "tianji_ft", "data", "split", str(work / "medqa.jsonl"), "--test-ratio", "0.3", "--seed", "0",
             "-o", str(work / "split")]]
    read_only = [PY, "-c", "import sys; from python_calamine import CalamineWorkbook as W; "
                 "list(W.from_path(sys.argv[1]).get_sheet_by_index(0).iter_rows())", str(src)]
    t_read, c_read, _ = measure([read_only], runs, work)
    t_start, c_start, _ = measure([START_UP, START_UP], runs, work)
    print(f"medqa xlsx {rows} rows ({src.name}); reading the sheet alone with python-calamine: "
          f"{t_read:.2f} s (cpu {c_read:.2f} s); starting tianji-ft twice ('data --help'): "
          f"{t_start:.2f} s (cpu {c_start:.2f} s)")
    t_ours, c_ours, m_ours = measure(ours, runs, work)
    print(f"  ours, tianji-ft data convert + split (median of {runs}): {t_ours:.2f} s (cpu {c_ours:.2f} s), "
          f"peak RSS {m_ours:.0f} MB")
    library = [PY, "-c", "import sys; from tianji_ft.data import convert_files, split_file; "
               "convert_files('medqa', [sys.argv[1]], sys.argv[2] + '/medqa.jsonl'); "
               "split_file(sys.argv[2] + '/medqa.jsonl', sys.argv[2] + '/split', test_ratio=0.3, seed=0)",
               str(src), str(work)]
    t_lib, c_lib, m_lib = measure([library], runs, work)
    print(f"  ours, the same as library calls in one process, like the seed script: {t_lib:.2f} s "
          f"(cpu {c_lib:.2f} s), peak RSS {m_lib:.0f} MB")
    ok = t_ours <= 1.5 and m_ours <= 200
    if baseline_runs:
        t_base, c_base, m_base = measure([[PY, "-c", BASELINE, str(src), str(work)]], baseline_runs, work)
        print(f"  baseline (pandas read_excel + iterrows + indented json, median of {baseline_runs}): "
              f"{t_base:.2f} s (cpu {c_base:.2f} s), peak RSS {m_base:.0f} MB")
        print(f"  ratio baseline/ours: time {t_base / t_ours:.1f}x, cpu {c_base / c_ours:.1f}x, "
              f"memory {m_base / m_ours:.1f}x")
    print(f"  target: <= 1.5 s and <= 200 MB: {'met' if ok else 'NOT met'}")
    return ok


# The least any converter can do per record: parse it and serialise the result (orjson both ways).
JSON_FLOOR = r'''
import sys, orjson
from itertools import islice
loads, dumps, nl = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
with open(sys.argv[1], "rb", buffering=1 << 16) as src, open(sys.argv[2], "wb") as out:
    while lines := list(islice(src, 1024)):
        out.write(b"".join([dumps({"conversation": [{"input": (r := loads(line))["input"], "output": r["target"]}]},
                                  option=nl) for line in lines]))
'''


def bench_jsonl(sizes: tuple[int, int], runs: int) -> bool:
    peaks, rates = {}, {}
    big = sizes[1]
    work = CACHE / "work_firefly_floor"
    seconds, cpu, _ = measure([[PY, "-c", JSON_FLOOR, str(firefly_jsonl(big)), str(work / "out.jsonl")]], runs, work)
    print(f"firefly jsonl {big:>9,} records, orjson parse + serialise alone in a bare loop (the floor): "
          f"{big / seconds:,.0f} records/s ({big / cpu:,.0f} per CPU-second)")
    for n in sizes:
        src = firefly_jsonl(n)
        work = CACHE / f"work_firefly_{n}"
        seconds, cpu, peak = measure([[PY, "-m", "tianji_ft", "data", "convert", "firefly", str(src),
                                       "-o", str(work / "out.jsonl")]], runs, work)
        peaks[n], rates[n] = peak, n / seconds
        print(f"firefly jsonl {n:>9,} records: {seconds:.2f} s, {rates[n]:,.0f} records/s "
              f"({n / cpu:,.0f} per CPU-second), peak RSS {peak:.0f} MB")
    small, big = sizes
    growth = peaks[big] / peaks[small] - 1
    ok = growth <= 0.10 and rates[big] >= 200_000
    print(f"  peak RSS {big:,} vs {small:,}: {growth:+.1%} (target within 10%); "
          f"{rates[big]:,.0f} records/s (target >= 200,000): {'met' if ok else 'NOT met'}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of ours per case (median reported)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the baseline (0 to skip)")
    parser.add_argument("--rows", type=int, default=50_000, help="MedQA xlsx rows")
    parser.add_argument("--jsonl", type=int, nargs=2, default=(100_000, 1_000_000), metavar=("SMALL", "BIG"))
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    args = parser.parse_args(argv)
    try:
        import orjson
        print(f"orjson {orjson.__version__}; python {sys.version.split()[0]}; cache {CACHE}; {_load()}")
    except ImportError:
        print("orjson not installed: JSON runs on the stdlib (slower)")
    ok = bench_medqa(args.rows, args.runs, args.baseline_runs)
    ok = bench_jsonl(tuple(args.jsonl), max(1, args.runs // 2)) and ok
    print(_load())
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
