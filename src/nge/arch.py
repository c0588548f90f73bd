"""Architecture parameterisations: modules that return the operation probabilities P.

Every parameterisation is an `ArchParam`: called with no input it returns `CellProbs`, one
(|E| x O) matrix per cell type whose rows sum to 1. The supernet, search loop and derivation
only ever see P, so parameterisations are interchangeable. Pick one by name with `build_arch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nge.errors import NGEError
from nge.space import DARTS_CELL_TYPES, DEFAULT_TOPOLOGY, PRIMITIVES, CellProbs, Topology


class ArchParam(nn.Module):
    """Base class: holds the topology, produces P. Subclasses implement `logits()` and name
    themselves in comparison tables with `label`."""

    label: str

    def __init__(self, topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES),
                 cell_types: tuple[str, ...] = DARTS_CELL_TYPES):
        super().__init__()
        self.topology = topology
        self.n_ops = n_ops
        self.cell_types = tuple(cell_types)
        self.shared_offset = 1.0  # see `config.ArchConfig.shared_offset`; 1 leaves the logits as they are
        self.op_bias: nn.Parameter | None = None  # see `config.ArchConfig.op_bias`; set by build_arch
        src, dst = zip(*topology.edges, strict=True)
        self.register_buffer("edge_src", torch.tensor(src), persistent=False)
        self.register_buffer("edge_dst", torch.tensor(dst), persistent=False)

    def logits(self) -> torch.Tensor:
        """(n_cell_types, n_edges, n_ops), cell types in `cell_types` order (DARTS: normal, reduce)."""
        raise NotImplementedError

    def init_logits_normal(self) -> None:
        """Re-draw the layer that produces the logits at standard scale (`search.arch.init=normal`)."""
        raise NotImplementedError

    def cell_logits(self) -> torch.Tensor:
        """The logits whose softmax over ops is P: (n_cell_types, n_edges, n_ops). A search strategy that samples
        whole cells (`nge.strategies`) also reads each edge's weight from them."""
        logits = scale_shared_offset(self.logits(), self.shared_offset)
        return logits if self.op_bias is None else logits + self.op_bias

    def forward(self) -> CellProbs:
        return CellProbs(*F.softmax(self.cell_logits(), dim=-1))


def scale_shared_offset(logits: torch.Tensor, keep: float) -> torch.Tensor:
    """logits (n_cell_types, n_edges, n_ops) with their mean over the edges of each cell type scaled by `keep`."""
    if keep == 1.0:
        return logits
    return logits - (1.0 - keep) * logits.mean(dim=1, keepdim=True)


OP_FC_INIT_STD = 1e-3


def _normal_init(linear: nn.Linear, gain: float) -> None:
    nn.init.normal_(linear.weight, mean=0.0, std=gain / math.sqrt(linear.in_features))


class EdgeHead(nn.Module):
    """Edge MLP (Eq. 9) and the shared op FC (Eq. 10, before the softmax), no bias."""

    def __init__(self, node_dim: int, edge_hidden: int, edge_dim: int, n_ops: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * node_dim, edge_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(edge_hidden, edge_dim, bias=False),
            nn.ReLU(),
        )
        self.op_fc = nn.Linear(edge_dim, n_ops, bias=False)
        _normal_init(self.mlp[0], math.sqrt(2.0))
        _normal_init(self.mlp[2], math.sqrt(2.0))
        nn.init.normal_(self.op_fc.weight, std=OP_FC_INIT_STD)

    def forward(self, z: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """z: (..., n_nodes, node_dim) -> logits (..., n_edges, n_ops); source node first."""
        e = self.mlp(torch.cat([z[..., src, :], z[..., dst, :]], dim=-1))
        return self.op_fc(e)


class DartsAlpha(ArchParam):
    """Baseline (DARTS, docs/paper.md section 5 Table 4): P = softmax of free per-edge logits.

    alpha_<cell type> (alpha_normal, alpha_reduce in DARTS's space): (|E| x O) parameters, initialised
    1e-3 * randn as in DARTS.
    """

    label = "Baseline (DARTS)"

    def __init__(self, topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES),
                 cell_types: tuple[str, ...] = DARTS_CELL_TYPES):
        super().__init__(topology, n_ops, cell_types)
        for c in self.cell_types:
            self.register_parameter(f"alpha_{c}", nn.Parameter(1e-3 * torch.randn(topology.n_edges, n_ops)))

    def alphas(self) -> list[nn.Parameter]:
        return [getattr(self, f"alpha_{c}") for c in self.cell_types]

    def logits(self) -> torch.Tensor:
        return torch.stack(self.alphas())

    def init_logits_normal(self) -> None:
        with torch.no_grad():
            for a in self.alphas():
                a.normal_()


# search.arch.cells: how the cell types of a node-embedding parameterisation are parameterised
# (`config.CellParams` describes each); with one cell type all three are the same parameterisation.
CELL_PARAMS = ("shared", "distinct", "separate")


class NodeEmbeddingParam(ArchParam):
    """Shared base of NGE, Plain and RNN: node embeddings X -> Z (subclass) -> `EdgeHead` -> logits.

    Holds X_<cell type> (X_normal, X_reduce): (|V| x D) learnable, initialised one-hot. `cells`:
    `shared` and `separate`: X[v, v] = 1 for every cell type; `distinct`: cell type k's node v is
    row k |V| + v of the D x D identity, so no two nodes of any cell type start alike. The layers
    after X (GCN or projection, edge MLP, op FC): one set for every cell type (`shared`, `distinct`),
    or (`separate`, with two or more cell types) one set per cell type in `per_cell[<type>]`, built in
    `cell_types` order. Subclasses add their layers with `_build_layers`, implement `embed()`, and
    build in the same order as before this base existed, so a seeded init draws the same numbers.
    """

    head: EdgeHead

    def __init__(self, topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES), node_dim: int = 64,
                 cell_types: tuple[str, ...] = DARTS_CELL_TYPES, cells: str = "shared"):
        super().__init__(topology, n_ops, cell_types)
        if cells not in CELL_PARAMS:
            raise ValueError(f"unknown cells '{cells}' (known: {', '.join(CELL_PARAMS)})")
        self.cells = cells
        self.per_cell: nn.ModuleDict | None = None
        n, k = topology.n_graph_nodes, len(self.cell_types)
        if node_dim < n:
            raise ValueError(f"node_dim must be at least |V| = {n} for a one-hot init, got {node_dim}")
        if cells == "distinct" and node_dim < n * k:
            raise NGEError(f"cells=distinct needs node_dim >= {k} cell types x {n} nodes = {n * k} distinct one-hot "
                           f"vectors, got {node_dim}")
        one_hot = torch.eye(n * k if cells == "distinct" else n, node_dim)
        for i, c in enumerate(self.cell_types):
            first = i * n if cells == "distinct" else 0
            self.register_parameter(f"x_{c}", nn.Parameter(one_hot[first:first + n].clone()))

    def _build_layers(self, build: Callable[[nn.Module], None]) -> None:
        """`build(owner)` adds one set of layers to `owner`: on self once, or (`separate` with two or more
        cell types) on a module of its own per cell type, in `cell_types` order."""
        if self.cells == "separate" and len(self.cell_types) > 1:
            self.per_cell = nn.ModuleDict()
            for c in self.cell_types:
                owner = nn.Module()
                build(owner)
                self.per_cell[c] = owner
        else:
            build(self)

    def layer_sets(self) -> list[nn.Module]:
        """The distinct modules that hold a set of layers: [self], or one per cell type."""
        return [self] if self.per_cell is None else [self.per_cell[c] for c in self.cell_types]

    def node_inputs(self) -> torch.Tensor:
        """X for every cell type: (n_cell_types, |V|, D)."""
        return torch.stack([getattr(self, f"x_{c}") for c in self.cell_types])

    def embed(self, layers: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Z from X with one set of layers: (batch, |V|, D) -> (batch, |V|, F)."""
        raise NotImplementedError

    def node_embeddings(self) -> torch.Tensor:
        """Z: (n_cell_types, |V|, F), every cell type at once (one batch where the layers are shared)."""
        x = self.node_inputs()
        if self.per_cell is None:
            return self.embed(self, x)
        return torch.cat([self.embed(layers, x[i:i + 1]) for i, layers in enumerate(self.layer_sets())])

    def logits(self) -> torch.Tensor:
        z = self.node_embeddings()
        if self.per_cell is None:
            return self.head(z, self.edge_src, self.edge_dst)
        return torch.cat([layers.head(z[i:i + 1], self.edge_src, self.edge_dst)
                          for i, layers in enumerate(self.layer_sets())])

    def init_logits_normal(self) -> None:
        for layers in self.layer_sets():
            _normal_init(layers.head.op_fc, 1.0)


class NGE(NodeEmbeddingParam):
    """Neural graph embedding (docs/paper.md section 2, Eq. 5-10; NGE in Table 4).

    X_normal, X_reduce: (|V| x D) learnable, initialised one-hot. A 3-layer GCN
    H <- ReLU(A_hat H W) with widths D -> hidden -> hidden -> F, edge MLP and op FC shared by the edges;
    GCN, edge MLP and op FC shared by the cell types too, or one set per cell type (`cells=separate`).
    Init (the paper says only "normal"): GCN and edge-MLP weights from N(0, 2 / fan_in) (He, as
    each is followed by a ReLU); op-FC weights from N(0, OP_FC_INIT_STD^2), so P starts close to
    uniform, as DARTS's alphas (1e-3 * randn) do.
    """

    label = "NGE"

    def __init__(
        self,
        topology: Topology = DEFAULT_TOPOLOGY,
        n_ops: int = len(PRIMITIVES),
        node_dim: int = 64,
        gcn_hidden: int = 128,
        gcn_layers: int = 3,
        out_dim: int = 64,
        edge_hidden: int = 64,
        edge_dim: int = 64,
        cell_types: tuple[str, ...] = DARTS_CELL_TYPES,
        cells: str = "shared",
    ):
        super().__init__(topology, n_ops, node_dim, cell_types, cells)
        n = topology.n_graph_nodes
        a = torch.tensor(topology.adjacency())
        self.register_buffer("a_hat", a + torch.eye(n), persistent=False)
        widths = [node_dim] + [gcn_hidden] * (gcn_layers - 1) + [out_dim]

        def build(owner: nn.Module) -> None:
            owner.gcn = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(widths[:-1], widths[1:], strict=True))
            for layer in owner.gcn:
                _normal_init(layer, math.sqrt(2.0))
            owner.head = EdgeHead(out_dim, edge_hidden, edge_dim, n_ops)

        self._build_layers(build)

    def embed(self, layers: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Z = GCN(X) (Eq. 5, 8)."""
        h = x
        for layer in layers.gcn:
            h = F.relu(self.a_hat @ layer(h))
        return h


class Plain(NodeEmbeddingParam):
    """Plain (Table 4): learnable node embeddings, edge MLP + op FC, no node-to-node propagation.

    z_v = ReLU(x_v W), W: D -> F shared by all nodes (no bias, He-normal init as NGE's GCN layers),
    so a node's embedding depends on its own x_v only; then the same `EdgeHead` as NGE (W and the head
    one set per cell type with `cells=separate`).
    """

    label = "Plain"

    def __init__(
        self,
        topology: Topology = DEFAULT_TOPOLOGY,
        n_ops: int = len(PRIMITIVES),
        node_dim: int = 64,
        out_dim: int = 64,
        edge_hidden: int = 64,
        edge_dim: int = 64,
        cell_types: tuple[str, ...] = DARTS_CELL_TYPES,
        cells: str = "shared",
    ):
        super().__init__(topology, n_ops, node_dim, cell_types, cells)

        def build(owner: nn.Module) -> None:
            owner.proj = nn.Linear(node_dim, out_dim, bias=False)
            _normal_init(owner.proj, math.sqrt(2.0))
            owner.head = EdgeHead(out_dim, edge_hidden, edge_dim, n_ops)

        self._build_layers(build)

    def embed(self, layers: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.relu(layers.proj(x))


class RNN(Plain):
    """RNN (Table 4): Plain plus two recurrent layers over the node sequence, before the edge head.

    The recurrence is a 2-layer unidirectional GRU (hidden size F, no bias, as the paper's "All the
    FC layers use no bias"; PyTorch's default uniform init) run over the nodes in topological order
    0, 1, ..., |V|-1, the two cell types as a batch of 2 sequences. The paper says only "two RNN
    layers"; a unidirectional recurrence respects the data-flow direction of the DAG (a node sees
    only the nodes before it, as NGE's adjacency lets a node hear only its predecessors); a GRU is
    the common gated choice, preferred here over a plain tanh RNN for its gating. With `separate`
    cells each cell type has its own GRU, built after every cell type's projection and edge head.
    """

    label = "RNN"

    def __init__(
        self,
        topology: Topology = DEFAULT_TOPOLOGY,
        n_ops: int = len(PRIMITIVES),
        node_dim: int = 64,
        out_dim: int = 64,
        edge_hidden: int = 64,
        edge_dim: int = 64,
        rnn_layers: int = 2,
        cell_types: tuple[str, ...] = DARTS_CELL_TYPES,
        cells: str = "shared",
    ):
        super().__init__(topology, n_ops, node_dim, out_dim, edge_hidden, edge_dim, cell_types, cells)
        for layers in self.layer_sets():
            layers.rnn = nn.GRU(out_dim, out_dim, num_layers=rnn_layers, bias=False, batch_first=True)

    def embed(self, layers: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out, _ = layers.rnn(super().embed(layers, x))  # (batch, |V| nodes in order, F)
        return out


# The one table of parameterisations: config name -> class (its `label` names it in tables). The
# order is the order of the paper's Table 4 rows and of `nge ablate`'s default rows.
ARCH_PARAMS: dict[str, type[ArchParam]] = {
    "darts": DartsAlpha,
    "plain": Plain,
    "rnn": RNN,
    "nge": NGE,
}


def build_arch(name: str, topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES),
               init: str = "uniform", shared_offset: float = 1.0, op_bias: bool = False,
               cell_types: tuple[str, ...] = DARTS_CELL_TYPES, cells: str = "shared") -> ArchParam:
    """A parameterisation by name for a space's topology, op count and cell types; `init`,
    `shared_offset`, `op_bias` and `cells` as `config.ArchConfig` describes them (`darts`'s free
    alphas share nothing between cell types, so `cells` changes nothing there)."""
    try:
        factory = ARCH_PARAMS[name]
    except KeyError:
        raise ValueError(f"unknown parameterisation '{name}' (known: {', '.join(ARCH_PARAMS)})") from None
    if cells not in CELL_PARAMS:
        raise ValueError(f"unknown cells '{cells}' (known: {', '.join(CELL_PARAMS)})")
    extra = {"cells": cells} if issubclass(factory, NodeEmbeddingParam) else {}
    arch = factory(topology=topology, n_ops=n_ops, cell_types=tuple(cell_types), **extra)
    if init == "normal":
        arch.init_logits_normal()
    elif init != "uniform":
        raise ValueError(f"unknown init '{init}' (known: uniform, normal)")
    arch.shared_offset = shared_offset
    if op_bias:  # one logit per cell type and op, shared by the edges (zero: P unchanged at the start)
        arch.op_bias = nn.Parameter(torch.zeros(len(arch.cell_types), 1, n_ops))
    return arch
