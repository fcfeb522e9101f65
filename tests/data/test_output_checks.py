"""Every data command that writes checks all its outputs against all its inputs
(and each other) once, before it reads or writes: a refusal is exit 2, one line
on stderr naming both paths, and the folder is left exactly as it was."""

import hashlib
import json
from pathlib import Path

import pytest

from tianji_ft.cli import main

FIREFLY = [{"kind": "Couplet", "input": f"上联：春风得意马蹄疾{i}", "target": f"秋水无声雁影斜{i}"} for i in range(4)]
CONVERSATIONS = [{"conversation": [{"input": f"祝姐姐生日快乐{i}", "output": f"姐，生日快乐！愿你天天开心，越来越美{i}！"}]}
                 for i in range(4)]


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its sha256 (folders as None)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def ws(tmp_path):
    """A workspace: firefly rows, converted records, a folder named like a
    .jsonl holding an input, and a mix spec over the firefly file."""
    root = tmp_path.resolve() / "工作 区"
    _jsonl(root / "in 数据.jsonl", FIREFLY)
    _jsonl(root / "in2.jsonl", FIREFLY[:2])
    _jsonl(root / "conv 记录.jsonl", CONVERSATIONS)
    _jsonl(root / "box.jsonl" / "inner.jsonl", FIREFLY)
    _jsonl(root / "cbox.jsonl" / "inner.jsonl", CONVERSATIONS)
    _jsonl(root / "split" / "train.jsonl", CONVERSATIONS)
    _jsonl(root / "figs.png" / "inner.jsonl", CONVERSATIONS)
    (root / "spec.json").write_text(json.dumps({"output": "mixed.jsonl", "seed": 1, "sources": [
        {"name": "firefly", "path": "in 数据.jsonl", "kind": "firefly"},
        {"name": "box", "path": "box.jsonl/inner.jsonl", "kind": "firefly"}]}, ensure_ascii=False), encoding="utf-8")
    return root


# (argv with {placeholders} for workspace paths, the paths the one line must name)
IN, IN2, CONV, BOX, CBOX, SPEC = "{in 数据.jsonl}", "{in2.jsonl}", "{conv 记录.jsonl}", "{box.jsonl}", "{cbox.jsonl}", "{spec.json}"
OUT, OUT_REJECTS = "{out.jsonl}", "{out.rejects.jsonl}"
CASES = {
    # convert: -o and --report equal to, inside, or a parent of each input; equal to each other
    "convert -o is the input": (["convert", "firefly", IN, "-o", IN], [IN]),
    "convert -o is the second input": (["convert", "firefly", IN, IN2, "-o", IN2], [IN2]),
    "convert -o inside the input": (["convert", "firefly", IN, "-o", IN + "/x.jsonl"], [IN + "/x.jsonl", IN]),
    "convert -o holds the input": (["convert", "firefly", BOX + "/inner.jsonl", "-o", BOX], [BOX, BOX + "/inner.jsonl"]),
    "convert --report is the input": (["convert", "firefly", IN, "-o", OUT, "--report", IN], [IN]),
    "convert --report inside the input": (["convert", "firefly", IN, "-o", OUT, "--report", IN + "/r.json"],
                                          [IN + "/r.json", IN]),
    "convert --report holds the input": (["convert", "firefly", BOX + "/inner.jsonl", "-o", OUT, "--report", BOX],
                                         [BOX, BOX + "/inner.jsonl"]),
    "convert --report is -o": (["convert", "firefly", IN, "-o", OUT, "--report", OUT], [OUT]),
    "convert --report is the rejects file": (["convert", "firefly", IN, "-o", OUT, "--report", OUT_REJECTS],
                                             [OUT_REJECTS]),
    # dedupe
    "dedupe -o is the input": (["dedupe", CONV, "-o", CONV], [CONV]),
    "dedupe -o inside the input": (["dedupe", CONV, "-o", CONV + "/d.jsonl"], [CONV + "/d.jsonl", CONV]),
    "dedupe -o holds the input": (["dedupe", CBOX + "/inner.jsonl", "-o", CBOX], [CBOX, CBOX + "/inner.jsonl"]),
    "dedupe --report is the input": (["dedupe", CONV, "-o", OUT, "--report", CONV], [CONV]),
    "dedupe --report holds the input": (["dedupe", CBOX + "/inner.jsonl", "-o", OUT, "--report", CBOX],
                                        [CBOX, CBOX + "/inner.jsonl"]),
    "dedupe --report is -o": (["dedupe", CONV, "-o", OUT, "--report", OUT], [OUT]),
    # clean
    "clean -o is the input": (["clean", "wishes", CONV, "-o", CONV], [CONV]),
    "clean -o inside the input": (["clean", "wishes", CONV, "-o", CONV + "/c.jsonl"], [CONV + "/c.jsonl", CONV]),
    "clean -o holds the input": (["clean", "wishes", CBOX + "/inner.jsonl", "-o", CBOX], [CBOX, CBOX + "/inner.jsonl"]),
    "clean --report is the input": (["clean", "wishes", CONV, "-o", OUT, "--report", CONV], [CONV]),
    "clean --report inside the input": (["clean", "wishes", CONV, "-o", OUT, "--report", CONV + "/r.json"],
                                        [CONV + "/r.json", CONV]),
    "clean --report is the rejects file": (["clean", "wishes", CONV, "-o", OUT, "--report", OUT_REJECTS],
                                           [OUT_REJECTS]),
    # split: the outputs are DIR/train.jsonl and DIR/test.jsonl
    "split -o is the input": (["split", CONV, "-o", CONV], [CONV + "/train.jsonl", CONV]),
    "split train file is the input": (["split", "{split}/train.jsonl", "-o", "{split}"], ["{split}/train.jsonl"]),
    "split --report is the input": (["split", CONV, "-o", "{s}", "--report", CONV], [CONV]),
    "split --report inside the input": (["split", CONV, "-o", "{s}", "--report", CONV + "/r.json"],
                                        [CONV + "/r.json", CONV]),
    "split --report holds the input": (["split", CBOX + "/inner.jsonl", "-o", "{s}", "--report", CBOX],
                                       [CBOX, CBOX + "/inner.jsonl"]),
    "split --report is the train file": (["split", CONV, "-o", "{s}", "--report", "{s}/train.jsonl"],
                                         ["{s}/train.jsonl"]),
    # mix: the spec and every source file are inputs
    "mix -o is the spec": (["mix", SPEC, "-o", SPEC], [SPEC]),
    "mix -o is a source": (["mix", SPEC, "-o", IN], [IN]),
    "mix -o inside a source": (["mix", SPEC, "-o", IN + "/m.jsonl"], [IN + "/m.jsonl", IN]),
    "mix -o holds a source": (["mix", SPEC, "-o", BOX], [BOX, BOX + "/inner.jsonl"]),
    "mix --report is the spec": (["mix", SPEC, "-o", OUT, "--report", SPEC], [SPEC]),
    "mix --report is a source": (["mix", SPEC, "-o", OUT, "--report", IN], [IN]),
    "mix --report holds a source": (["mix", SPEC, "-o", OUT, "--report", BOX], [BOX, BOX + "/inner.jsonl"]),
    "mix --report is -o": (["mix", SPEC, "-o", OUT, "--report", OUT], [OUT]),
    # stats --plot
    "stats --plot is the input": (["stats", CONV, "--plot", CONV], [CONV]),
    "stats --plot inside the input": (["stats", CONV, "--plot", CONV + "/p.png"], [CONV + "/p.png", CONV]),
    "stats --plot holds the input": (["stats", "{figs.png}/inner.jsonl", "--plot", "{figs.png}"],
                                     ["{figs.png}", "{figs.png}/inner.jsonl"]),
}


def _fill(text: str, root: Path) -> str:
    start = text.find("{")
    if start == -1:
        return text
    end = text.index("}")
    return text[:start] + str(root / text[start + 1:end]) + text[end + 1:]


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_that_is_holds_or_lies_inside_an_input_or_another_output_is_refused(capsys, ws, case):
    argv, named = CASES[case]
    before = snapshot(ws)
    code = main(["data", *(_fill(a, ws) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tianji-ft: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for path in named:
        assert _fill(path, ws) in err, (path, err)
    assert snapshot(ws) == before  # every input keeps its sha256, and nothing was written


def test_split_may_write_into_the_folder_that_holds_its_input(capsys, ws):
    assert main(["data", "split", str(ws / "conv 记录.jsonl"), "--test-ratio", "0.5", "-o", str(ws)]) == 0
    assert (ws / "train.jsonl").exists() and (ws / "test.jsonl").exists()


def test_a_report_inside_an_input_folder_is_not_read_back(capsys, ws):
    box = ws / "box.jsonl"
    args = ["data", "convert", "firefly", str(box), "-o", str(box / "out.jsonl"), "--report", str(box / "r.json")]
    assert main(args) == 0
    first = json.loads((box / "r.json").read_text())
    assert main(args) == 0  # its own output, rejects and report are not inputs the second time
    assert json.loads((box / "r.json").read_text()) == first == {"read": 4, "written": 4, "rejected": 0, "reasons": {}}


def test_a_fifo_output_is_refused(capsys, ws):
    import os

    fifo = ws / "pipe.jsonl"
    os.mkfifo(fifo)
    code = main(["data", "convert", "firefly", str(ws / "in 数据.jsonl"), "-o", str(fifo)])
    err = capsys.readouterr().err
    assert code == 2 and "not a regular file" in err and str(fifo) in err


def test_an_unsupported_plot_suffix_names_the_ones_that_work(capsys, ws):
    code = main(["data", "stats", str(ws / "conv 记录.jsonl"), "--plot", str(ws / "lengths.gif")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "'.gif'" in err and ".png" in err and ".svg" in err and ".pdf" in err
    assert not (ws / "lengths.gif").exists()
