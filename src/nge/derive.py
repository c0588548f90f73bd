"""Derivation (docs/paper.md section 3): a pure function from P to a genotype."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellGenotype, Genotype, Topology


def derive_cell(
    p: torch.Tensor | Sequence[Sequence[float]],
    topology: Topology = DEFAULT_TOPOLOGY,
    primitives: Sequence[str] = PRIMITIVES,
    k: int = 2,
    strength: torch.Tensor | Sequence[float] | None = None,
) -> CellGenotype:
    """For each intermediate node keep the k strongest incoming edges (strength: the edge's largest
    op probability, or the given per-edge scores), each with its argmax op. Ties go to the earlier
    edge / earlier op. `p` may be any per-(edge, op) score, e.g. an importance."""
    p = torch.as_tensor(p, dtype=torch.float64).detach().cpu()
    if p.shape != (topology.n_edges, len(primitives)):
        raise ValueError(f"P must be {topology.n_edges} x {len(primitives)}, got {tuple(p.shape)}")
    pairs = []
    for node in range(topology.n_inputs, topology.n_graph_nodes):
        rows = topology.incoming(node)
        best_p, best_op = p[rows].max(dim=1)
        if strength is not None:
            best_p = torch.as_tensor(strength, dtype=torch.float64)[rows]
        # stable sort: equal strengths keep edge order
        order = sorted(range(len(rows)), key=lambda r: -float(best_p[r]))[:k]
        for r in sorted(order, key=lambda r: topology.edges[rows[r]][0]):
            src = topology.edges[rows[r]][0]
            pairs.append((primitives[int(best_op[r])], src))
    return tuple(pairs)


def derive(
    p_normal: torch.Tensor,
    p_reduce: torch.Tensor,
    topology: Topology = DEFAULT_TOPOLOGY,
    primitives: Sequence[str] = PRIMITIVES,
) -> Genotype:
    concat = tuple(range(topology.n_inputs, topology.n_graph_nodes))
    return Genotype(
        normal=derive_cell(p_normal, topology, primitives),
        normal_concat=concat,
        reduce=derive_cell(p_reduce, topology, primitives),
        reduce_concat=concat,
    )
