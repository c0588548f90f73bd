"""Architecture parameterisations: modules that return the operation probabilities P.

Every parameterisation is an `ArchParam`: called with no input it returns `CellProbs`, one
(|E| x O) matrix per cell type whose rows sum to 1. The supernet, search loop and derivation
only ever see P, so parameterisations are interchangeable. Pick one by name with `build_arch`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


class NodeEmbeddingParam(ArchParam):
    """Shared base of NGE, Plain and RNN: node embeddings X -> Z (subclass) -> `EdgeHead` -> logits.

    Holds X_<cell type> (X_normal, X_reduce): (|V| x D) learnable, initialised one-hot (X[v, v] = 1). Subclasses
    implement `node_embeddings()` and assign `self.head` (an `EdgeHead`) after their own layers, so
    that a seeded init draws the random numbers in the same order as before this base existed.
    """

    head: EdgeHead

    def __init__(self, topology: Topology = DEFAULT_TOPOLOGY, n_ops: int = len(PRIMITIVES), node_dim: int = 64,
                 cell_types: tuple[str, ...] = DARTS_CELL_TYPES):
        super().__init__(topology, n_ops, cell_types)
        n = topology.n_graph_nodes
        if node_dim < n:
            raise ValueError(f"node_dim must be at least |V| = {n} for a one-hot init, got {node_dim}")
        one_hot = torch.eye(n, node_dim)
        for c in self.cell_types:
            self.register_parameter(f"x_{c}", nn.Parameter(one_hot.clone()))

    def node_inputs(self) -> torch.Tensor:
        """X for every cell type: (n_cell_types, |V|, D)."""
        return torch.stack([getattr(self, f"x_{c}") for c in self.cell_types])

    def node_embeddings(self) -> torch.Tensor:
        """Z: (n_cell_types, |V|, F), every cell type at once."""
        raise NotImplementedError

    def logits(self) -> torch.Tensor:
        return self.head(self.node_embeddings(), self.edge_src, self.edge_dst)

    def init_logits_normal(self) -> None:
        _normal_init(self.head.op_fc, 1.0)


class NGE(NodeEmbeddingParam):
    """Neural graph embedding (docs/paper.md section 2, Eq. 5-10; NGE in Table 4).

    X_normal, X_reduce: (|V| x D) learnable, initialised one-hot. A 3-layer GCN
    H <- ReLU(A_hat H W) with widths D -> hidden -> hidden -> F, shared edge MLP and op FC.
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
    ):
        super().__init__(topology, n_ops, node_dim, cell_types)
        n = topology.n_graph_nodes
        a = torch.tensor(topology.adjacency())
        self.register_buffer("a_hat", a + torch.eye(n), persistent=False)
        widths = [node_dim] + [gcn_hidden] * (gcn_layers - 1) + [out_dim]
        self.gcn = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(widths[:-1], widths[1:], strict=True))
        for layer in self.gcn:
            _normal_init(layer, math.sqrt(2.0))
        self.head = EdgeHead(out_dim, edge_hidden, edge_dim, n_ops)

    def node_embeddings(self) -> torch.Tensor:
        """Z = GCN(X): (2, |V|, F), both cell types at once."""
        h = self.node_inputs()
        for layer in self.gcn:
            h = F.relu(self.a_hat @ layer(h))
        return h


class Plain(NodeEmbeddingParam):
    """Plain (Table 4): learnable node embeddings, edge MLP + op FC, no node-to-node propagation.

    z_v = ReLU(x_v W), W: D -> F shared by all nodes (no bias, He-normal init as NGE's GCN layers),
    so a node's embedding depends on its own x_v only; then the same `EdgeHead` as NGE.
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
    ):
        super().__init__(topology, n_ops, node_dim, cell_types)
        self.proj = nn.Linear(node_dim, out_dim, bias=False)
        _normal_init(self.proj, math.sqrt(2.0))
        self.head = EdgeHead(out_dim, edge_hidden, edge_dim, n_ops)

    def node_embeddings(self) -> torch.Tensor:
        return F.relu(self.proj(self.node_inputs()))


class RNN(Plain):
    """RNN (Table 4): Plain plus two recurrent layers over the node sequence, before the edge head.

    The recurrence is a 2-layer unidirectional GRU (hidden size F, no bias, as the paper's "All the
    FC layers use no bias"; PyTorch's default uniform init) run over the nodes in topological order
    0, 1, ..., |V|-1, the two cell types as a batch of 2 sequences. The paper says only "two RNN
    layers"; a unidirectional recurrence respects the data-flow direction of the DAG (a node sees
    only the nodes before it, as NGE's adjacency lets a node hear only its predecessors); a GRU is
    the common gated choice, preferred here over a plain tanh RNN for its gating.
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
    ):
        super().__init__(topology, n_ops, node_dim, out_dim, edge_hidden, edge_dim, cell_types)
        self.rnn = nn.GRU(out_dim, out_dim, num_layers=rnn_layers, bias=False, batch_first=True)

    def node_embeddings(self) -> torch.Tensor:
        out, _ = self.rnn(super().node_embeddings())  # (cell types, |V| nodes in order, F)
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
               cell_types: tuple[str, ...] = DARTS_CELL_TYPES) -> ArchParam:
    """A parameterisation by name for a space's topology, op count and cell types; `init`,
    `shared_offset` and `op_bias` as `config.ArchConfig` describes them."""
    try:
        factory = ARCH_PARAMS[name]
    except KeyError:
        raise ValueError(f"unknown parameterisation '{name}' (known: {', '.join(ARCH_PARAMS)})") from None
    arch = factory(topology=topology, n_ops=n_ops, cell_types=tuple(cell_types))
    if init == "normal":
        arch.init_logits_normal()
    elif init != "uniform":
        raise ValueError(f"unknown init '{init}' (known: uniform, normal)")
    arch.shared_offset = shared_offset
    if op_bias:  # one logit per cell type and op, shared by the edges (zero: P unchanged at the start)
        arch.op_bias = nn.Parameter(torch.zeros(len(arch.cell_types), 1, n_ops))
    return arch
