"""DeepLabv3 (Chen et al. 2017) with a searched-cell ImageNet network as backbone (docs/paper.md section 4).

The backbone is `NetworkImageNet` without its heads, its last reduction turned into a dilation
(output stride 16). On top: ASPP (a 1x1 branch, three 3x3 atrous branches, image pooling), a 1x1
classifier, and bilinear upsampling to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nge.evalnet import NetworkImageNet


class ConvBNReLU(nn.Sequential):
    def __init__(self, C_in: int, C_out: int, kernel: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(C_in, C_out, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Module):
    """Image-level features: global average pool, 1x1 conv-BN-ReLU, broadcast back to the map size."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv = ConvBNReLU(C_in, C_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, 1))
        return y.expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, 3x3 at each rate, image pooling; concat; 1x1 projection."""

    def __init__(self, C_in: int, C_out: int = 256, rates: Sequence[int] = (6, 12, 18), dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(C_in, C_out, 1), *(ConvBNReLU(C_in, C_out, 3, r) for r in rates), ASPPPooling(C_in, C_out)]
        )
        self.project = nn.Sequential(ConvBNReLU(len(self.branches) * C_out, C_out, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


class DeepLabV3(nn.Module):
    """`backbone.forward_features` -> ASPP -> 1x1 classifier -> bilinear upsampling to the input.

    The backbone's classifier and auxiliary head are removed; its output stride is set here.
    """

    def __init__(self, backbone: NetworkImageNet, num_classes: int = 21, output_stride: int = 16,
                 aspp_channels: int = 256, rates: Sequence[int] = (6, 12, 18)):
        super().__init__()
        del backbone.classifier
        backbone.auxiliary_head = None
        backbone.set_output_stride(output_stride)
        self.backbone = backbone
        self.output_stride = output_stride
        # the rates are for output stride 16 and scale with the map (DeepLabv3 doubles them at 8)
        self.aspp = ASPP(backbone.stack.out_channels, aspp_channels,
                         [max(1, r * 16 // output_stride) for r in rates])
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.aspp(self.backbone.forward_features(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


BACKBONE_HEADS = ("classifier.", "auxiliary_head.")


def backbone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ImageNet network's state dict without its classification heads."""
    return {k: v for k, v in state.items() if not k.startswith(BACKBONE_HEADS)}


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction.
    Pixels labelled `ignore_index` are left out. Stays on the tensors' device (no host sync)."""
    keep = target != ignore_index
    idx = target[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """TP / (TP + FP + FN) per class; NaN for a class absent from both truth and prediction."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


def mean_iou(conf: torch.Tensor) -> float:
    """Mean IoU over the classes present in truth or prediction."""
    return float(iou_per_class(conf).nanmean())
