"""Cell pictures: every edge label readable (no two label boxes intersect), on crowded and random cells."""

from itertools import combinations

from nge.space import random_genotype
from nge.viz import plot_cell

CROWDED = tuple(zip(["skip_connect", "max_pool_3x3", "sep_conv_5x5", "dil_conv_5x5", "avg_pool_3x3", "sep_conv_3x3",
                     "dil_conv_3x3", "max_pool_3x3"], [0, 1] * 4, strict=True))  # every node reads both inputs


def overlaps(boxes) -> list:
    return [(i, j) for (i, a), (j, b) in combinations(enumerate(boxes), 2) if a.overlaps(b)]


def test_labels_of_a_crowded_cell_do_not_overlap_and_the_picture_is_written(tmp_path):
    boxes = plot_cell(CROWDED, "crowded", tmp_path / "cell.png")
    assert len(boxes) == 8 and overlaps(boxes) == []
    assert (tmp_path / "cell.png").read_bytes()[:4] == b"\x89PNG"


def test_labels_of_random_cells_do_not_overlap():
    for seed in range(8):
        g = random_genotype(seed)
        for cell in (g.normal, g.reduce):
            assert overlaps(plot_cell(cell, "cell", None)) == [], (seed, cell)
