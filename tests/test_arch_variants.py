"""The Table 4 ablation parameterisations (DARTS baseline, Plain, RNN) next to NGE."""

import pytest
import torch

from nge.arch import ARCH_PARAMS, NGE, RNN, DartsAlpha, Plain, build_arch
from nge.space import DEFAULT_TOPOLOGY, CellProbs

NAMES = ["darts", "plain", "rnn", "nge"]  # Table 4 order
EDGES = DEFAULT_TOPOLOGY.edges


def test_registry_lists_exactly_the_four_and_builds_each():
    assert list(ARCH_PARAMS) == NAMES
    for name, cls in zip(NAMES, [DartsAlpha, Plain, RNN, NGE], strict=True):
        assert type(build_arch(name)) is cls
    # the comparison's default rows and labels come from the same table
    from nge.config import AblateConfig

    rows = AblateConfig().rows
    assert [(r.name, r.label) for r in rows[1:]] == [
        ("darts", "Baseline (DARTS)"), ("plain", "Plain"), ("rnn", "RNN"), ("nge", "NGE")]


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_row_stochastic_p(name):
    torch.manual_seed(0)
    p = build_arch(name)()
    assert isinstance(p, CellProbs)
    for m in p:
        assert m.shape == (14, 7)
        assert torch.isfinite(m).all()
        assert torch.allclose(m.sum(1), torch.ones(14), atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_nonzero_gradient(name):
    torch.manual_seed(0)
    a = build_arch(name)
    p = a()
    target = torch.randn(2, 14, 7)
    (((p.normal - target[0]) ** 2).sum() + ((p.reduce - target[1]) ** 2).sum()).backward()
    for pname, prm in a.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_no_bias_parameters(name):
    a = build_arch(name)
    assert not any("bias" in pname for pname, _ in a.named_parameters())
    for m in a.modules():
        if isinstance(m, torch.nn.Linear):
            assert m.bias is None
        if isinstance(m, torch.nn.RNNBase):
            assert not m.bias


def test_darts_starts_near_uniform_with_2x14x7_parameters():
    torch.manual_seed(0)
    a = DartsAlpha()
    assert a.alpha_normal.shape == a.alpha_reduce.shape == (14, 7)
    assert sum(prm.numel() for prm in a.parameters()) == 2 * 14 * 7
    for m in a():
        assert torch.allclose(m, torch.full_like(m, 1 / 7), atol=0.01)


def _perturbed(a, node: int):
    """P before and after adding noise to x_normal[node]."""
    with torch.no_grad():
        before = a()
        a.x_normal[node] += torch.randn(a.x_normal.shape[1])
        after = a()
    changed = (before.normal != after.normal).any(dim=1)
    return before, after, changed


@pytest.mark.parametrize("node", [0, 3])
def test_plain_node_change_touches_only_its_own_edges(node):
    torch.manual_seed(0)
    before, after, changed = _perturbed(Plain(), node)
    touches = torch.tensor([node in edge for edge in EDGES])
    assert torch.equal(changed, touches)
    assert torch.equal(before.reduce, after.reduce)


def test_nge_propagation_reaches_edges_not_touching_the_node():
    torch.manual_seed(0)
    _, _, changed = _perturbed(NGE(), 0)
    touches = torch.tensor([0 in edge for edge in EDGES])
    assert changed[~touches].any()


@pytest.mark.parametrize("node", [0, 1, 2, 3, 4])
def test_rnn_is_unidirectional_over_the_node_order(node):
    torch.manual_seed(0)
    before, after, changed = _perturbed(RNN(), node)
    earlier = torch.tensor([max(edge) < node for edge in EDGES])  # exists for node >= 3
    later = torch.tensor([min(edge) > node for edge in EDGES])  # exists for node <= 3
    assert earlier.any() or later.any()
    assert not changed[earlier].any()
    if later.any():
        assert changed[later].any()
    assert torch.equal(before.reduce, after.reduce)
