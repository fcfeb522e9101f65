"""``tianji-ft eval --json``: the summary on stdout, parseable, the same as metrics.json; no text lines."""

from __future__ import annotations

import json

from tianji_ft.cli import main


def test_json_summary_is_metrics_json_plus_where_and_next(tmp_path, monkeypatch, capsys):
    from tianji_ft.chat import evaluate as evaluate_module
    from tianji_ft.chat.engine import Reply

    def answer(model, items, params, batch_size, label, **kwargs):
        info = {"model": str(model), "adapter": None, "template": "internlm2_chat", "template_source": "test",
                "system": None}
        return info, [Reply("妈妈，生日快乐！" if "妈妈" in item.prompt else "新年快乐", "stop", 3, 4) for item in items]

    monkeypatch.setattr(evaluate_module, "_run_model", answer)
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join(json.dumps({"conversation": [{"input": q, "output": a}]}, ensure_ascii=False)
                              for q, a in [("祝妈妈生日", "妈妈，生日快乐！"), ("祝老师新年", "老师新年快乐")]) + "\n",
                    encoding="utf-8")
    model = tmp_path / "模型"
    model.mkdir()
    out = tmp_path / "评测"
    assert main(["eval", str(model), "--data", str(data), "-o", str(out), "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    written = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in printed.items() if k not in ("output", "next")} == written
    assert printed["model"]["metrics"]["exact_match"] == 0.5 and printed["output"] == str(out)
    assert printed["next"].startswith(f"read {out}/report.md")
