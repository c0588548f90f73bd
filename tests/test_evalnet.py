import pytest
import torch
from torch import nn

from nge.evalnet import (
    AuxiliaryHeadCIFAR,
    AuxiliaryHeadImageNet,
    Cell,
    CellStack,
    NetworkCIFAR,
    NetworkImageNet,
)
from nge.genotypes import BUILTIN_GENOTYPES, DARTS_V1, DARTS_V2
from nge.ops import DropPath, FactorizedReduce, reduction_indices
from nge.profile import count_params_without_aux
from nge.space import Genotype

# Parameter-free ops everywhere except the stride-2 skip (FactorizedReduce) in the reduction cell.
FREE = Genotype.from_dict(
    {
        "normal": [("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("skip_connect", 0), ("skip_connect", 2),
                   ("max_pool_3x3", 3), ("skip_connect", 1), ("avg_pool_3x3", 4), ("skip_connect", 2)],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [("skip_connect", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("avg_pool_3x3", 1),
                   ("max_pool_3x3", 3), ("skip_connect", 2), ("skip_connect", 4), ("max_pool_3x3", 0)],
        "reduce_concat": [4, 5],
    }
)


@pytest.mark.parametrize("in_ch, size", [(3, 32), (1, 28)])
def test_cifar_shapes_and_aux_only_in_training(in_ch, size):
    torch.manual_seed(0)
    net = NetworkCIFAR(DARTS_V2, C=8, num_classes=7, layers=6, auxiliary=True, in_channels=in_ch)
    x = torch.randn(2, in_ch, size, size)
    net.train()
    logits, aux = net(x)
    assert logits.shape == (2, 7) and aux is not None and aux.shape == (2, 7)
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
        feats = net.forward_features(x)
    assert logits.shape == (2, 7) and aux is None
    assert feats.shape == (2, net.stack.out_channels, size // 4, size // 4)


def test_no_aux_head_without_auxiliary():
    net = NetworkCIFAR(DARTS_V1, C=4, layers=3, auxiliary=False)
    assert net.auxiliary_head is None
    logits, aux = net.train()(torch.randn(2, 3, 16, 16))
    assert logits.shape == (2, 10) and aux is None
    assert count_params_without_aux(net) == sum(p.numel() for p in net.parameters())


def test_reductions_at_one_and_two_thirds_halve_the_size():
    layers = 6
    net = NetworkCIFAR(DARTS_V2, C=4, layers=layers, auxiliary=False).eval()
    sizes = []
    hooks = [c.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for c in net.stack.cells]
    with torch.no_grad():
        net(torch.randn(2, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert reduction_indices(layers) == (2, 4)
    assert [c.reduction for c in net.stack.cells] == [i in (2, 4) for i in range(layers)]
    assert sizes == [16, 16, 8, 8, 4, 4]
    assert net.stack.aux_index == 4
    assert net.stack.feature_info == [
        {"index": 1, "channels": 4 * 4, "reduction": 1},
        {"index": 3, "channels": 4 * 8, "reduction": 2},
        {"index": 5, "channels": 4 * 16, "reduction": 4},
    ]
    assert net.auxiliary_head is None


def test_stack_forward_stages_match_feature_info():
    stack = CellStack(6, 4, DARTS_V2, layers=3).eval()
    s = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        stages = stack.forward_stages(s, s)
        out, aux_in = stack(s, s)
    assert [(t.shape[1], 8 // t.shape[-1]) for t in stages] == [
        (f["channels"], f["reduction"]) for f in stack.feature_info
    ]
    assert torch.equal(stages[-1], out) and aux_in.shape == stages[-1].shape  # aux_index = last cell here


def test_drop_path_module():
    x = torch.randn(64, 3, 2, 2)
    dp = DropPath(0.0).train()
    assert torch.equal(dp(x), x)
    dp.p = 0.5
    assert torch.equal(dp.eval()(x), x)
    torch.manual_seed(0)
    y = dp.train()(x)
    kept = dropped = 0
    for xi, yi in zip(x, y, strict=True):
        if torch.all(yi == 0):
            dropped += 1
        else:
            torch.testing.assert_close(yi, xi / 0.5)
            kept += 1
    assert kept > 0 and dropped > 0


def test_cell_drops_only_non_identity_ops():
    cell = Cell(DARTS_V2.normal, DARTS_V2.normal_concat, 4, 4, 4, False, False).train()
    calls = []
    cell.drop_path.register_forward_hook(lambda m, i, o: calls.append(1))
    cell.drop_path.p = 0.3
    cell(torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6))
    non_identity = sum(not isinstance(op, nn.Identity) for op in cell.ops)
    assert non_identity == 6  # DARTS_V2 normal: two of its eight ops are stride-1 skips
    assert len(calls) == non_identity


def test_set_drop_path_reaches_every_droppath_and_identity_cells_ignore_it():
    net = NetworkCIFAR(DARTS_V2, C=4, layers=3)
    drop_paths = [m for m in net.modules() if isinstance(m, DropPath)]
    assert len(drop_paths) == 3
    net.set_drop_path(0.2)
    assert all(m.p == 0.2 for m in drop_paths)
    with pytest.raises(ValueError):
        net.set_drop_path(1.0)
    # A normal cell of skips only is untouched by drop path, even in training.
    skips = Genotype.from_dict({**DARTS_V2.to_dict(), "normal": [["skip_connect", i] for i in (0, 1, 0, 2, 1, 3, 2, 4)]})
    cell = Cell(skips.normal, skips.normal_concat, 4, 4, 4, False, False).train()
    s0, s1 = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    cell.drop_path.p = 0.9
    torch.manual_seed(0)
    out = cell(s0, s1)
    cell.drop_path.p = 0.0
    torch.manual_seed(0)
    torch.testing.assert_close(out, cell(s0, s1))


@pytest.mark.parametrize("name", sorted(BUILTIN_GENOTYPES))
def test_builtin_genotypes_are_valid_and_build(name):
    g = BUILTIN_GENOTYPES[name]
    assert Genotype.from_dict(g.to_dict()) == g
    net = NetworkCIFAR(g, C=4, layers=3).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 8, 8))[0].shape == (2, 10)


def test_darts_v2_values():
    assert DARTS_V2.normal[-1] == ("dil_conv_3x3", 2)
    assert DARTS_V1.reduce[-1] == ("avg_pool_3x3", 0)
    assert DARTS_V1.normal_concat == DARTS_V2.reduce_concat == (2, 3, 4, 5)


def test_param_count_by_hand():
    C, num_classes = 4, 10
    net = NetworkCIFAR(FREE, C=C, num_classes=num_classes, layers=3, auxiliary=True)

    def conv(cin, cout, k=1):
        return cin * cout * k * k

    def bn(c):
        return 2 * c

    def rcb(cin, cout):  # ReLUConvBN 1x1
        return conv(cin, cout) + bn(cout)

    def fr(cin, cout):  # FactorizedReduce: two 1x1 convs to cout/2, BN(cout)
        return 2 * conv(cin, cout // 2) + bn(cout)

    stem = conv(3, 3 * C, 3) + bn(3 * C)
    # cell 0 (normal, C=4): inputs 12, 12 -> output 4 nodes x 4 = 16; ops are parameter-free
    cell0 = rcb(12, 4) + rcb(12, 4)
    # cell 1 (reduce, C=8): inputs 12, 16; skip on input 0 is a FactorizedReduce -> output 2 x 8 = 16
    cell1 = rcb(12, 8) + rcb(16, 8) + fr(8, 8)
    # cell 2 (reduce after reduce, C=16): s0 is factorized-reduced; inputs 16, 16 -> output 2 x 16 = 32
    cell2 = fr(16, 16) + rcb(16, 16) + fr(16, 16)
    classifier = 32 * num_classes + num_classes
    assert count_params_without_aux(net) == stem + cell0 + cell1 + cell2 + classifier
    assert net.stack.aux_channels == 32
    aux = conv(32, 128) + bn(128) + conv(128, 768, 2) + bn(768) + 768 * num_classes + num_classes
    assert sum(p.numel() for p in net.parameters()) == count_params_without_aux(net) + aux
    assert sum(isinstance(m, FactorizedReduce) for m in net.modules()) == 3


def test_darts_v2_cifar_param_count():
    net = NetworkCIFAR(DARTS_V2, C=36, layers=20)
    assert count_params_without_aux(net) == 3_349_342


def test_darts_v2_imagenet_param_count_is_the_published_4_7m():
    net = NetworkImageNet(DARTS_V2, C=48, layers=14)
    assert count_params_without_aux(net) == 4_718_752  # DARTS paper, Table 2: 4.7M


@pytest.mark.parametrize("size", [8, 7, 4, 12])
def test_aux_heads_accept_any_size(size):
    x = torch.randn(2, 16, size, size)
    for head in (AuxiliaryHeadCIFAR(16, 5), AuxiliaryHeadImageNet(16, 5)):
        assert head.train()(x).shape == (2, 5)


def test_imagenet_shapes():
    torch.manual_seed(0)
    net = NetworkImageNet(DARTS_V2, C=8, num_classes=1000, layers=5).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = net.forward_features(x)
        logits, aux = net(x)
    assert feats.shape[-2:] == (7, 7)
    assert logits.shape == (2, 1000) and aux is None
    assert [f["reduction"] for f in net.feature_info] == [8, 16, 32]
    assert not any(isinstance(m, nn.BatchNorm2d) and m.num_features == 768 for m in net.auxiliary_head.modules())


def test_imagenet_aux_in_training():
    net = NetworkImageNet(DARTS_V2, C=8, num_classes=10, layers=3).train()
    logits, aux = net(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride, size", [(1, 4), (1, 6), (1, 16), (2, 8), (2, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dil_conv_fast_forms_equal_the_plain_conv(kernel, stride, size, channels_last):
    """DilConv runs dilated depthwise convs on sub-sampled or parity-split maps where oneDNN is slow;
    outputs and gradients must equal the layer-by-layer form (float64, to rounding)."""
    from nge.ops import DilConv

    torch.manual_seed(0)
    op = DilConv(6, 8, kernel, stride, kernel - 1, 2).double()
    x = torch.randn(3, 6, size, size, dtype=torch.float64)
    if channels_last:
        op = op.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    fast = op(x)
    plain = nn.Sequential.forward(op, x)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(plain)
    ga = torch.autograd.grad(fast, [x, *op.parameters()], g)
    gb = torch.autograd.grad(plain, [x, *op.parameters()], g)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
