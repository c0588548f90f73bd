import json
import math

import pytest

from nge.errors import NGEError
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, Genotype, Topology


def test_seven_candidate_ops_without_none():
    assert len(PRIMITIVES) == 7
    assert "none" not in PRIMITIVES
    assert set(PRIMITIVES) == {"skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5",
                               "dil_conv_3x3", "dil_conv_5x5"}


def test_topology_has_six_nodes_and_fourteen_edges_in_darts_order():
    t = DEFAULT_TOPOLOGY
    assert t.n_graph_nodes == 6
    assert t.n_edges == 14
    assert t.edges[:5] == ((0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert t.edges[-1] == (4, 5)
    assert all(src < dst for src, dst in t.edges)
    assert [len(t.incoming(i)) for i in range(2, 6)] == [2, 3, 4, 5]


def test_adjacency_reads_receiver_as_row():
    a = DEFAULT_TOPOLOGY.adjacency()
    assert a[0] == [0.0] * 6 and a[1] == [0.0] * 6  # inputs receive nothing
    assert a[2][:2] == [1 / 3, 1 / 3] and a[2][2:] == [0.0] * 4
    assert a[5][:5] == [1 / 6] * 5 and a[5][5] == 0.0
    for i in range(6):
        for j in range(6):
            if j >= i:
                assert a[i][j] == 0.0


def test_search_space_size_matches_paper_formula():
    expected = math.prod((n + 1) * n // 2 * 7**2 for n in range(1, 5))
    assert DEFAULT_TOPOLOGY.space_size() == expected == 1_037_664_180  # "about 1e9"


def test_space_size_by_enumeration_on_a_small_topology():
    # 2 inputs, 2 nodes, 3 ops: enumerate all (pair of distinct inputs, op, op) per node
    t = Topology(n_inputs=2, n_nodes=2)
    count = 1
    for node in range(2, 4):
        count *= sum(3 * 3 for i in range(node) for j in range(i + 1, node))
    assert t.space_size(3) == count


GOOD = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["skip_connect", 0], ["sep_conv_3x3", 2],
               ["dil_conv_5x5", 3], ["avg_pool_3x3", 1], ["max_pool_3x3", 4], ["sep_conv_5x5", 0]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}


def test_genotype_json_round_trip(tmp_path):
    g = Genotype.from_dict(GOOD)
    assert Genotype.from_json(g.to_json()) == g
    assert json.loads(g.to_json()) == GOOD
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == g


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"normal": GOOD["normal"][:7]}, "8 [op, input] pairs"),
        ({"normal": [["conv_7x7", 0]] + GOOD["normal"][1:]}, "unknown op 'conv_7x7'"),
        ({"normal": GOOD["normal"][:2] + [["sep_conv_3x3", 3]] + GOOD["normal"][3:]}, "out of range"),
        ({"normal": [["sep_conv_3x3", -1]] + GOOD["normal"][1:]}, "out of range"),
        ({"reduce_concat": [2, 2]}, "distinct"),
        ({"reduce_concat": [1, 2]}, "distinct node indices"),
        ({"normal": [["sep_conv_3x3", True]] + GOOD["normal"][1:]}, "[op_name, input_index]"),
        ({"normal": [["sep_conv_3x3", 1], ["sep_conv_3x3", 1]] + GOOD["normal"][2:]}, "must differ"),
    ],
)
def test_genotype_validation_names_the_problem(patch, fragment):
    with pytest.raises(NGEError, match=None) as e:
        Genotype.from_dict({**GOOD, **patch})
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_genotype_missing_and_extra_keys():
    with pytest.raises(NGEError, match="missing key"):
        Genotype.from_dict({k: v for k, v in GOOD.items() if k != "reduce"})
    with pytest.raises(NGEError, match="unknown key"):
        Genotype.from_dict({**GOOD, "extra": 1})
    with pytest.raises(NGEError, match="not valid JSON"):
        Genotype.from_json("{not json")
