"""The pipeline skips what is up to date and re-runs from training when the data changes (slow)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from helpers import FIXTURES

from tianji_ft.train.train import TrainRequest
from tianji_ft.workflows.pipeline import PipelineRequest, run_pipeline
from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import PROJECT_ROOT

FIXTURE_CONFIG = str(FIXTURES / "tiny_lora_config.py")
SETTINGS = {"TIANJI_EPOCHS": "1", "TIANJI_MAX_LENGTH": "128", "TIANJI_ACCUM": "1", "TIANJI_WARMUP_RATIO": "0"}


def request(tmp_path, data, **kw):
    from tianji_ft.models.tiny import ensure_tiny_model

    train = TrainRequest(config=FIXTURE_CONFIG, model=str(ensure_tiny_model("internlm2")), data=[str(data)],
                         work_dir=str(tmp_path / "wd"), deepspeed="none", settings=dict(SETTINGS))
    return PipelineRequest(train, **kw)


def lines(out: io.StringIO) -> dict[str, str]:
    return {line.split()[1]: line for line in out.getvalue().splitlines() if line.startswith("[")}


def test_unknown_stage_is_a_one_line_error(tmp_path):
    data = PROJECT_ROOT / "data" / "demo" / "wishes.jsonl"
    with pytest.raises(UserError, match="unknown stage 'deploy'"):
        run_pipeline(request(tmp_path, data, until="deploy"), out=io.StringIO())


@pytest.mark.slow
def test_second_run_skips_everything_and_new_data_reruns_from_training(tmp_path):
    data = tmp_path / "wishes.jsonl"
    shutil.copy(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl", data)
    first = io.StringIO()
    assert run_pipeline(request(tmp_path, data, export_quant="q8_0"), out=first) == 0
    ran = lines(first)
    assert all("skipped" not in ran[s] for s in ("data", "train", "convert", "merge", "evaluate", "export"))
    assert (tmp_path / "wd" / "eval" / "answers.jsonl").is_file()
    # the wishes model (InternLM2) ends in Ollama's format
    assert sorted(p.suffix for p in (tmp_path / "wd" / "ollama").iterdir() if p.suffix) == [".gguf"]
    assert (tmp_path / "wd" / "ollama" / "Modelfile").read_text(encoding="utf-8").startswith("FROM ./")

    assert first.getvalue().splitlines()[-1] == (f"next: cd {tmp_path / 'wd' / 'ollama'} && ollama create NAME "
                                                 "-f Modelfile && ollama run NAME")

    second = io.StringIO()
    run_pipeline(request(tmp_path, data, until="evaluate"), out=second)
    assert all("up to date, skipped" in line for line in lines(second).values())
    as_json = io.StringIO()
    run_pipeline(request(tmp_path, data, until="evaluate"), out=as_json, as_json=True)
    summary = json.loads(as_json.getvalue())  # stdout holds the JSON alone
    assert summary["ok"] is True and [s["status"] for s in summary["stages"]] == ["skipped"] * 5
    assert summary["outputs"]["merged"] == str(tmp_path / "wd" / "merged")
    assert summary["next"].startswith(f"tianji-ft chat {tmp_path / 'wd' / 'merged'}")

    with data.open("a", encoding="utf-8") as fh:
        fh.write('{"conversation": [{"system": "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福", '
                 '"input": "祝弟弟高考顺利", "output": "弟弟，高考加油，金榜题名！"}]}\n')
    third = io.StringIO()
    run_pipeline(request(tmp_path, data, until="evaluate"), out=third)
    again = lines(third)
    assert "skipped" not in again["data"] and "skipped" not in again["train"]
    assert all("skipped" not in again[s] for s in ("convert", "merge", "evaluate"))
