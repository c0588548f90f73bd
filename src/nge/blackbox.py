"""Black-box search on NAS-Bench-201, with the table as the oracle: does NGE help RL and evolution?

    python -m nge.blackbox [--out docs/results/nb201] [--seeds 200] [--budgets 10,30,100,300]
                           [--noise 0,0.5,1] [--lr-METHOD X ...]

A query of a cell returns its CIFAR-10 200-epoch test accuracy from the shipped table plus Gaussian
noise of std `noise` points. The noise is a fixed error per cell and seed (one low-fidelity training
per cell, as a 12-epoch table value is): a re-query of a cell returns the same value and still costs a
query (every query counts, none is cached). The noise of a seed is shared by every method (common random
numbers), so seeds pair across methods.

Methods (`METHODS`):
    random     uniform cells
    re         regularised evolution (Real et al. 2019): the first `population` queries uniform cells,
               then a tournament of `sample` members drawn with replacement picks a parent, one uniformly
               chosen edge gets a uniformly chosen different op, the child joins and the oldest dies
    reinforce  REINFORCE with free logits (6 x 5, 1e-3 randn, as NAS-Bench-201's baseline; the DARTS
               parameterisation `build_arch("darts", ...)`), one cell per query, Adam, a moving-average baseline
    nge-rl     the same REINFORCE with NGE as the policy: `build_arch("nge", nb201.TOPOLOGY, 5, ("cell",))`,
               logits `cell_logits()[0]`
    nge-ea     regularised evolution whose mutation is drawn from NGE's P (edge e with probability
               proportional to 1 - P[e, current op], new op k with P[e, k] / (1 - P[e, current op])),
               P trained by REINFORCE on the child's fitness minus its parent's, with an entropy bonus
               (as `nge.strategies.Evolution`; the distribution is `nge.strategies.nb201_mutation_options`')
    logits-ea  NGE-EA with free logits (the DARTS parameterisation) as P: the control that tells NGE's
               graph embedding from learned mutations as such (as REINFORCE is NGE-RL's)

No method uses the budget, so the run with budget B is the first B queries of the longest run: one
run per seed gives every budget. A method's pick after B queries is the queried cell with the best
signal (ties: the earliest); its reported value is that cell's true accuracy. The truth never chooses.

Learning rates of the three learned methods, unless given: the best mean of a grid (`LR_GRID`) on
CIFAR-100 (signal and truth from the CIFAR-100 column, seeds `TUNE_SEEDS`, budget 100, noise
`TUNE_NOISE`), so that no CIFAR-10 value chooses them.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nge.errors import NGEError
from nge.spaces import nb201
from nge.spaces.nb201_table import N_CELLS, PLACE, index_genotype, load_table, ops_to_index
from nge.stats import t_interval_90

N_EDGES, N_OPS = nb201.N_EDGES, len(nb201.PRIMITIVES)
METHODS = ("random", "re", "reinforce", "nge-rl", "logits-ea", "nge-ea")
LEARNED = ("reinforce", "nge-rl", "logits-ea", "nge-ea")
LABELS = {"random": "random search", "re": "regularised evolution", "reinforce": "REINFORCE",
          "nge-rl": "NGE-RL", "logits-ea": "logits-EA", "nge-ea": "NGE-EA"}
CONTROLS = {"nge-rl": "reinforce", "nge-ea": "logits-ea"}  # NGE's P against free logits, all else equal
BUDGETS = (10, 30, 100, 300)
NOISES = (0.0, 0.5, 1.0)
POPULATION, SAMPLE = 10, 3  # NAS-Bench-201's R-EA settings
ENTROPY_RL, ENTROPY_EA = 1e-3, 1e-2  # nge's search.rl and search.ea defaults
BASELINE_DECAY = 0.9
LR_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
TUNE_SEEDS = range(10_000, 10_050)
TUNE_BUDGET = 100
NOISE_STREAM = 201  # the noise generator's first key, apart from the methods' draws


class Oracle:
    """The table as a black box: `query(i)` returns cell i's accuracy (points) plus its fixed noise and
    records the query."""

    def __init__(self, seed: int, noise: float, dataset: str = "cifar10"):
        if not (math.isfinite(noise) and noise >= 0):
            raise NGEError(f"noise must be a finite number >= 0, got {noise}")
        self.true = load_table().acc[load_table().check_dataset(dataset)]
        # one standard normal per cell and seed, scaled: the same universe at every noise level
        z = np.random.default_rng([NOISE_STREAM, seed]).standard_normal(N_CELLS) if noise > 0 else 0.0
        self.signal = self.true + noise * z
        self.cells: list[int] = []

    def query(self, i: int) -> float:
        self.cells.append(int(i))
        return float(self.signal[i])

    @property
    def n(self) -> int:
        return len(self.cells)


@dataclass
class Run:
    """One method's queries on one seed: cells in query order, their signals and true values, telemetry."""

    method: str
    seed: int
    noise: float
    cells: np.ndarray
    signals: np.ndarray
    true: np.ndarray
    info: dict = field(default_factory=dict)

    def pick(self, budget: int) -> int:
        """Position (in query order) of the best signal among the first `budget` queries; ties: the earliest."""
        return int(np.argmax(self.signals[:budget]))

    def best_so_far(self) -> np.ndarray:
        """After each query, the true value of the best-by-signal cell so far."""
        idx = np.arange(len(self.signals))
        running = np.maximum.accumulate(self.signals)
        new = np.r_[True, self.signals[1:] > running[:-1]]  # strictly better: ties keep the earlier
        return self.true[np.maximum.accumulate(np.where(new, idx, 0))]


# ------------------------------------------------------------------------------------------- policies


def sample_ops(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One op index per edge from P (n_edges, n_ops) by inverse CDF."""
    u = rng.random((p.shape[0], 1))
    return np.minimum((u > np.cumsum(p, axis=1)).sum(axis=1), p.shape[1] - 1)


def policy_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of pi(cell) = prod_e P[e, op_e]: the sum over edges; 6 ln 5 = 9.66 when uniform."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum()


def mutation_logq(logits: torch.Tensor, current: np.ndarray) -> torch.Tensor:
    """log q(edge e, op k) of every one-edge op change of the cell `current` (op indices), (n_edges, n_ops);
    -inf at the current ops. q(e, k) = (1 - P[e, c_e]) / sum_e' (1 - P[e', c_e']) * P[e, k] / (1 - P[e, c_e])."""
    mask = F.one_hot(torch.as_tensor(current), logits.shape[-1]).bool()
    rest = logits.masked_fill(mask, -math.inf)
    lse_rest = torch.logsumexp(rest, dim=-1)
    edge_logq = F.log_softmax(lse_rest - torch.logsumexp(logits, dim=-1), dim=0)  # log(1 - P[e, c_e]), normalised
    return edge_logq[:, None] + rest - lse_rest[:, None]


def _mutation_entropy(logq: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(logq)
    lq = logq[finite]
    return -(lq.exp() * lq).sum()


def policy_module(name: str, seed: int):
    """A parameterisation of `nge.arch` ("nge", or "darts": free logits, 1e-3 randn) for the NAS-Bench-201 cell,
    initialised from `seed` (the global RNG untouched); its `cell_logits()[0]` is the (6, 5) policy."""
    from nge.arch import build_arch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_arch(name, topology=nb201.TOPOLOGY, n_ops=N_OPS, cell_types=nb201.CELL_TYPES)


def nge_policy(seed: int):
    return policy_module("nge", seed)


# ------------------------------------------------------------------------------------------- methods


def random_search(oracle: Oracle, budget: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    while oracle.n < budget:
        oracle.query(int(rng.integers(N_CELLS)))
    return {}


def _evolve(oracle: Oracle, budget: int, seed: int, mutate: Callable, population: int, sample: int) -> dict:
    """Regularised evolution. `mutate(parent_ops, rng)` -> (child op indices, learn or None); after the child's
    query, `learn(child_fitness - parent_fitness)` (a learned mutation distribution takes its step)."""
    from nge.strategies import Population

    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    pop, largest = Population(population, sample), 0
    while oracle.n < budget:
        if not pop.full():  # the first `population` queries: uniform cells, drawn as random search draws them
            child = int(rng.integers(N_CELLS))
            pop.add(child, oracle.query(child))
        else:
            parent, parent_fitness = pop.select(gen)
            ops, learn = mutate(_ops(parent), rng)
            child = int(ops_to_index(ops))
            fitness = oracle.query(child)
            if learn is not None:
                learn(fitness - parent_fitness)
            pop.add(child, fitness)
        largest = max(largest, len(pop.members))
    return {"max_population": largest}


def _ops(i: int) -> np.ndarray:
    return (i // PLACE) % N_OPS


def regularized_evolution(oracle: Oracle, budget: int, seed: int, population: int = POPULATION,
                          sample: int = SAMPLE) -> dict:
    def mutate(ops: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, None]:
        e = int(rng.integers(N_EDGES))
        new = int(rng.integers(N_OPS - 1))
        child = ops.copy()
        child[e] = new + (new >= ops[e])  # uniform over the other ops
        return child, None

    return _evolve(oracle, budget, seed, mutate, population, sample)


def _reinforce(oracle: Oracle, budget: int, seed: int, logits_fn: Callable[[], torch.Tensor], params, lr: float,
               entropy_weight: float, baseline_decay: float) -> dict:
    """One cell per query from softmax(logits); Adam on -(R - b) log pi(cell) - beta H(pi), R the signal as a
    fraction, b its moving average (started at the first reward, updated after each step)."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(params, lr=lr)
    baseline, entropy, modes = None, [], []
    rows = torch.arange(N_EDGES)
    while oracle.n < budget:
        logits = logits_fn()
        logp = F.log_softmax(logits, dim=-1)
        ops = sample_ops(logp.detach().double().exp().numpy(), rng)
        reward = oracle.query(int(ops_to_index(ops))) / 100
        baseline = reward if baseline is None else baseline
        h = -(logp.exp() * logp).sum()
        loss = -(reward - baseline) * logp[rows, torch.as_tensor(ops)].sum() - entropy_weight * h
        opt.zero_grad()
        loss.backward()
        opt.step()
        baseline = baseline_decay * baseline + (1 - baseline_decay) * reward
        with torch.no_grad():  # the policy after this query's step
            after = logits_fn()
            entropy.append(float(policy_entropy(after)))
            modes.append(int(ops_to_index(after.argmax(dim=-1).numpy())))
    return {"entropy": entropy, "mode": modes}


def reinforce(oracle: Oracle, budget: int, seed: int, lr: float = 0.01, entropy_weight: float = ENTROPY_RL,
              baseline_decay: float = BASELINE_DECAY, arch=None) -> dict:
    arch = arch if arch is not None else policy_module("darts", seed)
    return _reinforce(oracle, budget, seed, lambda: arch.cell_logits()[0], arch.parameters(), lr, entropy_weight,
                      baseline_decay)


def nge_rl(oracle: Oracle, budget: int, seed: int, lr: float = 0.01, entropy_weight: float = ENTROPY_RL,
           baseline_decay: float = BASELINE_DECAY, arch=None) -> dict:
    arch = arch if arch is not None else nge_policy(seed)
    return _reinforce(oracle, budget, seed, lambda: arch.cell_logits()[0], arch.parameters(), lr, entropy_weight,
                      baseline_decay)


def nge_ea(oracle: Oracle, budget: int, seed: int, lr: float = 0.01, entropy_weight: float = ENTROPY_EA,
           population: int = POPULATION, sample: int = SAMPLE, arch=None) -> dict:
    """Regularised evolution with mutations from `arch`'s P (default NGE) that learn from each child."""
    arch = arch if arch is not None else nge_policy(seed)
    opt = torch.optim.Adam(arch.parameters(), lr=lr)
    entropy, mutation_entropy, modes = [], [], []

    def mutate(ops: np.ndarray, rng: np.random.Generator):
        logq = mutation_logq(arch.cell_logits()[0], ops)
        q = logq.detach().double().exp().flatten().numpy()
        k = min(int(np.searchsorted(np.cumsum(q), rng.random() * q.sum(), side="right")), q.size - 1)
        while q[k] == 0:  # rounding onto a current op (no mass): the previous option with mass
            k -= 1
        e, op = divmod(k, N_OPS)
        child = ops.copy()
        child[e] = op

        def learn(advantage: float) -> None:
            """Adam on -(f_child - f_parent) log q(mutation) - beta H(q), fitness as a fraction."""
            h = _mutation_entropy(logq)
            opt.zero_grad()
            (-(advantage / 100) * logq[e, op] - entropy_weight * h).backward()
            opt.step()
            mutation_entropy.append(h.item())
            with torch.no_grad():
                after = arch.cell_logits()[0]
                entropy.append(float(policy_entropy(after)))
                modes.append(int(ops_to_index(after.argmax(dim=-1).numpy())))

        return child, learn

    with torch.no_grad():  # P during the first `population` (uniform) queries
        start = arch.cell_logits()[0]
        start_h, start_mode = float(policy_entropy(start)), int(ops_to_index(start.argmax(dim=-1).numpy()))
    info = _evolve(oracle, budget, seed, mutate, population, sample)
    pad = oracle.n - len(entropy)
    return {**info, "entropy": [start_h] * pad + entropy, "mutation_entropy": mutation_entropy,
            "mode": [start_mode] * pad + modes}


def logits_ea(oracle: Oracle, budget: int, seed: int, **hp) -> dict:
    """The control of NGE-EA: the same learned mutations with free logits (the DARTS parameterisation) as P."""
    return nge_ea(oracle, budget, seed, arch=policy_module("darts", seed), **hp)


RUNNERS: dict[str, Callable[..., dict]] = {"random": random_search, "re": regularized_evolution,
                                           "reinforce": reinforce, "nge-rl": nge_rl, "logits-ea": logits_ea,
                                           "nge-ea": nge_ea}


def run_method(method: str, seed: int, noise: float, budget: int, dataset: str = "cifar10", **hp) -> Run:
    """`budget` queries of `method` on seed `seed`; `hp`: the method's keyword arguments (lr, ...)."""
    if method not in RUNNERS:
        raise NGEError(f"unknown black-box method '{method}' (known: {', '.join(METHODS)})")
    if budget < 1:
        raise NGEError(f"the budget must be >= 1 query, got {budget}")
    oracle = Oracle(seed, noise, dataset)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (6, 5) logits and a 4-node GCN: more threads only wait on each other
    try:
        info = RUNNERS[method](oracle, budget, seed, **hp)
    finally:
        torch.set_num_threads(threads)
    cells = np.array(oracle.cells, dtype=np.int64)
    return Run(method, seed, noise, cells, oracle.signal[cells], oracle.true[cells], info)


# ------------------------------------------------------------------------------------------- the study


TUNE_NOISE = 0.5  # the tuning's noise level: the middle one


def tune(log: Callable[[str], None], noise: float = TUNE_NOISE, seeds: Sequence[int] = TUNE_SEEDS,
         budget: int = TUNE_BUDGET, grid: Sequence[float] = LR_GRID, methods: Sequence[str] = LEARNED
         ) -> tuple[dict[str, float], list[dict]]:
    """Each learned method's Adam learning rate: the grid value with the best mean true CIFAR-100 accuracy of
    the pick after `budget` queries of a CIFAR-100 signal (ties: the smaller rate). Returns it and the rows."""
    rows, best = [], {}
    for method in methods:
        means = {}
        for lr in grid:
            runs = [run_method(method, s, noise, budget, "cifar100", lr=lr) for s in seeds]
            rows += _rows(runs, (budget,), "cifar100", lr)
            means[lr] = statistics.fmean(float(r.true[r.pick(budget)]) for r in runs)
            log(f"tune {method} lr={lr:g}: CIFAR-100 {means[lr]:.3f}")
        best[method] = max(grid, key=lambda lr: (means[lr], -lr))
    return best, rows


def run_study(seeds: Sequence[int], noises: Sequence[float], budget: int, lrs: dict[str, float],
              log: Callable[[str], None]) -> tuple[dict[tuple[str, float], list[Run]], dict[str, float]]:
    """Every method, noise level and seed at the largest budget; returns the runs and seconds per method."""
    runs, seconds = {}, dict.fromkeys(METHODS, 0.0)
    for noise in noises:
        for method in METHODS:
            start = time.perf_counter()
            hp = {"lr": lrs[method]} if method in LEARNED else {}
            runs[method, noise] = [run_method(method, s, noise, budget, **hp) for s in seeds]
            seconds[method] += time.perf_counter() - start
            log(f"{method} noise={noise:g}: {len(seeds)} seeds x {budget} queries in "
                f"{time.perf_counter() - start:.0f} s")
    return runs, seconds


def _telemetry(run: Run, key: str, budget: int) -> float | None:
    values = run.info.get(key)
    return values[budget - 1] if values else None


def _rows(runs: Sequence[Run], budgets: Sequence[int], dataset: str, lr: float | None) -> list[dict]:
    table = load_table()
    out = []
    for r in runs:
        for b in budgets:
            k = r.pick(b)
            cell = int(r.cells[k])
            mode = _telemetry(r, "mode", b)
            h = _telemetry(r, "entropy", b)
            out.append({"dataset": dataset, "method": r.method, "lr": "" if lr is None else lr, "noise": r.noise,
                        "seed": r.seed, "budget": b, "pick_index": cell, "pick_signal": round(float(r.signals[k]), 4),
                        "pick_acc": round(float(r.true[k]), 4), "pick_rank": int(table.rank[dataset][cell]),
                        "unique_cells": len(set(r.cells[:b].tolist())),
                        "p_entropy": "" if h is None else round(h, 4),
                        "mode_acc": "" if mode is None else round(float(table.acc[dataset][mode]), 4)})
    return out


CSV_FIELDS = ("dataset", "method", "lr", "noise", "seed", "budget", "pick_index", "pick_signal", "pick_acc",
              "pick_rank", "unique_cells", "p_entropy", "mode_acc")


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _fmt_interval(values: Sequence[float]) -> str:
    mean, lo, hi = t_interval_90(values)
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def summary_markdown(runs: dict[tuple[str, float], list[Run]], budgets: Sequence[int], noises: Sequence[float],
                     lrs: dict[str, float], tune_rows: Sequence[dict], seconds: dict[str, float], command: str) -> str:
    table = load_table()
    n = len(next(iter(runs.values())))

    def picks(method: str, noise: float, b: int) -> list[float]:
        return [float(r.true[r.pick(b)]) for r in runs[method, noise]]

    head = "| method | " + " | ".join(f"{b} queries" for b in budgets) + " |\n|---|" + "---:|" * len(budgets)
    lines = [
        "# Black-box search on NAS-Bench-201 (the table as the oracle)", "",
        f"Written by `{command}`. {n} seeds per method (0..{n - 1}, paired: one noise universe per seed, shared "
        "by the methods). A query returns a cell's CIFAR-10 200-epoch test accuracy plus a fixed Gaussian error "
        "of std `noise` points per cell and seed; every query counts (re-queries too). The pick after B queries "
        "is the queried cell with the best signal; the values below are its true CIFAR-10 accuracy (%).", "",
        f"Reference: a uniformly random cell {table.uniform_mean():.2f} (exact mean over the 15,625; std "
        f"{table.uniform_std():.2f}); the optimum {table.optimum():.2f}.", "",
        "Settings: regularised evolution population 10, tournament 3 (NAS-Bench-201's R-EA); REINFORCE and NGE-RL "
        f"entropy bonus {ENTROPY_RL:g}, baseline decay {BASELINE_DECAY}; NGE-EA entropy bonus {ENTROPY_EA:g}; "
        "Adam (0.9, 0.999) learning rates " + ", ".join(f"{LABELS[m]} {lrs[m]:g}" for m in LEARNED) + ".",
        "",
    ]
    for noise in noises:
        lines += [f"## noise {noise:g}", "", "Mean ± std of the pick's true accuracy:", "", head]
        for m in METHODS:
            cells = [f"{statistics.fmean(v):.2f} ± {statistics.stdev(v):.2f}" for v in (picks(m, noise, b) for b in budgets)]
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines += ["", "Paired differences (mean [90% t interval], points) of the pick's true accuracy:", "",
                  head.replace("| method |", "| difference |")]
        for ref in ("re", "random"):
            for m in METHODS:
                if m == ref:
                    continue
                cells = [_fmt_interval([a - c for a, c in zip(picks(m, noise, b), picks(ref, noise, b), strict=True)])
                         for b in budgets]
                lines.append(f"| {LABELS[m]} − {LABELS[ref]} | " + " | ".join(cells) + " |")
        for m, ref in CONTROLS.items():  # NGE's P against free logits
            cells = [_fmt_interval([a - c for a, c in zip(picks(m, noise, b), picks(ref, noise, b), strict=True)])
                     for b in budgets]
            lines.append(f"| {LABELS[m]} − {LABELS[ref]} | " + " | ".join(cells) + " |")
        curves = {m: np.stack([r.best_so_far() for r in runs[m, noise]]).mean(0) for m in METHODS}
        marks = [b for b in budgets if b > 1]
        lines += ["", "Queries until the mean curve (the picture's) first reaches regularised evolution's mean after B "
                  "queries (descriptive; '>' where it never does within the run):", "",
                  "| method | " + " | ".join(f"RE's {b} ({curves['re'][b - 1]:.2f})" for b in marks) + " |",
                  "|---|" + "---:|" * len(marks)]
        for m in METHODS:
            cells = []
            for b in marks:
                reached = np.flatnonzero(curves[m] >= curves["re"][b - 1])
                cells.append(str(int(reached[0]) + 1) if reached.size else f"> {len(curves[m])}")
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines += ["", "Policy telemetry after the last query: entropy of P (nats; uniform 9.66), the true accuracy of "
                  "P's most probable cell (mean ± std; never used to pick), the commonest such cell and its share of "
                  "the seeds, unique cells queried:", "",
                  "| method | P entropy | P's mode | commonest mode | unique cells |", "|---|---:|---:|---|---:|"]
        b = max(budgets)
        for m in METHODS:
            rs = runs[m, noise]
            uniq = statistics.fmean(len(set(r.cells[:b].tolist())) for r in rs)
            if m in LEARNED:
                h = [r.info["entropy"][b - 1] for r in rs]
                mode = [float(table.acc["cifar10"][r.info["mode"][b - 1]]) for r in rs]
                common, count = Counter(r.info["mode"][b - 1] for r in rs).most_common(1)[0]
                lines.append(f"| {LABELS[m]} | {statistics.fmean(h):.2f} ± {statistics.stdev(h):.2f} | "
                             f"{statistics.fmean(mode):.2f} ± {statistics.stdev(mode):.2f} | "
                             f"`{index_genotype(common)}` ({table.acc['cifar10'][common]:.2f}), {count / len(rs):.0%} | "
                             f"{uniq:.0f} |")
            else:
                lines.append(f"| {LABELS[m]} | | | | {uniq:.0f} |")
        lines.append("")
    if tune_rows:
        lrs_seen = sorted({r["lr"] for r in tune_rows})
        lines += ["## Learning rates (tuned on CIFAR-100)", "",
                  f"Mean true CIFAR-100 accuracy of the pick after {tune_rows[0]['budget']} queries of a CIFAR-100 "
                  f"signal with noise {tune_rows[0]['noise']:g}, {len({r['seed'] for r in tune_rows})} seeds "
                  f"({min(r['seed'] for r in tune_rows)}..): the best (bold) is used above.", "",
                  "| method | " + " | ".join(f"lr {lr:g}" for lr in lrs_seen) + " |", "|---|" + "---:|" * len(lrs_seen)]
        for m in LEARNED:
            cells = []
            for lr in lrs_seen:
                v = statistics.fmean(r["pick_acc"] for r in tune_rows if r["method"] == m and r["lr"] == lr)
                cells.append(f"**{v:.2f}**" if lr == lrs[m] else f"{v:.2f}")
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    total = sum(seconds.values())
    lines += [f"Time at 1 thread: {total / 60:.1f} min for the study (" +
              ", ".join(f"{LABELS[m]} {seconds[m]:.0f} s" for m in METHODS) + ").", ""]
    return "\n".join(lines)


def plot(path: Path, runs: dict[tuple[str, float], list[Run]], noises: Sequence[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = load_table()
    fig, axes = plt.subplots(1, len(noises), figsize=(5.2 * len(noises), 4.2), sharey=True, squeeze=False)
    for ax, noise in zip(axes[0], noises, strict=True):
        for m in METHODS:
            curves = np.stack([r.best_so_far() for r in runs[m, noise]])
            mean, se = curves.mean(0), curves.std(0, ddof=1) / math.sqrt(len(curves))
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean, label=LABELS[m], lw=1.6)
            ax.fill_between(x, mean - se, mean + se, alpha=0.2)
        ax.axhline(table.optimum(), color="k", ls="--", lw=0.8, label=f"optimum {table.optimum():.2f}")
        ax.set_xscale("log")
        ax.set_ylim(91.0, 94.6)
        ax.set_xlabel("queries")
        ax.set_title(f"signal noise std {noise:g} points")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("true CIFAR-10 accuracy of the best-by-signal cell (%)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"NAS-Bench-201 black-box search: mean over {len(next(iter(runs.values())))} seeds (± s.e.)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise NGEError(f"{what} must be numbers separated by commas, got '{text}'") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nge.blackbox", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/results/nb201", help="folder for blackbox.csv, .md, .png")
    p.add_argument("--seeds", type=int, default=200, help="seeds per method and noise level (default 200)")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="query budgets (default 10,30,100,300)")
    p.add_argument("--noise", default=",".join(f"{x:g}" for x in NOISES), help="noise stds in points (default 0,0.5,1)")
    for m in LEARNED:
        p.add_argument(f"--lr-{m}", type=float, help=f"{LABELS[m]}'s Adam learning rate (default: tuned on CIFAR-100)")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(1)
        budgets = tuple(sorted(int(b) for b in _floats(args.budgets, "--budgets")))
        noises = _floats(args.noise, "--noise")
        if args.seeds < 2 or budgets[0] < 1 or any(not (math.isfinite(x) and x >= 0) for x in noises):
            raise NGEError("--seeds must be >= 2, budgets >= 1 and noise levels finite and >= 0")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        log = lambda msg: print(msg, file=sys.stderr, flush=True)
        given = {m: getattr(args, f"lr_{m.replace('-', '_')}") for m in LEARNED}
        lrs, tune_rows = {m: v for m, v in given.items() if v is not None}, []
        missing = [m for m in LEARNED if m not in lrs]
        if missing:
            tuned, tune_rows = tune(log, methods=missing)
            lrs.update(tuned)
        runs, seconds = run_study(range(args.seeds), noises, max(budgets), lrs, log)
        rows = list(tune_rows)
        for (m, _noise), rs in runs.items():
            rows += _rows(rs, budgets, "cifar10", lrs.get(m))
        write_csv(out / "blackbox.csv", rows)
        command = "python -m nge.blackbox" + (f" {' '.join(argv)}" if argv else "")
        (out / "blackbox.md").write_text(summary_markdown(runs, budgets, noises, lrs, tune_rows, seconds, command))
        plot(out / "blackbox.png", runs, noises)
        log(f"wrote {out / 'blackbox.csv'}, {out / 'blackbox.md'}, {out / 'blackbox.png'}")
        return 0
    except NGEError as e:
        print(f"nge blackbox: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
