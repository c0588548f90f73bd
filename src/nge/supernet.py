"""The search network (docs/paper.md section 3): a DARTS-layout stack of mixed cells driven by P.

The supernet takes P as an input to `forward`; it has no architecture parameters of its own
and does not know where P came from.

`SuperNet.forward` computes what `reference_forward` computes (DARTS's formulation: every edge is
`sum_k p_k * op_k(x)` with each op called whole), with the same modules and weights but less work
and memory:

- the leading ReLU of the conv ops (and of the factorized reduce on stride-2 edges) is computed
  once per node and shared by every edge and op that reads that node;
- the pooling ops (and their affine-free BN) are parameter-free, so they are computed once per node
  and shared by every edge leaving it;
- every other op but the identity ends in an affine-free BN, so `p_k * BN(z)` is one batch norm with
  weight `p_k`: no separate multiply, and no op output is kept for the gradient of P (BN keeps
  its input anyway); op outputs are summed in place;
- dilated depthwise convs that oneDNN would run through its slow gemm path (stride 2, or an image
  smaller than the dilated kernel) run as equivalent plain convs (`ops.depthwise_conv`);
- optionally (`checkpoint="edge"`, `"early"` or `"cell"`) edges or whole cells are recomputed in the backward
  pass instead of keeping their activations; BN running statistics are still updated once.

`SuperNet.forward_path` runs one cell of the space on the same weights (single path: each node
reads its two chosen inputs through its chosen ops), for the sampling strategies (`nge.strategies`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from nge.ops import OPS, DilConv, FactorizedReduce, Preprocess, SepConv, depthwise_conv, reduction_indices
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellProbs, Genotype, Topology

CHECKPOINT_MODES = ("none", "early", "edge", "cell")


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, scale: torch.Tensor | None, update_stats: bool) -> torch.Tensor:
    """`scale * bn(x)` for an affine-free BN, computed as one batch norm with weight `scale` (C,).

    Running statistics change as in `bn(x)`, unless `update_stats` is False (a checkpointed
    recomputation: same batch statistics, and the running ones were updated the first time).
    """
    if bn.affine:
        raise ValueError("the supernet's batch norms must be affine-free")
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        if not update_stats:  # copies, so the recomputation saves the same tensors as the first run
            return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), scale, None, True, momentum, bn.eps)
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    training = bn.training or bn.running_mean is None
    return F.batch_norm(x, bn.running_mean, bn.running_var, scale, None, training, momentum, bn.eps)


def _dil_conv(block: DilConv, r: torch.Tensor, scale: torch.Tensor | None, update_stats: bool) -> torch.Tensor:
    """`scale * block(x)` from r = relu(x): the DilConv without its leading ReLU."""
    _relu, depthwise, pointwise, bn = block
    return _batch_norm(bn, pointwise(depthwise_conv(depthwise, r)), scale, update_stats)


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
        self.pool_ops = tuple(k for k, name in enumerate(primitives) if "pool" in name)  # the same on every edge from a node
        self.C = C

    def pooled(self, x: torch.Tensor, update_stats: bool) -> dict[int, torch.Tensor]:
        """BN(pool(x)) (unscaled) for every pooling op of this edge, keyed by op index."""
        return {k: _batch_norm(self.ops[k][-1], self.ops[k][0](x), None, update_stats) for k in self.pool_ops}

    def forward(self, x: torch.Tensor, p: torch.Tensor, r: torch.Tensor | None = None,
                update_stats: bool = True, pooled: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """The edge output, a new tensor. `r` is relu(x), and `pooled` this edge's `pooled(x)`, when
        the caller has them already (they are shared by all edges leaving one node)."""
        if r is None:
            r = F.relu(x)
        if pooled is None:
            pooled = self.pooled(x, update_stats)
        # p as BN weights; contiguous, since BN backward on CPU mishandles a stride-0 weight in channels_last
        scales = p.unsqueeze(-1).expand(len(self.ops), self.C).contiguous()
        out: torch.Tensor | None = None
        identity = []
        for k, op in enumerate(self.ops):
            scale = scales[k]
            if isinstance(op, nn.Identity) or k in pooled:
                identity.append(k)
                continue
            if isinstance(op, SepConv):
                y = _dil_conv(op[1], F.relu_(_dil_conv(op[0], r, None, update_stats)), scale, update_stats)
            elif isinstance(op, DilConv):
                y = _dil_conv(op, r, scale, update_stats)
            elif isinstance(op, FactorizedReduce):
                shifted = F.pad(r, (0, 1, 0, 1))[:, :, 1:, 1:]
                y = _batch_norm(op.bn, torch.cat([op.conv_1(r), op.conv_2(shifted)], dim=1), scale, update_stats)
            else:  # an op without a fused form: p * op(x)
                with contextlib.nullcontext() if update_stats else _running_stats_kept(op):
                    y = op(x) * scale.view(1, -1, 1, 1)
            out = y if out is None else out.add_(y)
        for k in identity:  # skip and the pooling ops: a p-weighted add
            y = pooled.get(k, x)
            out = y * p[k] if out is None else out.addcmul_(y, p[k])
        if out is None:
            raise ValueError("MixedOp needs at least one op")
        return out


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """BN running statistics of `module` as they were before the block (a recomputation)."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    try:
        yield
    finally:
        for m, (mean, var, n) in zip(bns, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)


def _recomputed(fn: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
    """fn(*args, update_stats=...) under activation checkpointing: recomputed in the backward pass,
    with BN running statistics updated in the first run only."""
    runs = []

    def run(*a):
        runs.append(None)
        return fn(*a, **kwargs, update_stats=len(runs) == 1)

    return _checkpoint(run, *args, use_reentrant=False, preserve_rng_state=False)


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
        self.checkpoint = "none"

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if self.checkpoint == "cell" and torch.is_grad_enabled():
            return _recomputed(self._forward, s0, s1, p)
        return self._forward(s0, s1, p, update_stats=True)

    @torch.no_grad()
    def _share_pool_stats(self, first: int, src: int) -> None:
        """The pooling BNs of every edge leaving node `src` see the same input: give them the
        running statistics that the first edge's BNs have just computed."""
        if not self.training:
            return
        for e, (s, _) in enumerate(self.topology.edges):
            if s == src and e != first:
                for k in self.edges[first].pool_ops:
                    _copy_stats(self.edges[first].ops[k][-1], self.edges[e].ops[k][-1])

    def _forward(self, s0: torch.Tensor, s1: torch.Tensor, p: torch.Tensor, update_stats: bool) -> torch.Tensor:
        ckpt = self.checkpoint == "edge" and torch.is_grad_enabled()
        if update_stats:
            states = list(self.preprocess(s0, s1))
        else:
            states = [_module_no_stats(self.preprocess.pre0, s0), _module_no_stats(self.preprocess.pre1, s1)]
        relus: list[torch.Tensor] = []
        pooled: list[dict[int, torch.Tensor]] = []
        e = 0
        for _node in range(self.topology.n_nodes):
            out = None
            for src in range(len(states)):
                if src == len(relus):  # the first edge leaving node src: what all its edges share
                    relus.append(F.relu(states[src]))
                    pooled.append(self.edges[e].pooled(states[src], update_stats))
                    if update_stats:
                        self._share_pool_stats(e, src)
                if ckpt:
                    y = _recomputed(self.edges[e], states[src], p[e], relus[src], pooled=pooled[src])
                else:
                    y = self.edges[e](states[src], p[e], relus[src], update_stats, pooled[src])
                out = y if out is None else out.add_(y)
                e += 1
            states.append(out)
        return torch.cat(states[self.topology.n_inputs:], dim=1)


    def forward_path(self, s0: torch.Tensor, s1: torch.Tensor, path: tuple[tuple[int, int], ...]) -> torch.Tensor:
        """The cell with only the edges and ops of `path`: (edge row, op index), two per node in node order."""
        states = list(self.preprocess(s0, s1))
        for node in range(self.topology.n_nodes):
            out = None
            for e, k in path[2 * node: 2 * node + 2]:
                y = self.edges[e].ops[k](states[self.topology.edges[e][0]])
                out = y if out is None else out + y
            states.append(out)
        return torch.cat(states[self.topology.n_inputs:], dim=1)


def _copy_stats(src: nn.BatchNorm2d, dst: nn.BatchNorm2d) -> None:
    dst.running_mean.copy_(src.running_mean)
    dst.running_var.copy_(src.running_var)
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _module_no_stats(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A preprocessing block (ReLUConvBN or FactorizedReduce) without updating BN running statistics."""
    if isinstance(module, FactorizedReduce):
        r = F.relu(x)
        shifted = F.pad(r, (0, 1, 0, 1))[:, :, 1:, 1:]
        return _batch_norm(module.bn, torch.cat([module.conv_1(r), module.conv_2(shifted)], dim=1), None, False)
    _relu, conv, bn = module
    return _batch_norm(bn, conv(F.relu(x)), None, False)


class SuperNet(nn.Module):
    """Stem conv 3x3 -> `layers` cells (reductions at 1/3 and 2/3) -> global pool -> linear.

    `checkpoint`: "none", "edge" (recompute each mixed op in the backward pass), "early" ("edge"
    in the cells before the second reduction, whose large maps hold most of the memory and are
    cheap to recompute) or "cell" (recompute each cell); less memory, more time, the same results.
    """

    def __init__(
        self,
        C: int = 16,
        num_classes: int = 10,
        layers: int = 8,
        in_channels: int = 3,
        stem_multiplier: int = 3,
        topology: Topology = DEFAULT_TOPOLOGY,
        primitives: tuple[str, ...] = PRIMITIVES,
        checkpoint: str = "none",
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
        self.set_checkpoint(checkpoint)

    def set_checkpoint(self, mode: str) -> None:
        if mode not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_MODES)}, got {mode!r}")
        self.checkpoint = mode
        second_reduction = reduction_indices(len(self.cells))[1]
        for i, cell in enumerate(self.cells):
            cell.checkpoint = ("edge" if i < second_reduction else "none") if mode == "early" else mode

    def forward(self, x: torch.Tensor, probs: CellProbs) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            p = probs.reduce if cell.reduction else probs.normal
            s0, s1 = s1, cell(s0, s1, p)
        return self.classifier(self.global_pool(s1).flatten(1))

    def forward_path(self, x: torch.Tensor, genotype: Genotype) -> torch.Tensor:
        """The logits of the single cell `genotype` on the supernet's weights: what `forward` gives for
        a P with a one on each chosen (edge, op) and zeros elsewhere, at a fraction of the work."""
        paths = {cell: tuple((self.topology.edges.index((src, self.topology.n_inputs + i // 2)),
                              self.primitives.index(op)) for i, (op, src) in enumerate(pairs))
                 for cell, pairs in ((False, genotype.normal), (True, genotype.reduce))}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell.forward_path(s0, s1, paths[cell.reduction])
        return self.classifier(self.global_pool(s1).flatten(1))


def reference_forward(net: SuperNet, x: torch.Tensor, probs: CellProbs) -> torch.Tensor:
    """`net(x, probs)` in DARTS's plain form, for tests and benchmarks.

    Every edge is `sum_k p_k * op_k(x)` with each op called whole (its own ReLU, plain convs), and
    every op output kept for the gradient of P when P requires one; same modules, same weights.
    """
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        p = probs.reduce if cell.reduction else probs.normal
        states = list(cell.preprocess(s0, s1))
        offset = 0
        for _node in range(cell.topology.n_nodes):
            states.append(sum(
                sum(w * _plain(op, h) for w, op in zip(p[offset + j], cell.edges[offset + j].ops, strict=True))
                for j, h in enumerate(states)
            ))
            offset += len(states) - 1
        s0, s1 = s1, torch.cat(states[cell.topology.n_inputs:], dim=1)
    return net.classifier(net.global_pool(s1).flatten(1))


def _plain(op: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`op(x)` with every Sequential (DilConv, SepConv included) run layer by layer, so dilated
    convs take their plain form too."""
    if isinstance(op, nn.Sequential):
        for layer in op:
            x = _plain(layer, x)
        return x
    return op(x)


def recompute_mode(setting: str, device: torch.device) -> str:
    """`model.checkpoint` for a device: `auto` recomputes the early cells' edges on the CPU (half the
    memory, where memory is scarcer than speed) and nothing on a GPU; other settings as given."""
    if setting == "auto":
        return "early" if device.type == "cpu" else "none"
    return str(setting)


def build_supernet(model: Any, in_channels: int, num_classes: int, device: torch.device | None = None) -> SuperNet:
    """The supernet of a search config's `model` section, for `device` (default: the CPU)."""
    return SuperNet(C=model.C, num_classes=num_classes, layers=model.layers, in_channels=in_channels,
                    stem_multiplier=model.stem_multiplier,
                    checkpoint=recompute_mode(model.checkpoint, device or torch.device("cpu")))
