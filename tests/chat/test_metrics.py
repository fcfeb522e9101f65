"""Eval metrics on hand-computed examples."""

from __future__ import annotations

import math

import pytest

from tianji_ft.chat.metrics import answer_metrics, bleu, distinct_n, exact_match, lcs_length, rouge_l, units


def test_units_split_chinese_by_character_and_other_text_by_word():
    assert units("Hello, 世界! ok2go") == ["Hello", ",", "世", "界", "!", "ok2go"]


def test_lcs():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length([], list("abc")) == 0


def test_rouge_l_is_character_level_f1_for_chinese():
    # LCS("今天天气好", "今天天气很好") = 5; P = 5/5, R = 5/6; F1 = 10/11.
    assert rouge_l("今天天气好", "今天天气很好") == pytest.approx(10 / 11)
    assert rouge_l("好", "坏") == 0.0
    assert rouge_l("", "") == 1.0


def test_bleu_uses_the_zh_tokenizer_for_chinese():
    # Per character: 1-gram 5/5, 2-gram 3/4, 3-gram 2/3, 4-gram 1/2; brevity penalty exp(1 - 6/5).
    expected = 100 * math.exp(1 - 6 / 5) * (1 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert bleu(["今天天气好"], ["今天天气很好"]) == pytest.approx(expected, abs=1e-6)
    assert bleu(["今天天气很好"], ["今天天气很好"]) == pytest.approx(100.0)


def test_exact_match_ignores_surrounding_and_repeated_whitespace():
    assert exact_match(["今天天气好", " a  b "], ["今天天气很好", "a b"]) == 0.5


def test_distinct_2_counts_unique_bigrams_over_all_answers():
    # 哈哈哈 -> (哈,哈) twice; 你好 world -> (你,好), (好,world): 3 unique of 4.
    assert distinct_n(["哈哈哈", "你好 world"], 2) == 0.75
    assert distinct_n(["一"], 2) == 0.0


def test_answer_metrics_with_and_without_references():
    answers = ["今天天气好", "哈哈哈", "你好", "好"]
    finish = ["stop", "length", "stop", "stop"]
    m = answer_metrics(answers, finish, [3, 10, 2, 1])
    assert m["stop_rate"] == 0.75 and m["count"] == 4
    assert m["mean_answer_chars"] == (5 + 3 + 2 + 1) / 4 and m["mean_answer_tokens"] == 4.0
    assert "bleu" not in m
    m = answer_metrics(answers[:1], finish[:1], [3], ["今天天气很好"])
    assert m["rouge_l"] == pytest.approx(10 / 11) and m["exact_match"] == 0.0 and m["references"] == 1
