"""Pictures: derived cells (as the paper's Figure 4), P heatmaps over epochs, training curves, image grids."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellGenotype, Topology  # noqa: E402


def _op_colour(op: str) -> tuple[float, ...] | str:
    """A colour per candidate op, by its position in `_COLOURED` (black for an unknown name)."""
    return matplotlib.colormaps["tab10"](_COLOURED.index(op) % 10) if op in _COLOURED else "black"


_COLOURED = (*PRIMITIVES, "nor_conv_1x1", "nor_conv_3x3", "none")  # the DARTS ops, then NAS-Bench-201's others


def _bezier(p0: tuple[float, float], p1: tuple[float, float], rad: float, n: int = 40) -> np.ndarray:
    """Points of matplotlib's `arc3,rad=rad` curve from p0 to p1 (a quadratic Bezier), (n, 2)."""
    (x0, y0), (x1, y1) = p0, p1
    c = np.array([(x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)])
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * t * (1 - t) * c + t**2 * np.array(p1)


def _hits(box, points: np.ndarray, pad: float) -> int:
    """How many `points` (display coordinates) fall inside `box` grown by `pad` pixels."""
    inside = ((points[:, 0] > box.x0 - pad) & (points[:, 0] < box.x1 + pad)
              & (points[:, 1] > box.y0 - pad) & (points[:, 1] < box.y1 + pad))
    return int(inside.sum())


def _names(topology: Topology) -> dict[int, str]:
    """Node index -> its name in the pictures: c_{k-2}, c_{k-1}, 0..n-1, c_{k}."""
    n_in, n = topology.n_inputs, topology.n_nodes
    return {0: "c_{k-2}", 1: "c_{k-1}", n_in + n: "c_{k}"} | {n_in + k: str(k) for k in range(n)}


def _q(text: str) -> str:
    """`text` as a quoted DOT string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cell_dot(cell: CellGenotype, title: str, topology: Topology = DEFAULT_TOPOLOGY) -> str:
    """The cell as DOT text, left to right as DARTS's own plot: inputs first, the output last. Each op
    is a text node between its input and its node (`e0`, `e1`, ... in `cell` order), so dot places
    the labels as it places nodes: apart from each other and from the edges."""
    n_in, n = topology.n_inputs, topology.n_nodes
    names = {i: _q(name) for i, name in _names(topology).items()}
    lines = [f"digraph cell {{ rankdir=LR; label={_q(title)}; labelloc=t; fontsize=20; nodesep=0.15; ranksep=0.3;",
             '  node [style=filled, shape=rect, fontsize=20, penwidth=2, height=0.5, width=0.5];',
             '  edge [penwidth=1.5];',
             "  { rank=source; " + " ".join(f'{names[i]} [fillcolor="#a6d96a"];' for i in range(n_in)) + " }",
             *(f'  {names[n_in + k]} [fillcolor="#abd9e9"];' for k in range(n)),
             f'  {{ rank=sink; {names[n_in + n]} [fillcolor="#fdae61"]; }}']
    for e, (op, src) in enumerate(cell):
        colour = matplotlib.colors.to_hex(_op_colour(op))
        lines.append(f'  e{e} [label={_q(op)}, shape=plaintext, style="", fontsize=16, fontcolor="{colour}", '
                     'height=0.3, width=0.3, margin=0.02];')
        lines.append(f'  {names[src]} -> e{e} [color="{colour}", arrowhead=none];')
        lines.append(f'  e{e} -> {names[n_in + e // 2]} [color="{colour}"];')
    lines += [f'  {names[n_in + k]} -> {names[n_in + n]} [color="#bbbbbb"];' for k in range(n)]
    return "\n".join(lines) + "\n}\n"


def dot_layout(cell: CellGenotype, title: str, path: Path | None, topology: Topology = DEFAULT_TOPOLOGY) -> dict:
    """Runs Graphviz's `dot` on `cell_dot`: writes the PNG to `path` (if given), returns dot's JSON layout."""
    with tempfile.TemporaryDirectory() as tmp:
        png = ["-Tpng", "-o", str(path)] if path is not None else []
        subprocess.run(["dot", "-Tjson", "-o", f"{tmp}/cell.json", *png], input=cell_dot(cell, title, topology),
                       text=True, capture_output=True, check=True, timeout=60)
        return json.loads(Path(tmp, "cell.json").read_text())


def dot_label_boxes(layout: dict, n_labels: int) -> list:
    """The op labels' boxes (points) in dot's layout, in edge order."""
    from matplotlib.transforms import Bbox

    nodes = {o["name"]: o for o in layout["objects"]}
    boxes = []
    for e in range(n_labels):
        node = nodes[f"e{e}"]
        x, y = map(float, node["pos"].split(","))
        w, h = 72 * float(node["width"]), 72 * float(node["height"])
        boxes.append(Bbox.from_bounds(x - w / 2, y - h / 2, w, h))
    return boxes


def _plot_cell_dot(cell: CellGenotype, title: str, path: Path | None, topology: Topology) -> list:
    """Renders `cell_dot` with Graphviz's `dot`; returns the op labels' boxes (points) from its layout."""
    return dot_label_boxes(dot_layout(cell, title, path, topology), len(cell))


def plot_cell(cell: CellGenotype, title: str, path: Path | None, topology: Topology = DEFAULT_TOPOLOGY,
              backend: str = "auto") -> list:
    """The cell drawn with Graphviz's `dot` (backend "dot", or "auto" where `dot` is on PATH; a
    failure falls back to matplotlib with one warning line) or with matplotlib. Returns the edge
    labels' boxes in edge order (points in dot's layout, pixels in matplotlib's)."""
    if backend not in ("auto", "dot", "matplotlib"):
        raise ValueError(f"backend must be auto, dot or matplotlib, got {backend!r}")
    if backend == "dot" or (backend == "auto" and shutil.which("dot")):
        try:
            return _plot_cell_dot(cell, title, path, topology)
        except (OSError, subprocess.SubprocessError, ValueError, KeyError, StopIteration) as e:
            detail = getattr(e, "stderr", None) or str(e)
            print(f"nge: warning: Graphviz dot failed ({' '.join(detail.split())[:200]}); drawing {title} with matplotlib",
                  file=sys.stderr)
    return _plot_cell_matplotlib(cell, title, path, topology)


def _plot_cell_matplotlib(cell: CellGenotype, title: str, path: Path | None, topology: Topology) -> list:
    """A layered drawing as the paper's Figure 4: inputs c_{k-2}, c_{k-1} on the left, intermediate
    nodes 0..n-1 in order, the output c_{k} on the right; every kept edge an arrow in its op's colour,
    labelled with the op. Each edge's curvature and label position are chosen, among a few
    candidates, so that its label overlaps no other label, node or edge (the fewest crossings where
    none is free). Returns the label boxes (display coordinates) in edge order."""
    n_in, n = topology.n_inputs, topology.n_nodes
    pos = {0: (-0.8, 0.9), 1: (-0.8, -0.9)}
    for k in range(n):
        pos[n_in + k] = (1.0 + 1.15 * k, 1.2 if k % 2 == 0 else -1.2)
    out = n_in + n
    pos[out] = (1.15 * n + 1.3, 0.0)
    names = _names(topology)
    fig, ax = plt.subplots(figsize=(1.9 * (1.15 * n + 2.8), 5.6))
    ax.set_aspect("equal")
    ax.set_xlim(-1.6, 1.15 * n + 2.0)
    ax.set_ylim(-2.3, 2.3)
    ax.axis("off")
    ax.set_title(title)
    ax.apply_aspect()  # fixes the axes' place, so data -> pixel below is the one drawn
    renderer = fig.canvas.get_renderer()
    nodes = []
    for node, (x, y) in pos.items():
        colour = "#a6d96a" if node < n_in else ("#fdae61" if node == out else "#abd9e9")
        nodes.append(ax.text(x, y, names[node], ha="center", va="center", fontsize=10, zorder=3,
                             bbox=dict(boxstyle="round,pad=0.4", fc=colour, ec="black")))
    node_boxes = [t.get_window_extent(renderer) for t in nodes]
    to_px = ax.transData.transform
    edges = [(src, n_in + e // 2, op) for e, (op, src) in enumerate(cell)]
    curves: list[np.ndarray] = [to_px(_bezier(pos[n_in + k], pos[out], 0.0)) for k in range(n)]  # to the output
    # longer edges first: they have the fewest free places
    order = sorted(range(len(edges)), key=lambda i: -abs(pos[edges[i][0]][0] - pos[edges[i][1]][0]))
    rads = [0.0] * len(edges)
    label_at: dict[int, tuple[float, float]] = {}
    boxes: dict[int, object] = {}
    for i in order:
        src, dst, op = edges[i]
        best = None
        for rad in (0.2, -0.2, 0.35, -0.35, 0.1, -0.1, 0.5, -0.5):
            pts = _bezier(pos[src], pos[dst], rad)
            px = to_px(pts)
            for t in (0.5, 0.4, 0.6, 0.3, 0.7, 0.25, 0.75):
                x, y = pts[int(round(t * (len(pts) - 1)))]
                text = ax.text(x, y, op, fontsize=8, ha="center", va="center")
                box = text.get_window_extent(renderer)
                text.remove()
                cost = (10 * sum(box.overlaps(b) for b in list(boxes.values()) + node_boxes)
                        + sum(_hits(box, c, 2.0) for c in curves)
                        + sum(_hits(b, px[3:-3], 2.0) for b in list(boxes.values())))
                if best is None or cost < best[0]:
                    best = (cost, rad, (x, y), box, px)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, rads[i], label_at[i], boxes[i], px = best
        curves.append(px)
    for i, (src, dst, op) in enumerate(edges):
        ax.annotate("", xy=pos[dst], xytext=pos[src], zorder=1, arrowprops=dict(
            arrowstyle="-|>", color=_op_colour(op), lw=1.6, shrinkA=16, shrinkB=16,
            connectionstyle=f"arc3,rad={rads[i]}"))
        ax.text(*label_at[i], op, fontsize=8, ha="center", va="center", color=_op_colour(op), zorder=2,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))
    for k in range(n):
        ax.annotate("", xy=pos[out], xytext=pos[n_in + k], zorder=0,
                    arrowprops=dict(arrowstyle="-|>", color="#bbbbbb", lw=1.0, shrinkA=16, shrinkB=16))
    result = [boxes[i] for i in range(len(edges))]
    if path is not None:
        fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    return result


def edge_labels(topology: Topology = DEFAULT_TOPOLOGY) -> list[str]:
    return [f"{s}->{t}" for s, t in topology.edges]


def plot_probs_over_epochs(history: Sequence, path: Path, max_panels: int = 6,
                           primitives: Sequence[str] = PRIMITIVES, cell_types: Sequence[str] = ("normal", "reduce"),
                           topology: Topology = DEFAULT_TOPOLOGY) -> None:
    """Heatmaps of P (edges x ops) for every cell type at evenly spaced epochs (0 = initial)."""
    fig = probs_figure(history, max_panels, primitives, cell_types=cell_types, topology=topology)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def probs_figure(history: Sequence, max_panels: int = 6, primitives: Sequence[str] = PRIMITIVES,
                 first_epoch: int = 0, cell_types: Sequence[str] = ("normal", "reduce"),
                 topology: Topology = DEFAULT_TOPOLOGY):
    """The figure of `plot_probs_over_epochs` (history[i] is P after epoch first_epoch + i)."""
    n = len(history)
    idx = sorted({round(i * (n - 1) / max(1, max_panels - 1)) for i in range(min(n, max_panels))})
    rows = len(cell_types)
    fig, axes = plt.subplots(rows, len(idx), figsize=(2.6 * len(idx) + 1, 4.5 * rows * max(0.5, topology.n_edges / 14)),
                             squeeze=False, gridspec_kw={"hspace": 0.55})
    top = max(float(h[k].max()) for h in history for k in range(rows))  # P stays near 1/O early on
    im = None
    labels = edge_labels(topology)
    for c, e in enumerate(idx):
        for r, name in enumerate(cell_types):
            p = history[e][r]
            ax = axes[r][c]
            im = ax.imshow(p.numpy() if hasattr(p, "numpy") else p, vmin=0, vmax=top, cmap="viridis",
                           aspect="auto")
            ax.set_title(f"{name}, epoch {first_epoch + e}", fontsize=9)
            ax.set_xticks(range(len(primitives)), [op.replace("_", " ") for op in primitives], rotation=90, fontsize=7)
            ax.set_yticks(range(len(labels)), labels if c == 0 else [""] * len(labels), fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="operation probability")
    return fig


def plot_curves(metrics: Sequence[dict], path: Path) -> None:
    """Loss and accuracy per epoch for every *_loss / *_acc / *_top5 / *_miou series present (a
    series measured only every few epochs is drawn at the epochs that have it)."""
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    keys = sorted({k for m in metrics for k in m if k.endswith(("_loss", "_acc", "_top5", "_miou"))})
    for k in keys:
        points = [(m["epoch"], m[k]) for m in metrics if m.get(k) is not None]
        (ax_l if k.endswith("_loss") else ax_a).plot(*zip(*points, strict=True), marker="o", ms=3, label=k)
    for ax, name in ((ax_l, "loss"), (ax_a, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_TELEMETRY_TITLES = {
    "entropy": "entropy of P's rows (1 = uniform)",
    "margin": "top-1 minus top-2 probability",
    "distinct": "distinct argmax ops over the edges",
    "majority": "share of edges with the commonest op",
    "spread": "rows' distance from the mean row",
}


def plot_telemetry(rows: Sequence[dict], path: Path, cell_types: Sequence[str] = ("normal", "reduce"),
                   n_ops: int = len(PRIMITIVES)) -> None:
    """The search telemetry (`nge.telemetry`) of every cell type per epoch, epoch 0 = initial P."""
    keys = list(_TELEMETRY_TITLES)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2))
    epochs = range(len(rows))
    for ax, key in zip(axes, keys, strict=True):
        for cell, style in zip(cell_types, ("-o", "--s"), strict=False):
            ax.plot(epochs, [r[f"{cell}_{key}"] for r in rows], style, ms=3, label=cell)
        ax.set_title(_TELEMETRY_TITLES[key], fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[2].set_ylim(0, n_ops + 0.5)
    for ax in (axes[0], axes[3]):
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_image_grid(rows: Sequence[Sequence], titles: Sequence[str], path: Path) -> None:
    """Rows of same-count (H, W, 3) uint8 images, one column per title (e.g. image, truth, prediction)."""
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(2.6 * len(titles), 2.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ablation(rows: Sequence[dict], names: Sequence[str], train_presets: Sequence[str], path: Path,
                  labels: dict[str, str]) -> None:
    """Grouped bars (mean, with min-max whiskers over seeds): search val acc, and per training its val acc (where
    scored on a held-out split) and test acc, per row."""
    import numpy as np

    series = [("search val", "search_val_acc")]
    for tp in train_presets:
        if any(r.get(f"val_acc[{tp}]") is not None for r in rows):
            series.append((f"val ({tp})", f"val_acc[{tp}]"))
        series.append((f"test ({tp})", f"test_acc[{tp}]"))
    present = [n for n in names if any(r["row"] == n for r in rows)]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(2 + 1.8 * len(present), 4))
    for s, (name, key) in enumerate(series):
        vals = [[100 * r[key] for r in rows if r["row"] == n and r.get(key) is not None] or [np.nan] for n in present]
        means = np.array([np.mean(v) for v in vals])
        err = np.nan_to_num(np.array([[m - min(v), max(v) - m] for m, v in zip(means, vals, strict=True)]).T)
        x = np.arange(len(present)) + (s - (len(series) - 1) / 2) * width
        bars = ax.bar(x, np.nan_to_num(means), width, yerr=err, capsize=3, label=name)
        ax.bar_label(bars, labels=["" if np.isnan(m) else f"{m:.1f}" for m in means], fontsize=7)
    ax.set_xticks(range(len(present)), [labels.get(n, n) for n in present], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    lo = min((100 * r[k] for r in rows for _, k in series if r.get(k) is not None), default=100)
    ax.set_ylim(max(0, lo - 10), 100)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")  # redrawn as a table grows: never a half-written picture
    try:
        fig.savefig(tmp, dpi=110)
        tmp.replace(path)
    finally:
        plt.close(fig)


def plot_edge_cell(edges: Sequence[tuple[int, int, str]], n_nodes: int, title: str, path: Path) -> None:
    """A cell given as (source, target, op) edges over nodes 0..n_nodes-1 (node 0 the input, the last
    the output; NAS-Bench-201's): nodes on a line, each edge an arc in its op's colour, labelled. Edges
    whose op is `none` are drawn dotted grey."""
    fig, ax = plt.subplots(figsize=(2.2 * n_nodes, 3.2))
    for s, t, op in edges:
        h = 0.35 * (t - s)
        xs = np.linspace(s, t, 40)
        ys = h * np.sin(np.pi * (xs - s) / (t - s)) * (1 if (s + t) % 2 else -1)
        none = op == "none"
        ax.plot(xs, ys, ":" if none else "-", color="0.7" if none else _op_colour(op), lw=1.5 if none else 2.5)
        ax.text((s + t) / 2, ys[20], op.replace("_", " "), ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.8"})
    for v in range(n_nodes):
        name = "in" if v == 0 else ("out" if v == n_nodes - 1 else str(v))
        ax.add_patch(plt.Circle((v, 0), 0.13, fc="#dbe9f6", ec="0.3", zorder=3))
        ax.text(v, 0, name, ha="center", va="center", fontsize=9, zorder=4)
    ax.set_xlim(-0.4, n_nodes - 0.6)
    ax.set_ylim(-0.4 * n_nodes / 2 - 0.3, 0.4 * n_nodes / 2 + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ground_truth(groups: Sequence[tuple[str, Sequence[float]]], uniform: float, optimum: float, path: Path) -> None:
    """Each group's cells by their ground-truth accuracy (one dot per seed, the mean as a bar), with the mean
    of a uniformly random cell and the optimum as lines."""
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(groups) + 1.6))
    for i, (_, values) in enumerate(groups):
        ys = np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [i] * len(values)
        ax.scatter(values, ys, s=22, color="tab:blue", alpha=0.75, zorder=3)
        if values:
            ax.plot([np.mean(values)] * 2, [i - 0.3, i + 0.3], color="black", lw=2.5, zorder=4)
    ax.axvline(uniform, color="tab:red", ls="--", lw=1.2, label=f"uniformly random cell, mean {uniform:.2f}")
    ax.axvline(optimum, color="tab:green", ls=":", lw=1.5, label=f"optimum {optimum:.2f}")
    ax.set_yticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("CIFAR-10 test accuracy of the cell after 200 epochs (%, NAS-Bench-201 table)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cells(space, genotype, folder: Path) -> dict[str, Path]:
    """Every cell of `genotype` (a genotype of `space`, an `nge.spaces.Space`) as FOLDER/<cell type>.png:
    a DARTS cell as the paper's Figure 4, a NAS-Bench-201 cell as its edge graph. Returns the files."""
    files = {}
    for c, cell in space.cells(genotype).items():
        title = {"normal": "normal cell", "reduce": "reduction cell"}.get(c, f"{space.name} cell")
        files[c] = Path(folder) / f"{c}.png"
        if hasattr(cell, "edges"):  # a NAS-Bench-201 cell: an op on every edge
            plot_edge_cell(cell.edges(), space.topology.n_graph_nodes, f"{title}: {cell}", files[c])
        else:  # a DARTS cell: two (op, input) pairs per node
            plot_cell(cell, title, files[c], space.topology)
    return files


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path) -> None:
    """A confusion matrix (rows: true class, columns: predicted), each row as shares of its class,
    with the counts written in (up to 20 classes)."""
    m = np.asarray(matrix, dtype=float)
    k = len(classes)
    shares = m / np.maximum(m.sum(1, keepdims=True), 1)
    side = min(12.0, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        ax.set_xticks(range(k), [str(c)[:14] for c in classes], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), [str(c)[:14] for c in classes], fontsize=8)
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("test images per true class (row shares; counts)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predictions(images: Sequence[np.ndarray], titles: Sequence[str], wrong: Sequence[bool], path: Path,
                     columns: int = 8) -> None:
    """(H, W, 3) uint8 images in a grid, each with its title; a wrong prediction's title in red."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title, bad in zip(axes.flat, images, titles, wrong, strict=False):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=7, color="tab:red" if bad else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
