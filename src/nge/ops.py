"""Layers: the candidate operations (DARTS convention, ReLU-Conv-BN) and shared building blocks.

`OPS` maps an op name to a constructor `(C, stride, affine) -> nn.Module`. Every network in
nge (supernet, CIFAR, ImageNet, DeepLab backbone) builds its edges from this one table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ReLUConvBN(nn.Sequential):
    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


def depthwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)` for a depthwise conv; dilation-2 convs in an equivalent form that oneDNN runs faster.

    With dilation 2 and padding k - 1, output pixel (h, w) reads only input pixels of its own
    parity: stride 2 reads only the even pixels, so it is a plain conv of x[::2, ::2]; stride 1
    on an image too small for oneDNN's direct kernel is a plain conv of each of the four parity
    sub-images. Same products and sums, no approximation.
    """
    k, dilation, stride, padding = conv.kernel_size[0], conv.dilation[0], conv.stride[0], conv.padding[0]
    if dilation != 2 or padding != k - 1 or k % 2 == 0 or conv.kernel_size[1] != k or conv.groups != x.shape[1] \
            or conv.dilation[1] != 2 or conv.stride[1] != stride or conv.padding[1] != padding or conv.bias is not None:
        return conv(x)
    half = (k - 1) // 2
    if stride == 2:
        return F.conv2d(x[:, :, ::2, ::2], conv.weight, None, 1, half, 1, conv.groups)
    N, C, H, W = x.shape
    if stride != 1 or H % 2 or W % 2 or min(H, W) >= 2 * k - 1:
        return conv(x)
    phases = x.reshape(N, C, H // 2, 2, W // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * N, C, H // 2, W // 2)
    y = F.conv2d(phases.contiguous(memory_format=torch.channels_last), conv.weight, None, 1, half, 1, conv.groups)
    y = y.reshape(2, 2, N, C, H // 2, W // 2).permute(2, 3, 4, 0, 5, 1).reshape(N, C, H, W)
    return y.contiguous(memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                        else torch.contiguous_format)



class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel, stride, padding, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu, depthwise, pointwise, bn = self
        return bn(pointwise(depthwise_conv(depthwise, relu(x))))


class SepConv(nn.Sequential):
    """A separable conv applied twice (DARTS): the first carries the stride."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset 1x1 stride-2 convs (DARTS's skip on stride-2 edges).

    The second conv sees the input shifted by one pixel; padding at the far edge makes odd
    sizes work too (both halves give ceil(H/2)), and is exactly DARTS's slice for even sizes.
    """

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class DropPath(nn.Module):
    """Zeroes whole samples of a branch with probability `p` in training, rescaling the rest.

    `p` is an attribute so a schedule can change it between epochs. Identity in eval mode or at p=0.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype).bernoulli_(keep)
        return x * mask / keep


OpFactory = Callable[[int, int, bool], nn.Module]

# The one table of candidate operations (O = 7, the paper's order; no 'none' op). Adding an op
# here adds it to the search space, every network, the genotype checks and the pictures; the
# supernet runs it unfused (p * op(x)) unless `supernet.MixedOp` has a fused form for its type.
OPS: dict[str, OpFactory] = {
    "skip_connect": lambda C, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
}
PRIMITIVES: tuple[str, ...] = tuple(OPS)


class Preprocess(nn.Module):
    """Brings the two cell inputs to C channels and the same resolution (DARTS cell preprocessing).

    s0 comes from two cells back; if the previous cell reduced, it is factorized-reduced.
    """

    def __init__(self, C_pp: int, C_p: int, C: int, reduction_prev: bool, affine: bool):
        super().__init__()
        self.pre0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, affine)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pre0(s0), self.pre1(s1)


def reduction_indices(layers: int) -> tuple[int, ...]:
    """Cells that reduce: at 1/3 and 2/3 of the depth (DARTS layout; indices 2 and 5 of 8)."""
    if layers < 3:
        raise ValueError(f"a network needs at least 3 cells, got {layers}")
    return (layers // 3, 2 * layers // 3)
