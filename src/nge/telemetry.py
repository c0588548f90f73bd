"""Search telemetry: pure functions of P that show whether a search decided, and per edge.

Collapse in DARTS-family search shows as P near uniform (high entropy, small margin) or as one
op on every edge (few distinct argmax ops, a large majority share, rows that differ from their
mean row by little more than a shared offset). `cell_telemetry` measures all of these;
`cells_agreement` how often two cell types (normal, reduce) take the same argmax op on an edge.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import torch

from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellGenotype, Genotype, Topology


def cell_telemetry(p: torch.Tensor | Sequence[Sequence[float]]) -> dict[str, float | int]:
    """For one cell's P (edges x ops, rows summing to 1):

    - entropy: mean over edges of H(row) / log(O); 1 = uniform, 0 = one-hot;
    - margin: mean over edges of (largest - second largest) probability;
    - distinct: number of distinct argmax ops over the edges;
    - majority: share of edges whose argmax is the cell's most common argmax;
    - spread: mean over edges of the total-variation distance between the row and the mean row
      (0 when every row is the same, i.e. the edges differ by nothing beyond a shared offset).
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    n_edges, n_ops = p.shape
    entropy = -(p * p.clamp_min(1e-30).log()).sum(1) / math.log(n_ops)
    top2 = p.topk(2, dim=1).values
    argmax = p.argmax(1).tolist()
    counts = Counter(argmax)
    spread = 0.5 * (p - p.mean(0, keepdim=True)).abs().sum(1)
    return {
        "entropy": float(entropy.mean()),
        "margin": float((top2[:, 0] - top2[:, 1]).mean()),
        "distinct": len(counts),
        "majority": max(counts.values()) / n_edges,
        "spread": float(spread.mean()),
    }


def cells_agreement(a: torch.Tensor | Sequence[Sequence[float]], b: torch.Tensor | Sequence[Sequence[float]]) -> float:
    """The share of edges whose argmax op is the same in two cell types' P (edges x ops each); for two
    independent uniformly random cells its expectation is 1 / O (`random_cells_agreement`)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"cells_agreement needs two P of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a.argmax(1) == b.argmax(1)).double().mean())


def random_cells_agreement(n_ops: int = len(PRIMITIVES)) -> float:
    """`cells_agreement`'s expectation for two independent cells whose argmax ops are uniform: 1 / O (1/7 in DARTS)."""
    return 1 / n_ops


def probs_telemetry(*cells, names: Sequence[str] = ("normal", "reduce")) -> dict[str, float | int]:
    """`cell_telemetry` of every cell type's P, keys prefixed with the type's name (`normal_`, `reduce_`);
    with exactly two cell types also `cells_agreement` (the share of edges where their argmax ops agree)."""
    out: dict[str, float | int] = {}
    for name, p in zip(names, cells, strict=True):
        out.update({f"{name}_{k}": v for k, v in cell_telemetry(p).items()})
    if len(cells) == 2:
        out["cells_agreement"] = cells_agreement(*cells)
    return out


def op_counts(cell: CellGenotype, primitives: Sequence[str] = PRIMITIVES) -> dict[str, int]:
    """How often each op appears in a derived cell (ops that do not appear are left out), in op order."""
    counts = Counter(op for op, _ in cell)
    return {op: counts[op] for op in primitives if counts[op]}


def agreement(a, b) -> float:
    """The share of (node, input, op) choices two genotypes share: for every intermediate node of both
    cell types, how many of its two (input, op) choices the other genotype also makes there. For
    NAS-Bench-201 cells (every edge kept): the share of edges with the same op."""
    if hasattr(a, "ops"):
        return sum(x == y for x, y in zip(a.ops, b.ops, strict=True)) / len(a.ops)
    same = total = 0
    for c in ("normal", "reduce"):
        ca, cb = getattr(a, c), getattr(b, c)
        for k in range(0, len(ca), 2):
            same += len(set(ca[k:k + 2]) & set(cb[k:k + 2]))
            total += 2
    return same / total


def mean_agreement(genotypes: Sequence[Genotype]) -> float:
    """`agreement` averaged over every pair (of seeds)."""
    pairs = list(itertools.combinations(genotypes, 2))
    return sum(agreement(a, b) for a, b in pairs) / len(pairs)


def random_agreement(topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES)) -> float:
    """`agreement`'s expectation for two independent uniformly random cells (`space.random_genotype`),
    exactly: a node with m predecessors shares each of one cell's two choices with probability (2 / m) (1 / O)."""
    nodes = range(topology.n_inputs, topology.n_graph_nodes)
    return sum(2 / m / n_ops for m in nodes) / len(nodes)


RANDOM_AGREEMENT = random_agreement()
