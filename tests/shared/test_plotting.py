"""annrepro.plotting: optional matplotlib, atomic PNG writes."""

import pytest
from annrepro.plotting import pyplot, save_figure


def test_save_figure_writes_a_png_atomically(tmp_path):
    plt = pyplot()
    if plt is None:
        pytest.skip("matplotlib not installed (optional extra annrepro[plots])")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "sub" / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["f.png"]  # no temporary file left


def test_save_figure_leaves_nothing_on_failure(tmp_path):
    plt = pyplot()
    if plt is None:
        pytest.skip("matplotlib not installed (optional extra annrepro[plots])")

    fig, _ = plt.subplots()

    def broken(*a, **k):
        raise OSError("disk full")

    fig.savefig = broken
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "g.png")
    assert list(tmp_path.iterdir()) == []
