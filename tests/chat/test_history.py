"""The history window keeps the newest turns."""

from __future__ import annotations

import pytest

from tianji_ft.chat.history import HistoryWindow


def test_keeps_the_newest_turns():
    window = HistoryWindow(max_turns=2, system="S")
    for n in range(1, 6):
        window.add(f"q{n}", f"a{n}")
    assert window.turns == [("q4", "a4"), ("q5", "a5")]
    assert [m["content"] for m in window.messages("q6")] == ["S", "q4", "a4", "q5", "a5", "q6"]


def test_zero_keeps_nothing_and_none_keeps_everything():
    none, everything = HistoryWindow(0), HistoryWindow(None)
    for n in range(20):
        none.add(f"q{n}", f"a{n}")
        everything.add(f"q{n}", f"a{n}")
    assert len(none) == 0 and none.messages("x") == [{"role": "user", "content": "x"}]
    assert len(everything) == 20 and everything.turns[0] == ("q0", "a0")


def test_reset_forgets_turns_but_not_the_system_prompt():
    window = HistoryWindow(5, system="S")
    window.add("q", "a")
    window.reset()
    assert window.messages("x") == [{"role": "system", "content": "S"}, {"role": "user", "content": "x"}]


def test_negative_window_is_rejected():
    with pytest.raises(ValueError):
        HistoryWindow(-1)
