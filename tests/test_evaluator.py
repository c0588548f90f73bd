"""The evaluator instrument: statistics, cross-seed agreement, the validation split, and ablations
that train named genotypes with several seeds and named trainings (issue: search quality II, part 1)."""

import itertools
import json
import math
import random
import statistics
from fractions import Fraction

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from nge.ablate import _configs, paired_differences, run_ablation, write_tables
from nge.cli import main
from nge.config import AblateConfig, TrainRunConfig, load_config
from nge.data.sets import Dataset, ImageSet, split_train_val
from nge.engine import RunDir
from nge.errors import NGEError
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, Genotype, random_genotype
from nge.stats import (
    ICC,
    bootstrap,
    bootstrap_pairs,
    corrected_spearman,
    holm,
    icc,
    kendall,
    n_for_power,
    paired_t_p,
    pearson,
    reliability,
    resample,
    smallest_difference,
    spearman,
    t_95,
    t_interval_90,
    t_p,
    t_quantile,
)
from nge.telemetry import RANDOM_AGREEMENT, agreement, mean_agreement
from nge.training import held_out, tensor_data

QUIET = ["runtime.progress=false", "runtime.threads=1"]
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------ statistics


def test_icc_of_textbook_cases():
    assert icc([[1, 1], [2, 2], [3, 3]]).icc == pytest.approx(1.0)  # seeds never disagree
    assert icc([[1, 2], [1, 2], [1, 2]]).icc == 0.0  # every cell the same: only noise
    # balanced one-way ANOVA by hand: means 2, 5, 8; MSB = 2 * 18 / 2 = 18, MSW = 6 / 3 = 2
    est = icc([[1, 3], [4, 6], [7, 9]])
    assert est.within == pytest.approx(2.0) and est.between == pytest.approx((18 - 2) / 2)
    assert est.icc == pytest.approx(8 / 10)


def test_icc_recovers_simulated_variance_components():
    rng = random.Random(0)
    groups = []
    for _ in range(400):  # sigma_between = 2, sigma_within = 1: ICC = 4 / 5
        mu = rng.gauss(0, 2)
        groups.append([mu + rng.gauss(0, 1) for _ in range(rng.choice((2, 3)))])  # unbalanced
    est = icc(groups)
    assert est.icc == pytest.approx(0.8, abs=0.05) and est.within == pytest.approx(1.0, abs=0.1)


def test_rank_correlations_against_brute_force():
    xs, ys = [1.0, 2.0, 2.0, 4.0, 5.0, 3.0], [2.0, 1.0, 3.0, 3.0, 6.0, 4.0]
    assert spearman(xs, xs) == pytest.approx(1) and spearman(xs, [-x for x in xs]) == pytest.approx(-1)
    pairs = list(itertools.combinations(range(len(xs)), 2))
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    s = sum(sign(xs[i] - xs[j]) * sign(ys[i] - ys[j]) for i, j in pairs)
    n_x = sum(sign(xs[i] - xs[j]) != 0 for i, j in pairs)
    n_y = sum(sign(ys[i] - ys[j]) != 0 for i, j in pairs)
    assert kendall(xs, ys) == pytest.approx(s / math.sqrt(n_x * n_y))  # tau-b
    # Spearman = Pearson of the mid-ranks, computed here with numpy-free sorting
    rank = lambda v: [statistics.mean(k + 1 for k, w in enumerate(sorted(v)) if w == x) for x in v]  # noqa: E731
    rx, ry = rank(xs), rank(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert spearman(xs, ys) == pytest.approx(num / den)


def test_smallest_difference_has_the_stated_power():
    rng, n, sd = random.Random(1), 3, 0.7
    d = smallest_difference(sd, n)
    se = sd * math.sqrt(2 / n)
    hits = sum(abs(statistics.mean(rng.gauss(d, sd) for _ in range(n)) - statistics.mean(rng.gauss(0, sd) for _ in range(n)))
               > 1.959964 * se for _ in range(4000))
    assert hits / 4000 == pytest.approx(0.8, abs=0.03)


def test_t_interval_has_its_stated_coverage():
    mean, lo, hi = t_interval_90([1, 2, 3, 4, 5])
    assert mean == 3 and hi - mean == pytest.approx(2.1318 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    rng = random.Random(2)
    for n in (2, 5, 40):  # the table's two ends and the expansion beyond it
        hits = 0
        for _ in range(4000):
            _, lo, hi = t_interval_90([rng.gauss(1.0, 3.0) for _ in range(n)])
            hits += lo <= 1.0 <= hi
        assert hits / 4000 == pytest.approx(0.9, abs=0.015), n
    with pytest.raises(ValueError):
        t_interval_90([1.0])


def _clears_zero(rng: random.Random, n: int, mean: float, sd: float) -> bool:
    _, lo, hi = t_interval_90([rng.gauss(mean, sd) for _ in range(n)])
    return lo > 0 or hi < 0


def test_n_for_power_is_the_first_n_whose_interval_excludes_zero_in_80_percent_of_draws():
    rng = random.Random(3)
    for mean, sd in ((1.0, 2.0), (-0.6, 1.1)):
        n = n_for_power(mean, sd)
        at_n = sum(_clears_zero(rng, n, mean, sd) for _ in range(4000)) / 4000
        below = sum(_clears_zero(rng, n - 1, mean, sd) for _ in range(4000)) / 4000
        assert 0.78 <= at_n <= 0.84 and below < 0.8 + 0.02, (mean, sd, n, at_n, below)
    # where the mean just clears 0 (the old "seeds to clear 0", 13 for mean 1, sd 2), the interval does so about half the time
    just = next(n for n in range(2, 100) if t_95(n - 1) * 2.0 / math.sqrt(n) < 1.0)
    assert just == 13 and 0.45 < sum(_clears_zero(rng, just, 1.0, 2.0) for _ in range(4000)) / 4000 < 0.6
    assert n_for_power(1.0, 2.0) == 27  # about twice that
    assert n_for_power(0.0, 1.0) is None and n_for_power(0.01, 5.0, limit=50) is None and n_for_power(1.0, 0.0) == 2
    with pytest.raises(ValueError):
        t_95(0)
    with pytest.raises(ValueError, match="non-finite"):
        n_for_power(math.nan, 1.0)


def test_t_interval_and_bootstrap_cover_the_true_value_at_their_level():
    rng, draws = random.Random(4), 300
    t_hits = boot_hits = 0
    for k in range(draws):
        values = [rng.gauss(2.0, 1.5) for _ in range(30)]
        _, lo, hi = t_interval_90(values)
        t_hits += lo <= 2.0 <= hi
        b = resample(values, statistics.fmean, n=400, seed=k)
        boot_hits += b.lo <= 2.0 <= b.hi and b.kept == 400
    assert 0.85 <= t_hits / draws <= 0.95 and 0.85 <= boot_hits / draws <= 0.95, (t_hits, boot_hits)


def test_kendall_with_pairs_tied_in_both_variables_is_tau_b():
    xs = [1, 1, 1, 2, 2, 3, 3, 3, 4, 5]
    ys = [1, 1, 2, 2, 2, 3, 1, 3, 3, 5]  # (0, 1), (3, 4) and (5, 7) are tied in both
    n = len(xs)
    pairs = list(itertools.combinations(range(n), 2))
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    s = sum(sign(xs[i] - xs[j]) * sign(ys[i] - ys[j]) for i, j in pairs)
    ties = lambda v: sum(c * (c - 1) // 2 for c in (v.count(x) for x in set(v)))  # noqa: E731
    n0 = n * (n - 1) // 2
    assert sum(xs[i] == xs[j] and ys[i] == ys[j] for i, j in pairs) == 3
    want = s / math.sqrt((n0 - ties(xs)) * (n0 - ties(ys)))  # tau-b as textbooks define it, from tie groups
    assert kendall(xs, ys) == pytest.approx(want) and kendall(ys, xs) == pytest.approx(want)
    assert (ties(xs), ties(ys), n0) == (7, 9, 45) and want == pytest.approx(26 / math.sqrt(38 * 36))  # S = 26


def test_undefined_statistics_are_nan_and_non_finite_values_are_refused():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall([1, 2, 3], [4, 4, 4]))
    assert math.isnan(pearson([2, 2], [1, 3]))
    assert math.isnan(icc([[1, 1], [1, 1]]).icc)  # no variance at all: not 1
    assert icc([[1, 2], [1, 2]]).icc == 0.0  # noise only
    for call in (lambda: icc([[1, math.nan], [2, 3]]), lambda: spearman([1, math.inf], [1, 2]),
                 lambda: t_interval_90([1.0, math.nan]), lambda: kendall([1, 2], [1, -math.inf]),
                 lambda: smallest_difference(math.nan, 2)):
        with pytest.raises(ValueError, match="non-finite"):
            call()


def test_bootstrap_drops_undefined_resamples_and_counts_them():
    # xs constant unless index 3 is drawn (or only index 3 is): P = (3/4)^4 + (1/4)^4 of the resamples drop
    b = bootstrap_pairs([1.0, 1.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0], spearman, n=4000)
    assert b.tries == 4000 and b.kept / 4000 == pytest.approx(1 - 0.75 ** 4 - 0.25 ** 4, abs=0.02)
    assert b.show() == f"[{b.lo:.2f}, {b.hi:.2f}] ({b.kept}/4000)"
    # an ICC resample with no cell of 2 values is dropped: P = (3/4)^4
    b = bootstrap([[1.0, 2.0], [3.0], [4.0], [5.0]], n=4000)
    assert b.kept / 4000 == pytest.approx(1 - 0.75 ** 4, abs=0.02)
    full = bootstrap([[1.0, 2.0], [3.0, 3.5], [6.0, 6.2], [5.0, 4.0]], n=500)
    assert full.kept == 500 and full.show() == f"[{full.lo:.2f}, {full.hi:.2f}]" and 0 <= full.lo <= full.hi <= 1
    assert resample([1.0, 1.0], lambda s: math.nan, n=10).show() == "[n/a]"


def test_reliability_and_the_noise_corrected_spearman():
    assert reliability(ICC(0.5, 1.0, 1.0), 2) == pytest.approx(2 / 3)  # Spearman-Brown by hand
    assert reliability(ICC(0.5, 1.0, 1.0), 1) == 0.5
    assert math.isnan(reliability(ICC(0.0, 0.0, 1.0), 2)) and math.isnan(reliability(None, 2))
    assert math.isnan(reliability(ICC(math.nan, 0.0, 0.0), 2))
    # cells ranked alike by both; a noisy but perfectly rank-agreeing pair: the correction would exceed 1
    a = [[1.0, 3.0], [2.0, 4.5], [3.5, 5.0], [5.0, 6.0]]
    b = [[10.0, 10.5], [11.0, 11.2], [12.0, 12.1], [13.0, 13.3]]
    rho = spearman([statistics.mean(x) for x in a], [statistics.mean(y) for y in b])
    rel_a, rel_b = (reliability(icc(g), 2) for g in (a, b))
    assert rho == 1.0 and rho / math.sqrt(rel_a * rel_b) > 1 and corrected_spearman(a, b) == 1.0
    b2 = [[10.0, 10.5], [13.0, 13.2], [12.0, 12.1], [11.0, 11.3]]
    rho2 = spearman([statistics.mean(x) for x in a], [statistics.mean(y) for y in b2])
    want = max(-1.0, min(1.0, rho2 / math.sqrt(rel_a * reliability(icc(b2), 2))))
    assert corrected_spearman(a, b2) == pytest.approx(want) and abs(want) < 1
    noise = [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]  # ICC 0: no reliable part, the correction undefined
    assert math.isnan(corrected_spearman(noise, b))
    assert math.isnan(corrected_spearman([[1.0], [2.0], [3.0], [4.0]], b))  # no replicates: no ICC


def test_t_tests_holm_and_quantiles():
    for df in (1, 2, 4, 10, 30):  # the table's 95th percentiles: two-sided p = 0.10
        assert t_p(t_95(df), df) == pytest.approx(0.10, abs=2e-5)
        assert t_quantile(0.95, df) == pytest.approx(t_95(df), abs=2e-4)
    assert t_quantile(0.975, 12) == pytest.approx(2.1788, abs=1e-4) and t_quantile(0.025, 12) == pytest.approx(-2.1788, abs=1e-4)
    assert t_p(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| > 1) = 1/2
    d = [1.0, 2.0, 3.0, 4.0, 5.0]  # t = 3 / sqrt(2.5 / 5) = 4.2426, df 4
    assert paired_t_p(d) == pytest.approx(t_p(3 / math.sqrt(0.5), 4)) and 0.01 < paired_t_p(d) < 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])  # by hand
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    got = holm([0.02, math.nan, 0.01])  # a NaN counts in the family
    assert got[0] == pytest.approx(0.04) and math.isnan(got[1]) and got[2] == pytest.approx(0.03)


def test_smallest_difference_against_an_estimated_sigma():
    """Two cells' means of n seeds, tested with the pooled within-cell std of df degrees of freedom (as the
    evaluator table has it): the t version has power 0.8, the z formula, which assumes sigma known, less."""
    rng, n, df, sd, draws = random.Random(5), 2, 12, 1.3, 6000
    crit = t_quantile(0.975, df)

    def power(d: float) -> float:
        hits = 0
        for _ in range(draws):
            diff = statistics.fmean(rng.gauss(d, sd) for _ in range(n)) - statistics.fmean(rng.gauss(0, sd) for _ in range(n))
            s_hat = sd * math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(df)) / df)  # sigma estimated, df degrees
            hits += abs(diff) / (s_hat * math.sqrt(2 / n)) > crit
        return hits / draws

    assert power(smallest_difference(sd, n, df)) == pytest.approx(0.8, abs=0.02)
    assert power(smallest_difference(sd, n)) < 0.77  # the z formula overstates the power here
    assert smallest_difference(sd, n, 100000) == pytest.approx(smallest_difference(sd, n), rel=1e-3)


def test_paired_differences_pair_training_seeds_and_average_within_a_seed(tmp_path):
    def line(row, seed, t, acc):
        return {"row": row, "seed": seed, "train_seed": seed + 1000 * t, "val_acc[a]": acc, "test_acc[a]": acc,
                "search_seconds": 0.0, "genotype": random_genotype(seed).to_json(), "normal_ops": 1, "reduce_ops": 1}
    random_rows = [line("random", 0, 0, 0.80), line("random", 0, 1, 0.70), line("random", 1, 0, 0.75),
                   line("random", 2, 0, 0.9)]
    mine = [line("x", 0, 0, 0.83), line("x", 0, 1, 0.75), line("x", 1, 0, 0.74), line("x", 1, 1, 0.99),
            line("x", 3, 0, 0.5)]  # (1, t1) and seed 3 have no random partner
    assert paired_differences(mine, random_rows, "val_acc[a]") == pytest.approx([4.0, -1.0])
    acfg = _acfg(seeds=2, rows=[{"name": "random"}, {"name": "x", "genotype": "DARTS_V2"}],
                 trainings=[{"name": "a", "preset": "smoke", "overrides": ["data.val=16"]}])
    write_tables(random_rows + mine, acfg, RunDir.open(tmp_path / "t", force=False, resume=False, resumes_from="ablation.yaml"))
    table = (tmp_path / "t" / "ablation.md").read_text()
    _, lo, hi = t_interval_90([4.0, -1.0])
    assert "Val acc − random (points), a [90%]" in table
    assert f"| +1.50 [{lo:+.2f}, {hi:+.2f}] |" in next(x for x in table.splitlines() if x.startswith("| x |"))
    # a third row, against x as well as random cells: y - x per seed is (+2 + 0) / 2 and -3 (y has no seed 1, t1)
    y = [line("y", 0, 0, 0.85), line("y", 0, 1, 0.75), line("y", 1, 0, 0.71)]
    acfg.rows.append(type(acfg.rows[0])(name="y", genotype="DARTS_V2"))
    write_tables(random_rows + mine + y, acfg, RunDir.open(tmp_path / "t2", force=False, resume=False,
                                                            resumes_from="ablation.yaml"))
    pairs = (tmp_path / "t2" / "ablation.md").read_text().split("### Paired differences between rows")[1]
    _, lo, hi = t_interval_90([1.0, -3.0])
    assert f"| a | y | x | 2 | -1.00 [{lo:+.2f}, {hi:+.2f}] | {statistics.stdev([1.0, -3.0]):.2f} |" in pairs
    assert "| a | x | random | 2 | +1.50" in pairs and "| a | y | random | 2 |" in pairs
    # p-values, raw and Holm-adjusted over the table's 3 comparisons, and the count
    diffs = {"x-random": [4.0, -1.0], "y-random": paired_differences(y, random_rows, "val_acc[a]"), "y-x": [1.0, -3.0]}
    raw = [paired_t_p(diffs[k]) for k in ("x-random", "y-random", "y-x")]  # the table's order: y - random before y - x
    adjusted = holm(raw)
    line = next(x for x in pairs.splitlines() if x.startswith("| a | y | x |"))
    assert line.split(" | ")[6:8] == [f"{raw[2]:.3f}", f"{adjusted[2]:.3f}"] and adjusted[2] > raw[2]
    assert "| p | p, Holm | Seeds for 80% power |" in pairs and "3 comparison(s)" in pairs


def test_tabulate_redraws_a_table_from_its_csv_and_runs_nothing(tmp_path, capsys):
    from nge.ablate import tabulate
    from nge.config import to_yaml

    def line(row, seed, t, acc):
        return {"row": row, "seed": seed, "train_seed": seed + 1000 * t, "val_acc[a]": acc, "test_acc[a]": acc / 3,
                "search_seconds": 0.0, "genotype": random_genotype(seed).to_json(), "normal_ops": 1, "reduce_ops": 1}
    rows = [line(r, s, t, 0.7 + 0.01 * s + 0.02 * t + (r == "x") * 0.013 * s) for r in ("random", "x")
            for s in range(3) for t in range(2)]
    acfg = _acfg(seeds=3, train_seeds=2, rows=[{"name": "random"}, {"name": "x", "genotype": "DARTS_V2"}],
                 trainings=[{"name": "a", "preset": "smoke", "overrides": ["data.val=16"]}])
    write_tables(rows, acfg, RunDir.open(tmp_path / "run", force=False, resume=False, resumes_from="ablation.yaml"))
    table, md = tmp_path / "run" / "ablation.csv", (tmp_path / "run" / "ablation.md").read_text()
    csv_bytes = table.read_bytes()
    (tmp_path / "run" / "ablation.md").write_text("stale")
    assert tabulate(acfg, table) == tmp_path / "run"  # in place: the CSV untouched, the table as the run wrote it
    assert table.read_bytes() == csv_bytes and (tmp_path / "run" / "ablation.md").read_text() == md
    assert "### Paired differences between rows" in md
    assert (tmp_path / "run" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    preset = tmp_path / "mine.yaml"
    preset.write_text(to_yaml(acfg))
    assert main(["ablate", "--preset", str(preset), "--tabulate", str(table), "--out", str(tmp_path / "new")]) == 0
    assert capsys.readouterr().out == md and (tmp_path / "new" / "ablation.csv").read_bytes() == csv_bytes
    bad = {f"--tabulate {tmp_path / 'none.csv'}: ": [str(tmp_path / "none.csv")],
           "--tabulate runs nothing: give it without --resume\n": [str(table), "--resume"]}
    for message, args in bad.items():
        assert main(["ablate", "--preset", str(preset), "--tabulate", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nge: error: {message}") and err.count("\n") == 1, err
    acfg.rows = acfg.rows[:1]
    with pytest.raises(NGEError, match=r"rows x are not in ablation preset"):
        tabulate(acfg, table)


# ------------------------------------------------------------------------------------------- agreement


def test_agreement_counts_shared_node_input_op_choices():
    g = random_genotype(0)
    assert agreement(g, g) == 1.0
    d = g.to_dict()
    d["normal"][0][0] = next(op for op in PRIMITIVES if op != d["normal"][0][0])  # one choice of 16 changed
    assert agreement(g, Genotype.from_dict(d)) == pytest.approx(15 / 16)
    assert mean_agreement([g, g, Genotype.from_dict(d)]) == pytest.approx((1 + 2 * 15 / 16) / 3)


def test_random_agreement_is_exact():
    # by hand for 2 inputs, 4 nodes, 7 ops: mean over m = 2..5 of 2 / (7 m) = 11 / 120
    assert DEFAULT_TOPOLOGY.n_inputs == 2 and len(PRIMITIVES) == 7
    assert pytest.approx(float(Fraction(11, 120))) == RANDOM_AGREEMENT
    sampled = statistics.mean(agreement(random_genotype(2 * k), random_genotype(2 * k + 1)) for k in range(3000))
    assert sampled == pytest.approx(RANDOM_AGREEMENT, abs=0.006)  # 4.4 standard errors


# ------------------------------------------------------------------------------------ validation split


def test_held_out_images_are_fixed_and_never_trained_on():
    n = 100
    train = ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n) % 10)
    rest, val = held_out(train, 20)
    ids = lambda s: set(s.x.flatten().tolist())  # noqa: E731
    assert len(ids(val)) == 20 and ids(rest) | ids(val) == set(range(n)) and not ids(rest) & ids(val)
    assert ids(held_out(train, 20)[1]) == ids(val)  # the same whatever the run's seed
    assert held_out(train, 0) == (train, None)
    with pytest.raises(NGEError, match="leaves no training images"):
        held_out(train, n)


def test_a_training_keeps_the_images_a_search_of_its_seed_keeps():
    n, limit = 200, 60
    images = ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n) % 10)
    data = Dataset("synthetic", images, images.subset(torch.arange(10)), 10, (0.5,), (0.25,))
    ids = lambda x: set(x.flatten().tolist())  # noqa: E731
    kept = {}
    for seed in (0, 1):
        tr, va = split_train_val(images, 0.5, seed, limit)
        searched = ids(tr.x) | ids(va.x)
        assert len(searched) == limit
        small = split_train_val(images, 0.5, seed, limit // 2)
        assert ids(small[0].x) | ids(small[1].x) < searched  # a smaller limit keeps some of the same images
        cfg = load_config(TrainRunConfig, "train", "smoke", [*QUIET, f"data.limit={limit}", f"runtime.seed={seed}"])
        assert ids(tensor_data(cfg, data, CPU).train.x) == searched
        # data.val: the searched images less the held-out ones, then the seed's next ones
        cfg = load_config(TrainRunConfig, "train", "smoke", [*QUIET, f"data.limit={limit}", f"runtime.seed={seed}",
                                                             "data.val=50"])
        td = tensor_data(cfg, data, CPU)
        held, kept[seed] = ids(td.val.x), ids(td.train.x)
        assert held == ids(held_out(images, 50)[1].x) and len(held) == 50
        assert len(kept[seed]) == limit and not kept[seed] & held and searched - held <= kept[seed]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        assert kept[seed] == set([i for i in order if i not in held][:limit])
    assert kept[0] != kept[1]  # the seed chooses them


def test_train_reports_validation_accuracy_and_refuses_too_many_images(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--genotype", "random:1", "--preset", "smoke", "--out", str(out), *QUIET, "data.val=16"]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert s["val_images"] == 16 and s["final_val_acc"] == rows[-1]["val_acc"] and 0 <= s["final_val_acc"] <= 1
    assert s["train_loss_sum"] == pytest.approx(sum(r["train_loss"] for r in rows))
    assert s["threads"] == 1 and s["cpu_seconds"] > 0
    assert "training on 48 images" in capsys.readouterr().err  # 64 synthetic training images less 16
    for extra, message in ((["data.val=60", "data.limit=10"], "needs 70 training images"),
                           (["data.val=-1"], "data.val must be >= 0")):
        assert main(["train", "--genotype", "random:1", "--preset", "smoke", "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["train", "--genotype", "random:1", "--preset", "smoke-imagenet", "--out", str(tmp_path / "x"),
                 "data.val=10", "data.root=/nonexistent"]) == 2
    assert "data.val" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- ablations


def _acfg(**kw) -> AblateConfig:
    base = {"preset": "t", "search_preset": "smoke", "search_overrides": ["search.epochs=1"], "seeds": 2,
            "trainings": [{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1", "data.val=16"]},
                          {"name": "b", "preset": "smoke", "overrides": ["train.epochs=1", "model.C=6"], "seeds": 1}],
            "rows": [{"name": "darts-v2", "genotype": "DARTS_V2"}, {"name": "r3", "genotype": "random:3"},
                     {"name": "r4", "genotype": "random:4"}]}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AblateConfig), {**base, **kw}))


@pytest.mark.slow
def test_genotype_rows_named_trainings_and_evaluator_tables(tmp_path):
    out = tmp_path / "abl"
    rows = run_ablation(_acfg(reference="b"), QUIET, out, log=lambda *_: None)
    assert [(r["row"], r["seed"]) for r in rows] == [(n, s) for n in ("darts-v2", "r3", "r4") for s in (0, 1)]
    for r in rows:
        assert ("test_acc[b]" in r) == (r["seed"] == 0)  # training b: only the first seed
        assert "val_acc[a]" in r and "val_acc[b]" not in r
        want = {"darts-v2": "DARTS_V2", "r3": "random:3", "r4": "random:4"}[r["row"]]
        from nge.genotypes import resolve_genotype
        assert json.loads(r["genotype"]) == resolve_genotype(want).to_dict()
        cfg = yaml.safe_load((out / f"{r['row']}-seed{r['seed']}" / "train-a" / "config.yaml").read_text())
        assert cfg["runtime"]["seed"] == r["seed"] == r["train_seed"] and cfg["data"]["val"] == 16
    assert not (out / "darts-v2-seed1" / "train-b").exists() and not (out / "r3-seed0" / "search").exists()
    table = (out / "ablation.md").read_text()
    assert "| Model | Search val acc (%) | Val acc (%), a | Test acc (%), a | Test acc (%), b |" in table
    assert "### Evaluators" in table
    line = next(x for x in table.splitlines() if x.startswith("| a | val acc | 3 |"))
    groups = [[100 * r["val_acc[a]"] for r in rows if r["row"] == n] for n in ("darts-v2", "r3", "r4")]
    assert f"| {icc(groups).icc:.2f} [" in line
    assert "reference `b`" in table  # b has one seed: the correlation table has too few cells (3 < 4)


def test_first_seed_gives_fresh_seeds_and_their_trainings():
    acfg = _acfg(first_seed=3, seeds=2, train_seeds=2, rows=[{"name": "random"}, {"name": "nge"}])
    configs = _configs(acfg, QUIET, None)
    assert sorted(k[1] for k in configs if k[0] == "nge" and k[2] == "search") == [3, 4]
    assert configs["nge", 4, "search"].runtime.seed == 4
    assert configs["random", 4, "a", 1].runtime.seed == 1004
    assert {k[1] for k in configs if k[2] == "b"} == {3}  # b's `seeds: 1`: the first seed of every row
    for first, seeds in ((-1, 2), (999, 2)):  # a seed of 1000 would repeat seed 0's second training seed
        with pytest.raises(NGEError, match="first_seed must be >= 0 and first_seed \\+ seeds <= 1000"):
            _configs(_acfg(first_seed=first, seeds=seeds), QUIET, None)


@pytest.mark.slow
def test_train_seeds_are_separate_from_the_search_seed(tmp_path):
    acfg = _acfg(seeds=1, train_seeds=2, rows=[{"name": "random"}, {"name": "nge"}],
                 trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1"]}])
    out = tmp_path / "abl"
    rows = run_ablation(acfg, QUIET, out, log=lambda *_: None)
    assert [(r["row"], r["seed"], r["train_seed"]) for r in rows] == [("random", 0, 0), ("random", 0, 1000),
                                                                       ("nge", 0, 0), ("nge", 0, 1000)]
    assert rows[0]["genotype"] == rows[1]["genotype"]  # one cell, two trainings
    search = yaml.safe_load((out / "nge-seed0" / "search" / "config.yaml").read_text())
    second = yaml.safe_load((out / "nge-seed0" / "train-a-t1" / "config.yaml").read_text())
    assert search["runtime"]["seed"] == 0 and second["runtime"]["seed"] == 1000
    assert "### Evaluators" in (out / "ablation.md").read_text()


@pytest.mark.slow
def test_resume_refuses_finished_runs_made_with_other_settings(tmp_path, capsys):
    out = tmp_path / "abl"
    acfg = _acfg(seeds=1, trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1"]}],
                 rows=[{"name": "random"}, {"name": "nge"}])
    rows = run_ablation(acfg, QUIET, out, log=lambda *_: None)
    assert run_ablation(acfg, QUIET, out, resume=True, log=lambda *_: None) == rows  # the same: read back
    with pytest.raises(NGEError, match=r"random-seed0/train-a: the configuration differs from the run.s in data.batch_size"):
        run_ablation(acfg, [*QUIET, "data.batch_size=8"], out, resume=True, log=lambda *_: None)
    g = out / "nge-seed0" / "train-a" / "genotype.json"
    g.write_text(random_genotype(9).to_json())
    with pytest.raises(NGEError, match=r"nge-seed0/train-a: trained another genotype"):
        run_ablation(acfg, QUIET, out, resume=True, log=lambda *_: None)
    g.unlink()
    # settings changed (a row added): the previous ablation.yaml is kept, not overwritten
    logs = []
    more = _acfg(seeds=1, trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1"]}],
                 rows=[{"name": "random"}, {"name": "d", "genotype": "DARTS_V2"}])
    run_ablation(more, QUIET, out, resume=True, log=logs.append)
    assert "name: nge" in (out / "ablation.yaml.1").read_text() and "name: d" in (out / "ablation.yaml").read_text()
    assert any("previous ones are in" in line for line in logs)


@pytest.mark.slow
def test_threads_per_run_with_the_sequential_executor(tmp_path):
    acfg = _acfg(seeds=1, trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1"]}],
                 rows=[{"name": "nge"}])
    out = tmp_path / "abl"
    run_ablation(acfg, ["runtime.progress=false"], out, log=lambda *_: None, threads_per_run=1)
    for run in ("search", "train-a"):  # smoke presets say runtime.threads: 2; --threads-per-run wins
        assert yaml.safe_load((out / "nge-seed0" / run / "config.yaml").read_text())["runtime"]["threads"] == 1
        assert json.loads((out / "nge-seed0" / run / "summary.json").read_text())["threads"] == 1


@pytest.mark.slow
def test_the_same_search_at_two_thread_counts_is_compared(tmp_path):
    acfg = _acfg(seeds=1, trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1"]}],
                 rows=[{"name": "nge"}, {"name": "nge-2t", "search": ["runtime.threads=2"]}, {"name": "darts",
                       "search": ["search.arch.name=darts", "runtime.threads=2"]}])
    out = tmp_path / "abl"
    rows = run_ablation(acfg, ["runtime.progress=false"], out, log=lambda *_: None, threads_per_run=1)
    assert json.loads((out / "nge-2t-seed0" / "search" / "summary.json").read_text())["threads"] == 2  # the row's own
    table = (out / "ablation.md").read_text()
    g = {r["row"]: Genotype.from_dict(json.loads(r["genotype"])) for r in rows}
    want = agreement(g["nge"], g["nge-2t"])
    assert f"| nge | nge-2t | 1 | {100 * want:.1f}% | {int(want == 1.0)} |" in table
    assert "| nge | darts |" not in table and "| nge-2t | darts |" not in table  # other searches, not twins


def test_bad_trainings_are_refused_in_one_line(tmp_path):
    for kw, message in (({"reference": "c"}, "reference 'c' is not one of the trainings"),
                        ({"train_seeds": 0}, "train_seeds must be >= 1"),
                        ({"rows": [{"name": "x", "genotype": "DARTS_V2", "search": ["search.epochs=1"]}]}, "give it no search"),
                        ({"train_overrides": ["train.epochs=1"]}, "not train_overrides"),
                        ({"trainings": [{"name": "a", "preset": "smoke", "row_seeds": {"zz": 1}}]}, "'zz', which is not a row"),
                        ({"trainings": [{"name": "a", "preset": "smoke", "row_seeds": {"r3": 3}}]}, r"must be in \[1, seeds=2")):
        with pytest.raises(NGEError, match=message):
            run_ablation(_acfg(**kw), QUIET, tmp_path / "x")
        assert not (tmp_path / "x").exists()


def test_row_seeds_give_chosen_rows_more_trainings_than_a_training_s_seeds():
    from nge.ablate import _configs

    acfg = _acfg(trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1"]},
                            {"name": "b", "preset": "smoke", "seeds": 1, "row_seeds": {"r3": 2}}])
    got = {k for k in _configs(acfg, QUIET, None) if k[2] == "b"}
    assert got == {("darts-v2", 0, "b", 0), ("r3", 0, "b", 0), ("r3", 1, "b", 0), ("r4", 0, "b", 0)}


def _csv(path):
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path, lines, drop=()):
    import csv
    fields = [k for k in lines[0] if not any(k.startswith(d) for d in drop)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(lines)


@pytest.mark.slow
def test_reuse_takes_finished_runs_from_an_earlier_table(tmp_path, capsys):
    acfg = _acfg(seeds=1, trainings=[{"name": "a", "preset": "smoke", "overrides": ["train.epochs=1", "data.val=16"]}],
                 rows=[{"name": "random"}, {"name": "nge"}, {"name": "d", "genotype": "DARTS_V2"}])
    first = run_ablation(acfg, QUIET, tmp_path / "one", log=lambda *_: None)
    table = tmp_path / "one" / "ablation.csv"
    # each line stores its runs' settings: the training's and (a searched row) the search's
    assert all(json.loads(r["config[a]"])["train.epochs"] == 1 for r in first)
    assert json.loads(first[1]["config[search]"])["search.arch.name"] == "nge" and "config[search]" not in first[0]

    # the run folders are gone: every run comes from the table, nothing runs, the same table results
    logs = []
    again = run_ablation(acfg, QUIET, tmp_path / "two", log=logs.append, reuse=[table])
    assert _csv(tmp_path / "two" / "ablation.csv") == _csv(table)
    assert not [p for p in (tmp_path / "two").iterdir() if p.is_dir()]
    assert sum("reused from --reuse" in x for x in logs) == 3 and again[1]["genotype"] == first[1]["genotype"]

    # other settings: the fingerprint differs and every run runs again
    run_ablation(acfg, [*QUIET, "data.batch_size=8"], tmp_path / "three", log=lambda *_: None, reuse=[table])
    assert (tmp_path / "three" / "nge-seed0" / "search" / "summary.json").is_file()
    assert (tmp_path / "three" / "d-seed0" / "train-a" / "summary.json").is_file()

    # an older table (no fingerprints) is matched on row, seeds and genotype; a search whose training is
    # missing keeps its cell and only the training runs; a line of another genotype is not taken
    lines = _csv(table)
    lines[0]["train_seconds[a]"] = ""  # a time the older table did not keep
    lines[1]["test_acc[a]"] = ""
    lines[2]["genotype"] = json.dumps(random_genotype(5).to_dict())
    _write_csv(tmp_path / "old.csv", lines, drop=("config[",))
    logs = []
    run_ablation(acfg, QUIET, tmp_path / "four", log=logs.append, reuse=[tmp_path / "old.csv"])
    ran = sorted(p.relative_to(tmp_path / "four").as_posix() for p in (tmp_path / "four").glob("*/*/summary.json"))
    assert ran == ["d-seed0/train-a/summary.json", "nge-seed0/train-a/summary.json"]
    assert any("2 reused result(s) record no settings fingerprint" in x for x in logs)
    four = _csv(tmp_path / "four" / "ablation.csv")
    assert four[1]["genotype"] == lines[1]["genotype"] and four[1]["search_seconds"] == lines[1]["search_seconds"]
    trained = json.loads((tmp_path / "four" / "nge-seed0" / "train-a" / "summary.json").read_text())
    assert Genotype.from_dict(trained["genotype"]) == Genotype.from_dict(json.loads(lines[1]["genotype"]))
    with pytest.raises(NGEError, match="its search came from --reuse"):  # its cell is in no run directory
        run_ablation(acfg, QUIET, tmp_path / "four", resume=True, log=lambda *_: None)
    again = run_ablation(acfg, QUIET, tmp_path / "four", resume=True, log=lambda *_: None, reuse=[tmp_path / "old.csv"])
    assert _csv(tmp_path / "four" / "ablation.csv") == four and not (tmp_path / "four" / "nge-seed0" / "search").exists()
    assert next(x for x in (tmp_path / "four" / "ablation.md").read_text().splitlines()
                if x.startswith("| random |")).endswith("| n/a | 1 |")

    # a run folder that is there wins over the table: the search is gone but its training is not
    import shutil
    shutil.rmtree(tmp_path / "one" / "nge-seed0" / "search")
    run_ablation(acfg, QUIET, tmp_path / "one", resume=True, log=lambda *_: None, reuse=[table])
    assert (tmp_path / "one" / "nge-seed0" / "search" / "summary.json").is_file()

    assert main(["ablate", "--preset", "smoke", "--out", str(tmp_path / "five"), "--reuse", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert "--reuse" in err and "nope.csv" in err and err.count("\n") == 1 and not (tmp_path / "five").exists()


def test_reused_tables_merge_their_columns_and_refuse_conflicts(tmp_path):
    from nge.ablate import _Ledger
    from nge.config import TrainRunConfig, load_config

    g = json.dumps(random_genotype(3).to_dict())
    _write_csv(tmp_path / "a.csv", [{"row": "r", "seed": 0, "train_seed": 0, "genotype": g, "test_acc[a]": 0.5,
                                     "val_acc[a]": 0.52}])
    _write_csv(tmp_path / "b.csv", [{"row": "r", "seed": 0, "train_seed": 0, "genotype": g, "test_acc[b]": 0.9}])
    cfg = load_config(TrainRunConfig, "train", "smoke", [])
    ledger = _Ledger([tmp_path / "a.csv", tmp_path / "b.csv"])
    assert ledger.training("r", 0, 0, "a", cfg, random_genotype(3))["final_val_acc"] == 0.52
    assert ledger.training("r", 0, 0, "b", cfg, random_genotype(3))["final_test_acc"] == 0.9
    assert ledger.training("r", 0, 0, "b", cfg, random_genotype(4)) is None  # another cell
    assert ledger.training("r", 1, 0, "b", cfg, random_genotype(3)) is None
    _write_csv(tmp_path / "c.csv", [{"row": "r", "seed": 0, "train_seed": 0, "genotype": g, "test_acc[b]": 0.8}])
    with pytest.raises(NGEError, match=r"c.csv: r, seed 0, training seed 0 has test_acc\[b\] = 0.8, another file 0.9"):
        _Ledger([tmp_path / "b.csv", tmp_path / "c.csv"])
    (tmp_path / "d.csv").write_text("x,y\n1,2\n")
    with pytest.raises(NGEError, match="not an ablation.csv"):
        _Ledger([tmp_path / "d.csv"])
    (tmp_path / "e.csv").write_text("row,seed,train_seed,genotype\nr,0,0\n")
    with pytest.raises(NGEError, match="line 2 has fewer fields than the header"):
        _Ledger([tmp_path / "e.csv"])

    # names, genotypes and fingerprints stay text (a row named 007, a fingerprint of digits only)
    from nge.ablate import fingerprint
    line = {"row": "007", "seed": 0, "train_seed": 0, "genotype": g, "test_acc[a]": 0.5, "tse[a]": "nan",
            "config[a]": "000000000012"}
    _write_csv(tmp_path / "f.csv", [line])
    ledger = _Ledger([tmp_path / "f.csv", tmp_path / "f.csv"])  # the same file twice: nan equals nan
    assert [x["config[a]"] for x in ledger.lines["007", 0, 0]] == ["000000000012"]
    assert ledger.training("007", 0, 0, "a", cfg, random_genotype(3)) is None  # another fingerprint
    _write_csv(tmp_path / "f.csv", [{**line, "config[a]": fingerprint(cfg)}])
    assert _Ledger([tmp_path / "f.csv"]).training("007", 0, 0, "a", cfg, random_genotype(3))["final_test_acc"] == 0.5
    assert _Ledger([tmp_path / "f.csv"]).search("007", 0, cfg) is None  # a genotype row's line is no search


def test_correlation_over_the_random_cells_leaves_named_cells_out():
    from nge.ablate import evaluator_tables

    names = ["d", *(f"r{k}" for k in range(5))]
    acfg = _acfg(rows=[{"name": "d", "genotype": "DARTS_V2"}, *({"name": f"r{k}", "genotype": f"random:{k}"} for k in range(5))],
                 trainings=[{"name": "a", "preset": "smoke"}, {"name": "b", "preset": "smoke"}], reference="b")
    rng = random.Random(0)
    ref = {"d": 0.99, "r0": 0.5, "r1": 0.6, "r2": 0.55, "r3": 0.7, "r4": 0.65}  # d: far above every random cell
    rows = [{"row": n, "seed": s, "val_acc[a]": ref[n] + rng.gauss(0, 0.1), "test_acc[a]": 0.5, "tse[a]": 1.0 + s,
             "val_acc[b]": ref[n] + 0.01 * s, "test_acc[b]": 0.5} for n in names for s in (0, 1)]
    line = [x for x in evaluator_tables(rows, acfg).splitlines() if x.startswith("| a | val acc | 6 |")][-1]  # [0]: ICC
    mean = {n: statistics.mean(100 * r["val_acc[a]"] for r in rows if r["row"] == n) for n in names}
    drawn = names[1:]
    want = spearman([mean[n] for n in drawn], [ref[n] + 0.005 for n in drawn])
    assert line.split(" | ")[-2] == "5" and line.split(" | ")[-1].startswith(f"{want:.2f} [") and want != 1.0
    everything = spearman([mean[n] for n in names], [ref[n] + 0.005 for n in names])
    assert f"| {everything:.2f} [" in line


def test_evaluator_tables_leave_non_finite_scores_out_and_count_replicated_cells():
    from nge.ablate import evaluator_tables

    names = [f"r{k}" for k in range(5)]
    acfg = _acfg(rows=[{"name": n, "genotype": f"random:{k}"} for k, n in enumerate(names)],
                 trainings=[{"name": "a", "preset": "smoke"}, {"name": "b", "preset": "smoke"}], reference="b")
    rng = random.Random(1)
    rows = [{"row": n, "seed": s, "val_acc[a]": 0.5 + 0.05 * k + rng.gauss(0, 0.01), "tse[a]": 3.0 - 0.1 * k + rng.gauss(0, 0.01),
             "val_acc[b]": 0.6 + 0.04 * k + rng.gauss(0, 0.01)} for k, n in enumerate(names) for s in (0, 1)]
    rows[0]["tse[a]"] = math.nan  # a diverged training
    rows[3]["tse[a]"] = math.inf
    for r in rows:
        if r["row"] != "r0" and r["seed"] == 1:
            del r["val_acc[b]"]  # the reference: one cell with two seeds, four with one
    table = evaluator_tables(rows, acfg)
    tse = next(x for x in table.splitlines() if x.startswith("| a | -TSE |"))
    groups = [[-r["tse[a]"] for r in rows if r["row"] == n and math.isfinite(r["tse[a]"])] for n in names]
    assert tse.startswith(f"| a | -TSE | 5 | 3 | {icc(groups).icc:.2f} [")  # r0 and r1 keep one seed each
    assert "2 non-finite score(s) (a diverged training) left out." in table
    assert not any(x.startswith("| b | val acc |") for x in table.splitlines())  # 1 replicated cell: no ICC row
    corr = next(x for x in table.splitlines() if x.startswith("| a | val acc | 5 | 1.00 ["))
    kept = int(corr.split(" | ")[5].split("(")[1].split("/")[0])  # the reference's ICC needs r0, its replicated cell
    assert kept / 2000 == pytest.approx(1 - 0.8 ** 5, abs=0.03)
