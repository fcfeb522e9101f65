"""The preference converters' records load through XTuner's own preference dataset code
(``build_preference_dataset`` over ``load_jsonl_dataset``, as its DPO configs read a JSONL
file) with each chat template the project uses, on the project's tiny tokenizers: the
prompt is masked, and each answer's labels are its own tokens, ending with the stop token."""

from __future__ import annotations

import pytest
from helpers import threads

from tianji_ft.core.templates import detect_template
from tianji_ft.data.reader import iter_records
from tianji_ft.data.records import convert_files
from tianji_ft.models.tiny import FAMILIES

SOURCES = [("ultrafeedback", "ultrafeedback.jsonl"), ("hh-rlhf", "hh_rlhf.jsonl"),
           ("conversation-pairs", "conversation_pairs.jsonl")]


@pytest.fixture(scope="module")
def preference_files(tmp_path_factory, fixtures_dir):
    folder = tmp_path_factory.mktemp("preference")
    files = []
    for kind, name in SOURCES:
        out = folder / f"{kind}.jsonl"
        assert convert_files(kind, [fixtures_dir / "preference" / name], out).written > 0
        files.append(out)
    return files


@pytest.fixture()
def no_threads_left(monkeypatch):
    """XTuner's tokenizing threads end with the test (tests/helpers/threads.py says why)."""
    with threads.no_threads_left(monkeypatch):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_preference_records_load_in_xtuner_with_each_template(family, preference_files, tiny_tokenizer,
                                                              no_threads_left):
    pytest.importorskip("xtuner")
    from xtuner.dataset.preference_dataset import build_preference_dataset, load_jsonl_dataset

    tokenizer = tiny_tokenizer(family)
    assert detect_template(tokenizer) == FAMILIES[family]["xtuner_template"]  # the template the project trains with
    stop = tokenizer.convert_tokens_to_ids(FAMILIES[family]["stop"])
    records = [r for path in preference_files for _, r in iter_records(path)]
    dataset = build_preference_dataset(
        dataset=dict(type=load_jsonl_dataset, data_files=[str(p) for p in preference_files]),
        tokenizer=tokenizer, max_length=2048, dataset_map_fn=None, is_dpo=True, is_reward=False, num_proc=1,
        use_varlen_attn=False)
    assert len(dataset) == len(records)

    for record, pair in zip(records, dataset):
        masked = {}
        for side in ("chosen", "rejected"):
            ids, labels = pair[f"{side}_ids"], pair[f"{side}_labels"]
            assert len(ids) == len(labels)
            masked[side] = next(i for i, label in enumerate(labels) if label != -100)
            assert masked[side] > 0 and all(label == -100 for label in labels[:masked[side]])
            trained = labels[masked[side]:]
            assert trained == ids[masked[side]:]
            assert stop in trained[-2:]  # the answer ends with the stop token (a newline may follow)
            answer = tokenizer.decode(trained, skip_special_tokens=True).strip()
            assert answer == record[side][0]["content"].strip(), (family, side, answer)
            prompt = tokenizer.decode(ids[:masked[side]])
            assert all(m["content"].strip() in prompt for m in record["prompt"])
        assert masked["chosen"] == masked["rejected"]
        assert pair["chosen_ids"][:masked["chosen"]] == pair["rejected_ids"][:masked["rejected"]]
