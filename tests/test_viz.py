"""Cell pictures: every edge label readable (no two label boxes intersect), on crowded and random cells,
drawn with matplotlib and (where it is installed) with Graphviz's dot; a dot failure falls back to matplotlib."""

import shutil
from itertools import combinations

import pytest

from nge.space import random_genotype
from nge.viz import cell_dot, plot_cell

CROWDED = tuple(zip(["skip_connect", "max_pool_3x3", "sep_conv_5x5", "dil_conv_5x5", "avg_pool_3x3", "sep_conv_3x3",
                     "dil_conv_3x3", "max_pool_3x3"], [0, 1] * 4, strict=True))  # every node reads both inputs
CHAINED = (("dil_conv_5x5", 0), ("skip_connect", 1), ("sep_conv_5x5", 0), ("dil_conv_5x5", 1), ("dil_conv_5x5", 2),
           ("dil_conv_5x5", 3), ("skip_connect", 0), ("sep_conv_3x3", 1))  # nodes 2 and 3 read nodes 0 and 1
BACKENDS = ["matplotlib", pytest.param("dot", marks=pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot is not installed (Debian: apt-get install graphviz)"))]


def overlaps(boxes) -> list:
    return [(i, j) for (i, a), (j, b) in combinations(enumerate(boxes), 2) if a.overlaps(b)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_of_a_crowded_cell_do_not_overlap_and_the_picture_is_written(tmp_path, capsys, backend):
    boxes = plot_cell(CROWDED, "crowded", tmp_path / "cell.png", backend=backend)
    assert len(boxes) == 8 and overlaps(boxes) == []
    assert (tmp_path / "cell.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().err == ""  # no fallback


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_of_random_cells_do_not_overlap(capsys, backend):
    for seed in range(8):
        g = random_genotype(seed)
        for cell in (g.normal, g.reduce, CHAINED):
            boxes = plot_cell(cell, "cell", None, backend=backend)
            assert len(boxes) == 8 and overlaps(boxes) == [], (seed, cell)
    assert capsys.readouterr().err == ""  # no fallback


def test_dot_text_is_left_to_right_with_every_op_as_an_edge_label():
    text = cell_dot(CROWDED, 'a "quoted" title')
    assert "rankdir=LR" in text and 'label="a \\"quoted\\" title"' in text
    assert '"c_{k-2}" -> "0" [id="e0", label="skip_connect"' in text and '"c_{k-1}" -> "3" [id="e7", label="max_pool_3x3"' in text
    assert text.count(", label=") == 8 and text.count('-> "c_{k}"') == 4


def test_a_dot_failure_falls_back_to_matplotlib_with_one_warning(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Error: boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    boxes = plot_cell(CROWDED, "crowded", tmp_path / "cell.png")  # auto: dot is on PATH, and fails
    assert len(boxes) == 8 and overlaps(boxes) == [] and (tmp_path / "cell.png").read_bytes()[:4] == b"\x89PNG"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nge: warning: Graphviz dot failed (Error: boom)")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    plot_cell(CROWDED, "crowded", None)  # auto without dot: matplotlib, silently
    assert capsys.readouterr().err == ""
    plot_cell(CROWDED, "crowded", None, backend="dot")  # asked for, but missing
    assert capsys.readouterr().err.startswith("nge: warning: Graphviz dot failed")
    with pytest.raises(ValueError, match="backend"):
        plot_cell(CROWDED, "crowded", None, backend="svg")
