"""The one PNG writer: parent folders created, figure closed, nothing left behind."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mmguard.io.figures import save_figure  # noqa: E402


def test_save_figure_writes_png_atomically_and_closes(tmp_path) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "a" / "b" / "fig.png", dpi=50)
    assert out == tmp_path / "a" / "b" / "fig.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.png"]  # no temporary file left
