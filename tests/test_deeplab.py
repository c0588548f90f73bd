"""ImageNet network geometry, multiply-adds by hand, DeepLabv3 (output stride, ASPP), mIoU, backbone loading."""

import math

import pytest
import torch

from nge.deeplab import ASPP, DeepLabV3, confusion_matrix, iou_per_class, mean_iou
from nge.engine import save_checkpoint
from nge.errors import NGEError
from nge.evalnet import NetworkImageNet
from nge.genotypes import DARTS_V2
from nge.ops import reduction_indices
from nge.profile import count_mult_adds
from test_evalnet import FREE


def cell_sizes(net: NetworkImageNet, x: torch.Tensor) -> list[tuple[int, int]]:
    out = []
    hooks = [c.register_forward_hook(lambda m, i, o: out.append((o.shape[1], o.shape[-1]))) for c in net.stack.cells]
    with torch.no_grad():
        net.eval().forward_features(x)
    for h in hooks:
        h.remove()
    return out


def test_imagenet_network_at_224_follows_the_darts_schedule():
    torch.manual_seed(0)
    net = NetworkImageNet(DARTS_V2, C=48, num_classes=1000, layers=14)
    assert reduction_indices(14) == (4, 9)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        s0, s1 = net.eval().forward_stem(x)
    assert s0.shape[-1] == 56 and s1.shape[-1] == 28  # three stride-2 convs: 1/4 and 1/8
    sizes = cell_sizes(net, x)
    # 4 normal cells at 28 (4 x 48 channels), reduction to 14 (x 96), reduction to 7 (x 192)
    assert sizes == [(192, 28)] * 4 + [(384, 14)] * 5 + [(768, 7)] * 5
    with torch.no_grad():
        logits, aux = net(x)
    assert logits.shape == (1, 1000) and aux is None


def test_mult_adds_of_a_small_imagenet_network_by_hand():
    # FREE: parameter-free ops except the factorized reduce of skip_connect on stride-2 edges.
    net = NetworkImageNet(FREE, C=4, num_classes=10, layers=3, auxiliary=True)
    x = torch.zeros(1, 3, 32, 32)

    def conv(h, cin, cout, k=1):  # h x h output map
        return h * h * cout * cin * k * k

    def fr(h, cin, cout):  # two 1x1 convs to cout/2 at the h x h output
        return 2 * conv(h, cin, cout // 2)

    stem = conv(16, 3, 2, 3) + conv(8, 2, 4, 3) + conv(4, 4, 4, 3)  # stem0 (two convs), stem1
    cell0 = fr(4, 4, 4) + conv(4, 4, 4)  # normal C=4: s0 (8x8) factorized-reduced, s1 1x1-conv'd
    cell1 = conv(4, 4, 8) + conv(4, 16, 8) + fr(2, 8, 8)  # reduce C=8: preprocess, skip on input 0
    cell2 = fr(2, 16, 16) + conv(2, 16, 16) + fr(1, 16, 16)  # reduce after reduce, C=16
    classifier = 32 * 10  # concat of nodes 4, 5: 2 x 16 channels
    assert count_mult_adds(net, lambda: net(x)) == stem + cell0 + cell1 + cell2 + classifier == 26_688
    assert net.training  # restored after counting


@pytest.mark.parametrize("output_stride, size", [(16, 64), (16, 96), (8, 64), (32, 64)])
def test_output_stride_gives_that_feature_map(output_stride, size):
    torch.manual_seed(0)
    net = NetworkImageNet(DARTS_V2, C=8, num_classes=5, layers=5)
    model = DeepLabV3(net, num_classes=21, output_stride=output_stride, aspp_channels=8).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.backbone.forward_features(x)
        out = model(x)
    assert feats.shape[-2:] == (size // output_stride, size // output_stride)
    assert model.backbone.feature_info[-1]["reduction"] == output_stride
    assert out.shape == (2, 21, size, size)


def test_dilation_keeps_the_weights_and_dilates_only_after_the_converted_reduction():
    torch.manual_seed(0)
    net = NetworkImageNet(DARTS_V2, C=8, num_classes=5, layers=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.set_output_stride(16)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    r = reduction_indices(5)[1]
    for i, cell in enumerate(net.stack.cells):
        convs = [m for m in cell.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(m.stride == (1, 1) for m in convs) or i < r
        spatial = [m for m in convs if m.kernel_size != (1, 1)]
        if i <= r:
            assert all(m.dilation[0] in (1, 2) for m in spatial)  # unchanged (dil_conv has dilation 2)
        else:
            assert all(m.dilation[0] in (2, 4) for m in spatial) and any(m.dilation[0] == 4 for m in spatial)
    with pytest.raises(ValueError):
        net.set_output_stride(8)  # once only


def test_aspp_branch_shapes():
    torch.manual_seed(0)
    aspp = ASPP(24, 16, rates=(6, 12, 18)).eval()
    x = torch.randn(2, 24, 9, 11)
    outs = [b(x) for b in aspp.branches]
    assert len(outs) == 5
    assert all(o.shape == (2, 16, 9, 11) for o in outs)
    assert [b[0].dilation[0] for b in aspp.branches[1:4]] == [6, 12, 18]
    pooled = outs[-1]
    assert torch.equal(pooled, pooled[:, :, :1, :1].expand_as(pooled))  # image pooling is constant over space
    assert aspp(x).shape == (2, 16, 9, 11)


def test_miou_against_a_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    conf = confusion_matrix(pred, target, 4, ignore_index=255)
    expected = torch.tensor([[1, 1, 0, 0],  # truth 0: predicted 0 once, 1 once
                             [0, 2, 0, 0],  # truth 1: both right
                             [1, 0, 1, 0],  # truth 2: one right, one predicted 0; two pixels ignored
                             [0, 0, 0, 0]])
    assert torch.equal(conf, expected)
    ious = iou_per_class(conf)
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2; class 3 absent
    assert ious[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert math.isnan(ious[3])
    assert mean_iou(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def imagenet_model_file(path, net: NetworkImageNet, C: int, layers: int, num_classes: int):
    save_checkpoint({"epoch": 1, "task": {"net": net.state_dict()}, "genotype": DARTS_V2.to_dict(),
                     "config": {"data": {"name": "imagenet"}, "model": {"C": C, "layers": layers}},
                     "in_channels": 3, "num_classes": num_classes}, path)


def test_backbone_checkpoint_round_trip_into_the_segmenter(tmp_path):
    from nge.config import SegmentRunConfig, load_config
    from nge.segment import build_segmenter, load_backbone

    torch.manual_seed(0)
    net = NetworkImageNet(DARTS_V2, C=8, num_classes=7, layers=5, auxiliary=True)
    imagenet_model_file(tmp_path / "model.pt", net, 8, 5, 7)
    loaded, genotype = load_backbone(tmp_path / "model.pt")
    assert genotype == DARTS_V2
    cfg = load_config(SegmentRunConfig, "segment", "smoke", [f"data.root={tmp_path}"])
    model = build_segmenter(cfg, loaded)
    seg_state = model.backbone.state_dict()
    for k, v in net.state_dict().items():
        if k.startswith(("classifier.", "auxiliary_head.")):
            assert k not in seg_state
        else:
            assert torch.equal(seg_state[k], v), k
    # a checkpoint that lacks a backbone weight is refused, naming it
    state = net.state_dict()
    del state["stack.cells.0.preprocess.pre1.1.weight"]
    save_checkpoint({"epoch": 1, "task": {"net": state}, "genotype": DARTS_V2.to_dict(),
                     "config": {"data": {"name": "imagenet"}, "model": {"C": 8, "layers": 5}}, "num_classes": 7},
                    tmp_path / "broken.pt")
    with pytest.raises(NGEError, match="missing stack.cells.0.preprocess.pre1.1.weight"):
        load_backbone(tmp_path / "broken.pt")
    # a CIFAR network is not a backbone
    save_checkpoint({"epoch": 1, "task": {"net": {}}, "genotype": DARTS_V2.to_dict(),
                     "config": {"data": {"name": "cifar10"}}}, tmp_path / "cifar.pt")
    with pytest.raises(NGEError, match="not an ImageNet network"):
        load_backbone(tmp_path / "cifar.pt")
