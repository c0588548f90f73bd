"""Evaluation networks built from a `Genotype` (docs/paper.md section 4; DARTS `model.py`).

`CellStack` is the one cell-stacking implementation; `NetworkCIFAR` and `NetworkImageNet` differ
only in their stem and auxiliary head. All layers come from `nge.ops`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nge.errors import NGEError
from nge.ops import OPS, DropPath, Preprocess, reduction_indices
from nge.space import NUM_INPUTS, CellGenotype, Genotype


class Cell(nn.Module):
    """DARTS evaluation cell: each node sums two ops; the output concatenates the `concat` nodes.

    In training, the output of every op that is not an Identity goes through `drop_path`
    (one module per cell; it draws a fresh mask at each call).
    """

    def __init__(
        self,
        genotype_cell: CellGenotype,
        concat: tuple[int, ...],
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        if len(genotype_cell) % 2:
            raise ValueError(f"a cell genotype needs 2 (op, input) pairs per node, got {len(genotype_cell)} entries")
        self.reduction = reduction
        self.preprocess = Preprocess(C_pp, C_p, C, reduction_prev, affine=True)
        self.ops = nn.ModuleList(
            OPS[name](C, 2 if reduction and src < NUM_INPUTS else 1, True) for name, src in genotype_cell
        )
        self.indices = tuple(src for _, src in genotype_cell)
        self.droppable = tuple(not isinstance(op, nn.Identity) for op in self.ops)
        self.concat = tuple(concat)
        self.multiplier = len(self.concat)
        self.drop_path = DropPath(0.0)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = list(self.preprocess(s0, s1))
        for k in range(0, len(self.ops), 2):
            node = None
            for e in (k, k + 1):
                h = self.ops[e](states[self.indices[e]])
                if self.droppable[e]:
                    h = self.drop_path(h)
                node = h if node is None else node + h
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class _AuxPool(nn.Module):
    """DARTS's AvgPool2d(5, stride, count_include_pad=False), for inputs big enough to give >= 2x2.

    Smaller inputs (e.g. 7x7 in the CIFAR head, from 28x28 images) are adaptive-average-pooled
    to 2x2 instead, so the head's 2x2 conv always fits. Parameter-free either way.
    """

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= self.kernel + self.stride:
            return F.avg_pool2d(x, self.kernel, self.stride, padding=0, count_include_pad=False)
        return F.adaptive_avg_pool2d(x, 2)


class _AuxiliaryHead(nn.Module):
    """ReLU, pool, conv 1x1 C->128, BN, ReLU, conv 2x2 128->768, [BN], ReLU, linear 768->classes.

    The 2x2 conv gives 1x1 on DARTS's input sizes; other sizes are averaged to 1x1 before the linear.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, bn_after_conv2: bool):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReLU(inplace=False),
            _AuxPool(5, pool_stride),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if bn_after_conv2:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if x.shape[-2:] != (1, 1):
            x = F.adaptive_avg_pool2d(x, 1)
        return self.classifier(x.flatten(1))


class AuxiliaryHeadCIFAR(_AuxiliaryHead):
    """DARTS CIFAR auxiliary head (expects 8x8 input: pool 5/3 -> 2x2 -> conv 2x2 -> 1x1)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=3, bn_after_conv2=True)


class AuxiliaryHeadImageNet(_AuxiliaryHead):
    """DARTS ImageNet auxiliary head (expects 7x7 input: pool 5/2 -> 2x2 -> conv 2x2 -> 1x1).

    As in DARTS, there is no BN after the 2x2 conv (DARTS's code leaves it out "for consistency
    with the experiments in the paper").
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=2, bn_after_conv2=False)


class CellStack(nn.Module):
    """`layers` cells with reductions at 1/3 and 2/3 of the depth; channels double at each reduction.

    Both inputs of the first cell have `C_stem_out` channels; `reduction_prev` says that s0 has
    twice the resolution of s1 (ImageNet stem). Attributes:
      aux_index, aux_channels: the second reduction cell (the auxiliary head reads its output).
      out_channels: channels of the last cell.
      feature_info: for the last cell of each resolution stage, {"index", "channels", "reduction"},
        reduction being the stride relative to s1.
    """

    def __init__(self, C_stem_out: int, C: int, genotype: Genotype, layers: int, reduction_prev: bool = False):
        super().__init__()
        reductions = reduction_indices(layers)
        self.aux_index = reductions[1]
        self.feature_info: list[dict[str, int]] = []
        self.cells = nn.ModuleList()
        C_pp, C_p, C_curr = C_stem_out, C_stem_out, C
        stride = 1
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
                stride *= 2
                cell = Cell(genotype.reduce, genotype.reduce_concat, C_pp, C_p, C_curr, True, reduction_prev)
            else:
                cell = Cell(genotype.normal, genotype.normal_concat, C_pp, C_p, C_curr, False, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
            if i == self.aux_index:
                self.aux_channels = C_p
            if i + 1 in reductions or i == layers - 1:
                self.feature_info.append({"index": i, "channels": C_p, "reduction": stride})
        self.out_channels = C_p

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (last cell's output, output of cell `aux_index`)."""
        aux_input = s1
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_index:
                aux_input = s1
        return s1, aux_input

    def dilate(self, reductions: int) -> None:
        """Replaces the stride of the last `reductions` reduction cells by dilation (DeepLab's atrous
        backbone): a converted cell keeps its resolution, and the 3x3/5x5 convs of every cell after it
        are dilated 2x more (pooling is not dilated). In place; the
        weights are unchanged, so a classification checkpoint loads before or after."""
        if not 0 <= reductions <= 2:
            raise ValueError(f"a cell stack has 2 reductions, cannot dilate {reductions}")
        targets = set(reduction_indices(len(self.cells))[2 - reductions:])
        factor = 1
        for i, cell in enumerate(self.cells):
            if i in targets:
                _atrous(cell, factor)  # the converted cell's own convs keep the dilation before it
                factor *= 2
            elif factor > 1:
                _atrous(cell, factor)
        for f in self.feature_info:
            strides_removed = sum(1 for t in targets if t <= f["index"])
            f["reduction"] //= 2 ** strides_removed

    def forward_stages(self, s0: torch.Tensor, s1: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the cells listed in `feature_info`, in order."""
        wanted = {f["index"] for f in self.feature_info}
        outs = []
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i in wanted:
                outs.append(s1)
        return outs


def _atrous(module: nn.Module, factor: int) -> None:
    """Stride 1 for every conv and pool of `module`; spatial convs dilated `factor` times more."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)
            if m.kernel_size != (1, 1):
                m.dilation = tuple(d * factor for d in m.dilation)
                m.padding = tuple(p * factor for p in m.padding)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            m.stride = 1


class _EvalNetwork(nn.Module):
    """Stem -> CellStack -> global average pool -> linear, plus an auxiliary head in training.

    Subclasses set `stack`, `auxiliary_head` (or None), `classifier` and `stem_stride`, and
    define `forward_stem(x) -> (s0, s1)`.
    """

    stem_stride: int = 1
    stack: CellStack
    auxiliary_head: nn.Module | None
    classifier: nn.Linear

    def forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @property
    def feature_info(self) -> list[dict[str, int]]:
        """The stack's feature_info with `reduction` relative to the input image."""
        return [{**f, "reduction": f["reduction"] * self.stem_stride} for f in self.stack.feature_info]

    def set_drop_path(self, p: float) -> None:
        """Sets the drop-path probability of every cell (DARTS ramps it over the epochs)."""
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        for m in self.modules():
            if isinstance(m, DropPath):
                m.p = p

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last cell's feature map."""
        return self.stack(*self.forward_stem(x))[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, aux_logits); aux_logits is None unless training with an auxiliary head."""
        out, aux_input = self.stack(*self.forward_stem(x))
        logits = self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))
        aux_logits = None
        if self.auxiliary_head is not None and self.training:
            aux_logits = self.auxiliary_head(aux_input)
        return logits, aux_logits


class NetworkCIFAR(_EvalNetwork):
    """DARTS CIFAR network: conv 3x3 -> stem_multiplier*C channels, BN; both cell inputs = stem."""

    def __init__(
        self,
        genotype: Genotype,
        C: int = 36,
        num_classes: int = 10,
        layers: int = 20,
        auxiliary: bool = True,
        in_channels: int = 3,
        stem_multiplier: int = 3,
    ):
        super().__init__()
        C_stem = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_stem),
        )
        self.stack = CellStack(C_stem, C, genotype, layers)
        self.auxiliary_head = AuxiliaryHeadCIFAR(self.stack.aux_channels, num_classes) if auxiliary else None
        self.classifier = nn.Linear(self.stack.out_channels, num_classes)

    def forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


class NetworkImageNet(_EvalNetwork):
    """DARTS ImageNet network: three stride-2 3x3 convs; s0 at stride 4, s1 at stride 8."""

    stem_stride = 8

    def __init__(
        self,
        genotype: Genotype,
        C: int = 48,
        num_classes: int = 1000,
        layers: int = 14,
        auxiliary: bool = True,
    ):
        super().__init__()
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # Not in-place: s0 is also a cell input (DARTS's in-place ReLU here changes nothing,
        # since the first cell's preprocessing starts with a ReLU too).
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stack = CellStack(C, C, genotype, layers, reduction_prev=True)
        self.auxiliary_head = AuxiliaryHeadImageNet(self.stack.aux_channels, num_classes) if auxiliary else None
        self.classifier = nn.Linear(self.stack.out_channels, num_classes)

    def forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    def set_output_stride(self, output_stride: int) -> None:
        """16 or 8 instead of the built 32: the last one or two reductions become dilations (DeepLab).
        Once only, on a network still at stride 32."""
        if self.feature_info[-1]["reduction"] != 32:
            raise ValueError("set_output_stride applies once, to a network at output stride 32")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output stride must be 8, 16 or 32, got {output_stride}")
        self.stack.dilate({32: 0, 16: 1, 8: 2}[output_stride])


def build_network(model: Any, genotype: Genotype, in_channels: int, num_classes: int,
                  imagenet: bool) -> NetworkCIFAR | NetworkImageNet:
    """The evaluation network of a training config's `model` section: DARTS's ImageNet network
    for ImageNet-size data, the CIFAR network otherwise; a NAS-Bench-201 genotype gets the benchmark's
    network (C = model.C, model.layers // 3 cells per stage; no auxiliary head)."""
    from nge.spaces import nb201

    if isinstance(genotype, nb201.Nb201Genotype):
        return nb201.Nb201Network(genotype, C=model.C, N=nb201.cells_per_stage(model.layers), num_classes=num_classes,
                                  in_channels=in_channels)
    if imagenet:
        if in_channels != 3:
            raise NGEError(f"the ImageNet network takes RGB images, not {in_channels} channels")
        return NetworkImageNet(genotype, C=model.C, num_classes=num_classes, layers=model.layers,
                               auxiliary=model.auxiliary)
    return NetworkCIFAR(genotype, C=model.C, num_classes=num_classes, layers=model.layers, auxiliary=model.auxiliary,
                        in_channels=in_channels, stem_multiplier=model.stem_multiplier)
