"""Small statistics for comparing evaluators and cells: ICC, rank correlations, bootstrap and t intervals.

Plain Python (no SciPy); the ablation tables use them (`nge.ablate.evaluator_tables`)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z_95, Z_80 = 1.959964, 0.841621  # two-sided alpha 0.05; power 0.8


@dataclass(frozen=True)
class ICC:
    icc: float  # sigma2_between / (sigma2_between + sigma2_within), at most 1
    between: float  # sigma2_between (>= 0)
    within: float  # sigma2_within


def icc(groups: Sequence[Sequence[float]]) -> ICC:
    """One-way random-effects ICC(1) from ANOVA over groups of replicates (unbalanced: n0 as in Snedecor)."""
    groups = [list(g) for g in groups if g]
    n, a = sum(len(g) for g in groups), len(groups)
    if a < 2 or n <= a:
        raise ValueError("icc needs at least 2 groups and one group with 2 or more values")
    grand = sum(map(sum, groups)) / n
    ssb = sum(len(g) * (statistics.fmean(g) - grand) ** 2 for g in groups)
    ssw = sum((x - statistics.fmean(g)) ** 2 for g in groups for x in g)
    msb, msw = ssb / (a - 1), ssw / (n - a)
    n0 = (n - sum(len(g) ** 2 for g in groups) / n) / (a - 1)
    between = max(0.0, (msb - msw) / n0)
    total = between + msw
    return ICC(between / total if total > 0 else 1.0, between, msw)


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):  # ties share their mean rank
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    return pearson(_ranks(xs), _ranks(ys))


def kendall(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for)."""
    conc = disc = tx = ty = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            dx, dy = xs[i] - xs[j], ys[i] - ys[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom > 0 else 0.0


def _quantiles(values: list[float], level: float) -> tuple[float, float]:
    values = sorted(v for v in values if not math.isnan(v))
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return values[int(lo * (len(values) - 1))], values[int(math.ceil(hi * (len(values) - 1)))]


def bootstrap(groups: Sequence[Sequence[float]], stat: Callable[[list], ICC], n: int = 2000, level: float = 0.9,
              seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `stat(groups).icc` over resamples of the groups (cells) with replacement."""
    rng, groups, out = random.Random(seed), list(groups), []
    for _ in range(n):
        sample = [groups[rng.randrange(len(groups))] for _ in groups]
        try:
            out.append(stat(sample).icc)
        except ValueError:  # a resample with no group of 2 or more
            continue
    return _quantiles(out, level)


def bootstrap_pairs(xs: Sequence[float], ys: Sequence[float], stat: Callable[[list, list], float], n: int = 2000,
                    level: float = 0.9, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `stat(xs, ys)` over resamples of the pairs (cells) with replacement."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        idx = [rng.randrange(len(xs)) for _ in xs]
        out.append(stat([xs[i] for i in idx], [ys[i] for i in idx]))
    return _quantiles(out, level)


# Student's t, 95th percentile (a two-sided 90% interval), for 1..30 degrees of freedom
T_95 = (6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823, 1.7709,
        1.7613, 1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109, 1.7081, 1.7056,
        1.7033, 1.7011, 1.6991, 1.6973)
Z_90 = 1.644854


def t_95(df: int) -> float:
    """Student's t 95th percentile; beyond the table, with the first Cornish-Fisher term."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    return T_95[df - 1] if df <= len(T_95) else Z_90 + (Z_90 ** 3 + Z_90) / (4 * df)


def t_interval_90(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and two-sided 90% t interval of the mean, for n >= 2 independent values."""
    n = len(values)
    if n < 2:
        raise ValueError("a t interval needs at least 2 values")
    mean, half = statistics.mean(values), t_95(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def n_to_clear_zero(mean: float, sd: float, limit: int = 1000) -> int | None:
    """The fewest values whose 90% t interval excludes 0 at this mean and standard deviation: a projection
    (the mean is itself an estimate); None for a mean of 0 or beyond `limit`."""
    if mean == 0:
        return None
    return next((n for n in range(2, limit + 1) if t_95(n - 1) * sd / math.sqrt(n) < abs(mean)), None)


def smallest_difference(within_sd: float, n: int) -> float:
    """The smallest difference between two cells' means over n training seeds each that a two-sided test at
    alpha 0.05 detects with power 0.8, given the within-cell (seed-to-seed) standard deviation."""
    return (Z_95 + Z_80) * within_sd * math.sqrt(2 / n)
