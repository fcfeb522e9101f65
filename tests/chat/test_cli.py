"""``tianji-ft chat`` and ``tianji-ft eval`` from the command line, on the taught tiny model."""

from __future__ import annotations

import io
import json

import pytest

from tianji_ft.cli import main


@pytest.mark.slow
def test_chat_one_shot_prints_the_answer(taught_model_dir, wishes, capsys):
    question, answer = wishes[3]
    assert main(["chat", str(taught_model_dir), "--prompt", question, "--temperature", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == answer + "\n"


@pytest.mark.slow
def test_chat_answers_each_stdin_line(taught_model_dir, wishes, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{wishes[0][0]}\n\n{wishes[1][0]}\n"))
    assert main(["chat", str(taught_model_dir), "--temperature", "0", "--no-stream", "--max-new-tokens", "48"]) == 0
    assert capsys.readouterr().out == f"{wishes[0][1]}\n{wishes[1][1]}\n"


@pytest.mark.slow
def test_eval_cli_writes_the_three_files(taught_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("祝姐姐生日快乐\n祝奶奶春节快乐\n", encoding="utf-8")
    assert main(["eval", str(taught_model_dir), "--prompts", str(prompts), "-o", str(tmp_path / "out"),
                 "--max-new-tokens", "40"]) == 0
    assert "model: stop rate 1.00" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"answers.jsonl", "metrics.json", "report.md",
                                                              ".tianji_ft_output"}  # the marker: a rerun may replace it
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text("utf-8"))
    assert "bleu" not in metrics["model"]["metrics"] and metrics["settings"]["temperature"] == 0.0


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["chat", str(tmp_path), "--history-turns", "-1"]) == 2
    assert main(["eval", str(tmp_path), "--data", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("tianji-ft: error: --history-turns") and "no such file" in err[1]


def test_help_shows_a_copyable_example(capsys):
    for verb in ("chat", "eval"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert f"tianji-ft {verb} work_dirs/" in capsys.readouterr().out


@pytest.mark.parametrize("model, said", [
    ("nobody-here/no-such-model-祝福", "not in the Hugging Face cache"),
    ("./modles/internlm2-chat-7b", "no such model folder"),
])
def test_a_model_that_is_not_here_fails_at_once_without_the_network(model, said, capsys, monkeypatch):
    # Any hub request would have to go through this proxy, which does not exist.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "60")
    assert main(["chat", model, "--prompt", "你好", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1


@pytest.mark.slow
def test_the_interactive_chat_in_a_real_terminal(taught_model_dir, wishes):
    from helpers.terminal import Terminal

    question, answer = wishes[0]
    term = Terminal(["chat", str(taught_model_dir), "--temperature", "0", "--device", "cpu"])
    try:
        term.read_until(">>> ")
        term.type(question + "\r")
        term.read_until(">>> ", since=term.read_until(answer))
        term.type("/clear\r")
        cleared = term.read_until("History cleared.")
        term.read_until(">>> ", since=cleared)
        mark = len(term.screen)
        term.type("\x1b[A\x1b[A\r")  # Up twice: readline brings back the question (Up once: /clear)
        term.read_until(">>> ", since=term.read_until(answer, since=mark))
        term.type("exit\r")
        rc = term.close()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert rc == 0
    again = term.screen[mark:]
    assert "^[[A" not in again and question in again and again.count(answer) == 1


def test_library_noise_is_hidden_unless_verbose(tiny_llama3, llama3_adapter):
    import subprocess
    import sys

    cmd = ["chat", str(tiny_llama3), "--adapter", str(llama3_adapter), "--prompt", "你好", "--max-new-tokens", "2",
           "--template", "llama3_chat", "--device", "cpu"]
    quiet = subprocess.run([sys.executable, "-m", "tianji_ft", *cmd], capture_output=True, text=True, timeout=300)
    loud = subprocess.run([sys.executable, "-m", "tianji_ft", "-v", *cmd], capture_output=True, text=True,
                          timeout=300)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    # bitsandbytes logs this on every CPU import of peft; nothing a chat user can act on
    assert "gemm_4bit_forward" in loud.stderr and "gemm_4bit_forward" not in quiet.stderr


def test_eval_points_to_the_right_flag_for_each_kind_of_file(tmp_path, capsys):
    prompts, records = tmp_path / "prompts.txt", tmp_path / "test.jsonl"
    prompts.write_text("祝姐姐生日快乐\n", encoding="utf-8")
    records.write_text('{"conversation": [{"input": "你好", "output": "您好"}]}\n', encoding="utf-8")
    assert main(["eval", str(tmp_path), "--data", str(prompts), "-o", str(tmp_path / "o1")]) == 2
    assert "goes to --prompts" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--prompts", str(records), "-o", str(tmp_path / "o2")]) == 2
    assert "use --data" in capsys.readouterr().err


def test_an_adapter_folder_as_the_model_and_cuda_without_a_gpu_are_one_line(llama3_adapter, tiny_llama3, tmp_path,
                                                                            capsys):
    import shutil

    adapter = tmp_path / "wishes-adapter"
    shutil.copytree(llama3_adapter, adapter)
    (adapter / "tianji_run.json").write_text(json.dumps({"model": str(tmp_path / "gone")}), encoding="utf-8")
    assert main(["chat", str(adapter), "--prompt", "你好", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a LoRA adapter: loading it on its base" in err and "gone: no such model folder" in err
    assert main(["chat", str(tiny_llama3), "--prompt", "你好", "--device", "cuda"]) == 2
    assert "--device cuda: this machine has no CUDA GPU" in capsys.readouterr().err


def test_convert_on_a_model_or_adapter_folder_says_what_to_do_instead(llama3_adapter, tiny_llama3, capsys):
    assert main(["convert", str(llama3_adapter)]) == 2
    assert "converted adapter already" in capsys.readouterr().err
    assert main(["convert", str(tiny_llama3)]) == 2
    assert f"chat with it: tianji-ft chat {tiny_llama3}" in capsys.readouterr().err
