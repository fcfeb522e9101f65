import io

from tianji_ft.synth.progress import Progress, format_duration


def test_status_line_counts_tokens_cost_and_eta():
    p = Progress(total=4, price_in=2.0, price_out=8.0, stream=io.StringIO(), use_bar=False)
    p.record(True, 1000, 100)
    p.record(False)
    line = p.status_line()
    assert "2/4 requests, done 1, failed 1, tokens in 1,000 out 100, cost 0.0028" in line and "ETA" in line
    assert p.cost == (1000 * 2 + 100 * 8) / 1e6


def test_no_prices_no_cost_shown():
    p = Progress(total=1, stream=io.StringIO(), use_bar=False)
    p.record(True, 5, 5)
    assert "cost" not in p.status_line()


def test_periodic_lines_when_not_a_terminal():
    stream = io.StringIO()
    p = Progress(total=3, stream=stream, interval=0.0, use_bar=False)
    for _ in range(3):
        p.record(True, 1, 1)
    assert stream.getvalue().count("requests, done") == 3


def test_bar_on_a_terminal_shows_counts():
    stream = io.StringIO()
    p = Progress(total=2, price_in=1.0, stream=stream, use_bar=True)
    p.record(True, 10, 2)
    p.record(False)
    p.close()
    text = stream.getvalue()
    assert "2/2" in text and "failed 1" in text and "tokens in 10 out 2" in text


def test_format_duration():
    assert format_duration(65) == "1m05s" and format_duration(3725) == "1h02m05s"
