"""The search network (SPEC section 3): a DARTS-layout stack of mixed cells driven by P.

The supernet takes P as an input to `forward`; it has no architecture parameters of its own
and does not know where P came from.
"""

from __future__ import annotations

import torch
from torch import nn

from nge.arch import CellProbs
from nge.ops import OPS, Preprocess, reduction_indices
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, Topology


class MixedOp(nn.Module):
    """Eq. 11: sum_o p_o * o(x) over all candidate ops of one edge."""

    def __init__(self, C: int, stride: int, primitives: tuple[str, ...]):
        super().__init__()
        ops = []
        for name in primitives:
            op = OPS[name](C, stride, False)
            if "pool" in name:  # pooling is followed by an affine-free BN in the search network
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        out = p[0] * self.ops[0](x)
        for k in range(1, len(self.ops)):
            out = out + p[k] * self.ops[k](x)
        return out


class SearchCell(nn.Module):
    def __init__(
        self,
        topology: Topology,
        primitives: tuple[str, ...],
        C_pp: int,
        C_p: int,
        C: int,
        reduction: bool,
        reduction_prev: bool,
    ):
        super().__init__()
        self.topology = topology
        self.reduction = reduction
        self.preprocess = Preprocess(C_pp, C_p, C, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(C, 2 if reduction and src < topology.n_inputs else 1, primitives)
            for src, _ in topology.edges
        )
        self.multiplier = topology.n_nodes

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        states = list(self.preprocess(s0, s1))
        e = 0
        for _node in range(self.topology.n_nodes):
            out = None
            for src in range(len(states)):
                y = self.edges[e](states[src], p[e])
                out = y if out is None else out + y
                e += 1
            states.append(out)
        return torch.cat(states[self.topology.n_inputs:], dim=1)


class SuperNet(nn.Module):
    """Stem conv 3x3 -> `layers` cells (reductions at 1/3 and 2/3) -> global pool -> linear."""

    def __init__(
        self,
        C: int = 16,
        num_classes: int = 10,
        layers: int = 8,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        topology: Topology = DEFAULT_TOPOLOGY,
        primitives: tuple[str, ...] = PRIMITIVES,
    ):
        super().__init__()
        self.topology = topology
        self.primitives = primitives
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        reductions = reduction_indices(layers)
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                C_curr *= 2
            cell = SearchCell(topology, primitives, C_pp, C_p, C_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.multiplier * C_curr
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: torch.Tensor, probs: CellProbs) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            p = probs.reduce if cell.reduction else probs.normal
            s0, s1 = s1, cell(s0, s1, p)
        return self.classifier(self.global_pool(s1).flatten(1))
