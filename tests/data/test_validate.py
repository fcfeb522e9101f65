from tianji_ft.data.validate import validate_files


def test_problems_are_file_record_message(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"conversation": [{"input": "你好", "output": "你好！"}]}\n', encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"conversation": [{"input": "你好", "output": "你好！"}]},'
                   ' {"conversation": [{"input": "", "output": "x"}]}, {"instruction": "y"}]', encoding="utf-8")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"conversation": \n', encoding="utf-8")
    problems = list(validate_files([good, bad, broken]))
    assert problems[0] == f"{bad}:1: turn 0: empty 'input'"
    assert problems[1].startswith(f"{bad}:2: missing 'conversation' (keys present: instruction)")
    assert problems[2].startswith(f"{broken}:1:") and "malformed JSON" in problems[2]
    assert len(problems) == 3
