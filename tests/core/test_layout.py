"""One layout under the work dir: convert -> adapter, merge -> merged, eval -> eval, export -> ollama, by default."""

from __future__ import annotations

import json
import shutil

from tianji_ft.cli import main
from tianji_ft.core.layout import converted_dir, layout, sibling_output, work_dir_of
from tianji_ft.core.outputs import mark


def _work_dir(tmp_path, name="祝福"):
    run = tmp_path / "work_dirs" / name
    run.mkdir(parents=True)
    (run / "tianji_run.json").write_text(json.dumps({"lora": True}), encoding="utf-8")
    return run


def test_the_folders_of_a_work_dir(tmp_path):
    run = _work_dir(tmp_path)
    assert layout(run) == {"adapter": run / "adapter", "merged": run / "merged", "eval": run / "eval",
                           "ollama": run / "ollama"}
    assert converted_dir(run, full=False) == run / "adapter" and converted_dir(run, full=True) == run / "merged"
    assert work_dir_of(run / "adapter") == run and work_dir_of(run / "merged") == run
    assert work_dir_of(run / "eval") is None  # not a model folder
    assert work_dir_of(tmp_path / "adapter") is None  # no run manifest beside it: not a work dir
    assert sibling_output(run / "adapter", "merged") == run / "merged"
    assert sibling_output(tmp_path / "my 适配器", "merged") == tmp_path / "my 适配器-merged"


def test_merge_then_export_follow_the_layout_without_o(tmp_path, tiny_llama3, small_adapter, capsys):
    run = _work_dir(tmp_path, "Wishes run")
    (run / "tianji_run.json").write_text(json.dumps({"lora": True, "model": str(tiny_llama3)}), encoding="utf-8")
    shutil.copytree(small_adapter, run / "adapter")
    mark(run / "adapter", "adapter")
    shutil.copy(run / "tianji_run.json", run / "adapter" / "tianji_run.json")  # as convert leaves it
    assert main(["merge", str(run / "adapter"), "--quiet"]) == 0  # BASE from the manifest, -o from the layout
    out = capsys.readouterr().out
    assert f"merged -> {run / 'merged'}" in out and (run / "merged" / "config.json").is_file()
    assert f"tianji-ft export ollama {run / 'merged'} -o {run / 'ollama'}" in out
    assert main(["export", "gguf", str(run / "merged"), "--quiet"]) == 0
    assert [p.name for p in (run / "ollama").glob("*.gguf")] == ["wishes-run-f16.gguf"]  # named for its run


def test_export_of_a_model_outside_a_work_dir_asks_for_o(tmp_path, tiny_llama3, capsys):
    model = tmp_path / "模型"
    shutil.copytree(tiny_llama3, model)
    assert main(["export", "ollama", str(model)]) == 2
    err = capsys.readouterr().err
    assert "say where the files go with -o DIR" in err and not list(tmp_path.glob("*ollama*"))


def test_eval_defaults_to_the_work_dirs_eval_folder(tmp_path):
    from tianji_ft.cli.eval import default_output

    run = _work_dir(tmp_path)
    assert default_output(str(run / "merged"), None) == str(run / "eval")
    assert default_output("models/base", str(run / "adapter")) == str(run / "eval")  # the adapter says whose run
    assert default_output("models/base", None) == "eval_results"
