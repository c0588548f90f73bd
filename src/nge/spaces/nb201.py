"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): cell, ops, genotype string, networks.

A cell is a DAG of 4 nodes: node 0 is the cell's input (the previous cell's output), node i = 1..3
sums every earlier node through one op per edge (6 edges), the cell's output is node 3. Edge order
(the row order of P) is the benchmark's: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2. One cell type: the
network is the benchmark's, 3x3 conv stem, three stages of N cells at C, 2C, 4C joined by stride-2
ResNet basic blocks, BN-ReLU, global pool, linear. All 5**6 = 15,625 cells are in the benchmark's
table (`nge.spaces.nb201_table`).

A genotype is the benchmark's string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`: group k lists the ops of
the edges into node k from nodes 0..k-1.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nge.errors import NGEError
from nge.ops import DropPath, ReLUConvBN
from nge.space import Topology

NAME = "nb201"
TOPOLOGY = Topology(n_inputs=1, n_nodes=3)
CELL_TYPES: tuple[str, ...] = ("cell",)


class Zero(nn.Module):
    """The `none` op: zeros of the input's shape (the edge is absent)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


# The benchmark's candidate ops (AutoDL-Projects `cell_operations`, stride 1, C in = C out):
# `nor_conv` is ReLU-Conv-BN, the pool has no BN.
OPS = {
    "none": lambda C, affine: Zero(),
    "skip_connect": lambda C, affine: nn.Identity(),
    "nor_conv_1x1": lambda C, affine: ReLUConvBN(C, C, 1, 1, 0, affine),
    "nor_conv_3x3": lambda C, affine: ReLUConvBN(C, C, 3, 1, 1, affine),
    "avg_pool_3x3": lambda C, affine: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}
PRIMITIVES: tuple[str, ...] = tuple(OPS)
N_EDGES = TOPOLOGY.n_edges  # 6


@dataclass(frozen=True)
class Nb201Genotype:
    """A cell of the NAS-Bench-201 space: one op name per edge, in `TOPOLOGY.edges` order."""

    ops: tuple[str, ...]

    def __post_init__(self):
        if len(self.ops) != N_EDGES:
            raise NGEError(f"a NAS-Bench-201 cell has {N_EDGES} edges, got {len(self.ops)} ops")
        bad = [op for op in self.ops if op not in PRIMITIVES]
        if bad:
            raise NGEError(f"unknown NAS-Bench-201 op '{bad[0]}' (known: {', '.join(PRIMITIVES)})")

    def to_str(self) -> str:
        groups, e = [], 0
        for node in range(1, TOPOLOGY.n_graph_nodes):
            groups.append("|" + "|".join(f"{self.ops[e + j]}~{j}" for j in range(node)) + "|")
            e += node
        return "+".join(groups)

    __str__ = to_str

    @classmethod
    def from_str(cls, text: str) -> Nb201Genotype:
        """Parse the benchmark's string; one-line NGEError naming the string if it is not one."""
        s = text.strip()
        groups = s.split("+")
        hint = f"'{s}' is not a NAS-Bench-201 cell string (|op~0|+|op~0|op~1|+|op~0|op~1|op~2|)"
        if len(groups) != TOPOLOGY.n_nodes:
            raise NGEError(hint)
        ops = []
        for node, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise NGEError(hint)
            items = group[1:-1].split("|")
            if len(items) != node:
                raise NGEError(hint)
            for j, item in enumerate(items):
                op, _, src = item.partition("~")
                if src != str(j):
                    raise NGEError(f"{hint}: '{item}' should read op~{j}")
                if op not in PRIMITIVES:
                    raise NGEError(f"{hint}: unknown op '{op}' (known: {', '.join(PRIMITIVES)})")
                ops.append(op)
        return cls(tuple(ops))

    def to_dict(self) -> dict:
        return {"space": NAME, "cell": self.to_str()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: object) -> Nb201Genotype:
        if not isinstance(d, dict) or d.get("space") != NAME or not isinstance(d.get("cell"), str) or set(d) != {"space", "cell"}:
            raise NGEError(f'a NAS-Bench-201 genotype is {{"space": "{NAME}", "cell": "|op~0|+..."}}')
        return cls.from_str(d["cell"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    def edges(self) -> list[tuple[int, int, str]]:
        """(source, target, op) per edge, in edge order."""
        return [(s, t, op) for (s, t), op in zip(TOPOLOGY.edges, self.ops, strict=True)]


def looks_like_cell_string(text: str) -> bool:
    return text.strip().startswith("|") and "~" in text


def random_genotype(seed: int) -> Nb201Genotype:
    """A cell drawn uniformly from the 15,625: one uniform op per edge."""
    rng = random.Random(seed)
    return Nb201Genotype(tuple(rng.choice(PRIMITIVES) for _ in range(N_EDGES)))


def derive(p: torch.Tensor) -> Nb201Genotype:
    """Argmax per edge (all 6 edges stay; `none` allowed, as in the benchmark). Ties: the earlier op."""
    p = torch.as_tensor(p)
    if p.shape != (N_EDGES, len(PRIMITIVES)):
        raise ValueError(f"P must be {N_EDGES} x {len(PRIMITIVES)}, got {tuple(p.shape)}")
    return Nb201Genotype(tuple(PRIMITIVES[int(k)] for k in p.argmax(dim=1)))


# ---------------------------------------------------------------------------------------- networks


class ResNetBasicBlock(nn.Module):
    """The benchmark's reduction block: two ReLU-Conv-BN 3x3 (the first with stride 2) plus a
    shortcut (2x2 average pool and 1x1 conv). The pool rounds up as the strided conv does, so an odd
    side (a 21x21 folder image) works; on even sides it is the benchmark's."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class InferCell(nn.Module):
    """One cell of a genotype: `none` edges are left out (they add zeros). In training, the output of
    every op but the skip goes through `drop_path` (0 by default: the benchmark trains without)."""

    def __init__(self, genotype: Nb201Genotype, C: int):
        super().__init__()
        self.edges = [(s, t) for s, t, op in genotype.edges() if op != "none"]
        self.ops = nn.ModuleList(OPS[op](C, True) for _, _, op in genotype.edges() if op != "none")
        self.drop_path = DropPath(0.0)

    def _op(self, op: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x if isinstance(op, nn.Identity) else self.drop_path(op(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for t in range(1, TOPOLOGY.n_graph_nodes):
            terms = [self._op(op, nodes[s]) for (s, target), op in zip(self.edges, self.ops, strict=True) if target == t]
            nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
        return nodes[-1]


def stage_layout(N: int) -> list[bool]:
    """Cell (False) or reduction block (True) at each position: N cells, block, N cells, block, N cells."""
    return [False] * N + [True] + [False] * N + [True] + [False] * N


def cells_per_stage(layers: int) -> int:
    """N from `model.layers`, the number of cells in the network (3N; the benchmark's 15 gives N = 5)."""
    if layers < 3 or layers % 3:
        raise NGEError(f"a NAS-Bench-201 network has 3 stages of N cells: model.layers must be a multiple of 3, got {layers}")
    return layers // 3


class _Backbone(nn.Module):
    """Stem, three stages joined by ResNet blocks, BN-ReLU, global pool, linear; `make_cell(C)` builds a cell."""

    def __init__(self, make_cell, C: int, N: int, num_classes: int, in_channels: int, affine: bool):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        cells, C_prev = [], C
        for reduction in stage_layout(N):
            if reduction:
                cells.append(ResNetBasicBlock(C_prev, 2 * C_prev, affine))
                C_prev *= 2
            else:
                cells.append(make_cell(C_prev))
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU())
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self.C_out = C_prev

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.lastact(x)).flatten(1))


class Nb201Network(_Backbone):
    """The benchmark's network for one genotype (what its table reports after 200 epochs on CIFAR)."""

    def __init__(self, genotype: Nb201Genotype, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__(lambda c: InferCell(genotype, c), C, N, num_classes, in_channels, affine=True)
        self.genotype = genotype

    def set_drop_path(self, p: float) -> None:
        for cell in self.cells:
            if isinstance(cell, InferCell):
                cell.drop_path.p = p

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(logits, None): no auxiliary head, as the DARTS networks return without one."""
        return self.head(self.forward_features(x)), None


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor, weight: torch.Tensor | None, lo: int = 0, hi: int | None = None) -> torch.Tensor:
    """`weight * bn(x)` for channels lo:hi of an affine-free BN, as one batch norm (running statistics of
    those channels updated in place, as `bn` would)."""
    hi = bn.num_features if hi is None else hi
    momentum = 0.1 if bn.momentum is None else bn.momentum
    if bn.training:
        bn.num_batches_tracked.add_(1)
    return F.batch_norm(x, bn.running_mean[lo:hi], bn.running_var[lo:hi], weight, None, bn.training, momentum, bn.eps)


class BoxAvgPool(nn.Module):
    """`AvgPool2d(3, 1, 1, count_include_pad=False)` as a depthwise conv of ones divided by the number of
    pixels each window covers: the same sums, several times faster on the CPU than PyTorch's pooling kernel
    (forward and backward)."""

    def __init__(self):
        super().__init__()
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, H, W = x.shape[1:]
        key = (C, H, W, x.dtype, x.device)
        if key not in self._cache:
            ones = torch.ones(C, 1, 3, 3, dtype=x.dtype, device=x.device)
            count = F.conv2d(torch.ones(1, 1, H, W, dtype=x.dtype, device=x.device), ones[:1], padding=1)
            self._cache[key] = ones, count
        ones, count = self._cache[key]
        return F.conv2d(x, ones, None, 1, 1, 1, C) / count


class SearchCell(nn.Module):
    """A mixed cell: edge j->i is sum_k p_k op_k(x_j) over the 5 ops (Eq. 11), computed per source node.

    The convs of every edge leaving node j read the same relu(x_j): they are one conv with
    (edges out of j) x C output channels, one per kind (1x1, 3x3), each followed by one affine-free
    BN whose per-channel weight is the edge's p (so p_k BN(z) costs no multiply and keeps no extra
    tensor). The pool and the skip are shared by the edges leaving a node; `none` adds nothing. Edge
    (j, i)'s weights are channels t*C:(t+1)*C of its source's convs, t its rank among j's targets:
    the same network as one module per edge and op, in fewer kernels.
    """

    def __init__(self, C: int):
        super().__init__()
        self.C = C
        self.targets = [[t for s, t in TOPOLOGY.edges if s == j] for j in range(TOPOLOGY.n_graph_nodes - 1)]
        self.conv1 = nn.ModuleList(nn.Conv2d(C, len(ts) * C, 1, bias=False) for ts in self.targets)
        self.conv3 = nn.ModuleList(nn.Conv2d(C, len(ts) * C, 3, padding=1, bias=False) for ts in self.targets)
        self.bn1 = nn.ModuleList(nn.BatchNorm2d(len(ts) * C, affine=False) for ts in self.targets)
        self.bn3 = nn.ModuleList(nn.BatchNorm2d(len(ts) * C, affine=False) for ts in self.targets)
        self.pool = BoxAvgPool()
        self.edge = {(s, t): e for e, (s, t) in enumerate(TOPOLOGY.edges)}

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        skip, c1, c3, pool = (PRIMITIVES.index(k) for k in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"))
        C = self.C
        nodes: list[torch.Tensor | None] = [x, None, None, None]
        for j, targets in enumerate(self.targets):
            xj = nodes[j]
            rows = p[[self.edge[j, t] for t in targets]]  # (targets, ops)
            r = F.relu(xj)
            y1 = _bn(self.bn1[j], self.conv1[j](r), rows[:, c1].repeat_interleave(C))
            y3 = _bn(self.bn3[j], self.conv3[j](r), rows[:, c3].repeat_interleave(C))
            pooled = self.pool(xj)
            for k, t in enumerate(targets):
                y = y1[:, k * C:(k + 1) * C] + y3[:, k * C:(k + 1) * C]
                y = y.add_(xj * rows[k, skip]).add_(pooled * rows[k, pool])
                nodes[t] = y if nodes[t] is None else nodes[t] + y
        return nodes[-1]

    def edge_op(self, x: torch.Tensor, s: int, t: int, op: str) -> torch.Tensor | None:
        """Edge s->t's op `op` alone on input x (None for `none`), on the same weights."""
        if op == "none":
            return None
        if op == "skip_connect":
            return x
        if op == "avg_pool_3x3":
            return self.pool(x)
        k, C = self.targets[s].index(t), self.C
        conv, bn = (self.conv1[s], self.bn1[s]) if op == "nor_conv_1x1" else (self.conv3[s], self.bn3[s])
        z = F.conv2d(F.relu(x), conv.weight[k * C:(k + 1) * C], None, 1, conv.padding)
        return _bn(bn, z, None, k * C, (k + 1) * C)

    def forward_path(self, x: torch.Tensor, genotype: Nb201Genotype) -> torch.Tensor:
        nodes = [x]
        for t in range(1, TOPOLOGY.n_graph_nodes):
            terms = [y for s, tt, op in genotype.edges() if tt == t
                     for y in [self.edge_op(nodes[s], s, t, op)] if y is not None]
            nodes.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
        return nodes[-1]


class Nb201SuperNet(_Backbone):
    """The benchmark's network with mixed cells driven by P (one (6, 5) matrix: `probs[0]`)."""

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__(SearchCell, C, N, num_classes, in_channels, affine=True)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """x in the network's memory format: a channels-last batch (random crops give one) would otherwise
        turn every layer channels-last, slower here on the CPU than NCHW."""
        w = self.stem[0].weight
        nhwc = not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
        return x.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)

    def forward(self, x: torch.Tensor, probs) -> torch.Tensor:
        p = probs[0]
        x = self.stem(self._layout(x))
        for cell in self.cells:
            x = cell(x, p) if isinstance(cell, SearchCell) else cell(x)
        return self.head(x)

    def forward_path(self, x: torch.Tensor, genotype: Nb201Genotype) -> torch.Tensor:
        """The logits of the single cell `genotype` on the supernet's weights."""
        x = self.stem(self._layout(x))
        for cell in self.cells:
            x = cell.forward_path(x, genotype) if isinstance(cell, SearchCell) else cell(x)
        return self.head(x)


def reference_forward(net: Nb201SuperNet, x: torch.Tensor, probs) -> torch.Tensor:
    """`net(x, probs)` in the plain form sum_k p_k op_k(x) per edge, each op called alone, for tests."""
    p = probs[0]
    x = net.stem(x)
    for cell in net.cells:
        if not isinstance(cell, SearchCell):
            x = cell(x)
            continue
        nodes = [x]
        for t in range(1, TOPOLOGY.n_graph_nodes):
            total = torch.zeros_like(x)
            for s in range(t):
                e = cell.edge[s, t]
                for k, op in enumerate(PRIMITIVES):
                    y = cell.edge_op(nodes[s], s, t, op)
                    if y is not None:
                        total = total + p[e, k] * y
            nodes.append(total)
        x = nodes[-1]
    return net.head(x)
