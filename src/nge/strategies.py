"""Search strategies: how P, or the logits behind it, choose a cell (docs/paper.md section 6).
The one home of the strategies: the table `STRATEGIES`, their classes and their pure rules.

    gd  gradient descent on P through the mixed supernet (the paper's search; the task's steps)
    rl  REINFORCE: the parameterisation is a policy over whole cells, rewarded by validation accuracy
    ea  regularised evolution (Real et al. 2019) whose mutations the parameterisation proposes

A strategy sees the search through the protocol `Search` (nge.searching.SearchTask implements it);
this module never imports nge.searching.

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
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from nge.engine import Meter, Phase, RunDir, Zipped
from nge.errors import NGEError
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellGenotype, CellProbs, Genotype, Topology
from nge.spaces import genotype_from_dict, nb201
from nge.spaces.nb201 import Nb201Genotype

if TYPE_CHECKING:
    from nge.arch import ArchParam
    from nge.config import SearchRunConfig
    from nge.data import BatchLoader
    from nge.spaces import Space

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


def cell_mode_margin(logits: torch.Tensor, topology: Topology = DEFAULT_TOPOLOGY) -> float:
    """log pi(mode) - log pi(runner-up), in nats. log pi(cell) is, per node, a constant plus the two
    chosen logits, so the runner-up changes one decision of the mode: an op of a kept edge (its top
    logit minus its second) or the weaker kept edge for the best dropped one (their max logits)."""
    logits = logits.detach().double().cpu()
    gaps = []
    for node in _cell_nodes(topology):
        edge = logits[topology.incoming(node)]
        best = edge.max(dim=1).values
        order = sorted(range(len(best)), key=lambda r: -float(best[r]))
        if len(order) > 2:
            gaps.append(float(best[order[1]] - best[order[2]]))
        if edge.shape[1] > 1:
            top = edge.topk(2, dim=1).values
            gaps += [float(top[r, 0] - top[r, 1]) for r in order[:2]]
    return min(gaps, default=math.inf)


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


def mode_margin(logits: torch.Tensor, topology: Topology = DEFAULT_TOPOLOGY) -> float:
    """log pi(mode) - log pi(runner-up) over genotypes: the cells are independent, so the smaller cell's."""
    return min(cell_mode_margin(logits[0], topology), cell_mode_margin(logits[1], topology))


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
    return _draw(mutation_options(logits.detach().double().cpu(), parent, topology), gen)


def _draw(options: list[tuple[Mutation, torch.Tensor]], gen: torch.Generator) -> Mutation:
    probs = torch.stack([q for _, q in options]).exp()
    return options[int(torch.multinomial(probs, 1, generator=gen))][0]


def mutation_log_prob(logits: torch.Tensor, parent: Genotype, m: Mutation,
                      topology: Topology = DEFAULT_TOPOLOGY) -> torch.Tensor:
    return next(q for option, q in mutation_options(logits, parent, topology) if option == m)


def mutation_entropy(logits: torch.Tensor, parent: Genotype, topology: Topology = DEFAULT_TOPOLOGY) -> torch.Tensor:
    """The exact entropy (nats) of the mutation distribution of `parent`; differentiable."""
    logq = torch.stack([q for _, q in mutation_options(logits, parent, topology)])
    return -(logq.exp() * logq).sum()


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


# ---------------------------------------------------------------------------- NAS-Bench-201's policy
# One cell type, every edge kept: pi(cell) = prod_e P[e, op_e], so each edge is its own categorical. A
# mutation changes one edge's op: edge e with probability proportional to 1 - P[e, current op], the new op
# j != current with P[e, j] / (1 - P[e, current]); all-zero logits make both uniform.


def nb201_sample(logits: torch.Tensor, gen: torch.Generator) -> Nb201Genotype:
    p = F.softmax(logits[0].detach().double().cpu(), dim=-1)
    return Nb201Genotype(tuple(nb201.PRIMITIVES[int(torch.multinomial(row, 1, generator=gen))] for row in p))


def _op_index(g: Nb201Genotype) -> list[int]:
    return [nb201.PRIMITIVES.index(op) for op in g.ops]


def nb201_log_prob(logits: torch.Tensor, g: Nb201Genotype) -> torch.Tensor:
    logp = F.log_softmax(logits[0], dim=-1)
    return logp[torch.arange(logp.shape[0]), _op_index(g)].sum()


def nb201_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits[0], dim=-1)
    return -(logp.exp() * logp).sum()


def nb201_mode(logits: torch.Tensor) -> Nb201Genotype:
    return nb201.derive(logits[0].detach().cpu())


def nb201_margin(logits: torch.Tensor) -> float:
    """log pi(mode) - log pi(runner-up): the runner-up changes the edge whose top two logits are closest."""
    top = logits[0].detach().double().cpu().topk(2, dim=-1).values
    return float((top[:, 0] - top[:, 1]).min())


def nb201_mutation_options(logits: torch.Tensor, parent: Nb201Genotype) -> list[tuple[Mutation, torch.Tensor]]:
    """Every one-edge op change of `parent` with its log-probability under `logits` (1, n_edges, n_ops)."""
    L = logits[0]
    n_ops = L.shape[-1]
    current = _op_index(parent)
    others = [[j for j in range(n_ops) if j != c] for c in current]
    log_rest = torch.stack([torch.logsumexp(L[e, rest], 0) - torch.logsumexp(L[e], 0) for e, rest in enumerate(others)])
    edge_logq = F.log_softmax(log_rest, dim=0)
    out = []
    for e, rest in enumerate(others):
        op_logq = F.log_softmax(L[e, rest], dim=0)
        out += [(Mutation(e, "op", nb201.PRIMITIVES[j]), edge_logq[e] + op_logq[n]) for n, j in enumerate(rest)]
    return out


def nb201_mutate(parent: Nb201Genotype, m: Mutation) -> Nb201Genotype:
    ops = list(parent.ops)
    ops[m.slot] = str(m.value)
    return Nb201Genotype(tuple(ops))


@dataclass(frozen=True)
class Policy:
    """A space's policy over cells from the logits (n_cell_types, n_edges, n_ops), and its mutations."""

    sample: Callable
    log_prob: Callable
    entropy: Callable
    mode: Callable
    margin: Callable
    mutation_options: Callable
    mutate: Callable


# The one table of policies: space name -> Policy.
POLICIES = {
    "darts": Policy(sample_genotype, genotype_log_prob, genotype_entropy, mode_genotype, mode_margin,
                    mutation_options, mutate),
    "nb201": Policy(nb201_sample, nb201_log_prob, nb201_entropy, nb201_mode, nb201_margin,
                    nb201_mutation_options, nb201_mutate),
}


def _draw_mutation(policy: Policy, logits: torch.Tensor, parent, gen: torch.Generator) -> Mutation:
    return _draw(policy.mutation_options(logits.detach().double().cpu(), parent), gen)


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

    def select(self, gen: torch.Generator) -> tuple[Genotype, float]:
        """Tournament (Real et al. 2019, Algorithm 1): `tournament` members drawn uniformly with
        replacement; the fittest wins (ties: the youngest). Returns the winner and its fitness."""
        picks = torch.randint(len(self.members), (self.tournament,), generator=gen).tolist()
        return self.members[max(picks, key=lambda i: (self.members[i][1], i))]

    def best(self) -> tuple[Genotype, float]:
        """The fittest member (ties: the youngest)."""
        i = max(range(len(self.members)), key=lambda i: (self.members[i][1], i))
        return self.members[i]

    def margin(self) -> float:
        """The best fitness minus the best of the members that are another cell (inf: all one cell)."""
        g, f = self.best()
        return f - max((h for other, h in self.members if other != g), default=-math.inf)

    def state_dict(self) -> list[dict]:
        return [{"genotype": g.to_dict(), "fitness": f} for g, f in self.members]

    def load_state_dict(self, state: list[dict]) -> None:
        self.members = deque((genotype_from_dict(m["genotype"]), float(m["fitness"])) for m in state)


# ---------------------------------------------------------------------------- the strategies


def perturbation_importance(loss: Callable[[CellProbs], float], probs: CellProbs,
                            cell_types: tuple[str, ...] = ("normal", "reduce")) -> dict:
    """DARTS-PT's importances (Wang et al. 2021), from the validation loss of the supernet under P
    (`loss`): for each cell type, an op's importance is how much the loss rises when that one entry
    P[e, k] is set to 0 (the op masked out of its edge, P not renormalised), an edge's when its whole
    row is. One call for P plus n_cell_types x n_edges x (n_ops + 1), each on the same batches.
    `cell_types` names the matrices of P (the keys of the result)."""
    base = loss(probs)
    out: dict = {"base_loss": base}
    for c, cell in enumerate(cell_types):
        p = probs[c]
        ops = torch.zeros(p.shape, dtype=torch.float64)
        edges = torch.zeros(p.shape[0], dtype=torch.float64)
        for e in range(p.shape[0]):
            for k in range(-1, p.shape[1]):  # -1: the whole edge
                q = p.clone()
                q[e, k if k >= 0 else slice(None)] = 0
                rise = loss(CellProbs(*probs[:c], q, *probs[c + 1:])) - base
                if k >= 0:
                    ops[e, k] = rise
                else:
                    edges[e] = rise
        out[cell] = {"ops": ops, "edges": edges}
    return out


def first_batches(loader: BatchLoader, n: int) -> list:
    """The epoch's first `n` batches of `loader` (all of them if it has fewer)."""
    return list(itertools.islice(loader.batches_from(0), n))


class Search(Protocol):
    """What a strategy reads and drives of a search (`nge.searching.SearchTask`): the config, the
    parameterisation, the loaders, P's history and the task's steps."""

    cfg: SearchRunConfig
    space: Space
    arch: ArchParam
    train_loader: BatchLoader
    val_loader: BatchLoader
    p_history: list[CellProbs]

    def weight_step(self, x: torch.Tensor, y: torch.Tensor, probs: CellProbs, meter: Meter) -> None: ...
    def arch_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None: ...
    def path_weight_step(self, x: torch.Tensor, y: torch.Tensor, genotype: Genotype, meter: Meter) -> None: ...
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, genotype: Genotype, meter: Meter | None = None) -> float: ...
    def arch_update(self, loss: torch.Tensor) -> None: ...
    def loss(self, batches: list, probs: CellProbs) -> float: ...



class Gradient:
    """gd: the paper's search. Epoch-wise alternation (default): compute P once, train w over every
    training batch with P fixed, then update the parameterisation over every validation batch,
    recomputing P each step (first order). Per-batch alternation (DARTS) interleaves one arch step
    per weight step. The genotype is derived from the last P (`nge.derive`), or with
    `search.select=perturbation` from the importances of `perturbation_importance`, measured on the
    trained supernet on the first `search.select_batches` validation batches."""

    def __init__(self, task: Search):
        self.task = task
        self.importance: dict | None = None
        self.select_seconds = 0.0

    def phases(self, epoch: int) -> list[Phase]:
        t = self.task
        warmup = epoch < t.cfg.search.warmup_epochs
        if t.cfg.search.alternation == "epoch" or warmup:
            # P is computed once; the parameterisation does not change during the weight phase, so a
            # resumed epoch recomputes the same P.
            with torch.no_grad():
                probs = t.arch().detach()
            weights = Phase("weights", t.train_loader, lambda b, m: t.weight_step(*b, probs, m["train"]))
            return [weights] if warmup else [weights, Phase("arch", t.val_loader, lambda b, m: t.arch_step(*b, m["val"]))]

        def alternate(batch, meters: dict[str, Meter]) -> None:
            (xt, yt), (xv, yv) = batch
            t.arch_step(xv, yv, meters["val"])
            with torch.no_grad():
                probs = t.arch().detach()
            t.weight_step(xt, yt, probs, meters["train"])

        return [Phase("alternating", Zipped(t.train_loader, t.val_loader), alternate)]

    def end_epoch(self) -> dict[str, float]:
        return {}

    def genotype(self) -> Genotype:
        t = self.task
        p = t.p_history[-1]
        if t.cfg.search.select == "argmax":
            return t.space.derive(p)
        if self.importance is None:  # measured once, after the last epoch
            start = time.perf_counter()
            batches = first_batches(t.val_loader, t.cfg.search.select_batches)
            self.importance = perturbation_importance(lambda q: t.loss(batches, q), CellProbs(*(x.to(t.device) for x in p)),
                                                      t.space.cell_types)
            self.select_seconds = time.perf_counter() - start
        return t.space.from_importance(self.importance)

    def finish(self, run: RunDir, log: Callable[[str], None]) -> dict:
        """Writes the strategy's own files, logs its lines; returns its summary fields."""
        t = self.task
        if t.cfg.search.select == "argmax":
            return {}
        self.genotype()  # measures the importances if nothing has yet
        p = t.p_history[-1]
        imp = {c: {k: v.tolist() for k, v in self.importance[c].items()} for c in t.space.cell_types}
        run.write_text("importance.json", json.dumps({"base_loss": self.importance["base_loss"], **imp}, indent=1) + "\n")
        n = 1 + sum(x.numel() + x.shape[0] for x in p)  # P itself, then every op and every edge masked
        log(f"perturbation selection: {n} supernet validations on {t.cfg.search.select_batches} batches in "
            f"{self.select_seconds:.0f} s; importances in {run.file('importance.json')}")
        argmax = t.space.derive(p)
        out = {"select_seconds": self.select_seconds, "argmax_genotype": argmax.to_dict()}
        if t.space.has_ground_truth:
            from nge.spaces.nb201_table import lookup

            out["argmax_ground_truth"] = lookup(argmax)
        return out

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class _Sampling:
    """Shared by rl and ea: single-path weight training on uniform draws (module docstring), and
    the arch phase's own generator. Subclasses supply `arch_step(x, y, meter)`."""

    def __init__(self, task: Search):
        self.task = task
        seed = task.cfg.runtime.seed
        self.path_gen = torch.Generator().manual_seed(seed)  # the weights' uniform cells
        self.gen = torch.Generator().manual_seed(seed + 1)  # the strategy's own draws
        sp = task.space
        self.policy = POLICIES[sp.name]
        self.uniform = torch.zeros(len(sp.cell_types), sp.topology.n_edges, len(sp.primitives))

    def phases(self, epoch: int) -> list[Phase]:
        t = self.task

        def weight_step(batch, meters: dict[str, Meter]) -> None:
            t.path_weight_step(*batch, self.policy.sample(self.uniform, self.path_gen), meters["train"])

        weights = Phase("weights", t.train_loader, weight_step)
        if epoch < t.cfg.search.warmup_epochs:
            return [weights]
        return [weights, Phase("arch", t.val_loader, lambda b, m: self.arch_step(*b, m["val"]))]

    def logits(self) -> torch.Tensor:
        return self.task.arch.cell_logits().float().cpu()

    def state_dict(self) -> dict:
        return {"path_gen": self.path_gen.get_state(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.path_gen.set_state(state["path_gen"])
        self.gen.set_state(state["gen"])


# Below this margin (nats) between the most probable cell and the runner-up, rl's cell is a tie-break:
# the runner-up is at least 99% as probable (all-zero logits, e.g. decayed to 1e-17, give exactly 0).
TIE_BREAK_NATS = 0.01


class Reinforce(_Sampling):
    """rl: each validation step samples one cell from pi, rewards it with its accuracy on the batch
    (shared weights), and takes an Adam step on -(R - b) log pi(cell) - beta H(pi), with b the
    moving average of the rewards (started at the first reward). The genotype is pi's mode; its margin
    over the runner-up (`mode_margin`) is reported, and below `TIE_BREAK_NATS` the cell is a tie-break."""

    def __init__(self, task: Search):
        super().__init__(task)
        self.baseline: float | None = None

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        t, rl = self.task, self.task.cfg.search.rl
        logits, pi = self.logits(), self.policy
        g = pi.sample(logits, self.gen)
        reward = t.accuracy(x, y, g, meter)
        if self.baseline is None:
            self.baseline = reward
        t.arch_update(-(reward - self.baseline) * pi.log_prob(logits, g) - rl.entropy_weight * pi.entropy(logits))
        self.baseline = rl.baseline_decay * self.baseline + (1 - rl.baseline_decay) * reward

    def end_epoch(self) -> dict[str, float]:
        with torch.no_grad():
            logits = self.logits()
            h = float(self.policy.entropy(logits))
        return {"rl_baseline": self.baseline if self.baseline is not None else float("nan"), "policy_entropy": h,
                "mode_margin": self.policy.margin(logits)}

    def genotype(self) -> Genotype:
        with torch.no_grad():
            return self.policy.mode(self.logits())

    def finish(self, run: RunDir, log: Callable[[str], None]) -> dict:
        with torch.no_grad():
            margin = self.policy.margin(self.logits())
        tie = margin < TIE_BREAK_NATS
        if tie:
            log(f"nge: warning: the rl cell is a tie-break: the policy's runner-up cell is within {TIE_BREAK_NATS} "
                f"nats of it (mode margin {margin:.3g} nats), so the policy did not choose it")
        else:
            log(f"rl: mode margin {margin:.3g} nats (log-probability of the chosen cell minus the runner-up's)")
        return {"mode_margin": margin, "tie_break": tie}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "baseline": self.baseline}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.baseline = state["baseline"]


class Evolution(_Sampling):
    """ea: regularised evolution (Real et al. 2019, Algorithm 1) on shared weights. Every fitness of an
    epoch is the accuracy on the same validation batches (the epoch's first `search.ea.rank_batches`)
    with the same weights (the arch phase does not train them): at the epoch's first arch step every
    member is re-measured, so a tournament never compares fitness of older weights or other batches.
    While the population is not full, each arch step adds a uniform random cell. Then each step: a
    tournament (members drawn with replacement) picks a parent, a mutation drawn from the embedding's
    distributions (or uniformly, `search.ea.mutation=uniform`) makes a child, the child joins with its
    fitness and the oldest member dies. The embedding takes an Adam step on
    -(f_child - f_parent) log q(mutation) - beta H(q): mutations that beat their parent become
    likelier, and the entropy bonus (`search.ea.entropy_weight`) keeps q from collapsing onto one
    mutation. The genotype is the fittest member of the final population (ties: the youngest), every
    fitness re-measured with the final weights in the last arch phase."""

    def __init__(self, task: Search):
        super().__init__(task)
        s, batches = task.cfg.search, len(task.val_loader)
        ea, epochs = s.ea, s.epochs - s.warmup_epochs  # the epochs with an arch phase
        if epochs * batches <= ea.population:
            raise NGEError(f"search.ea.population={ea.population} never fills: {epochs} epochs with an arch phase x "
                           f"{batches} validation batches = {epochs * batches} arch steps, so no cell would be mutated; "
                           f"raise search.epochs to at least {s.warmup_epochs + ea.population // batches + 1} (or the "
                           f"validation batches), or lower search.ea.population below {epochs * batches}")
        self.population = Population(ea.population, ea.tournament)
        self.learn = ea.mutation == "embedding"
        self.epoch = -1
        self.scored = -1  # the epoch whose weights and batches measured the population's fitness
        self._scoring: tuple[int, list] | None = None  # (epoch, its scoring batches)

    def phases(self, epoch: int) -> list[Phase]:
        self.epoch = epoch
        return super().phases(epoch)

    def scoring_batches(self) -> list:
        """The epoch's first `rank_batches` validation batches (all of them if there are fewer)."""
        if self._scoring is None or self._scoring[0] != self.epoch:
            self._scoring = (self.epoch, first_batches(self.task.val_loader, self.task.cfg.search.ea.rank_batches))
        return self._scoring[1]

    def fitness(self, g: Genotype, meter: Meter | None = None) -> float:
        """`g`'s accuracy on the scoring batches with the current shared weights."""
        batches = self.scoring_batches()
        right = sum(self.task.accuracy(x, y, g, meter) * len(y) for x, y in batches)
        return right / sum(len(y) for _, y in batches)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor, meter: Meter) -> None:
        # (x, y) only paces the phase: every fitness of the epoch is measured on the scoring batches
        t, ea = self.task, self.task.cfg.search.ea
        if self.scored != self.epoch:  # the weights have changed since the members were measured
            members = self.population.members
            for i, (g, _) in enumerate(members):
                members[i] = (g, self.fitness(g))
            self.scored = self.epoch
        if not self.population.full():
            g = self.policy.sample(self.uniform, self.gen)
            self.population.add(g, self.fitness(g, meter))
            return
        parent, parent_fitness = self.population.select(self.gen)
        logits = self.logits() if self.learn else self.uniform
        m = _draw_mutation(self.policy, logits, parent, self.gen)
        child = self.policy.mutate(parent, m)
        fitness = self.fitness(child, meter)
        if self.learn:
            options = self.policy.mutation_options(logits, parent)
            logq = torch.stack([q for _, q in options])
            chosen = logq[[option for option, _ in options].index(m)]
            t.arch_update(-(fitness - parent_fitness) * chosen + ea.entropy_weight * (logq.exp() * logq).sum())
        self.population.add(child, fitness)

    def mutation_entropy(self) -> float:
        """The mean over the members of their mutation distribution's entropy (nats)."""
        with torch.no_grad():
            logits = self.logits() if self.learn else self.uniform
            logq = [torch.stack([q for _, q in self.policy.mutation_options(logits, g)]) for g, _ in self.population.members]
            return sum(float(-(q.exp() * q).sum()) for q in logq) / len(logq)

    def tie_threshold(self) -> float:
        """Half a scoring image: fitness values closer than that are equal."""
        t = self.task
        return 0.5 / (min(t.cfg.search.ea.rank_batches, len(t.val_loader)) * t.val_loader.batch_size)

    def end_epoch(self) -> dict[str, float]:
        fitness = [f for _, f in self.population.members]
        if not fitness:  # a warm-up epoch: no cell scored yet
            return {}
        return {"ea_best_fitness": max(fitness), "ea_mean_fitness": sum(fitness) / len(fitness),
                "mode_margin": self.population.margin(), "mutation_entropy": self.mutation_entropy()}

    def genotype(self) -> Genotype:
        return self.population.best()[0]

    def finish(self, run: RunDir, log: Callable[[str], None]) -> dict:
        run.write_text("population.json", json.dumps(self.population.state_dict(), indent=1) + "\n")
        margin, threshold = self.population.margin(), self.tie_threshold()
        tie = margin < threshold
        if tie:
            log(f"nge: warning: the ea cell is a tie-break: another cell of the final population has its fitness "
                f"(margin {margin:.4g} < half a scoring image, {threshold:.4g}); the youngest was taken")
        else:
            log(f"ea: mode margin {margin:.4g} (the chosen cell's fitness minus the best other cell's)")
        return {"mode_margin": margin, "tie_break": tie, "mutation_entropy": self.mutation_entropy()}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "population": self.population.state_dict(), "scored": self.scored}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.population.load_state_dict(state["population"])
        self.scored = state["scored"]


# The one table of search strategies: config name -> class (docs/paper.md section 6).
STRATEGIES = {"gd": Gradient, "rl": Reinforce, "ea": Evolution}
