"""`data validate`, `train --dry-run`, the check before XTuner starts and the pipeline's data stage agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FIXTURES

from tianji_ft.core.errors import UserError
from tianji_ft.data.validate import validate_files
from tianji_ft.train import train as launcher
from tianji_ft.xtuner.datacheck import check_plan_data

FIXTURE_CONFIG = str(FIXTURES / "tiny_lora_config.py")


def turn(i="祝妈妈生日快乐", o="妈妈，生日快乐！", **extra):
    return {"input": i, "output": o, **extra}


CASES = {
    "good.jsonl": [{"conversation": [turn()]}, {"conversation": [turn("  你好 ", " 您好！ ")]}],
    "empty_output.jsonl": [{"conversation": [turn()]}, {"conversation": [turn(o="")]}],
    "empty_input.jsonl": [{"conversation": [turn(i=" ")]}],
    "system_only_input.jsonl": [{"conversation": [turn(i="", system="你是送祝福大师")]}],
    "unknown_key.jsonl": [{"conversation": [turn(role="user")]}],
    "no_conversation.jsonl": [{"instruction": "祝福", "output": "快乐"}],
    "array.json": [{"conversation": [turn()]}, {"conversation": []}],
    "empty_array.json": [],
    "empty.jsonl": None,
    "bad_json.jsonl": "{\"conversation\": [\n",
}


def write_case(folder: Path, name: str) -> Path:
    path = folder / name
    content = CASES[name]
    if content is None:
        path.write_bytes(b"")
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in content), encoding="utf-8")
    else:
        path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


def training_verdict(plan) -> tuple[bool, list[str]]:
    try:
        return True, check_plan_data(plan["env"], plan["manifest"]["config"]["path"], []).problems
    except UserError as err:
        return False, [str(err)]


@pytest.mark.slow  # loads an XTuner config (imports torch and XTuner once)
def test_every_check_gives_the_same_verdict_and_count(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in CASES:
        data = write_case(tmp_path, name)
        problems = list(validate_files([data]))
        plan = launcher.plan(launcher.TrainRequest(config=FIXTURE_CONFIG, model=str(model), data=[str(data)],
                                                   work_dir=str(tmp_path / "wd")), cuda=False)
        ok, found = training_verdict(plan)
        assert ok == (not problems), (name, problems, found)
        if ok:
            continue
        [line] = found
        assert "\n" not in line
        if "bad record(s)" in line:  # record problems: the same records, the same first message
            bad_records = {p.split(": ", 1)[0] for p in problems}
            assert line.startswith(f"{len(bad_records)} bad record(s)"), (name, line)
            assert problems[0] in line, (name, problems, line)
        else:  # the file as a whole: the reader's one line, or no record at all
            assert line == problems[0] or (name == "empty_array.json" and "no training record" in line), \
                (name, problems, line)


@pytest.mark.slow
def test_the_pipeline_data_stage_uses_the_same_check(tmp_path):
    from tianji_ft.workflows.pipeline import Pipeline, PipelineRequest

    model = tmp_path / "model"
    model.mkdir()
    good = write_case(tmp_path, "good.jsonl")
    req = PipelineRequest(launcher.TrainRequest(config=FIXTURE_CONFIG, model=str(model), data=[str(good)],
                                                work_dir=str(tmp_path / "wd")))
    assert Pipeline(req).run_data().startswith("2 record(s) valid")
    bad = write_case(tmp_path, "empty_output.jsonl")
    req.train.data = [str(bad)]
    with pytest.raises(UserError, match=r"1 bad record\(s\) of 2 .*:1: turn 0: empty 'output'"):
        Pipeline(req).run_data()
