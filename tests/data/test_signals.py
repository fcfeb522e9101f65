"""SIGTERM in the middle of ``tianji-ft data convert`` ends it like Ctrl-C: exit
143, the temporary output removed, no output file, the input untouched."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 400_000


def _big_input(path: Path) -> None:
    line = json.dumps({"kind": "Couplet", "input": "上联：春风得意马蹄疾{}", "target": "下联：秋水无声雁影斜{}"},
                      ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, RECORDS, 10_000):
            fh.write("".join(line.replace("{}", str(i)) + "\n" for i in range(start, start + 10_000)))


def test_sigterm_mid_write_leaves_no_temp_file_and_no_output(tmp_path):
    src = tmp_path / "大 输入.jsonl"
    _big_input(src)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "converted.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", "data", "convert", "firefly", str(src), "-o", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_tmp = False
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(name.startswith(f".{out.name}") and name.endswith(".tmp") for name in os.listdir(out_dir)):
                seen_tmp = True
                time.sleep(0.01)  # inside the write: records are being converted
                proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.001)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen_tmp, f"the conversion finished before a temporary file was seen (rc {proc.returncode})"
    assert proc.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert os.listdir(out_dir) == []  # neither the output nor its temporary file, nor a rejects file
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
