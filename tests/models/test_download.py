"""``tianji-ft models download`` with the hub clients replaced (no network here)."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from tianji_ft.cli import main
from tianji_ft.models import download
from tianji_ft.core.errors import UserError


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """Record what would be downloaded; the fake hub 'downloads' one file."""
    seen = []

    def fake(source):
        def fetch(repo_id, local_dir):
            seen.append((source, repo_id, Path(local_dir)))
            Path(local_dir).mkdir(parents=True, exist_ok=True)
            (Path(local_dir) / "config.json").write_text("{}")
            return str(local_dir)
        return fetch

    for source in download.SOURCES:
        monkeypatch.setitem(download.DOWNLOADERS, source, fake(source))
    monkeypatch.chdir(tmp_path)
    return seen


def test_default_is_the_installed_hub_into_the_folder_the_config_reads(calls, capsys):
    assert main(["models", "download", "internlm2_chat_7b_qlora_wishes_e3"]) == 0
    assert calls == [("huggingface", "internlm/internlm2-chat-7b", Path("models/internlm2-chat-7b"))]
    captured = capsys.readouterr()
    assert captured.out == "models/internlm2-chat-7b\n"  # only the path: MODEL=$(tianji-ft models download ...)
    assert "internlm/internlm2-chat-7b" in captured.err
    assert main(["models", "download", "internlm2_chat_7b_qlora_wishes_e3", "--source", "modelscope"]) == 0
    assert calls[-1][:2] == ("modelscope", "Shanghai_AI_Laboratory/internlm2-chat-7b")


def test_a_preference_config_fetches_the_base_of_the_sft_config_it_starts_from(calls, capsys):
    """The wishes DPO config loads the merged SFT model; the download is the SFT config's base, where it reads it."""
    assert main(["models", "download", "internlm2_chat_7b_qlora_wishes_dpo_e1"]) == 0
    assert calls == [("huggingface", "internlm/internlm2-chat-7b", Path("models/internlm2-chat-7b"))]
    assert not Path("work_dirs").exists()
    assert main(["models", "download", "llama3_8b_instruct_qlora_dpo_e1"]) == 0  # starts from the instruct model
    assert calls[-1] == ("huggingface", "meta-llama/Meta-Llama-3-8B-Instruct", Path("models/Meta-Llama-3-8B-Instruct"))


def test_huggingface_and_out_dir(calls, tmp_path, capsys):
    out = tmp_path / "weights" / "llama3"
    assert main(["models", "download", "llama3_8b_instruct_qlora_chinese_e1", "--source", "huggingface", "-o", str(out)]) == 0
    assert calls == [("huggingface", "meta-llama/Meta-Llama-3-8B-Instruct", out)]
    assert capsys.readouterr().out.strip() == str(out)


def test_a_bare_hub_id(calls, capsys):
    assert main(["models", "download", "Shanghai_AI_Laboratory/internlm2-chat-1_8b"]) == 0
    assert calls == [("huggingface", "Shanghai_AI_Laboratory/internlm2-chat-1_8b", Path("models/internlm2-chat-1_8b"))]


def test_injected_downloader_and_returned_path():
    got = []

    def fetch(repo_id, local_dir):
        got.append((repo_id, local_dir))
        return "/cache/hub/internlm/internlm-7b"

    path = download.download_model("internlm_7b_qlora_msagent_react_e3_gpu8", source="huggingface",
                                   out="/x/y", downloader=fetch)
    assert got == [("internlm/internlm-7b", Path("/x/y"))]
    assert path == Path("/cache/hub/internlm/internlm-7b")


def test_network_failure_is_one_line():
    def fetch(repo_id, local_dir):
        raise ConnectionError("Max retries exceeded with url\nmore detail")

    with pytest.raises(UserError) as err:
        download.download_model("internlm2_chat_7b_full_wishes_e1", downloader=fetch)
    assert "\n" not in str(err.value) and "rerun: it resumes" in str(err.value)


def test_missing_modelscope_names_the_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name == "modelscope" or name.startswith("modelscope."):
            raise ImportError("No module named 'modelscope'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(UserError, match="pip install modelscope"):
        download.download_model("internlm2_chat_7b_qlora_wishes_e3", source="modelscope", out=tmp_path)


def test_huggingface_client_is_called_resumably(monkeypatch, tmp_path):
    import huggingface_hub

    seen = {}
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: seen.update(kw) or kw["local_dir"])
    path = download.download_model("internlm_chat_7b_qlora_oasst1_e3", source="huggingface", out=tmp_path / "m")
    assert seen == {"repo_id": "internlm/internlm-chat-7b", "local_dir": str(tmp_path / "m")}
    assert path == tmp_path / "m"


def test_unknown_source():
    with pytest.raises(UserError, match="unknown source"):
        download.download_model("internlm2_chat_7b_qlora_wishes_e3", source="openxlab")
