"""The demo: every stage reports, a failing stage names itself, and the tiny model learns (slow)."""

from __future__ import annotations

import io

import pytest

from tianji_ft.workflows.demo import run_demo


def test_bad_demo_data_fails_at_the_data_stage(tmp_path):
    bad = tmp_path / "wishes.jsonl"
    bad.write_text('{"conversation": [{"input": "祝姐姐生日快乐"}]}\n', encoding="utf-8")
    out = io.StringIO()
    rc = run_demo(work_dir=tmp_path / "demo", data=bad, out=out)
    text = out.getvalue()
    assert rc != 0
    assert "[1/6] model" in text and "[2/6] data     FAILED" in text
    assert "demo failed at stage 'data'" in text and "wishes.jsonl:1" in text


@pytest.mark.slow
def test_demo_learns_and_passes(tmp_path, capfd):
    out = io.StringIO()
    rc = run_demo(work_dir=tmp_path / "demo", out=out)
    text = out.getvalue()
    assert "[tianji-ft] iter " not in capfd.readouterr().err  # no terminal: one line a stage, no progress lines
    assert rc == 0, text
    for i, stage in enumerate(["model", "data", "train", "convert", "merge", "chat"], 1):
        assert f"[{i}/6] {stage}" in text
    assert "learned answer reproduced: yes" in text and "demo passed" in text
    assert (tmp_path / "demo" / "train" / "loss.png").is_file()
