"""Properties of the readers and of every writing command, over random input:
random bytes, random JSON (lone surrogates written as ``\\ud800`` escapes, NUL,
U+10FFFF, Chinese), random encodings and random file names.

Each run either accounts for every record (read == written + rejected) or
stops with one :class:`UserError` line; never another exception, never a
changed input, never a leftover ``.NAME.*.tmp`` file.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tianji_ft.core.errors import UserError
from tianji_ft.data.accounting import NoRecordKept, Rejected, rejects_path
from tianji_ft.data.dedupe import dedupe_file
from tianji_ft.data.records import convert_files
from tianji_ft.data.registry import all_converters
from tianji_ft.data.reader import iter_records
from tianji_ft.data.preference import make_preference, preference_problems, record_kind, validator
from tianji_ft.data.schema import lone_surrogate, record_problems
from tianji_ft.data.split import split_file
from tianji_ft.data.stats import dataset_stats
from tianji_ft.data.validate import validate_files
from tianji_ft.data.wishes import clean_file

# A deeper run: TIANJI_PROPERTY_EXAMPLES=500 pytest tests/data/test_properties.py
EXAMPLES = int(os.environ.get("TIANJI_PROPERTY_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPECIAL = ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\U0010ffff", "\n", "\r", "\\", '"', "\u2028", "\ufeff",
           "祝", "福", "你好", "生日快乐", "！", "🎉", " "]
chars = st.characters(exclude_categories=())  # every code point, surrogates included
texts = st.lists(st.one_of(chars.map(str), st.sampled_from(SPECIAL)), max_size=12).map("".join)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
names = st.text(alphabet="abcxyz数据祝福中文 _-", min_size=1, max_size=12).map(str.strip).filter(bool)
encodings = st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32", "gb18030"])


def turn(value=None):
    value = value if value is not None else st.one_of(texts, json_values)
    return st.fixed_dictionaries({}, optional={"system": value, "input": value, "output": value})


def messages(role_key, text_key, roles):
    return st.lists(st.fixed_dictionaries({role_key: st.one_of(st.sampled_from(roles), json_values),
                                           text_key: st.one_of(texts, json_values)}), max_size=4)


def fields(*keys, value=None):
    value = value if value is not None else st.one_of(texts, texts, json_values)
    return st.fixed_dictionaries({k: value for k in keys}, optional={"extra": json_values})


# Preference shapes: message lists or transcripts sharing the turns before their answers (or not).
words = st.text(alphabet="祝福你好生日快乐ab！ \n", min_size=1, max_size=8).filter(str.strip)
some_texts = st.one_of(words, words, texts)


def said(role):
    return st.fixed_dictionaries({"role": st.just(role), "content": some_texts})


clean_messages = st.lists(st.one_of(said("system"), said("user"), said("assistant")), max_size=3)
any_messages = messages("role", "content", ["user", "assistant", "system"])
hh_text = st.lists(st.one_of(texts, st.sampled_from(["\n\nHuman:", "\n\nAssistant:", "Human: "])), max_size=5).map("".join)
hh_turns = st.lists(st.tuples(some_texts, some_texts), max_size=2).map(
    lambda pairs: "".join(f"\n\nHuman: {q}\n\nAssistant: {a}" for q, a in pairs))
pairs = st.builds(lambda prompt, a, b: make_preference(prompt, a, b), st.lists(said("user"), min_size=1, max_size=2),
                  some_texts, some_texts)
PREFERENCE_ROWS = {
    "preference": st.one_of(pairs, fields("prompt", "chosen", "rejected", value=st.one_of(any_messages, json_values))),
    "ultrafeedback": st.one_of(
        st.builds(lambda pre, q, a, b: {"chosen": [*pre, q, a], "rejected": [*pre, q, b]}, clean_messages,
                  said("user"), said("assistant"), said("assistant")),
        st.builds(lambda pre, a, b, extra: {"chosen": pre + a, "rejected": pre + b, **extra}, any_messages,
                  any_messages, any_messages,
                  st.fixed_dictionaries({}, optional={"prompt": st.one_of(texts, json_values), "score_chosen": scalars,
                                                      "score_rejected": scalars})),
        fields("prompt", "chosen", "rejected")),
    "hh-rlhf": st.one_of(
        st.builds(lambda pre, q, a, b: {"chosen": f"{pre}\n\nHuman: {q}\n\nAssistant: {a}",
                                        "rejected": f"{pre}\n\nHuman: {q}\n\nAssistant: {b}"}, hh_turns, some_texts, some_texts,
                  some_texts),
        st.builds(lambda pre, a, b: {"chosen": pre + a, "rejected": pre + b}, hh_text, hh_text, hh_text),
        fields("chosen", "rejected", value=st.one_of(hh_text, json_values))),
    "conversation-pairs": st.one_of(
        st.builds(lambda history, last: {"conversation": [*history, last]},
                  st.lists(st.fixed_dictionaries({"input": some_texts, "output": some_texts},
                                                 optional={"system": some_texts}), max_size=2),
                  st.one_of(*(st.fixed_dictionaries({"input": some_texts, answer: some_texts, "rejected": some_texts},
                                                    optional={"system": some_texts}) for answer in ("chosen", "output")),
                            st.fixed_dictionaries({"input": some_texts},
                                                  optional={k: some_texts for k in ("chosen", "output", "rejected")}))),
        st.fixed_dictionaries({"conversation": st.lists(
        st.fixed_dictionaries({}, optional={k: st.one_of(texts, texts, json_values)
                                            for k in ("system", "input", "output", "chosen", "rejected")}),
            max_size=3)})),
}

# Rows each converter kind could meet: mostly of its own shape, with random values in every field.
ROWS = {
    "medqa": fields("Question", "Answer"),
    "firefly": fields("input", "target"),
    "generic": fields("input", "output"),
    "alpaca": st.fixed_dictionaries({"instruction": st.one_of(texts, json_values), "output": st.one_of(texts, json_values)},
                                    optional={"input": json_values, "system": json_values,
                                              "history": st.lists(st.lists(st.one_of(texts, json_values), max_size=3),
                                                                  max_size=2)}),
    "moss": st.fixed_dictionaries({"conversation": st.lists(fields("human", "assistant"), max_size=3)}),
    "guanaco": fields("text", value=st.lists(st.one_of(texts, st.sampled_from(["### Human:", "### Assistant:"])),
                                             max_size=6).map("".join)),
    "sharegpt": st.fixed_dictionaries({"conversations": messages("from", "value", ["human", "gpt", "system", "tool"])},
                                      optional={"system": json_values}),
    "openai": st.fixed_dictionaries({"messages": messages("role", "content", ["user", "assistant", "system"])}),
    "msagent": st.fixed_dictionaries({"conversations": st.one_of(
        messages("from", "value", ["system", "user", "assistant"]), texts)}),
    "conversation": st.fixed_dictionaries({"conversation": st.lists(turn(), max_size=3)}),
    "wishes-merge": st.one_of(st.fixed_dictionaries({"conversation": st.lists(turn(), max_size=3)},
                                                    optional={"meta": json_values}),
                              fields("instruction", "output")),
    **PREFERENCE_ROWS,
}
RECORDS = st.one_of(st.fixed_dictionaries({"conversation": st.lists(turn(texts), min_size=1, max_size=3)}),
                    st.fixed_dictionaries({"conversation": st.lists(turn(), max_size=2)}), json_values)


def test_every_converter_kind_has_rows():
    assert set(ROWS) == set(all_converters())


def encode_line(value, ascii_only: bool) -> str:
    """One JSON line; a lone surrogate can only be written as its escape."""
    if not ascii_only and lone_surrogate(value) is None:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=True)


def write_values(path: Path, values, ascii_only: bool, array: bool, encoding: str = "utf-8") -> bool:
    lines = [encode_line(v, ascii_only) for v in values]
    text = ("[" + ",\n".join(lines) + "]") if array else "".join(line + "\n" for line in lines)
    try:
        path.write_bytes(text.encode(encoding))
    except UnicodeEncodeError:  # gb18030 and friends cannot hold every code point
        path.write_bytes(text.encode("utf-8"))
        return False
    return True


@contextlib.contextmanager
def workspace():
    with tempfile.TemporaryDirectory(prefix="tianji 属性 ") as folder:
        yield Path(folder)


def canonical(value) -> str:
    """``value`` as JSON text, as it reads back ("\\ud800\\udc00" written as two halves reads as one character)."""
    return json.dumps(json.loads(json.dumps(value, ensure_ascii=True)), ensure_ascii=True, sort_keys=True)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def one_line(err: UserError) -> None:
    message = str(err)
    assert message and "\n" not in message and "\r" not in message, repr(message)


def read_output(path: Path) -> list:
    """The values an output holds, read without the readers' guessing (a JSONL line may be an array)."""
    if path.suffix == ".json":
        return json.loads(path.read_bytes())
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def as_read(values: list, array: bool) -> list:
    """What the readers make of ``values`` written as JSONL (``array`` False) or as one array:
    a .jsonl file whose first value is an array is read as that array (tutorials write those)."""
    return values[0] if not array and values and isinstance(values[0], list) else values


def accounted(run, out: Path, *, check_records: bool = True):
    """Run a converting command; check the accounting or the one-line error."""
    try:
        tally = run()
    except NoRecordKept as err:
        one_line(err)
        tally = err.tally
        assert tally.written == 0 and not out.exists()
    except UserError as err:
        one_line(err)
        return None
    assert tally.read == tally.written + tally.rejected
    if tally.written:
        records = read_output(out)
        assert len(records) == tally.written
        if check_records:  # each by its format's validator
            assert all(validator(record_kind(r))(r) == [] for r in records), records
    if tally.rejected and rejects_path(out).exists():
        rejects = rejects_path(out).read_bytes().split(b"\n")[:-1]  # JSONL: lines end at "\n" only
        assert len(rejects) <= tally.rejected and all(json.loads(r)["reason"] for r in rejects)
    return tally


# -------------------------------------------------------------------- readers

@SETTINGS
@given(data=st.binary(max_size=300), name=names, suffix=st.sampled_from([".jsonl", ".json"]), encoding=encodings)
def test_readers_on_random_bytes(data, name, suffix, encoding):
    with workspace() as folder:
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        try:
            values = list(iter_records(path, encoding))
            assert [i for i, _ in values] == list(range(len(values)))
        except UserError as err:
            one_line(err)
        for line in validate_files([path], encoding):
            assert "\n" not in line and "\r" not in line
            line.encode("utf-8")  # printable: no lone surrogate in it
        assert path.read_bytes() == data


@SETTINGS
@given(values=st.lists(json_values, max_size=6), name=names, ascii_only=st.booleans(), array=st.booleans(),
       encoding=encodings)
def test_readers_on_random_json(values, name, ascii_only, array, encoding):
    with workspace() as folder:
        path = folder / f"{name}.jsonl"
        if not write_values(path, values, ascii_only, array, encoding):
            encoding = "utf-8"
        expected = as_read(values, array)
        try:
            got = [v for _, v in iter_records(path, encoding)]
        except UserError as err:
            one_line(err)
            assert not expected or len(values) > 1 and expected is values[0]  # no records, or data after the array
        else:
            assert json.dumps(got, ensure_ascii=True) == json.dumps(expected, ensure_ascii=True)
        problems = list(validate_files([path], encoding))
        assert all("\n" not in p and "\r" not in p for p in problems)
        assert all(p.startswith(f"{path}:") or p.startswith(f"{path}: ") for p in problems)
        assert (not problems) == (expected is values and all(record_problems(v) == [] for v in values) and bool(values))


# ----------------------------------------------------------------- converters

@pytest.mark.parametrize("kind", sorted(ROWS))
def test_every_converter_accounts_for_random_rows(kind):
    @settings(max_examples=max(EXAMPLES * 3 // 4, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(st.one_of(ROWS[kind], ROWS[kind], json_values), min_size=1, max_size=6),
           name=names, out_name=names, ascii_only=st.booleans(), array=st.booleans(),
           out_suffix=st.sampled_from([".jsonl", ".json"]), report=st.booleans())
    def check(rows, name, out_name, ascii_only, array, out_suffix, report):
        with workspace() as folder:
            src = folder / f"{name}.jsonl"
            write_values(src, rows, ascii_only, array)
            before = sha(src)
            out = folder / "输出" / f"{out_name}{out_suffix}"
            report_path = folder / "报告.json" if report else None
            tally = accounted(lambda: convert_files(kind, [src], out, report=report_path), out,
                              check_records=kind != "msagent")
            if tally is not None and report_path is not None:
                assert json.loads(report_path.read_text())["read"] == tally.read
            assert sha(src) == before
            assert not temp_files(folder)

    check()


@SETTINGS
@given(data=st.binary(max_size=300), kind=st.sampled_from(sorted(ROWS)), suffix=st.sampled_from([".jsonl", ".json",
                                                                                               ".csv"]))
def test_every_converter_on_random_bytes(data, kind, suffix):
    with workspace() as folder:
        src = folder / f"随机 bytes{suffix}"
        src.write_bytes(data)
        out = folder / "out.jsonl"
        accounted(lambda: convert_files(kind, [src], out), out, check_records=kind != "msagent")
        assert src.read_bytes() == data and not temp_files(folder)


@SETTINGS
@given(rows=st.lists(st.dictionaries(st.sampled_from(["input", "output", "问题", "回答"]), texts, max_size=4),
                     min_size=1, max_size=5),
       kind=st.sampled_from(["generic", "medqa"]))
def test_table_converters_on_random_csv(rows, kind):
    import csv

    with workspace() as folder:
        src = folder / "表 格.csv"
        header = ["input", "output", "问题", "回答"] if kind == "generic" else ["Question", "Answer"]
        with open(src, "w", encoding="utf-8", errors="surrogatepass", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for row in rows:
                writer.writerow([row.get(h, "") for h in (header if kind == "generic" else ["input", "output"])])
        before = sha(src)
        out = folder / "out.json"
        accounted(lambda: convert_files(kind, [src], out), out)
        assert sha(src) == before and not temp_files(folder)


# ------------------------------------------------------ dedupe, split, clean

@SETTINGS
@given(records=st.lists(st.one_of(RECORDS, RECORDS), min_size=1, max_size=8), name=names,
       ascii_only=st.booleans(), array=st.booleans(), exact=st.booleans())
def test_dedupe_and_clean_account_for_random_records(records, name, ascii_only, array, exact):
    records = records + records[:2]  # some duplicates
    with workspace() as folder:
        src = folder / f"{name}.jsonl"
        write_values(src, records, ascii_only, array)
        before = sha(src)
        out = folder / "去重.jsonl"
        tally = accounted(lambda: dedupe_file(src, out, normalised=not exact), out, check_records=False)
        if tally is not None:
            assert tally.read == len(as_read(records, array))
        out = folder / "clean 结果.json"
        accounted(lambda: clean_file(src, out, report=folder / "r.json"), out)
        assert sha(src) == before and not temp_files(folder)


@SETTINGS
@given(records=st.lists(RECORDS, min_size=0, max_size=8), name=names, ascii_only=st.booleans(), array=st.booleans(),
       ratio=st.floats(min_value=0.05, max_value=0.95), seed=st.integers(0, 10), encoding=encodings)
def test_split_keeps_every_record_or_stops_in_one_line(records, name, ascii_only, array, ratio, seed, encoding):
    with workspace() as folder:
        src = folder / f"{name}{'.json' if array else '.jsonl'}"
        if not write_values(src, records, ascii_only, array, encoding):
            encoding = "utf-8"
        before = sha(src)
        try:
            tally, train, test = split_file(src, folder / "拆 分", test_ratio=ratio, seed=seed, encoding=encoding)
        except UserError as err:
            one_line(err)
            assert not (folder / "拆 分").exists() or not list((folder / "拆 分").iterdir())
        else:
            expected = as_read(records, array)
            assert tally.read == tally.written == len(expected)
            got = [r for f in (train, test) for r in read_output(f)]
            assert sorted(map(canonical, got)) == sorted(map(canonical, expected))
        assert sha(src) == before and not temp_files(folder)


# ------------------------------------------------------------- preference data

def strings(value) -> str:
    """Every string inside ``value``, run together."""
    if isinstance(value, str):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return "".join(map(strings, items))


def answer_sources(kind: str, row: dict) -> tuple:
    """Where a kept record's chosen and rejected answers must come from in ``row``."""
    if kind == "conversation-pairs":
        last = row["conversation"][-1]
        return strings(last.get("chosen", last.get("output"))), strings(last["rejected"])
    return strings(row["chosen"]), strings(row["rejected"])


@pytest.mark.parametrize("kind", sorted(PREFERENCE_ROWS))
def test_preference_converters_keep_answers_from_their_row(kind):
    @SETTINGS
    @given(rows=st.lists(st.one_of(PREFERENCE_ROWS[kind], PREFERENCE_ROWS[kind], json_values), min_size=1, max_size=6))
    def check(rows):
        before = canonical(rows)
        results = list(all_converters()[kind].func(rows))
        assert len(results) == len(rows) and canonical(rows) == before
        for row, result in zip(rows, results):
            if isinstance(result, Rejected):
                assert result.reason
                continue
            assert preference_problems(result) == [], result
            chosen, rejected = answer_sources(kind, row)
            assert result["chosen"][0]["content"] in chosen and result["rejected"][0]["content"] in rejected

    check()


PREFERENCE_RECORDS = st.one_of(pairs, pairs, pairs.map(lambda r: {**r, "rejected": r["chosen"]}),
                               st.fixed_dictionaries({"prompt": json_values, "chosen": json_values}), json_values)


@SETTINGS
@given(records=st.lists(PREFERENCE_RECORDS, min_size=1, max_size=8), name=names, ascii_only=st.booleans(),
       array=st.booleans(), exact=st.booleans(), mixed=st.booleans())
def test_preference_files_through_validate_stats_and_dedupe(records, name, ascii_only, array, exact, mixed):
    records = records + records[:2] + ([{"conversation": [{"input": "祝福", "output": "快乐"}]}] if mixed else [])
    with workspace() as folder:
        src = folder / f"{name}.jsonl"
        write_values(src, records, ascii_only, array)
        before = sha(src)
        for line in validate_files([src]):
            assert "\n" not in line and "\r" not in line
        try:
            stats = dataset_stats(src).summary
        except UserError as err:  # a mixed file
            one_line(err)
            stats = {}
        else:
            assert stats["records"] == len(as_read(records, array))
        out = folder / "去重.jsonl"
        tally = accounted(lambda: dedupe_file(src, out, normalised=not exact), out, check_records=False)
        if tally is not None and stats.get("format") == "preference":
            assert tally.rejected >= stats["exact_duplicates"]
        assert sha(src) == before and not temp_files(folder)
