import pytest
import torch
from torch import nn

from nge.arch import NGE, CellProbs
from nge.ops import reduction_indices
from nge.supernet import MixedOp, SuperNet


def uniform_probs() -> CellProbs:
    p = torch.full((14, 7), 1 / 7)
    return CellProbs(p, p.clone())


@pytest.mark.parametrize("in_ch, size, classes", [(3, 32, 10), (1, 28, 10), (3, 15, 5), (2, 9, 3)])
def test_any_channels_size_and_classes(in_ch, size, classes):
    net = SuperNet(C=4, num_classes=classes, layers=5, in_channels=in_ch)
    out = net(torch.randn(2, in_ch, size, size), uniform_probs())
    assert out.shape == (2, classes)


def test_darts_layout_reductions_at_one_and_two_thirds():
    net = SuperNet(C=4, layers=8)
    assert reduction_indices(8) == (2, 5)
    assert [c.reduction for c in net.cells] == [i in (2, 5) for i in range(8)]
    assert net.stem[0].out_channels == 12  # 3C
    assert net.classifier.in_features == 4 * 4 * 4  # 4 nodes x 4C after two reductions
    assert all(len(c.edges) == 14 for c in net.cells)
    assert all(len(e.ops) == 7 for c in net.cells for e in c.edges)


def test_cell_bn_is_affine_free():
    net = SuperNet(C=4, layers=3)
    for cell in net.cells:
        for m in cell.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert not m.affine


def test_mixed_op_is_the_p_weighted_sum():
    torch.manual_seed(0)
    op = MixedOp(4, 1, ("skip_connect", "avg_pool_3x3", "sep_conv_3x3")).eval()
    x = torch.randn(2, 4, 8, 8)
    p = torch.tensor([0.2, 0.5, 0.3])
    expected = sum(w * o(x) for w, o in zip(p, op.ops, strict=True))
    assert torch.allclose(op(x, p), expected, atol=1e-6)
    onehot = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(op(x, onehot), x)


def test_supernet_has_no_architecture_parameters_and_uses_given_p():
    torch.manual_seed(0)
    net = SuperNet(C=4, layers=3).eval()
    x = torch.randn(2, 3, 16, 16)
    a, b = NGE()(), uniform_probs()
    assert not torch.allclose(net(x, a), net(x, b))
    names = [n for n, _ in net.named_parameters()]
    assert not any("x_normal" in n or "gcn" in n for n in names)


def test_reduction_cells_use_reduce_probs():
    torch.manual_seed(0)
    net = SuperNet(C=4, layers=3).eval()
    x = torch.randn(2, 3, 16, 16)
    base = uniform_probs()
    other = CellProbs(base.normal, torch.softmax(torch.randn(14, 7) * 3, -1))
    assert not torch.allclose(net(x, base), net(x, other))
