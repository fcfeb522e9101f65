"""Every command that writes a folder refuses, in one line and before touching anything, an output on
its inputs or over a stranger's folder: merge, convert, export ollama, eval (run in-process).

Every input lives in a copy under ``tmp_path`` (the cached tiny model is never an input here), so a
regression destroys only a copy, and the test says what was lost.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tianji_ft.cli import main
from tianji_ft.core.fsio import sha256_file
from tianji_ft.core.outputs import MARKER, mark, marker_kind

STRANGER = "别人的 文件夹"
NOTES = "笔记 notes.txt"


def real(path) -> str:
    return os.path.realpath(path)


def stranger_folder(root: Path) -> Path:
    folder = root / STRANGER
    folder.mkdir(parents=True)
    (folder / NOTES).write_text("不要删除 do not delete", encoding="utf-8")
    return folder


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != MARKER)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


OVERWRITE = pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])


# --- merge ---------------------------------------------------------------------------------------
@pytest.fixture
def merge_ws(tmp_path, tiny_llama3, small_adapter) -> SimpleNamespace:
    """A base model that is itself an earlier merge's output (marked "model", so only the input rule
    protects it) and a run folder holding the adapter, its checkpoints, manifest and log."""
    root = tmp_path / "天机 工作区"
    base = root / "models" / "基座 llama3"
    shutil.copytree(tiny_llama3, base)
    mark(base, "model")
    run = root / "work_dirs" / "祝福 run"
    adapter = run / "hf_adapter"
    shutil.copytree(small_adapter, adapter)
    mark(adapter, "adapter")
    for n in (2, 4):
        (run / f"iter_{n}.pth").write_bytes(os.urandom(512))
    (run / "tianji_run.json").write_text(json.dumps({"template": "llama3_chat", "lora": True}), encoding="utf-8")
    (run / "train.log").write_text("iter 4 loss 0.1\n", encoding="utf-8")
    return SimpleNamespace(root=root, base=base, adapter=adapter, run=run)


MERGE_REFUSALS = {
    # id: (output, the input it must name)
    "is-base": (lambda w: w.base, "base"),
    "inside-base": (lambda w: w.base / "merged", "base"),
    "parent-of-base": (lambda w: w.base.parent, "base"),  # users hit: -o models/
    "is-adapter": (lambda w: w.adapter, "adapter"),
    "inside-adapter": (lambda w: w.adapter / "merged 合并", "adapter"),
    "folder-holding-adapter": (lambda w: w.run, "adapter"),  # users hit: it deleted the adapter and checkpoints
    "workspace": (lambda w: w.root, "base"),
    "adapter-via-dotdot": (lambda w: f"{w.adapter}/sub/../..", "adapter"),
    "base-via-dotdot": (lambda w: f"{w.run}/../../models/基座 llama3", "base"),
}


@OVERWRITE
@pytest.mark.parametrize("case", list(MERGE_REFUSALS))
def test_merge_refuses_an_output_on_its_inputs(merge_ws, case, overwrite, capsys, tree, refused):
    where, victim = MERGE_REFUSALS[case]
    out = where(merge_ws)
    before = tree(merge_ws.root)
    code, stdout, err = run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", out, *overwrite)
    refused(code, err, out, real(getattr(merge_ws, victim)))
    assert "nothing was written" in err and stdout == ""
    assert tree(merge_ws.root) == before  # every input file's sha256, and nothing added or removed


@OVERWRITE
def test_merge_refuses_a_symlink_to_the_run_folder(merge_ws, capsys, tree, refused, overwrite):
    link = merge_ws.root / "最新 run"
    link.symlink_to(merge_ws.run, target_is_directory=True)
    before = tree(merge_ws.root)
    code, _, err = run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", link, *overwrite)
    refused(code, err, link, real(merge_ws.adapter))
    assert tree(merge_ws.root) == before and link.is_symlink()


def test_merge_through_symlinked_inputs_still_refuses_their_real_folders(merge_ws, capsys, tree, refused):
    base_link = merge_ws.root / "base 链接"
    base_link.symlink_to(merge_ws.base, target_is_directory=True)
    before = tree(merge_ws.root)
    code, _, err = run_cli(capsys, "merge", base_link, merge_ws.adapter, "-o", merge_ws.base)
    refused(code, err, merge_ws.base, real(merge_ws.base))
    assert tree(merge_ws.root) == before


def test_merge_refuses_an_existing_folder_with_other_files(merge_ws, capsys, tree, refused):
    folder = stranger_folder(merge_ws.root)
    before = tree(merge_ws.root)
    code, _, err = run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", folder)
    line = refused(code, err, folder)
    assert "tianji-ft did not make it" in line and "--overwrite" in line
    assert tree(merge_ws.root) == before


def test_merge_refuses_another_commands_output_naming_its_kind(merge_ws, capsys, tree, refused):
    folder = merge_ws.root / "评测 eval"
    folder.mkdir()
    (folder / "answers.jsonl").write_text("{}\n")
    mark(folder, "eval")
    before = tree(merge_ws.root)
    code, _, err = run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", folder)
    assert "it holds a eval output" in refused(code, err, folder)
    assert tree(merge_ws.root) == before


def test_merge_overwrite_replaces_a_strangers_folder_that_holds_no_input(merge_ws, capsys, tree):
    folder = stranger_folder(merge_ws.root)
    inputs = {p: tree(p) for p in (merge_ws.base, merge_ws.run)}
    code, stdout, err = run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", folder, "--overwrite")
    assert code == 0, err
    assert f"merged -> {folder}" in stdout
    assert not (folder / NOTES).exists() and (folder / "model.safetensors").is_file()
    assert marker_kind(folder) == "model"
    assert {p: tree(p) for p in inputs} == inputs
    assert hidden_leftovers(folder.parent) == []


def test_merge_rerun_replaces_its_own_previous_output(merge_ws, capsys, tree):
    out = merge_ws.root / "merged 合并"
    inputs = {p: tree(p) for p in (merge_ws.base, merge_ws.run)}
    assert run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", out)[0] == 0
    first = tree(out)
    (out / "旧 leftover.txt").write_text("from the first run")  # proves the folder is replaced, not added to
    code, _, err = run_cli(capsys, "merge", merge_ws.base, merge_ws.adapter, "-o", out)
    assert code == 0, err
    assert marker_kind(out) == "model" and tree(out) == first
    assert {p: tree(p) for p in inputs} == inputs
    assert hidden_leftovers(out.parent) == []


# --- convert -------------------------------------------------------------------------------------
@pytest.fixture
def convert_ws(tmp_path, tiny_llama3) -> SimpleNamespace:
    """A LoRA run's work dir as training leaves it, no training needed: the refusals come before any
    child process, so byte files and a DeepSpeed-style folder serve as checkpoints."""
    root = tmp_path / "天机 工作区"
    base = root / "models" / "基座 llama3"
    shutil.copytree(tiny_llama3, base)
    config = root / "configs" / "祝福 config.py"
    config.parent.mkdir(parents=True)
    config.write_text("# the run's config\nmax_length = 128\n", encoding="utf-8")
    run = root / "work_dirs" / "祝福 训练"
    run.mkdir(parents=True)
    zero = run / "iter_2.pth"  # an older checkpoint saved by DeepSpeed: a folder
    zero.mkdir()
    (zero / "mp_rank_00_model_states.pt").write_bytes(os.urandom(256))
    (run / "iter_4.pth").write_bytes(os.urandom(512))
    (run / "last_checkpoint").write_text(str(run / "iter_4.pth"))
    (run / "train.log").write_text("iter 4 loss 0.1\n", encoding="utf-8")
    (run / "tianji_run.json").write_text(json.dumps(
        {"config": {"path": str(config), "sha256": sha256_file(config)}, "lora": True, "cfg_options": [],
         "model": str(base), "template": "llama3_chat", "family": "llama3"}, ensure_ascii=False), encoding="utf-8")
    return SimpleNamespace(root=root, base=base, config=config, run=run, checkpoint=run / "iter_4.pth", zero=zero)


@pytest.fixture
def no_convert_child(monkeypatch):
    """pth_to_hf must not start: a refusal comes before any child process."""
    from tianji_ft.weights import convert as convert_module

    monkeypatch.setattr(convert_module, "run_step", lambda *a, **k: pytest.fail("pth_to_hf was started"))


CONVERT_REFUSALS = {
    "work-dir": (lambda w: w.run, "checkpoint"),  # users hit: convert WORK_DIR -o WORK_DIR
    "parent-of-work-dir": (lambda w: w.run.parent, "checkpoint"),
    "is-checkpoint": (lambda w: w.checkpoint, "checkpoint"),
    "inside-checkpoint": (lambda w: w.checkpoint / "hf", "checkpoint"),
    "older-zero-checkpoint": (lambda w: w.zero, "zero"),
    "inside-older-zero-checkpoint": (lambda w: w.zero / "hf", "zero"),
    "manifest": (lambda w: w.run / "tianji_run.json", "run"),
    "training-log": (lambda w: w.run / "train.log", "run"),
    "config-folder": (lambda w: w.config.parent, "config"),
    "is-base": (lambda w: w.base, "base"),
    "inside-base": (lambda w: w.base / "hf_adapter", "base"),
    "parent-of-base": (lambda w: w.base.parent, "base"),
    "work-dir-via-dotdot": (lambda w: f"{w.run}/iter_2.pth/..", "checkpoint"),
}


@OVERWRITE
@pytest.mark.parametrize("case", list(CONVERT_REFUSALS))
def test_convert_refuses_an_output_on_its_inputs(convert_ws, case, overwrite, capsys, tree, refused,
                                                 no_convert_child):
    where, victim = CONVERT_REFUSALS[case]
    out = where(convert_ws)
    before = tree(convert_ws.root)
    code, stdout, err = run_cli(capsys, "convert", convert_ws.run, "-o", out, *overwrite)
    refused(code, err, out, real(getattr(convert_ws, victim)))
    assert tree(convert_ws.root) == before and stdout == ""


def test_convert_work_dir_into_itself_names_both_paths(convert_ws, capsys, refused, no_convert_child):
    code, _, err = run_cli(capsys, "convert", convert_ws.run, "-o", convert_ws.run)
    line = refused(code, err)
    assert f"-o {convert_ws.run} contains the checkpoint {convert_ws.checkpoint}" in line


def test_convert_refuses_a_symlink_to_the_work_dir(convert_ws, capsys, tree, refused, no_convert_child):
    link = convert_ws.root / "run 链接"
    link.symlink_to(convert_ws.run, target_is_directory=True)
    before = tree(convert_ws.root)
    code, _, err = run_cli(capsys, "convert", convert_ws.run, "-o", link, "--overwrite")
    refused(code, err, link, real(convert_ws.checkpoint))
    assert tree(convert_ws.root) == before


def test_convert_refuses_an_existing_folder_with_other_files(convert_ws, capsys, tree, refused, no_convert_child):
    folder = stranger_folder(convert_ws.root)
    before = tree(convert_ws.root)
    code, _, err = run_cli(capsys, "convert", convert_ws.run, "-o", folder)
    assert "tianji-ft did not make it" in refused(code, err, folder)
    assert tree(convert_ws.root) == before


@pytest.fixture
def fake_pth_to_hf(monkeypatch):
    """pth_to_hf replaced by a runner that writes a small adapter where the real one would."""
    from tianji_ft.weights import convert as convert_module
    from tianji_ft.xtuner import runner as runner_module

    calls = []

    def fake_runner(cmd, env, log_path):
        raw = Path(cmd[cmd.index("--safe-serialization") - 1])
        raw.mkdir(parents=True)
        (raw / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
        (raw / "adapter_model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{}      ")
        calls.append(cmd)
        return 0

    def run_step(*args, **kwargs):
        return runner_module.run_step(*args, **{**kwargs, "runner": fake_runner})

    monkeypatch.setattr(convert_module, "run_step", run_step)
    return calls


def test_convert_rerun_replaces_its_own_default_output(convert_ws, capsys, tree, fake_pth_to_hf):
    inputs = {p: tree(p) for p in (convert_ws.base, convert_ws.config.parent)}
    run_before = tree(convert_ws.run)
    code, stdout, err = run_cli(capsys, "convert", convert_ws.run)
    out = convert_ws.run / "adapter"
    assert code == 0, err
    assert f"converted -> {out}" in stdout and marker_kind(out) == "adapter"
    assert f"next: tianji-ft merge {out}   (-> {convert_ws.run / 'merged'};" in stdout
    assert (out / "adapter_config.json").is_file() and (out / "tokenizer.json").is_file()
    (out / "旧 leftover.txt").write_text("from the first run")
    code, _, err = run_cli(capsys, "convert", convert_ws.run)
    assert code == 0, err
    assert len(fake_pth_to_hf) == 2
    assert not (out / "旧 leftover.txt").exists() and marker_kind(out) == "adapter"
    after = tree(convert_ws.run)
    assert {k: v for k, v in after.items() if not k.startswith("adapter")} == run_before
    assert {p: tree(p) for p in inputs} == inputs
    assert hidden_leftovers(convert_ws.run) == []


def test_convert_refuses_a_merge_output_and_overwrite_replaces_a_strangers_folder(convert_ws, capsys, tree,
                                                                                  refused, fake_pth_to_hf):
    merged = convert_ws.root / "merged"
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(b"weights")
    mark(merged, "model")
    code, _, err = run_cli(capsys, "convert", convert_ws.run, "-o", merged)
    assert "it holds a model output" in refused(code, err, merged)
    assert (merged / "model.safetensors").read_bytes() == b"weights" and fake_pth_to_hf == []
    folder = stranger_folder(convert_ws.root)
    code, _, err = run_cli(capsys, "convert", convert_ws.run, "-o", folder, "--overwrite")
    assert code == 0, err
    assert not (folder / NOTES).exists() and marker_kind(folder) == "adapter"


def test_convert_overwrite_never_replaces_an_older_epoch_checkpoint(tmp_path, capsys, fake_pth_to_hf):
    run = tmp_path / "按 epoch 保存的 run"
    run.mkdir()
    config = tmp_path / "config.py"
    config.write_text("x = 1\n")
    older = run / "epoch_1.pth"  # a DeepSpeed checkpoint folder from the first epoch
    older.mkdir()
    (older / "mp_rank_00_model_states.pt").write_bytes(b"epoch 1 weights")
    (run / "epoch_2.pth").write_bytes(b"epoch 2 weights")
    (run / "tianji_run.json").write_text(json.dumps(
        {"config": {"path": str(config), "sha256": sha256_file(config)}, "lora": True, "cfg_options": []}))
    code, _, err = run_cli(capsys, "convert", run, "-o", older, "--overwrite")
    assert (older / "mp_rank_00_model_states.pt").is_file(), "the epoch_1 checkpoint was replaced"
    assert code == 2 and "\n" not in err.strip() and str(older) in err


# --- export ollama -------------------------------------------------------------------------------
@pytest.fixture
def export_ws(tmp_path, tiny_llama3) -> SimpleNamespace:
    root = tmp_path / "天机 工作区"
    model = root / "合并 models" / "llama3 天机"
    shutil.copytree(tiny_llama3, model)
    mark(model, "model")
    return SimpleNamespace(root=root, model=model)


EXPORT_REFUSALS = {
    "is-model": lambda w: w.model,
    "inside-model": lambda w: w.model / "ollama",
    "parent-of-model": lambda w: w.model.parent,
    "workspace": lambda w: w.root,
    "model-via-dotdot": lambda w: f"{w.model}/ollama/..",
}


@OVERWRITE
@pytest.mark.parametrize("case", list(EXPORT_REFUSALS))
def test_export_refuses_an_output_on_the_model(export_ws, case, overwrite, capsys, tree, refused):
    out = EXPORT_REFUSALS[case](export_ws)
    before = tree(export_ws.root)
    code, stdout, err = run_cli(capsys, "export", "ollama", export_ws.model, "-o", out, *overwrite)
    refused(code, err, out, real(export_ws.model))
    assert tree(export_ws.root) == before and stdout == ""


def test_export_refuses_an_existing_folder_with_other_files(export_ws, capsys, tree, refused):
    folder = stranger_folder(export_ws.root)
    before = tree(export_ws.root)
    code, _, err = run_cli(capsys, "export", "ollama", export_ws.model, "-o", folder)
    assert "tianji-ft did not make it" in refused(code, err, folder)
    assert tree(export_ws.root) == before


def test_export_rerun_replaces_its_own_output_and_overwrite_a_strangers(export_ws, capsys, tree):
    model_before = tree(export_ws.model)
    out = export_ws.root / "ollama 导出"
    assert run_cli(capsys, "export", "ollama", export_ws.model, "-o", out, "--name", "tianji")[0] == 0
    (out / "旧 leftover.txt").write_text("x")
    code, _, err = run_cli(capsys, "export", "ollama", export_ws.model, "-o", out, "--name", "tianji")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "Modelfile", "tianji-f16.gguf"]
    assert marker_kind(out) == "ollama"
    folder = stranger_folder(export_ws.root)
    code, _, err = run_cli(capsys, "export", "ollama", export_ws.model, "-o", folder, "--overwrite")
    assert code == 0, err
    assert not (folder / NOTES).exists() and marker_kind(folder) == "ollama"
    assert tree(export_ws.model) == model_before
    assert hidden_leftovers(export_ws.root) == []


# --- eval ----------------------------------------------------------------------------------------
@pytest.fixture
def eval_ws(tmp_path) -> SimpleNamespace:
    """The refusal comes before the model loads: a folder with a config.json is model enough."""
    root = tmp_path / "天机 工作区"
    model = root / "模型" / "天机 merged"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (model / "model.safetensors").write_bytes(os.urandom(256))
    adapter = root / "adapters" / "祝福 lora"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    data = root / "数据 集" / "测试 test.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"conversation": [{"input": "祝妈妈生日快乐", "output": "妈妈生日快乐！"}]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    prompts = root / "数据 集" / "prompts 提示.txt"
    prompts.write_text("祝姐姐新年快乐\n", encoding="utf-8")
    return SimpleNamespace(root=root, model=model, adapter=adapter, data=data, prompts=prompts)


@pytest.fixture
def no_model_load(monkeypatch):
    """The model must not load: a refusal comes before it."""
    from tianji_ft.chat import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "_run_model", lambda *a, **k: pytest.fail("the model was loaded"))


EVAL_REFUSALS = {
    "is-data": (lambda w: w.data, "data"),
    "inside-data": (lambda w: w.data / "out", "data"),
    "parent-of-data": (lambda w: w.data.parent, "data"),
    "is-model": (lambda w: w.model, "model"),
    "inside-model": (lambda w: w.model / "eval", "model"),
    "parent-of-model": (lambda w: w.model.parent, "model"),
    "is-adapter": (lambda w: w.adapter, "adapter"),
    "parent-of-adapter": (lambda w: w.adapter.parent, "adapter"),
    "workspace": (lambda w: w.root, "model"),
    "data-via-dotdot": (lambda w: f"{w.model}/../../数据 集", "data"),
}


@OVERWRITE
@pytest.mark.parametrize("case", list(EVAL_REFUSALS))
def test_eval_refuses_an_output_on_its_inputs(eval_ws, case, overwrite, capsys, tree, refused, no_model_load):
    where, victim = EVAL_REFUSALS[case]
    out = where(eval_ws)
    before = tree(eval_ws.root)
    code, stdout, err = run_cli(capsys, "eval", eval_ws.model, "--adapter", eval_ws.adapter, "--data", eval_ws.data,
                                "-o", out, *overwrite)
    refused(code, err, out, real(getattr(eval_ws, victim)))
    assert tree(eval_ws.root) == before and stdout == ""


def test_eval_refuses_an_output_on_the_prompts_file(eval_ws, capsys, tree, refused, no_model_load):
    before = tree(eval_ws.root)
    code, _, err = run_cli(capsys, "eval", eval_ws.model, "--prompts", eval_ws.prompts, "-o", eval_ws.prompts.parent)
    refused(code, err, eval_ws.prompts.parent, real(eval_ws.prompts))
    assert tree(eval_ws.root) == before


def test_eval_refuses_an_existing_folder_with_other_files(eval_ws, capsys, tree, refused, no_model_load):
    folder = stranger_folder(eval_ws.root)
    before = tree(eval_ws.root)
    code, _, err = run_cli(capsys, "eval", eval_ws.model, "--data", eval_ws.data, "-o", folder)
    assert "tianji-ft did not make it" in refused(code, err, folder)
    assert tree(eval_ws.root) == before


def test_eval_rerun_writes_into_its_own_output(eval_ws, capsys, tree, monkeypatch):
    from tianji_ft.chat import evaluate as evaluate_module
    from tianji_ft.chat.engine import Reply

    def answer(model, items, params, batch_size, label, **kwargs):
        info = {"model": str(model), "adapter": None, "template": "llama3_chat", "template_source": "test",
                "system": None}
        return info, [Reply(f"答：{item.prompt}", "stop", 3, 4) for item in items]

    monkeypatch.setattr(evaluate_module, "_run_model", answer)
    before = tree(eval_ws.root)
    out = eval_ws.root / "eval 结果"
    for _ in range(2):
        code, _, err = run_cli(capsys, "eval", eval_ws.model, "--data", eval_ws.data, "-o", out)
        assert code == 0, err
    assert marker_kind(out) == "eval"
    assert {"answers.jsonl", "metrics.json", "report.md"} <= {p.name for p in out.iterdir()}
    assert {k: v for k, v in tree(eval_ws.root).items() if not k.startswith("eval 结果")} == before


# --- a read-only or full disk under merge --------------------------------------------------------
def merge_sources(tmp_path: Path, tiny_llama3: Path, small_adapter: Path) -> tuple[Path, Path]:
    base = tmp_path / "输入 inputs" / "基座 llama3"
    shutil.copytree(tiny_llama3, base)
    adapter = tmp_path / "输入 inputs" / "hf_adapter"
    shutil.copytree(small_adapter, adapter)
    return base, adapter


def test_merge_into_a_read_only_folder_is_one_line_and_leaves_nothing(tmp_path, tiny_llama3, small_adapter,
                                                                     capsys, tree, refused):
    base, adapter = merge_sources(tmp_path, tiny_llama3, small_adapter)
    inputs = tree(base.parent)
    parent = tmp_path / "只读 read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod 0o555 does not stop root from writing (a read-only disk is "
                        "covered by test_merge_onto_a_read_only_file_system_is_one_line_and_leaves_nothing)")
        code, _, err = run_cli(capsys, "merge", base, adapter, "-o", parent / "merged", "--dtype", "bf16")
        line = refused(code, err, parent, exit_code=1)
        assert "Permission denied" in line and "nothing half-written is left" in line
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)
    assert tree(base.parent) == inputs


def test_merge_onto_a_read_only_file_system_is_one_line_and_leaves_nothing(tmp_path, tiny_llama3, small_adapter,
                                                                          capsys, tree, refused, mount):
    base, adapter = merge_sources(tmp_path, tiny_llama3, small_adapter)
    inputs = tree(base.parent)
    disk = mount.tmpfs("8m", "ro")  # big enough: the free-space check passes, the write is what fails
    code, _, err = run_cli(capsys, "merge", base, adapter, "-o", disk / "merged", "--dtype", "bf16")
    line = refused(code, err, disk, exit_code=1)
    assert "Read-only file system" in line and "write elsewhere" in line
    assert list(disk.iterdir()) == []
    assert tree(base.parent) == inputs


def test_merge_onto_a_disk_too_small_is_refused_before_writing(tmp_path, tiny_llama3, small_adapter,
                                                               capsys, tree, refused, mount):
    base, adapter = merge_sources(tmp_path, tiny_llama3, small_adapter)
    inputs = tree(base.parent)
    disk = mount.tmpfs("2m")  # the fp32 model needs 2.4 MB
    parent = disk / "输出 目录"
    parent.mkdir()
    code, _, err = run_cli(capsys, "merge", base, adapter, "-o", parent / "merged", "--dtype", "fp32")
    line = refused(code, err, parent)
    assert "GB needed for the model" in line and "free some space" in line
    assert list(parent.iterdir()) == []
    assert tree(base.parent) == inputs


def test_merge_onto_a_disk_that_fills_up_midway_is_one_line_and_leaves_nothing(tmp_path, tiny_llama3,
                                                                               small_adapter, capsys, tree,
                                                                               refused, mount):
    from tianji_ft.weights.safetensors_io import read_weights

    base, adapter = merge_sources(tmp_path, tiny_llama3, small_adapter)
    inputs = tree(base.parent)
    disk = mount.tmpfs("2m")
    parent = disk / "输出 目录"
    parent.mkdir()
    # bf16 converts every tensor (no copy_file_range): leave room for the weights, not for the tokenizer
    needed = sum(e.end - e.start for e in read_weights(base).values()) // 2  # fp32 -> bf16
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * (shutil.disk_usage(disk).free - needed - 24 * 1024))
    free = shutil.disk_usage(disk).free
    assert needed < free < needed + (base / "tokenizer.json").stat().st_size
    code, _, err = run_cli(capsys, "merge", base, adapter, "-o", parent / "merged", "--dtype", "bf16")
    line = refused(code, err, parent / "merged")
    assert "disk full while writing" in line and "nothing was left behind" in line
    assert list(parent.iterdir()) == []  # no hidden .merged.*.tmp
    assert shutil.disk_usage(disk).free == free
    assert tree(base.parent) == inputs


def test_merge_onto_another_file_system_with_room_succeeds(tmp_path, tiny_llama3, small_adapter, capsys, mount):
    base, adapter = merge_sources(tmp_path, tiny_llama3, small_adapter)
    disk = mount.tmpfs("16m")
    out = disk / "merged"
    code, _, err = run_cli(capsys, "merge", base, adapter, "-o", out)  # auto dtype: norms are copied as stored
    assert list(disk.iterdir()) in ([], [out])
    assert code == 0, err
