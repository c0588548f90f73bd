"""Search strategies: how P, or the logits behind it, choose a cell (docs/paper.md section 6).

    gd  gradient descent on P through the mixed supernet (the paper's search; `SearchTask` steps)
    rl  REINFORCE: the parameterisation is a policy over whole cells, rewarded by validation accuracy
    ea  regularised evolution (Real et al. 2019) whose mutations the parameterisation proposes

rl and ea train the shared weights single path, as SPOS (Guo et al. 2020) does: each training step
trains one cell drawn uniformly from the space, so the weights never favour the cells a policy
liked early (the rich-get-richer bias of training only sampled cells) and cost a fraction of a
mixed step. The draws come from their own generator, so for one seed rl and ea train identical
weights and differ only in how they choose.

The policy over a cell, from the logits L (n_edges x n_ops) whose softmax over ops is P:
- each intermediate node takes an unordered pair of distinct inputs {a, b} with probability
  softmax over all pairs of s_a + s_b, where s_e = logsumexp_k L[e, k] is the edge's weight;
- each chosen edge e takes op k with probability P[e, k] = softmax(L[e])_k.
So pair and op are the marginal and conditional of a softmax over (edge, op), and P keeps its
meaning; the log-probability of a cell is the exact sum of these terms (`log_prob`). All-zero
logits give the uniform distribution over the space (`random_genotype`'s).

A mutation (ea) of a parent cell, under the same logits:
- a slot (one of the 2 x 8 (op, input) pairs of the two cells) with probability proportional to
  1 - P[e, op] of its current edge and op: the less the embedding likes a choice, the likelier it
  is to change;
- an op change or an input change, 1/2 each (only an op change where the node has no free input);
- an op change takes op k != current with probability P[e, k] / (1 - P[e, current]); an input change
  takes a source j not among the node's two inputs with probability proportional to exp(s_j),
  and keeps the slot's op.
Under all-zero logits these are uniform: the uniform-mutation baseline.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellGenotype, Genotype, Topology

# ---------------------------------------------------------------------------- the policy over cells


def _pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def _node_terms(logits: torch.Tensor, node: int, topology: Topology):
    """For `node`: its incoming rows, their pairs, log pi(pair) and log P over ops of each incoming edge."""
    rows = topology.incoming(node)
    edge = logits[rows]
    s = torch.logsumexp(edge, dim=1)
    pairs = _pairs(len(rows))
    a, b = zip(*pairs, strict=True)
    pair_logp = F.log_softmax(s[list(a)] + s[list(b)], dim=0)
    return rows, pairs, pair_logp, F.log_softmax(edge, dim=1)


def _cell_nodes(topology: Topology):
    return range(topology.n_inputs, topology.n_graph_nodes)


def cell_log_prob(logits: torch.Tensor, cell: CellGenotype, topology: Topology = DEFAULT_TOPOLOGY,
                  primitives: tuple[str, ...] = PRIMITIVES) -> torch.Tensor:
    """log pi(cell) under one cell type's logits (n_edges, n_ops); differentiable."""
    total = logits.new_zeros(())
    for i, node in enumerate(_cell_nodes(topology)):
        rows, pairs, pair_logp, op_logp = _node_terms(logits, node, topology)
        (op_a, src_a), (op_b, src_b) = sorted(cell[2 * i: 2 * i + 2], key=lambda p: p[1])
        total = total + pair_logp[pairs.index((src_a, src_b))]
        total = total + op_logp[src_a, primitives.index(op_a)] + op_logp[src_b, primitives.index(op_b)]
    return total


def cell_entropy(logits: torch.Tensor, topology: Topology = DEFAULT_TOPOLOGY) -> torch.Tensor:
    """The exact entropy of pi over cells: per node H(pair) + sum over pairs pi(pair) (H(op_a) + H(op_b))."""
    total = logits.new_zeros(())
    for node in _cell_nodes(topology):
        _rows, pairs, pair_logp, op_logp = _node_terms(logits, node, topology)
        op_h = -(op_logp.exp() * op_logp).sum(1)
        a, b = zip(*pairs, strict=True)
        p = pair_logp.exp()
        total = total - (p * pair_logp).sum() + (p * (op_h[list(a)] + op_h[list(b)])).sum()
    return total


def sample_cell(logits: torch.Tensor, gen: torch.Generator, topology: Topology = DEFAULT_TOPOLOGY,
                primitives: tuple[str, ...] = PRIMITIVES) -> CellGenotype:
    logits = logits.detach().double().cpu()
    out = []
    for node in _cell_nodes(topology):
        _rows, pairs, pair_logp, op_logp = _node_terms(logits, node, topology)
        for src in pairs[int(torch.multinomial(pair_logp.exp(), 1, generator=gen))]:
            out.append((primitives[int(torch.multinomial(op_logp[src].exp(), 1, generator=gen))], src))
    return tuple(out)


def mode_cell(logits: torch.Tensor, topology: Topology = DEFAULT_TOPOLOGY,
              primitives: tuple[str, ...] = PRIMITIVES) -> CellGenotype:
    """The most probable cell: pi(pair) P[a, op_a] P[b, op_b] is largest for the two edges with the
    largest max_k L[e, k], each with its argmax op (ties: the earlier edge, the earlier op)."""
    logits = logits.detach().double().cpu()
    out = []
    for node in _cell_nodes(topology):
        best, ops = logits[topology.incoming(node)].max(dim=1)
        keep = sorted(sorted(range(len(best)), key=lambda r: -float(best[r]))[:2])
        out += [(primitives[int(ops[r])], r) for r in keep]
    return tuple(out)


def _genotype(normal: CellGenotype, reduce: CellGenotype, topology: Topology) -> Genotype:
    concat = tuple(range(topology.n_inputs, topology.n_graph_nodes))
    return Genotype(normal, concat, reduce, concat)


def sample_genotype(logits: torch.Tensor, gen: torch.Generator, topology: Topology = DEFAULT_TOPOLOGY) -> Genotype:
    """A genotype drawn from pi; `logits` (2, n_edges, n_ops): normal, then reduction cell."""
    return _genotype(sample_cell(logits[0], gen, topology), sample_cell(logits[1], gen, topology), topology)


def genotype_log_prob(logits: torch.Tensor, g: Genotype, topology: Topology = DEFAULT_TOPOLOGY) -> torch.Tensor:
    return cell_log_prob(logits[0], g.normal, topology) + cell_log_prob(logits[1], g.reduce, topology)


def genotype_entropy(logits: torch.Tensor, topology: Topology = DEFAULT_TOPOLOGY) -> torch.Tensor:
    return cell_entropy(logits[0], topology) + cell_entropy(logits[1], topology)


def mode_genotype(logits: torch.Tensor, topology: Topology = DEFAULT_TOPOLOGY) -> Genotype:
    return _genotype(mode_cell(logits[0], topology), mode_cell(logits[1], topology), topology)


def uniform_logits(topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES)) -> torch.Tensor:
    return torch.zeros(2, topology.n_edges, n_ops)


# ---------------------------------------------------------------------------- mutations


@dataclass(frozen=True)
class Mutation:
    """Change slot `slot` (0..15: normal cell's 8, then the reduction cell's) to a new op or a new input."""

    slot: int
    kind: str  # "op" or "input"
    value: str | int  # the new op name, or the new input node


def _slot(g: Genotype, slot: int, per_cell: int) -> tuple[CellGenotype, int]:
    return (g.normal if slot < per_cell else g.reduce), slot % per_cell


def _free_inputs(cell: CellGenotype, k: int, topology: Topology) -> list[int]:
    node, pair = topology.n_inputs + k // 2, cell[k - k % 2: k - k % 2 + 2]
    return [j for j in range(node) if j not in {src for _, src in pair}]


def _edge(topology: Topology, src: int, k: int) -> int:
    return topology.edges.index((src, topology.n_inputs + k // 2))


def mutation_options(logits: torch.Tensor, parent: Genotype, topology: Topology = DEFAULT_TOPOLOGY,
                     primitives: tuple[str, ...] = PRIMITIVES) -> list[tuple[Mutation, torch.Tensor]]:
    """Every mutation of `parent` with its log-probability q under `logits` (2, n_edges, n_ops);
    the q sum to 1. Differentiable in `logits`."""
    per_cell = 2 * topology.n_nodes
    n_ops = logits.shape[-1]
    scores = torch.logsumexp(logits, dim=-1)
    slots = []  # (cell, slot in cell, edge row, current op index)
    for slot in range(2 * per_cell):
        cell, k = _slot(parent, slot, per_cell)
        op, src = cell[k]
        slots.append((slot // per_cell, k, _edge(topology, src, k), primitives.index(op)))
    # log(1 - P[e, op]) as logsumexp over the other ops minus over all: finite however sure P is
    others = [[j for j in range(n_ops) if j != o] for *_, o in slots]
    log_rest = torch.stack([torch.logsumexp(logits[c, e, rest], 0) - scores[c, e]
                            for (c, _, e, _), rest in zip(slots, others, strict=True)])
    slot_logq = F.log_softmax(log_rest, dim=0)
    out = []
    for slot, ((c, k, e, _), rest) in enumerate(zip(slots, others, strict=True)):
        cell = parent.normal if c == 0 else parent.reduce
        free = _free_inputs(cell, k, topology)
        kind_logq = math.log(0.5) if free else 0.0
        op_logq = F.log_softmax(logits[c, e, rest], dim=0)  # P[e, j] / (1 - P[e, op]) over j != op
        out += [(Mutation(slot, "op", primitives[j]), slot_logq[slot] + kind_logq + op_logq[n])
                for n, j in enumerate(rest)]
        if free:
            in_logq = F.log_softmax(scores[c, [_edge(topology, j, k) for j in free]], dim=0)
            out += [(Mutation(slot, "input", j), slot_logq[slot] + kind_logq + in_logq[n]) for n, j in enumerate(free)]
    return out


def sample_mutation(logits: torch.Tensor, parent: Genotype, gen: torch.Generator,
                    topology: Topology = DEFAULT_TOPOLOGY) -> Mutation:
    options = mutation_options(logits.detach().double().cpu(), parent, topology)
    probs = torch.stack([q for _, q in options]).exp()
    return options[int(torch.multinomial(probs, 1, generator=gen))][0]


def mutation_log_prob(logits: torch.Tensor, parent: Genotype, m: Mutation,
                      topology: Topology = DEFAULT_TOPOLOGY) -> torch.Tensor:
    return next(q for option, q in mutation_options(logits, parent, topology) if option == m)


def mutate(parent: Genotype, m: Mutation, topology: Topology = DEFAULT_TOPOLOGY) -> Genotype:
    per_cell = 2 * topology.n_nodes
    cell, k = _slot(parent, m.slot, per_cell)
    op, src = cell[k]
    new = list(cell)
    new[k] = (m.value, src) if m.kind == "op" else (op, m.value)
    first = k - k % 2
    new[first: first + 2] = sorted(new[first: first + 2], key=lambda p: p[1])  # inputs in ascending order
    if m.slot < per_cell:
        return _genotype(tuple(new), parent.reduce, topology)
    return _genotype(parent.normal, tuple(new), topology)


# ---------------------------------------------------------------------------- the evolution's population


class Population:
    """Regularised evolution's population: a queue, oldest first, of (genotype, fitness)."""

    def __init__(self, size: int, tournament: int):
        self.size, self.tournament = size, tournament
        self.members: deque[tuple[Genotype, float]] = deque()

    def full(self) -> bool:
        return len(self.members) >= self.size

    def add(self, genotype: Genotype, fitness: float) -> None:
        """Append the newest; past `size`, the oldest dies (ageing, whatever its fitness)."""
        self.members.append((genotype, fitness))
        if len(self.members) > self.size:
            self.members.popleft()

    def select(self, gen: torch.Generator) -> Genotype:
        """Tournament: `tournament` members drawn uniformly without replacement; the fittest wins
        (ties: the youngest)."""
        picks = torch.randperm(len(self.members), generator=gen)[: self.tournament].tolist()
        return self.members[max(picks, key=lambda i: (self.members[i][1], i))][0]

    def best(self) -> tuple[Genotype, float]:
        """The fittest member (ties: the youngest)."""
        i = max(range(len(self.members)), key=lambda i: (self.members[i][1], i))
        return self.members[i]

    def state_dict(self) -> list[dict]:
        return [{"genotype": g.to_dict(), "fitness": f} for g, f in self.members]

    def load_state_dict(self, state: list[dict]) -> None:
        self.members = deque((Genotype.from_dict(m["genotype"]), float(m["fitness"])) for m in state)
