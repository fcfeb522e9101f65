"""The chat loop: RESET, EXIT, the history window, one-shot and stdin modes (with a fake engine)."""

from __future__ import annotations

import io

from tianji_ft.chat.session import LENGTH_HINT, ChatSession


def _session(engine, **kwargs):
    out, err = io.StringIO(), io.StringIO()
    return ChatSession(engine, out=out, err=err, **kwargs), out, err


def _users(messages):
    return [m["content"] for m in messages if m["role"] == "user"]


def test_multi_turn_keeps_context_and_reset_clears_it(fake_engine):
    session, out, err = _session(fake_engine)
    session.interactive(["你好", "祝姐姐生日快乐", "RESET", "再见", "EXIT", "never read"])
    first, second, third = fake_engine.calls
    assert _users(first) == ["你好"]
    assert _users(second) == ["你好", "祝姐姐生日快乐"]
    assert second[1] == {"role": "assistant", "content": "1:你好"}
    assert _users(third) == ["再见"]  # RESET removed the earlier turns
    assert "History cleared." in err.getvalue()
    assert "3:再见" in out.getvalue() and len(fake_engine.calls) == 3


def test_window_keeps_the_newest_turns(fake_engine):
    session, _, _ = _session(fake_engine, history_turns=2)
    session.interactive(["q1", "q2", "q3", "q4"])
    assert _users(fake_engine.calls[-1]) == ["q2", "q3", "q4"]


def test_end_of_input_ends_the_loop_and_blank_lines_are_skipped(fake_engine):
    session, out, _ = _session(fake_engine, stream=False)
    session.interactive(["", "   ", "q"])
    assert len(fake_engine.calls) == 1 and "1:q" in out.getvalue()


def test_one_shot_answers_once_without_history(fake_engine):
    session, out, _ = _session(fake_engine)
    session.one_shot("祝奶奶春节快乐")
    assert fake_engine.calls == [[{"role": "user", "content": "祝奶奶春节快乐"}]]
    assert out.getvalue() == "1:祝奶奶春节快乐\n"


def test_stdin_lines_are_answered_each_in_a_fresh_context(fake_engine):
    session, out, _ = _session(fake_engine, stream=False)
    count = session.run_lines(io.StringIO("问题一\n\nRESET\n问题二\nEXIT\n问题三\n"))
    assert count == 2
    assert [_users(c) for c in fake_engine.calls] == [["问题一"], ["问题二"]]
    assert out.getvalue() == "1:问题一\n2:问题二\n"


def test_answers_cut_at_the_limit_print_the_template_hint_once(fake_engine):
    fake_engine.finish_reason = "length"
    session, _, err = _session(fake_engine)
    session.run_lines(["a", "b"])
    assert err.getvalue().count(LENGTH_HINT) == 1


def test_ollama_style_commands_are_never_sent_to_the_model(fake_engine):
    session, out, err = _session(fake_engine)
    session.interactive(["你好", "/clear", "/system 你是送祝福大师", "/system", "/?", "/bogus", "祝姐姐生日快乐",
                         "Exit", "never read"])
    assert [_users(c) for c in fake_engine.calls] == [["你好"], ["祝姐姐生日快乐"]]
    assert fake_engine.calls[1][0] == {"role": "system", "content": "你是送祝福大师"}  # /system, after /clear
    text = err.getvalue()
    assert "History cleared." in text and "System prompt: 你是送祝福大师" in text
    assert "/bye" in text and "Unknown command /bogus" in text


def test_every_way_out_quits(fake_engine):
    for word in ("exit", "QUIT", "/bye", "EXIT", "/Bye"):
        session, _, _ = _session(fake_engine)
        before = len(fake_engine.calls)
        session.interactive([word, "not answered"])
        assert len(fake_engine.calls) == before, word
