"""Cell pictures: every edge label readable (no two label boxes intersect), on crowded and random cells,
drawn with matplotlib and (where it is installed) with Graphviz's dot; a dot failure falls back to matplotlib."""

import shutil
from itertools import combinations

import numpy as np
import pytest

from nge.space import random_genotype
from nge.viz import cell_dot, dot_label_boxes, dot_layout, plot_cell

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


def test_dot_text_is_left_to_right_with_every_op_as_a_label_between_input_and_node():
    text = cell_dot(CROWDED, 'a "quoted" title')
    assert "rankdir=LR" in text and 'label="a \\"quoted\\" title"' in text
    assert 'e0 [label="skip_connect", shape=plaintext' in text and 'e7 [label="max_pool_3x3", shape=plaintext' in text
    assert '"c_{k-2}" -> e0 ' in text and 'e0 -> "0" ' in text and '"c_{k-1}" -> e7 ' in text and 'e7 -> "3" ' in text
    assert text.count("shape=plaintext") == 8 and text.count('-> "c_{k}"') == 4


def _bezier_points(edge: dict) -> np.ndarray:
    """Points along every cubic Bezier piece that dot drew for `edge`."""
    out = []
    for op in edge["_draw_"]:
        if op["op"] in ("b", "B"):
            ctrl = np.array(op["points"])
            for k in range(0, len(ctrl) - 3, 3):
                p0, p1, p2, p3 = ctrl[k: k + 4]
                t = np.linspace(0, 1, 40)[:, None]
                out.append((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3)
    return np.concatenate(out)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (Debian: apt-get install graphviz)")
def test_dot_draws_no_edge_through_a_label():
    for seed in range(8):
        for cell in (random_genotype(seed).normal, CROWDED, CHAINED):
            layout = dot_layout(cell, "cell", None)
            boxes = dot_label_boxes(layout, len(cell))
            names = {o["_gvid"]: o["name"] for o in layout["objects"]}
            for edge in layout["edges"]:
                points = _bezier_points(edge)
                own = {names[edge["tail"]], names[edge["head"]]}
                for i, box in enumerate(boxes):
                    if f"e{i}" in own:
                        continue
                    inside = ((points[:, 0] > box.x0 + 1) & (points[:, 0] < box.x1 - 1)
                              & (points[:, 1] > box.y0 + 1) & (points[:, 1] < box.y1 - 1))
                    assert not inside.any(), (seed, cell, names[edge["tail"]], names[edge["head"]], f"e{i}")


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
