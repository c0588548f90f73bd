"""The NAS-Bench-201 ground truth, shipped with the package: the 200-epoch test accuracy of all
15,625 cells on CIFAR-10, CIFAR-100 and ImageNet16-120 (`nb201_table.csv.xz`, NB201_TABLE.md).

A cell's index is the base-5 number of its op indices (`nb201.PRIMITIVES`) in edge order, the
first edge (1<-0) the most significant digit: all-`none` is 0, all-`avg_pool_3x3` is 15,624. So
genotype -> index is arithmetic (`cell_index`, `ops_to_index` for arrays) and every array of the
table (`Nb201Table.acc[dataset]`, `.rank[dataset]`) is indexed by it. This is not the benchmark's
own architecture index (its API orders cells differently).

Ranks: 1 = the best accuracy among the 15,625 on that data set; ties share the smallest rank of
their group ('min' method), so a rank is 1 + the number of cells strictly better.

    >>> from nge.spaces.nb201_table import lookup
    >>> lookup("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")["cifar10"]
    {'accuracy': 94.37333333333333, 'rank': 1, 'optimum': 94.37333333333333, 'gap': 0.0}
"""

from __future__ import annotations

import csv
import io
import lzma
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nge.errors import NGEError
from nge.spaces.nb201 import N_EDGES, PRIMITIVES, Nb201Genotype

TABLE_FILE = Path(__file__).with_name("nb201_table.csv.xz")
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet16-120")
N_OPS = len(PRIMITIVES)
N_CELLS = N_OPS**N_EDGES  # 15,625
# digit weights of the index: edge 0 is the most significant
PLACE = N_OPS ** np.arange(N_EDGES - 1, -1, -1)
COLUMNS = ("cell", *DATASETS, "unique_string")
# the shared benchmark CSV's column for each of ours (`write_table`)
SOURCE_COLUMNS = {"cell": "ArchitectureString", "cifar10": "CIFAR10TestAccuracy200Epochs",
                  "cifar100": "CIFAR100TestAccuracy200Epochs", "imagenet16-120": "ImageNetTestAccuracy200Epochs",
                  "unique_string": "UniqueString"}


def ops_to_index(ops: np.ndarray) -> np.ndarray:
    """Cell indices of op-index arrays (..., 6) (values 0..4), edge 0 most significant."""
    return np.asarray(ops, dtype=np.int64) @ PLACE


def index_to_ops(index: np.ndarray | int) -> np.ndarray:
    """Op indices (..., 6) of cell indices: the inverse of `ops_to_index`."""
    index = np.asarray(index, dtype=np.int64)
    return (index[..., None] // PLACE) % N_OPS


def cell_index(cell: Nb201Genotype | str | int) -> int:
    """The index of a genotype, a benchmark cell string or an index (checked); one-line NGEError if it is none."""
    if isinstance(cell, bool):
        raise NGEError(f"{cell!r} is not a NAS-Bench-201 cell")
    if isinstance(cell, int | np.integer):
        if not 0 <= int(cell) < N_CELLS:
            raise NGEError(f"NAS-Bench-201 cell index {int(cell)} is out of range (0..{N_CELLS - 1})")
        return int(cell)
    if isinstance(cell, str):
        cell = Nb201Genotype.from_str(cell)
    if not isinstance(cell, Nb201Genotype):
        raise NGEError(f"{cell!r} is not a NAS-Bench-201 cell (give a cell string, an Nb201Genotype or an index)")
    return int(sum(PRIMITIVES.index(op) * int(p) for op, p in zip(cell.ops, PLACE, strict=True)))


def index_genotype(index: int) -> Nb201Genotype:
    return Nb201Genotype(tuple(PRIMITIVES[int(k)] for k in index_to_ops(cell_index(index))))


@lru_cache(maxsize=1)
def all_cell_strings() -> tuple[str, ...]:
    """The benchmark string of every cell, by index."""
    return tuple(index_genotype(i).to_str() for i in range(N_CELLS))


def _min_ranks(acc: np.ndarray) -> np.ndarray:
    """1 + the number of strictly larger values: 1 = best, ties share the smallest rank."""
    desc = np.sort(-acc)
    return np.searchsorted(desc, -acc, side="left").astype(np.int64) + 1


@dataclass(frozen=True)
class Nb201Table:
    """The table as arrays indexed by cell index (module docstring)."""

    acc: dict[str, np.ndarray]  # dataset -> (15625,) float64 test accuracy (%) after 200 epochs
    rank: dict[str, np.ndarray]  # dataset -> (15625,) int64, 1 = best, 'min' ties
    unique: tuple[str, ...]  # the benchmark's UniqueString (dead paths removed), by index

    def check_dataset(self, dataset: str) -> str:
        if dataset not in self.acc:
            raise NGEError(f"unknown NAS-Bench-201 data set '{dataset}' (known: {', '.join(DATASETS)})")
        return dataset

    def best_index(self, dataset: str = "cifar10") -> int:
        """The index of the best cell (ties: the smallest index)."""
        return int(np.argmax(self.acc[self.check_dataset(dataset)]))

    def optimum(self, dataset: str = "cifar10") -> float:
        return float(self.acc[self.check_dataset(dataset)].max())

    def uniform_mean(self, dataset: str = "cifar10") -> float:
        """The exact expected accuracy of a uniformly random cell: the mean over all 15,625."""
        return float(self.acc[self.check_dataset(dataset)].mean())

    def uniform_std(self, dataset: str = "cifar10") -> float:
        """The spread of a uniformly random cell's accuracy: the population std (ddof 0) over all 15,625."""
        return float(self.acc[self.check_dataset(dataset)].std())

    def lookup(self, cell: Nb201Genotype | str | int) -> dict:
        """{"cell", "index", "unique_string", and per data set {"accuracy", "rank", "optimum", "gap"}}; gap =
        optimum - accuracy, in points."""
        i = cell_index(cell)
        out: dict = {"cell": all_cell_strings()[i], "index": i, "unique_string": self.unique[i]}
        for ds in DATASETS:
            acc, best = float(self.acc[ds][i]), self.optimum(ds)
            out[ds] = {"accuracy": acc, "rank": int(self.rank[ds][i]), "optimum": best, "gap": best - acc}
        return out


def read_rows(path: str | Path = TABLE_FILE) -> list[dict[str, str]]:
    """The shipped table's rows as text, in index order."""
    try:
        with lzma.open(path, "rt", encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, lzma.LZMAError) as e:
        raise NGEError(f"cannot read the NAS-Bench-201 table {path}: {e}; reinstall nge") from None


@lru_cache(maxsize=1)
def load_table() -> Nb201Table:
    """The shipped table, read once per process (about 0.1 s) and checked: every cell once, in index order."""
    rows = read_rows()
    strings = all_cell_strings()
    if len(rows) != N_CELLS or any(r["cell"] != s for r, s in zip(rows, strings, strict=False)):
        raise NGEError(f"the NAS-Bench-201 table {TABLE_FILE} is not the {N_CELLS} cells in index order; reinstall nge")
    acc = {ds: np.array([float(r[ds]) for r in rows]) for ds in DATASETS}
    for a in acc.values():
        a.flags.writeable = False
    rank = {ds: _min_ranks(a) for ds, a in acc.items()}
    for r in rank.values():
        r.flags.writeable = False
    return Nb201Table(acc, rank, tuple(r["unique_string"] for r in rows))


def lookup(cell: Nb201Genotype | str | int) -> dict:
    """The three accuracies and ranks of one cell (`Nb201Table.lookup`)."""
    return load_table().lookup(cell)


def optimum(dataset: str = "cifar10") -> dict:
    """The best cell of a data set and its accuracy: {"cell", "index", "accuracy"}."""
    t = load_table()
    i = t.best_index(dataset)
    return {"cell": all_cell_strings()[i], "index": i, "accuracy": float(t.acc[dataset][i])}


def uniform_mean(dataset: str = "cifar10") -> float:
    return load_table().uniform_mean(dataset)


def uniform_std(dataset: str = "cifar10") -> float:
    return load_table().uniform_std(dataset)


def write_table(source: str | Path, dest: str | Path = TABLE_FILE) -> None:
    """The conversion (NB201_TABLE.md): the shared CSV's five columns, renamed, every value's text unchanged
    (full precision), rows sorted by cell index, xz-compressed (preset 9 extreme)."""
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_index = {cell_index(r[SOURCE_COLUMNS["cell"]]): r for r in rows}
    if len(by_index) != N_CELLS or len(rows) != N_CELLS:
        raise NGEError(f"{source} has {len(rows)} rows and {len(by_index)} distinct cells, not {N_CELLS}")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for i in range(N_CELLS):
        w.writerow([by_index[i][SOURCE_COLUMNS[c]] for c in COLUMNS])
    Path(dest).write_bytes(lzma.compress(out.getvalue().encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
