import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.draws import examples
from nge.derive import derive, derive_cell
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, Genotype


def test_hand_built_p_gives_the_expected_cell():
    p = torch.full((14, 7), 0.01)
    want = {2: [(0, 3), (1, 4)], 3: [(2, 0), (0, 6)], 4: [(3, 1), (1, 2)], 5: [(4, 5), (2, 3)]}
    for node, choices in want.items():
        rows = DEFAULT_TOPOLOGY.incoming(node)
        for src, op in choices:
            p[rows[src], op] = 0.9
    cell = derive_cell(p)
    assert cell == (
        ("sep_conv_3x3", 0), ("sep_conv_5x5", 1),
        ("dil_conv_5x5", 0), ("skip_connect", 2),
        ("avg_pool_3x3", 1), ("max_pool_3x3", 3),
        ("sep_conv_3x3", 2), ("dil_conv_3x3", 4),
    )


def test_strength_is_the_largest_op_probability():
    # node 2: edge from 0 has a flat row (max 0.3), edge from 1 a peaked one (max 0.6); both kept.
    # node 3: the weakest of its 3 edges is dropped.
    p = torch.full((14, 7), 1 / 7)
    rows3 = DEFAULT_TOPOLOGY.incoming(3)
    p[rows3[0]] = torch.tensor([0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    p[rows3[1]] = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.4])
    p[rows3[2]] = torch.tensor([0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])
    cell = derive_cell(p)
    assert cell[2:4] == (("skip_connect", 0), ("dil_conv_5x5", 1))


@settings(max_examples=examples(60))
@given(st.integers(0, 2**31 - 1))
def test_two_distinct_earlier_inputs_per_node(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 14, 7, generator=g) * 3
    p = torch.softmax(logits, -1)
    geno = derive(p[0], p[1])
    for cell in (geno.normal, geno.reduce):
        assert len(cell) == 8
        for k in range(4):
            node = 2 + k
            (op_a, a), (op_b, b) = cell[2 * k], cell[2 * k + 1]
            assert a != b and 0 <= a < node and 0 <= b < node
            assert op_a in PRIMITIVES and op_b in PRIMITIVES and "none" not in (op_a, op_b)
    assert Genotype.from_dict(geno.to_dict()) == geno
    assert geno.normal_concat == geno.reduce_concat == (2, 3, 4, 5)


def test_derive_is_pure():
    p = torch.softmax(torch.randn(14, 7), -1)
    before = p.clone()
    assert derive_cell(p) == derive_cell(p)
    assert torch.equal(p, before)
