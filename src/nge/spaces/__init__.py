"""Search spaces: the one table `SPACES`, name -> `Space`.

A space bundles what the layers above it need to know of a cell: its topology (edge order, the row
order of P), its ops (the column order), its cell types (the matrices of P), its genotype type, how
P becomes a genotype, a uniform random cell, and its networks. Everything above this package asks
the space; nothing else knows 14 edges, 7 ops or two cell types. Modules: `nge.space` and
`nge.supernet` / `nge.evalnet` hold the DARTS space, `nge.spaces.nb201` NAS-Bench-201's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nge import derive as _derive
from nge.errors import NGEError
from nge.space import DARTS_CELL_TYPES, DEFAULT_TOPOLOGY, PRIMITIVES, CellProbs, Genotype, Topology, random_genotype
from nge.spaces import nb201
from nge.supernet import build_supernet as _darts_supernet
from nge.supernet import reference_forward as _darts_reference


@dataclass(frozen=True)
class Space:
    name: str
    topology: Topology
    primitives: tuple[str, ...]
    cell_types: tuple[str, ...]
    derive: Callable[[CellProbs], Any]  # P -> genotype, the paper's argmax rule for the space
    # per-cell {"ops": (E, O) importances, "edges": (E,) importances} -> genotype (perturbation selection)
    from_importance: Callable[[dict], Any]
    random_genotype: Callable[[int], Any]
    build_supernet: Callable[..., torch.nn.Module]  # (model config, in_channels, num_classes, device)
    reference_forward: Callable[..., torch.Tensor]  # (supernet, x, P): the plain sum_k p_k op_k(x), for tests and bench
    cells: Callable[[Any], dict[str, Any]]  # genotype -> its cell of each cell type, by name (counts, pictures)
    ops_of: Callable[[Any], list[str]]  # one cell -> the op of each of its kept edges
    has_ground_truth: bool = False  # a table of every cell's fully trained accuracy

    def op_counts(self, genotype) -> dict[str, dict[str, int]]:
        """How often each op appears in each cell type (ops that do not appear are left out), in op order."""
        out = {}
        for c, cell in self.cells(genotype).items():
            ops = self.ops_of(cell)
            out[c] = {op: ops.count(op) for op in self.primitives if op in ops}
        return out


def _darts_from_importance(importance: dict) -> Genotype:
    cells = {c: _derive.derive_cell(importance[c]["ops"], strength=importance[c]["edges"]) for c in DARTS_CELL_TYPES}
    concat = tuple(range(DEFAULT_TOPOLOGY.n_inputs, DEFAULT_TOPOLOGY.n_graph_nodes))
    return Genotype(cells["normal"], concat, cells["reduce"], concat)


def _nb201_supernet(model: Any, in_channels: int, num_classes: int, device: torch.device | None = None) -> torch.nn.Module:
    return nb201.Nb201SuperNet(C=model.C, N=nb201.cells_per_stage(model.layers), num_classes=num_classes,
                               in_channels=in_channels)


SPACES: dict[str, Space] = {
    "darts": Space(
        name="darts", topology=DEFAULT_TOPOLOGY, primitives=PRIMITIVES, cell_types=DARTS_CELL_TYPES,
        derive=lambda p: _derive.derive(p[0], p[1]), from_importance=_darts_from_importance,
        random_genotype=random_genotype, build_supernet=_darts_supernet, reference_forward=_darts_reference,
        cells=lambda g: {"normal": g.normal, "reduce": g.reduce}, ops_of=lambda cell: [op for op, _ in cell],
    ),
    "nb201": Space(
        name="nb201", topology=nb201.TOPOLOGY, primitives=nb201.PRIMITIVES, cell_types=nb201.CELL_TYPES,
        derive=lambda p: nb201.derive(p[0]), from_importance=lambda imp: nb201.derive(imp["cell"]["ops"]),
        random_genotype=nb201.random_genotype, build_supernet=_nb201_supernet, reference_forward=nb201.reference_forward,
        cells=lambda g: {"cell": g}, ops_of=lambda cell: list(cell.ops),
        has_ground_truth=True,
    ),
}


def get_space(name: str) -> Space:
    try:
        return SPACES[str(name)]
    except KeyError:
        raise NGEError(f"unknown search space '{name}' (known: {', '.join(SPACES)})") from None


def space_of(genotype) -> Space:
    return SPACES["nb201" if isinstance(genotype, nb201.Nb201Genotype) else "darts"]


def genotype_from_dict(d: object):
    """A genotype of any space from its `to_dict()`: NAS-Bench-201's carries "space": "nb201", DARTS's none."""
    if isinstance(d, dict) and "space" in d:
        if d["space"] != nb201.NAME:
            raise NGEError(f"genotype of unknown space {d['space']!r} (known: {', '.join(SPACES)})")
        return nb201.Nb201Genotype.from_dict(d)
    return Genotype.from_dict(d)
