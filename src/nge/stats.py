"""Small statistics for comparing evaluators and cells: ICC, rank correlations, bootstrap and t intervals,
t tests with Holm's adjustment, and power.

Plain Python (no SciPy); the ablation tables use them (`nge.ablate.evaluator_tables`). Every function
refuses a non-finite value (ValueError); a statistic that is undefined for its data (a correlation of a
constant variable, an ICC without any variance) is NaN."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Z_95, Z_80 = 1.959964, 0.841621  # two-sided alpha 0.05; power 0.8


def _check(values: Sequence[float], what: str = "values") -> None:
    bad = next((v for v in values if not math.isfinite(v)), None)
    if bad is not None:
        raise ValueError(f"{what} hold a non-finite value ({bad}); leave it out before any statistic")


@dataclass(frozen=True)
class ICC:
    icc: float  # sigma2_between / (sigma2_between + sigma2_within), at most 1; NaN without any variance
    between: float  # sigma2_between (>= 0)
    within: float  # sigma2_within
    df_within: int = 0  # degrees of freedom of `within`: values beyond one per group


def icc(groups: Sequence[Sequence[float]]) -> ICC:
    """One-way random-effects ICC(1) from ANOVA over groups of replicates (unbalanced: n0 as in Snedecor)."""
    groups = [list(g) for g in groups if g]
    for g in groups:
        _check(g, "icc groups")
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
    return ICC(between / total if total > 0 else math.nan, between, msw, n - a)


def reliability(est: ICC | None, k: float) -> float:
    """Reliability of a mean of k replicates (Spearman-Brown of the ICC); NaN where the ICC is missing,
    undefined or not above 0 (a mean with no reliable part)."""
    if est is None or not est.icc > 0:
        return math.nan
    return k * est.icc / (1 + (k - 1) * est.icc)


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


def _pair_check(xs: Sequence[float], ys: Sequence[float]) -> None:
    if len(xs) != len(ys):
        raise ValueError(f"a correlation needs as many x as y values, got {len(xs)} and {len(ys)}")
    _check(xs, "x values")
    _check(ys, "y values")


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's r; NaN where a variable is constant (or fewer than 2 pairs)."""
    _pair_check(xs, ys)
    if len(xs) < 2:
        return math.nan
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy))) if sxx > 0 and syy > 0 else math.nan


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the mid-ranks; NaN where a variable is constant."""
    _pair_check(xs, ys)
    return pearson(_ranks(xs), _ranks(ys))


def kendall(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable accounted for); NaN where a variable is constant."""
    _pair_check(xs, ys)
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
    # (pairs untied in x) * (pairs untied in y): tx pairs are untied in y, ty pairs untied in x
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom > 0 else math.nan


def corrected_spearman(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Spearman's rho of the cells' means of two evaluators (a[i], b[i]: cell i's replicates), divided by the
    square root of both reliabilities of a cell mean (`reliability` of each one's ICC over these cells, at
    its mean number of replicates), clipped to [-1, 1]; NaN where either reliability or rho is undefined."""
    if len(a) != len(b) or not all(a) or not all(b):
        raise ValueError("corrected_spearman needs every cell's replicates of both evaluators")
    rho = spearman([statistics.fmean(x) for x in a], [statistics.fmean(y) for y in b])
    rels = []
    for groups in (a, b):
        try:
            est = icc(groups)
        except ValueError:  # no cell with replicates
            return math.nan
        rels.append(reliability(est, statistics.fmean(len(g) for g in groups)))
    if math.isnan(rho) or math.isnan(rels[0] * rels[1]):
        return math.nan
    return max(-1.0, min(1.0, rho / math.sqrt(rels[0] * rels[1])))


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval; `kept` of `tries` resamples had a defined statistic (the rest were dropped)."""
    lo: float
    hi: float
    kept: int
    tries: int

    def show(self, fmt: str = ".2f") -> str:
        if not self.kept:
            return "[n/a]"
        dropped = "" if self.kept == self.tries else f" ({self.kept}/{self.tries})"
        return f"[{self.lo:{fmt}}, {self.hi:{fmt}}]{dropped}"


def _quantiles(values: list[float], level: float) -> tuple[float, float]:
    values = sorted(values)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return values[int(lo * (len(values) - 1))], values[int(math.ceil(hi * (len(values) - 1)))]


def resample(items: Sequence, stat: Callable[[list], float], n: int = 2000, level: float = 0.9,
             seed: int = 0) -> Interval:
    """Percentile interval of `stat` over n resamples of the items with replacement. A resample whose
    statistic is undefined (NaN, or `stat` raising ValueError) is dropped and counted."""
    rng, items, out = random.Random(seed), list(items), []
    for _ in range(n):
        try:
            v = stat([items[rng.randrange(len(items))] for _ in items])
        except ValueError:
            continue
        if not math.isnan(v):
            out.append(v)
    if not out:
        return Interval(math.nan, math.nan, 0, n)
    return Interval(*_quantiles(out, level), len(out), n)


def bootstrap(groups: Sequence[Sequence[float]], stat: Callable[[list], ICC] = icc, n: int = 2000,
              level: float = 0.9, seed: int = 0) -> Interval:
    """Percentile interval of `stat(groups).icc` over resamples of the groups (cells) with replacement;
    a resample with no group of 2 or more values, or without any variance, is dropped."""
    return resample(groups, lambda sample: stat(sample).icc, n, level, seed)


def bootstrap_pairs(xs: Sequence[float], ys: Sequence[float], stat: Callable[[list, list], float], n: int = 2000,
                    level: float = 0.9, seed: int = 0) -> Interval:
    """Percentile interval of `stat(xs, ys)` over resamples of the pairs (cells) with replacement; a resample
    where it is undefined (e.g. a constant variable) is dropped."""
    _pair_check(xs, ys)
    return resample(list(zip(xs, ys, strict=True)), lambda s: stat([p[0] for p in s], [p[1] for p in s]),
                    n, level, seed)


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
    _check(values)
    mean, half = statistics.mean(values), t_95(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0 or x >= 1:
        return 0.0 if x <= 0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_p(t: float, df: float) -> float:
    """Two-sided p-value of Student's t statistic with df degrees of freedom."""
    if df <= 0:
        raise ValueError(f"a t test needs at least 1 degree of freedom, got {df}")
    return 1.0 if t == 0 else 0.0 if math.isinf(t) else betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """Student's t p-quantile (0 < p < 1), by bisection on `t_p`."""
    if not 0 < p < 1:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    tail = 2 * min(p, 1 - p)  # two-sided p-value of |t|
    lo, hi = 0.0, 1.0
    while t_p(hi, df) > tail:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_p(mid, df) > tail else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2 if p > 0.5 else -(lo + hi) / 2


def paired_t_p(values: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t test of mean 0 (n >= 2 paired differences)."""
    if len(values) < 2:
        raise ValueError("a t test needs at least 2 values")
    _check(values)
    mean, sd = statistics.mean(values), statistics.stdev(values)
    if sd == 0:
        return math.nan if mean == 0 else 0.0
    return t_p(mean / (sd / math.sqrt(len(values))), len(values) - 1)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all len(ps) tests), in the input's order;
    a NaN p-value stays NaN and counts in the family."""
    m = len(ps)
    order = sorted((i for i in range(m) if not math.isnan(ps[i])), key=lambda i: ps[i])
    out, running = [math.nan] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def t_power(delta: float, df: float, crit: float) -> float:
    """P(|T| > crit) for T noncentral t with df degrees of freedom and noncentrality delta: the power of a
    two-sided t test at critical value crit. Integrated over the chi distribution of the estimated sd
    (Simpson's rule, 400 intervals)."""
    centre = math.sqrt(max(df - 1, 0.0))  # the chi distribution's mode; its sd is at most 0.71
    lo, hi, steps = max(0.0, centre - 10), centre + 10, 400
    h, log_norm = (hi - lo) / steps, (df / 2 - 1) * math.log(2) + math.lgamma(df / 2)
    total = 0.0
    for i in range(steps + 1):
        u = lo + i * h
        if u == 0 and df > 1:
            continue  # the density is 0 there
        dens = math.exp((df - 1) * math.log(u) - u * u / 2 - log_norm) if u > 0 else math.exp(-log_norm)
        s = crit * u / math.sqrt(df)
        total += (1 if i in (0, steps) else 4 if i % 2 else 2) * dens * (_phi(delta - s) + _phi(-delta - s))
    return total * h / 3


def n_for_power(mean: float, sd: float, power: float = 0.8, limit: int = 1000) -> int | None:
    """The fewest independent values (n >= 2, e.g. paired differences) whose 90% t interval excludes 0 with
    probability `power` if they are normal with this mean and standard deviation: a projection (both are
    estimates). At the n where the mean just clears 0 that probability is about 1/2. None for a mean of 0 or
    beyond `limit`."""
    _check([mean, sd])
    if mean == 0:
        return None
    if sd == 0:
        return 2

    def enough(n: int) -> bool:
        return t_power(abs(mean) * math.sqrt(n) / sd, n - 1, t_95(n - 1)) >= power

    if not enough(limit):
        return None
    lo, hi = 1, limit  # enough(hi), and lo = 1 stands for "not enough"; power rises with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def smallest_difference(within_sd: float, n: int, df: int | None = None) -> float:
    """The smallest difference between two cells' means over n training seeds each that a two-sided test at
    alpha 0.05 detects with power 0.8, given the within-cell (seed-to-seed) standard deviation: a z test
    where it is known (df None), else a t test on a pooled estimate with df degrees of freedom (exact,
    from the noncentral t)."""
    _check([within_sd])
    if df is None:
        return (Z_95 + Z_80) * within_sd * math.sqrt(2 / n)
    if df < 1:
        raise ValueError(f"a t test needs at least 1 degree of freedom, got {df}")
    crit = t_quantile(0.975, df)
    lo, hi = 0.0, 2.0 * (crit + 1)
    while t_power(hi, df, crit) < 0.8:
        hi *= 2
    for _ in range(60):  # the noncentrality of power 0.8, by bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_power(mid, df, crit) < 0.8 else (lo, mid)
    return hi * within_sd * math.sqrt(2 / n)
