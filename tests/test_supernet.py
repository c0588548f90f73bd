import copy

import pytest
import torch
from torch import nn

from nge.arch import NGE
from nge.ops import reduction_indices
from nge.space import CellProbs
from nge.supernet import MixedOp, SuperNet, reference_forward


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


def test_an_op_added_to_the_table_runs_unfused_in_the_supernet(monkeypatch):
    """Adding an op is one entry in `ops.OPS`: a type without a fused form runs as p * op(x), in
    training (batch statistics) and under recomputation (running statistics updated once)."""
    from nge.ops import OPS, ReLUConvBN

    monkeypatch.setitem(OPS, "conv_1x1", lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine))
    torch.manual_seed(0)
    op = MixedOp(4, 1, ("skip_connect", "sep_conv_3x3", "conv_1x1"))
    x = torch.randn(2, 4, 8, 8)
    p = torch.tensor([0.2, 0.3, 0.5])
    plain = copy.deepcopy(op)
    expected = sum(w * o(x) for w, o in zip(p, plain.ops, strict=True))
    assert torch.allclose(op(x, p), expected, atol=1e-5)
    bn = op.ops[2][2]
    stats = bn.running_mean.clone(), int(bn.num_batches_tracked)
    op(x, p, update_stats=False)  # a recomputation leaves the running statistics alone
    assert torch.equal(bn.running_mean, stats[0]) and int(bn.num_batches_tracked) == stats[1]


def test_supernet_has_no_architecture_parameters_and_uses_given_p():
    torch.manual_seed(0)
    net = SuperNet(C=4, layers=3).eval()
    x = torch.randn(2, 3, 16, 16)
    a, b = NGE()(), uniform_probs()
    assert not torch.allclose(net(x, a), net(x, b))
    # every parameter belongs to a conv, a batch norm or the classifier: none is an architecture parameter
    owners = {type(m) for m in net.modules() if any(True for _ in m.parameters(recurse=False))}
    assert owners <= {nn.Conv2d, nn.BatchNorm2d, nn.Linear}
    assert not any(p.shape == (14, 7) for p in net.parameters())


def test_reduction_cells_use_reduce_probs():
    torch.manual_seed(0)
    net = SuperNet(C=4, layers=3).eval()
    x = torch.randn(2, 3, 16, 16)
    base = uniform_probs()
    other = CellProbs(base.normal, torch.softmax(torch.randn(14, 7) * 3, -1))
    assert not torch.allclose(net(x, base), net(x, other))


# Fast supernet vs DARTS's plain formulation (same modules and weights): outputs, gradients for every
# weight and for P, and BN running statistics. float64 shows the two are the same mathematics (agreement
# to rounding); float32 uses rtol 1e-5 / atol 1e-6 on outputs and rtol 1e-4 / atol 1e-5 on gradients.
TOLERANCES = {
    torch.float64: ({"rtol": 1e-10, "atol": 1e-12}, {"rtol": 1e-10, "atol": 1e-12}),
    torch.float32: ({"rtol": 1e-5, "atol": 1e-6}, {"rtol": 1e-4, "atol": 1e-5}),
}


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", ["none", "edge", "cell", "early"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_supernet_equals_reference_formulation(checkpoint, channels_last, dtype):
    torch.manual_seed(0)
    # 3 cells: a normal cell on 8x8, reduction cells on 8x8 -> 4x4 and 4x4 -> 2x2, so every op runs
    # at stride 1 and 2, and dilated convs take each of their forms (plain, parity sub-images, subsampled)
    net = SuperNet(C=4, layers=3, checkpoint=checkpoint).to(dtype)
    ref = copy.deepcopy(net)
    ref.set_checkpoint("none")
    assert [c.reduction for c in net.cells] == [False, True, True]
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    pn = torch.softmax(torch.randn(14, 7, dtype=dtype), -1).requires_grad_(True)
    pr = torch.softmax(torch.randn(14, 7, dtype=dtype), -1).requires_grad_(True)
    out = net(x, CellProbs(pn, pr))
    out_ref = reference_forward(ref, x.contiguous(), CellProbs(pn, pr))
    tol_out, tol_grad = TOLERANCES[dtype]
    torch.testing.assert_close(out, out_ref, **tol_out)
    g = torch.randn_like(out_ref)
    grads = torch.autograd.grad(out, [pn, pr, *net.parameters()], g)
    grads_ref = torch.autograd.grad(out_ref, [pn, pr, *ref.parameters()], g)
    names = ["P normal", "P reduce"] + [n for n, _ in net.named_parameters()]
    for name, a, b in zip(names, grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, **tol_grad, msg=lambda m, name=name: f"{name}: {m}")
    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        if "running" in name or "num_batches" in name:  # BN statistics updated once, as the reference does
            torch.testing.assert_close(a, b, **tol_out, msg=lambda m, name=name: f"{name}: {m}")


def test_weight_step_gradients_match_reference_with_p_detached():
    torch.manual_seed(0)
    net = SuperNet(C=4, layers=3).double()
    ref = copy.deepcopy(net)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    p = NGE().double()()
    loss = net(x, p.detach()).square().sum()
    loss_ref = reference_forward(ref, x, p).square().sum()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    grads_ref = torch.autograd.grad(loss_ref, list(ref.parameters()))
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_checkpoint_mode_is_checked():
    with pytest.raises(ValueError, match="checkpoint"):
        SuperNet(C=4, layers=3, checkpoint="layer")
