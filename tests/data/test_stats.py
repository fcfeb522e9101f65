import pytest

from tianji_ft.data.writer import write_records
from tianji_ft.data.stats import dataset_stats, format_stats, percentiles, plot_lengths
from tianji_ft.core.errors import UserError


def test_percentiles_nearest_rank():
    got = percentiles(range(1, 101))
    assert (got["min"], got["p50"], got["p90"], got["p99"], got["max"], got["mean"]) == (1, 50, 90, 99, 100, 50.5)
    assert percentiles([])["p50"] == 0


@pytest.fixture()
def converted(tmp_path):
    path = tmp_path / "d.jsonl"
    write_records(path, [
        {"conversation": [{"system": "sys", "input": "a b c", "output": "d e"}]},
        {"conversation": [{"input": "f", "output": "g h"}, {"input": "i", "output": "j"}]},
        {"conversation": [{"input": "f", "output": "g h"}, {"input": "i", "output": "j"}]},
        {"conversation": [{"input": "", "output": "k"}]},
    ])
    return path


def test_counts_lengths_empties_and_duplicates(converted):
    stats = dataset_stats(converted)
    s = stats.summary
    assert (s["records"], s["turns"], s["exact_duplicates"], s["invalid_records"]) == (4, 6, 1, 1)
    assert s["empty_fields"] == {"system": 0, "input": 1, "output": 0}
    texts = ["sys\na b c\nd e", "f\ng h\ni\nj", "f\ng h\ni\nj", "k"]
    assert list(stats.chars) == [len(t) for t in texts]
    assert s["chars"]["max"] == max(map(len, texts)) and stats.tokens is None
    assert "4 records, 6 turns" in format_stats(s)


def _word_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", *"abcdefghijk", "sys"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    return str(tmp_path / "tok")


def test_token_lengths_with_a_tokenizer(converted, tmp_path):
    stats = dataset_stats(converted, tokenizer=_word_tokenizer(tmp_path), batch=2)
    assert list(stats.tokens) == [6, 5, 5, 1]  # words per record
    assert stats.summary["tokens"]["max"] == 6


def test_a_missing_tokenizer_is_a_one_line_error(converted, tmp_path):
    with pytest.raises(UserError, match="cannot load a tokenizer"):
        dataset_stats(converted, tokenizer=str(tmp_path / "no_tokenizer_here"))


def test_plot_writes_a_png(converted, tmp_path):
    out = plot_lengths(dataset_stats(converted), tmp_path / "lengths.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
