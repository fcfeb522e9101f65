import pytest

from tianji_ft.cli import main
from tianji_ft.synth.wishes_data import load_wishes_data
from tianji_ft.synth.wishes_map import map_counts, map_text, plot_map
from tianji_ft.core.errors import UserError


def test_text_map_marks_every_pair():
    data = load_wishes_data()
    text = map_text(data)
    rows = [line for line in text.splitlines() if line.startswith("奶奶")]
    assert len(rows) == 1 and rows[0].split()[-1] == "".join("#" if data.is_suitable("奶奶", s) else "." for s in data.scenes)
    assert map_counts(data) == (407, 97) and text.endswith("407 suitable pairs (#), 97 skipped (.) of 504")


def test_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "maps" / "wishes_map.png"
    assert main(["synth", "wishes-map", "--plot", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert f"heatmap written to {out}" in capsys.readouterr().out


def test_a_missing_font_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="font file .* not found"):
        plot_map(load_wishes_data(), tmp_path / "m.png", font_path=str(tmp_path / "nope.ttf"))
