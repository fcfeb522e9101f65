import json
import subprocess
import sys
from pathlib import Path

import pytest

from tianji_ft.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main(["data", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_convert_prints_one_count_line_then_the_next_step_and_writes_the_report(capsys, fixtures_dir, tmp_path):
    out, report = tmp_path / "medqa.jsonl", tmp_path / "report.json"
    code, stdout, _ = run(capsys, "convert", "medqa", fixtures_dir / "medqa.csv", "-o", out, "--report", report)
    assert code == 0
    data = json.loads(report.read_text())
    assert data["read"] == data["written"] + data["rejected"] == 9
    line, next_step = stdout.strip().split("\n")
    assert next_step.startswith("next: tianji-ft data split")
    assert f"read {data['read']}, written {data['written']}, rejected {data['rejected']}" in line
    assert "rejects in" in line


def test_convert_options_reach_the_converter(capsys, fixtures_dir, tmp_path):
    out = tmp_path / "g.json"
    code, _, _ = run(capsys, "convert", "generic", fixtures_dir / "generic.csv", "-o", out,
                     "--input-col", "问题", "--output-col", "回答", "--system", "你是医生")
    assert code == 0
    records = json.loads(out.read_text(encoding="utf-8"))
    assert records[1]["conversation"][0]["system"] == "你是医生"
    code, _, _ = run(capsys, "convert", "medqa", fixtures_dir / "medqa.csv", "-o", tmp_path / "m.jsonl",
                     "--placeholders", "No answers,unanswerable", "--system", "")
    lines = (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()
    assert code == 0 and any('"output":"n/a"' in x for x in lines) and "system" not in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["convert", "firefly", "MISSING.jsonl", "-o", "OUT.jsonl"], "no such file or folder"),
    (["convert", "msagent", "FIX/msagent.jsonl", "-o", "OUT.jsonl", "--system", "x"], "do not apply to 'msagent'"),
    (["convert", "medqa", "FIX/medqa.csv", "-o", "OUT.jsonl", "--answer-col", "答案"], "columns present: Question"),
    (["convert", "firefly", "FIX/firefly.jsonl", "-o", "OUT.txt"], "output must end in .jsonl"),
    (["split", "FIX/firefly.jsonl", "-o", "DIR", "--test-ratio", "2"], "between 0 and 1"),
    (["clean", "wishes", "FIX/wishes_dirty.jsonl", "-o", "OUT.jsonl", "--disable", "nope"], "unknown rule(s) nope"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(capsys, fixtures_dir, tmp_path, argv, message):
    argv = [a.replace("FIX", str(fixtures_dir)).replace("OUT", str(tmp_path / "out")).replace("DIR", str(tmp_path / "d"))
            for a in argv]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2
    assert stderr.startswith("tianji-ft: error: ") and stderr.count("\n") == 1 and message in stderr
    assert "Traceback" not in stderr


def test_validate_exit_codes(capsys, fixtures_dir, tmp_path):
    good = tmp_path / "good.jsonl"
    assert run(capsys, "convert", "moss", fixtures_dir / "moss.jsonl", "-o", good)[0] == 0
    code, stdout, _ = run(capsys, "validate", good)
    assert code == 0 and stdout == ""
    code, stdout, stderr = run(capsys, "validate", good, fixtures_dir / "alpaca.json")
    assert code == 1
    assert stdout.splitlines()[0].startswith(f"{fixtures_dir / 'alpaca.json'}:0: missing 'conversation'")
    assert "6 problem(s)" in stderr


def test_stats_split_dedupe_clean_mix_kinds(capsys, fixtures_dir, tmp_path):
    data = tmp_path / "wishes.jsonl"
    assert run(capsys, "convert", "wishes-merge", fixtures_dir / "wishes", "-o", data)[0] == 0
    code, stdout, _ = run(capsys, "stats", data, "--json")
    assert code == 0 and json.loads(stdout)["records"] == 4
    code, stdout, _ = run(capsys, "split", data, "--test-ratio", "0.5", "--seed", "1", "-o", tmp_path / "split")
    assert code == 0 and (tmp_path / "split" / "test.jsonl").exists() and "read 4, written 4" in stdout
    code, stdout, _ = run(capsys, "dedupe", data)
    assert code == 0 and (tmp_path / "wishes.dedup.jsonl").exists()
    code, stdout, _ = run(capsys, "clean", "wishes", fixtures_dir / "wishes_dirty.jsonl", "-o", tmp_path / "c.jsonl",
                          "--disable", "min_length", "--enable", "peer_pronoun")
    assert code == 0 and "rejected 2 (non-answer: 2)" in stdout
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"output": "mix.jsonl", "seed": 0, "sources": [
        {"path": str(fixtures_dir / "firefly.jsonl"), "kind": "firefly", "cap": 2}]}))
    code, stdout, _ = run(capsys, "mix", spec)
    assert code == 0 and "written 2" in stdout
    code, stdout, _ = run(capsys, "kinds")
    assert code == 0 and "msagent" in stdout and "in:" in stdout


def test_every_subcommand_help_ends_with_an_example(capsys):
    for command in ("convert", "validate", "stats", "split", "mix", "dedupe", "clean", "kinds"):
        with pytest.raises(SystemExit):
            main(["data", command, "--help"])
        assert "example:\n  tianji-ft data " + command in capsys.readouterr().out


def test_as_a_command_in_a_subprocess(fixtures_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tianji_ft", "data", "convert", "guanaco",
                           str(fixtures_dir / "guanaco.jsonl"), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "read 4, written 2, rejected 2" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tianji_ft", "data", "convert", "guanaco",
                           str(tmp_path / "missing.jsonl"), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("tianji-ft: error:") and "Traceback" not in proc.stderr


def test_importing_the_data_package_stays_light():
    code = ("import sys, tianji_ft.data, tianji_ft.data.registry as r, tianji_ft.data.stats, tianji_ft.data.mix, "
            "tianji_ft.data.dedupe, tianji_ft.data.split, tianji_ft.data.validate, tianji_ft.cli.data; r._load(); "
            "heavy = [m for m in ('torch', 'transformers', 'xtuner', 'pandas', 'python_calamine', 'openpyxl', "
            "'matplotlib', 'datasets') if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_package_exports_the_library_functions_lazily():
    import tianji_ft.data as data

    for name in data.__all__:
        assert callable(getattr(data, name)), name
    with pytest.raises(AttributeError):
        data.no_such_thing


def test_a_gbk_file_needs_encoding_and_then_converts(capsys, tmp_path):
    src = tmp_path / "gbk.jsonl"
    src.write_bytes('{"kind": "NLI", "input": "前提：下雨了", "target": "蕴含"}\n'.encode("gbk"))
    code, _, stderr = run(capsys, "convert", "firefly", src, "-o", tmp_path / "o.jsonl")
    assert code == 2 and "not valid utf-8 text" in stderr and "--encoding" in stderr
    code, stdout, _ = run(capsys, "convert", "firefly", src, "-o", tmp_path / "o.jsonl", "--encoding", "gbk")
    assert code == 0 and "written 1" in stdout
    assert "前提：下雨了" in (tmp_path / "o.jsonl").read_text(encoding="utf-8")


def test_convert_shows_progress_on_a_terminal_only(fixtures_dir, tmp_path):
    from helpers.terminal import run_in_a_terminal

    rc, shown = run_in_a_terminal(["data", "convert", "medqa", str(fixtures_dir / "medqa.csv"), "-o",
                                   str(tmp_path / "a.jsonl")])
    assert rc == 0 and "\rconvert a.jsonl:" in shown and "a.jsonl: read" in shown
    rc, shown = run_in_a_terminal(["data", "convert", "medqa", str(fixtures_dir / "medqa.csv"), "-o",
                                   str(tmp_path / "b.jsonl"), "--quiet"])
    assert rc == 0 and "convert b.jsonl:" not in shown


def test_stats_on_unconverted_data_says_convert_it_first(fixtures_dir, capsys):
    code, _, err = run(capsys, "stats", fixtures_dir / "guanaco.jsonl")
    assert code == 1 and "convert it first: tianji-ft data convert KIND" in err


@pytest.mark.parametrize("verb", ["split", "dedupe", "clean", "mix"])
def test_long_data_commands_show_progress_on_a_terminal_unless_quiet(verb, fixtures_dir, tmp_path):
    from helpers.terminal import run_in_a_terminal

    wishes = fixtures_dir / "wishes_dirty.jsonl"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"output": "mix.jsonl", "sources": [
        {"name": "firefly", "path": str(fixtures_dir / "firefly.jsonl"), "kind": "firefly"}]}), encoding="utf-8")
    args = {"split": ["split", str(wishes), "-o", str(tmp_path / "{}")],
            "dedupe": ["dedupe", str(wishes), "-o", str(tmp_path / "{}.jsonl")],
            "clean": ["clean", "wishes", str(wishes), "-o", str(tmp_path / "{}.jsonl")],
            "mix": ["mix", str(spec), "-o", str(tmp_path / "{}.jsonl")]}[verb]
    label = {"split": "split wishes_dirty.jsonl:", "mix": "mix loud.jsonl (reading):"}.get(verb, f"{verb} loud.jsonl:")
    rc, shown = run_in_a_terminal(["data", *[a.format("loud") for a in args]])
    assert rc == 0 and "\r" + label in shown, shown
    assert "100%" in shown or verb != "split"  # the split knows its total: the bar reaches the end
    rc, shown = run_in_a_terminal(["data", *[a.format("hushed") for a in args], "--quiet"])
    assert rc == 0 and label.replace("loud", "hushed") not in shown, shown


def test_data_commands_name_the_next_step(capsys, fixtures_dir, tmp_path):
    code, out, _ = run(capsys, "convert", "medqa", fixtures_dir / "medqa.csv", "-o", tmp_path / "medqa.jsonl")
    assert code == 0 and f"next: tianji-ft data split {tmp_path / 'medqa.jsonl'} -o {tmp_path / 'medqa_split'}" in out
    code, out, _ = run(capsys, "split", tmp_path / "medqa.jsonl", "-o", tmp_path / "medqa_split")
    assert code == 0 and f"next: tianji-ft train CONFIG --data {tmp_path / 'medqa_split' / 'train.jsonl'}" in out
