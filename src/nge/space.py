"""Search space: cell topology, P's container and genotypes (docs/paper.md section 1).

This module is the only place that knows the edge order of a cell. The candidate operations are
the keys of `ops.OPS`, in the paper's order (`PRIMITIVES`); genotypes are plain data.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nge.errors import NGEError
from nge.ops import PRIMITIVES

if TYPE_CHECKING:
    import torch

NUM_INPUTS = 2  # outputs of the two previous cells
NUM_NODES = 4  # intermediate nodes per cell
NUM_GRAPH_NODES = NUM_INPUTS + NUM_NODES  # |V| = 6; the output node is not a graph node
DARTS_CELL_TYPES: tuple[str, ...] = ("normal", "reduce")


@dataclass(frozen=True)
class Topology:
    """Node and edge layout of a cell. Nodes 0..n_inputs-1 are inputs, then intermediate nodes."""

    n_inputs: int = NUM_INPUTS
    n_nodes: int = NUM_NODES

    @property
    def n_graph_nodes(self) -> int:
        return self.n_inputs + self.n_nodes

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(source, target) pairs, the row order of P: for each target, sources ascending."""
        return tuple(
            (j, i)
            for i in range(self.n_inputs, self.n_graph_nodes)
            for j in range(i)
        )

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def incoming(self, node: int) -> list[int]:
        """Row indices (into P) of the edges that end at `node`."""
        return [e for e, (_, t) in enumerate(self.edges) if t == node]

    def adjacency(self) -> list[list[float]]:
        """A of Eq. 6 read with the receiving node as the row: A[i][j] = 1/(i+1) for j < i, i > 1.

        Uses 0-based node indices. Input nodes (rows 0, 1) receive nothing.
        """
        n = self.n_graph_nodes
        return [
            [1.0 / (i + 1) if (j < i and i >= self.n_inputs) else 0.0 for j in range(n)]
            for i in range(n)
        ]

    def space_size(self, n_ops: int = len(PRIMITIVES)) -> int:
        """Number of distinct cells: prod over blocks of C(inputs, 2) * O^2 (paper, Search Space)."""
        return math.prod(
            math.comb(self.n_inputs + k, 2) * n_ops**2 for k in range(self.n_nodes)
        )


DEFAULT_TOPOLOGY = Topology()

CellGenotype = tuple[tuple[str, int], ...]


class CellProbs(tuple):
    """P, the operation probabilities of every cell type of a space: one (n_edges, n_ops) tensor per
    type whose rows sum to 1, rows in `Topology.edges` order, columns in the space's op order. The
    DARTS space has two types (`normal`, `reduce`), NAS-Bench-201 one."""

    def __new__(cls, *cells: torch.Tensor) -> CellProbs:
        return super().__new__(cls, cells)

    def __getnewargs__(self) -> tuple:  # pickling and copying call __new__ with the cells
        return tuple(self)

    @property
    def normal(self) -> torch.Tensor:
        return self[0]

    @property
    def reduce(self) -> torch.Tensor:
        if len(self) < 2:
            raise AttributeError("this space has one cell type: no reduction cell")
        return self[1]

    def detach(self) -> CellProbs:
        return CellProbs(*(p.detach() for p in self))


@dataclass(frozen=True)
class Genotype:
    """A searched architecture as plain data, with DARTS's field names.

    `normal`/`reduce` hold 2 (op, input) pairs per intermediate node, in node order.
    """

    normal: CellGenotype
    normal_concat: tuple[int, ...]
    reduce: CellGenotype
    reduce_concat: tuple[int, ...]

    def to_dict(self) -> dict:
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: object, topology: Topology = DEFAULT_TOPOLOGY) -> Genotype:
        """Validate and build. Raises NGEError naming the first problem found."""
        if not isinstance(d, dict):
            raise NGEError("genotype must be a JSON object with keys normal, normal_concat, reduce, reduce_concat")
        keys = ("normal", "normal_concat", "reduce", "reduce_concat")
        missing = [k for k in keys if k not in d]
        if missing:
            raise NGEError(f"genotype is missing key(s) {', '.join(missing)}")
        extra = sorted(set(d) - set(keys))
        if extra:
            raise NGEError(f"genotype has unknown key(s) {', '.join(map(str, extra))}")
        cells = {}
        for name in ("normal", "reduce"):
            cells[name] = _validate_cell(name, d[name], topology)
            cells[name + "_concat"] = _validate_concat(name + "_concat", d[name + "_concat"], topology)
        return cls(**cells)

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise NGEError(f"genotype is not valid JSON ({e})") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise NGEError(f"cannot read genotype file {path}: {e}") from None
        try:
            return cls.from_json(text)
        except NGEError as e:
            raise NGEError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


def random_genotype(seed: int, topology: Topology = DEFAULT_TOPOLOGY,
                    primitives: tuple[str, ...] = PRIMITIVES) -> Genotype:
    """A genotype drawn uniformly from the search space: for every intermediate node of each cell
    two distinct inputs (a uniform pair among its predecessors) and, independently, a uniform op
    for each. The same seed gives the same genotype (the random-cell baseline, Yang et al. 2020)."""
    rng = random.Random(seed)
    concat = tuple(range(topology.n_inputs, topology.n_graph_nodes))

    def cell() -> CellGenotype:
        pairs = []
        for node in range(topology.n_inputs, topology.n_graph_nodes):
            for src in sorted(rng.sample(range(node), 2)):
                pairs.append((rng.choice(primitives), src))
        return tuple(pairs)

    normal = cell()
    return Genotype(normal=normal, normal_concat=concat, reduce=cell(), reduce_concat=concat)


def _validate_cell(name: str, cell: object, topology: Topology) -> CellGenotype:
    want = 2 * topology.n_nodes
    if not isinstance(cell, (list, tuple)) or len(cell) != want:
        raise NGEError(f"genotype '{name}' must be a list of {want} [op, input] pairs (2 per intermediate node)")
    pairs = []
    for k, pair in enumerate(cell):
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or isinstance(pair[1], bool)
            or not isinstance(pair[1], int)
        ):
            raise NGEError(f"genotype '{name}' entry {k} must be [op_name, input_index], got {pair!r}")
        op, src = pair
        node = topology.n_inputs + k // 2
        if op not in PRIMITIVES:
            raise NGEError(f"genotype '{name}' entry {k}: unknown op '{op}' (known: {', '.join(PRIMITIVES)})")
        if not 0 <= src < node:
            raise NGEError(f"genotype '{name}' entry {k}: input {src} out of range for node {node} (0..{node - 1})")
        if k % 2 and pairs[-1][1] == src:
            raise NGEError(f"genotype '{name}' node {node}: its two inputs must differ, both are {src}")
        pairs.append((op, src))
    return tuple(pairs)


def _validate_concat(name: str, concat: object, topology: Topology) -> tuple[int, ...]:
    n = topology.n_graph_nodes
    if (
        not isinstance(concat, (list, tuple))
        or not concat
        or any(isinstance(c, bool) or not isinstance(c, int) or not topology.n_inputs <= c < n for c in concat)
        or len(set(concat)) != len(concat)
    ):
        raise NGEError(f"genotype '{name}' must be a list of distinct node indices in {topology.n_inputs}..{n - 1}")
    return tuple(concat)
