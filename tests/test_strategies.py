"""The rl and ea search strategies: the policy's exact probabilities, mutations, the population,
single-path training and resume."""

import copy
import itertools
import math
import os
import signal
from collections import Counter

import pytest
import torch

from nge import searching as search_module
from nge import strategies as strategies_module
from nge.engine import Meter, RunDir, fit
from nge.errors import NGEError
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellProbs, Genotype, Topology, random_genotype
from nge.strategies import (
    Population,
    cell_entropy,
    cell_log_prob,
    cell_mode_margin,
    genotype_log_prob,
    mode_cell,
    mode_margin,
    mutate,
    mutation_entropy,
    mutation_log_prob,
    mutation_options,
    sample_cell,
    sample_genotype,
    sample_mutation,
    uniform_logits,
)

SMALL = Topology(n_inputs=2, n_nodes=2)  # 5 edges; with 3 ops: 3^2 * 3 * 3^2 = 243 cells
OPS3 = PRIMITIVES[:3]


def reference_log_prob(logits, cell, topology=DEFAULT_TOPOLOGY, primitives=PRIMITIVES) -> float:
    """log pi(cell) written out from the definition, one float at a time."""
    L = logits.double().tolist()
    total = 0.0
    for i, node in enumerate(range(topology.n_inputs, topology.n_graph_nodes)):
        rows = topology.incoming(node)
        s = [math.log(sum(math.exp(v) for v in L[r])) for r in rows]
        z = sum(math.exp(s[a] + s[b]) for a, b in itertools.combinations(range(len(rows)), 2))
        (op_a, a), (op_b, b) = sorted(cell[2 * i: 2 * i + 2], key=lambda p: p[1])
        total += s[a] + s[b] - math.log(z)
        for op, src in ((op_a, a), (op_b, b)):
            row = L[rows[src]]
            total += row[primitives.index(op)] - math.log(sum(math.exp(v) for v in row))
    return total


def all_cells(topology=SMALL, primitives=OPS3):
    per_node = []
    for node in range(topology.n_inputs, topology.n_graph_nodes):
        per_node.append([((oa, a), (ob, b)) for a, b in itertools.combinations(range(node), 2)
                         for oa in primitives for ob in primitives])
    for choice in itertools.product(*per_node):
        yield tuple(pair for node in choice for pair in node)


def skewed_logits(shape, seed=0, scale=1.5):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def test_the_policy_is_a_distribution_and_its_log_prob_entropy_and_mode_are_exact():
    logits = skewed_logits((SMALL.n_edges, 3))
    cells = list(all_cells())
    assert len(cells) == 243
    logp = torch.stack([cell_log_prob(logits, c, SMALL, OPS3) for c in cells])
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    for c, lp in zip(cells[::17], logp[::17], strict=True):
        assert float(lp.detach()) == pytest.approx(reference_log_prob(logits, c, SMALL, OPS3), abs=1e-12)
    assert float(cell_entropy(logits, SMALL)) == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-10)
    assert mode_cell(logits, SMALL, OPS3) == cells[int(logp.argmax())]


def test_samples_follow_the_log_prob():
    logits = skewed_logits((SMALL.n_edges, 3), seed=1)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    counts = Counter(sample_cell(logits, gen, SMALL, OPS3) for _ in range(n))
    cells = list(all_cells())
    assert set(counts) <= set(cells)
    worst = max(abs(counts[c] / n - math.exp(float(cell_log_prob(logits, c, SMALL, OPS3)))) for c in cells)
    assert worst < 0.01


def test_rl_updates_with_the_exact_log_prob_of_the_cell_it_sampled(monkeypatch, search_task):
    # init=normal: a policy far from uniform, so a wrong cell would have another log-prob
    task = search_task("search.strategy=rl", "search.rl.entropy_weight=0", "search.arch.init=normal")
    sampled, used = [], []
    real_sample, real_logp = strategies_module.sample_genotype, strategies_module.genotype_log_prob
    monkeypatch.setattr(strategies_module, "sample_genotype", lambda *a: sampled.append(real_sample(*a)) or sampled[-1])
    monkeypatch.setattr(strategies_module, "genotype_log_prob",
                        lambda logits, g: used.append((logits.detach().clone(), g, real_logp(logits, g))) or used[-1][2])
    x, y = next(iter(task.val_loader))
    for _ in range(2):  # the first step sets the baseline; the second has a non-zero advantage
        task.strategy.arch_step(x, y, Meter())
    assert [g for _, g, _ in used] == sampled[-2:]
    for logits, g, lp in used:
        ref = reference_log_prob(logits[0], g.normal) + reference_log_prob(logits[1], g.reduce)
        assert float(lp.detach()) == pytest.approx(ref, abs=1e-4)
        assert ref < math.log(0.5)  # not a near-certain cell: the check above could tell cells apart


def test_mutations_are_a_distribution_of_valid_children_and_sampling_follows_it():
    parent = random_genotype(3)
    logits = skewed_logits((2, DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)), seed=2)
    options = mutation_options(logits, parent)
    q = torch.stack([lq for _, lq in options]).exp()
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-12)
    children = [mutate(parent, m) for m, _ in options]
    for child in children:
        assert Genotype.from_dict(child.to_dict()) == child != parent
        differs = [a != b for a, b in zip(parent.normal + parent.reduce, child.normal + child.reduce, strict=True)]
        assert 1 <= sum(differs) <= 2  # one slot changed (its node's pair may reorder)
    m, lq = options[5]
    assert float(mutation_log_prob(logits, parent, m)) == pytest.approx(float(lq), abs=1e-15)
    gen = torch.Generator().manual_seed(0)
    n = 4000  # a frequency's standard deviation is at most 0.008
    counts = Counter(sample_mutation(logits, parent, gen) for _ in range(n))
    assert max(abs(counts[m] / n - float(p)) for (m, _), p in zip(options, q, strict=True)) < 0.02


def test_mutation_log_probs_stay_finite_when_p_is_certain():
    parent = random_genotype(5)
    logits = (skewed_logits((2, DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)), seed=3) * 1e3).float().requires_grad_()
    options = mutation_options(logits, parent)
    total = torch.stack([lq for _, lq in options])
    assert torch.isfinite(total).all() and float(torch.logsumexp(total.detach().double(), 0)) == pytest.approx(0.0, abs=1e-5)
    total.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_uniform_mutations_pick_every_slot_equally():
    parent = random_genotype(4)
    by_slot = Counter()
    for m, lq in mutation_options(uniform_logits().double(), parent):
        by_slot[m.slot] += float(lq.exp())
    assert len(by_slot) == 16 and all(v == pytest.approx(1 / 16) for v in by_slot.values())


def test_the_population_ages_out_the_oldest_whatever_its_fitness():
    pop = Population(size=3, tournament=3)
    gs = [random_genotype(k) for k in range(5)]
    pop.add(gs[0], 0.99)
    for g in gs[1:4]:
        pop.add(g, 0.1)
    assert [g for g, _ in pop.members] == gs[1:4]  # the fittest was the oldest, and died
    pop.add(gs[4], 0.5)
    assert [g for g, _ in pop.members] == gs[2:5]
    restored = Population(3, 3)
    restored.load_state_dict(pop.state_dict())
    assert list(restored.members) == list(pop.members)


def test_the_tournament_draws_with_replacement_and_picks_the_fittest():
    gs = [random_genotype(k) for k in range(5)]
    pop = Population(size=5, tournament=2)
    fit_ = [0.5, 0.9, 0.1, 0.3, 0.9]
    for g, f in zip(gs, fit_, strict=True):
        pop.add(g, f)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    wins = Counter(gs.index(pop.select(gen)[0]) for _ in range(n))
    # exact win rates of "best of 2 draws of 5 with replacement" (Real et al. 2019, Algorithm 1), ties to
    # the youngest (index 4 over 1); without replacement the weakest (index 2) could never win
    draws = list(itertools.product(range(5), repeat=2))
    expect = Counter(max(p, key=lambda i: (fit_[i], i)) for p in draws)
    assert expect[2] == 1 and wins[2] > 0
    for i in range(5):
        assert wins[i] / n == pytest.approx(expect[i] / len(draws), abs=0.01)
    pop.tournament = 5  # five draws of five miss the youngest fittest with probability (4/5)^5
    assert sum(pop.select(gen)[0] == gs[4] for _ in range(4000)) / 4000 == pytest.approx(1 - 0.8 ** 5, abs=0.03)


def test_a_single_path_is_the_mixed_supernet_with_a_one_hot_p(search_task):
    task = search_task()
    g = random_genotype(7)
    probs = []
    for pairs in (g.normal, g.reduce):
        p = torch.zeros(DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES))
        for i, (op, src) in enumerate(pairs):
            p[DEFAULT_TOPOLOGY.edges.index((src, 2 + i // 2)), PRIMITIVES.index(op)] = 1.0
        probs.append(p)
    x, _ = next(iter(task.train_loader))
    mixed = copy.deepcopy(task.net).train()
    assert torch.allclose(task.net.train().forward_path(x, g), mixed(x, CellProbs(*probs)), atol=1e-5)


def test_rl_and_ea_train_the_same_weights_and_only_the_sampled_ops_learn(tmp_path, search_task):
    nets = {}
    for s in ("rl", "ea"):
        ea = ["search.ea.population=3", "search.ea.tournament=2"] if s == "ea" else []
        task = search_task(f"search.strategy={s}", "search.epochs=2", *ea)
        before = {k: v.clone() for k, v in task.net.state_dict().items()}
        fit(task, 1, RunDir.open(tmp_path / s, False, False))
        nets[s] = task.net
    a, b = (dict(n.named_parameters()) for n in nets.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    unchanged = [k for k, v in nets["rl"].state_dict().items() if torch.equal(v, before[k])]
    assert unchanged  # ops never drawn in one epoch keep their initial weights


def stop_during_arch_step(task, call):
    real, calls = task.strategy.arch_step, {"n": 0}

    def step(x, y, meter):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        real(x, y, meter)

    task.strategy.arch_step = step


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["rl", "ea"])
def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path, search_task, strategy):
    extra = ["search.ea.population=3", "search.ea.tournament=2"] if strategy == "ea" else []
    args = (f"search.strategy={strategy}", "search.epochs=3", *extra)
    full = search_task(*args)
    fit(full, 3, RunDir.open(tmp_path / "full", False, False))
    part = search_task(*args)
    run = RunDir.open(tmp_path / "part", False, False)
    stop_during_arch_step(part, call=len(part.val_loader) + 2)  # epoch 2, mid arch phase (ea: mutating)
    with pytest.raises(NGEError, match="stopped by SIGTERM at epoch 2, arch step 2"):
        fit(part, 3, run)
    resumed = search_task(*args)
    fit(resumed, 3, run, resume=True)
    assert resumed.genotype() == full.genotype()
    assert resumed.strategy.state_dict().keys() == full.strategy.state_dict().keys()
    for a, b in zip(resumed.p_history, full.p_history, strict=True):
        assert torch.equal(a.normal, b.normal) and torch.equal(a.reduce, b.reduce)
    if strategy == "ea":
        assert resumed.strategy.population.state_dict() == full.strategy.population.state_dict()
    else:
        assert resumed.strategy.baseline == full.strategy.baseline


def test_ea_with_learned_mutations_moves_the_embedding_and_uniform_does_not(search_task):
    for kind, moves in (("embedding", True), ("uniform", False)):
        task = search_task("search.strategy=ea", "search.ea.population=2", "search.ea.tournament=2",
                           f"search.ea.mutation={kind}")
        before = [p.clone() for p in task.arch.parameters()]
        x, y = next(iter(task.val_loader))
        for _ in range(6):
            task.strategy.arch_step(x, y, Meter())
        assert len(task.strategy.population.members) == 2
        changed = any(not torch.equal(a, b) for a, b in zip(task.arch.parameters(), before, strict=True))
        assert changed == moves


def test_sampling_strategies_refuse_torchrun(monkeypatch, search_task):
    monkeypatch.setattr(search_module, "world", lambda: (0, 2))
    with pytest.raises(NGEError, match="search.strategy=rl runs in one process"):
        search_task("search.strategy=rl")


@pytest.mark.parametrize("overrides, fragment", [
    (["search.strategy=ea", "search.ea.tournament=30"], "tournament <= population"),
    (["search.strategy=ea", "search.ea.population=1"], "population >= 2"),
    (["search.strategy=rl", "search.rl.baseline_decay=1"], "baseline_decay in [0, 1)"),
    (["search.strategy=sa"], "search.strategy"),
    (["search.warmup_epochs=2"], "search.warmup_epochs must be in [0, search.epochs)"),
    (["search.strategy=rl", "search.select=perturbation"], "search.select=perturbation is gd's"),
    (["search.select_batches=0"], "search.select_batches must be >= 1"),
])
def test_bad_strategy_settings_are_one_line(overrides, fragment):
    from nge.config import SearchRunConfig, load_config

    with pytest.raises(NGEError) as e:
        load_config(SearchRunConfig, "search", "smoke", overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_rl_and_ea_through_the_cli(tmp_path, capsys):
    import json

    from nge.cli import main

    for strategy, extra in (("rl", []), ("ea", ["search.ea.population=4", "search.ea.tournament=2"])):
        out = tmp_path / strategy
        assert main(["search", "--preset", "smoke", "--out", str(out), "runtime.progress=false",
                     f"search.strategy={strategy}", *extra]) == 0
        summary = json.loads((out / "summary.json").read_text())
        genotype = Genotype.load(out / "genotype.json")
        assert summary["strategy"] == strategy and summary["genotype"] == genotype.to_dict()
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        if strategy == "ea":
            members = json.loads((out / "population.json").read_text())
            assert len(members) == 4 and rows[-1]["ea_best_fitness"] == max(m["fitness"] for m in members)
            assert {"genotype": genotype.to_dict(), "fitness": rows[-1]["ea_best_fitness"]} in members
            assert summary["mutation_entropy"] > 0
        else:
            assert 0 <= rows[-1]["rl_baseline"] <= 1 and rows[-1]["policy_entropy"] > 0
        assert summary["mode_margin"] == rows[-1]["mode_margin"] >= 0 and isinstance(summary["tie_break"], bool)


# ---------------------------------------------------------------------------- issue #20: margins, learning, ea rules


def test_the_mode_margin_is_the_log_prob_gap_to_the_runner_up():
    for seed in range(3):
        logits = skewed_logits((SMALL.n_edges, 3), seed=seed)
        logp = sorted((float(cell_log_prob(logits, c, SMALL, OPS3)) for c in all_cells()), reverse=True)
        assert cell_mode_margin(logits, SMALL) == pytest.approx(logp[0] - logp[1], abs=1e-10)
        assert logp[0] - logp[1] > 1e-3  # the gap is not trivially 0
    assert mode_margin(uniform_logits()) == 0.0  # decayed logits: the mode is a tie-break


def test_the_mode_margin_is_the_weaker_cell_s():
    normal, reduce = (skewed_logits((DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)), seed=s) for s in (4, 5))
    both = torch.stack([normal, reduce])
    assert mode_margin(both) == min(cell_mode_margin(normal), cell_mode_margin(reduce))


def _rl_step_with_advantage(task, baseline: float):
    """One rl arch step with the baseline forced: returns the sampled genotype and log pi of it before, after."""
    s = task.strategy
    s.baseline = baseline
    state = s.gen.get_state()
    with torch.no_grad():
        g = sample_genotype(s.logits(), torch.Generator().set_state(state))
        before = float(genotype_log_prob(s.logits().double(), g))
    x, y = next(iter(task.val_loader))
    s.arch_step(x, y, Meter())
    with torch.no_grad():
        return g, before, float(genotype_log_prob(s.logits().double(), g))


@pytest.mark.parametrize("baseline, raises", [(-1.0, True), (2.0, False)])
def test_one_rl_update_moves_the_sampled_cell_s_log_prob_with_the_advantage(search_task, baseline, raises):
    # decay 0 and no entropy bonus: only the learning signal moves the parameters
    task = search_task("search.strategy=rl", "search.arch.weight_decay=0", "search.rl.entropy_weight=0",
                       "search.arch.init=normal")
    _, before, after = _rl_step_with_advantage(task, baseline)  # reward in [0, 1]: advantage > 0 or < 0
    assert (after > before) == raises and abs(after - before) > 1e-6


def _ea_step(task, child_fitness: float):
    """One ea mutation step on a full population of fitness 0.5 whose children score `child_fitness`:
    returns the parent, the mutation, and log q(mutation | parent) before and after."""
    s = task.strategy
    for k in range(s.population.size):
        s.population.add(random_genotype(k), 0.5)
    s.scored = s.epoch = 1  # the population counts as measured with these weights
    task.accuracy = lambda x, y, g, meter=None: child_fitness
    picked = []
    real_draw = strategies_module._draw_mutation

    def draw(policy, logits, parent, gen):
        picked.append((parent, real_draw(policy, logits, parent, gen)))
        return picked[-1][1]

    strategies_module._draw_mutation = draw
    try:
        with torch.no_grad():
            logits0 = s.logits().double()
        x, y = next(iter(task.val_loader))
        s.arch_step(x, y, Meter())
    finally:
        strategies_module._draw_mutation = real_draw
    (parent, m), = picked
    with torch.no_grad():
        after = s.logits().double()
    return parent, m, logits0, after


@pytest.mark.parametrize("child_fitness, raises", [(1.0, True), (0.0, False)])
def test_one_ea_update_moves_the_winning_mutation_s_log_prob_with_the_advantage(search_task, child_fitness, raises):
    task = search_task("search.strategy=ea", "search.ea.population=3", "search.ea.tournament=2",
                       "search.arch.weight_decay=0", "search.ea.entropy_weight=0", "search.arch.init=normal")
    parent, m, before, after = _ea_step(task, child_fitness)
    lq0, lq1 = (float(mutation_log_prob(lg, parent, m)) for lg in (before, after))
    assert (lq1 > lq0) == raises and abs(lq1 - lq0) > 1e-6


def test_the_ea_entropy_bonus_raises_the_mutation_entropy_when_nothing_is_learned(search_task):
    # child and parent equally fit (advantage 0): only the entropy bonus moves the embedding
    task = search_task("search.strategy=ea", "search.ea.population=3", "search.ea.tournament=2",
                       "search.arch.weight_decay=0", "search.ea.entropy_weight=1", "search.arch.init=normal")
    parent, _, before, after = _ea_step(task, 0.5)
    h0, h1 = (float(mutation_entropy(lg, parent)) for lg in (before, after))
    assert h1 > h0


def test_mutation_entropy_is_exact():
    parent = random_genotype(6)
    logits = skewed_logits((2, DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)), seed=6)
    q = [float(lq.exp()) for _, lq in mutation_options(logits, parent)]
    assert float(mutation_entropy(logits, parent)) == pytest.approx(-sum(p * math.log(p) for p in q), abs=1e-12)


def _shared_offset_logits(task, offset: float):
    """Make the parameterisation's raw logits() carry `offset` on op 3 of every edge (a shared offset)."""
    real = task.arch.logits

    def logits():
        out = real().double().clone()
        out[..., 3] += offset
        return out

    task.arch.logits = logits


@pytest.mark.parametrize("keep, unaffected", [(0.0, True), (1.0, False)])
def test_rl_and_ea_read_the_cell_logits_not_the_raw_ones(search_task, keep, unaffected):
    """At shared_offset=0 an offset shared by all edges is removed from cell_logits(), so rl's mode and
    samples and ea's mutations do not change; at 1 (the control) it makes op 3 win everywhere."""
    results = []
    for offset in (0.0, 20.0):
        rl = search_task("search.strategy=rl", "search.arch.init=normal", f"search.arch.shared_offset={keep}")
        ea = search_task("search.strategy=ea", "search.ea.population=3", "search.ea.tournament=2",
                         "search.arch.init=normal", f"search.arch.shared_offset={keep}")
        for t in (rl, ea):
            _shared_offset_logits(t, offset)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            samples = [sample_genotype(rl.strategy.logits(), gen) for _ in range(5)]
            parent = random_genotype(2)
            moves = [sample_mutation(ea.strategy.logits(), parent, gen) for _ in range(5)]
        results.append((rl.genotype(), samples, moves))
    assert (results[0] == results[1]) == unaffected
    if not unaffected:
        assert all(op == PRIMITIVES[3] for op, _ in results[1][0].normal + results[1][0].reduce)


def test_a_population_that_never_fills_is_refused_before_the_first_epoch(tmp_path, capsys):
    from nge.cli import main

    out = tmp_path / "ea"
    assert main(["search", "--preset", "smoke", "--out", str(out), "search.strategy=ea"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("nge: error: search.ea.population=20 never fills") and "\n" not in err
    assert "2 epochs with an arch phase x 3 validation batches" in err and "search.epochs to at least 7" in err
    assert not out.exists()  # refused before the run directory was made


@pytest.mark.slow  # about 30 s here, although its fit alone takes under 1 s: not understood yet
def test_every_fitness_of_an_epoch_is_measured_on_the_same_batches_with_the_same_weights(tmp_path, search_task):
    task = search_task("search.strategy=ea", "search.ea.population=2", "search.ea.tournament=2",
                       "search.ea.rank_batches=1", "search.epochs=2")
    s, calls, tournaments = task.strategy, [], []
    real_accuracy, real_select = task.accuracy, s.population.select

    def accuracy(x, y, g, meter=None):
        calls.append((s.epoch, float(x.sum()), float(next(task.net.parameters()).detach().sum())))  # the stem trains
        return real_accuracy(x, y, g, meter)

    def select(gen):
        parent, f = real_select(gen)
        tournaments.append((f, s.fitness(parent)))  # its fitness against a fresh measurement, now
        return parent, f

    task.accuracy, s.population.select = accuracy, select
    fit(task, 2, RunDir.open(tmp_path / "ea", False, False))
    assert {e for e, *_ in calls} == {0, 1} and tournaments
    for epoch in range(2):  # one batch and one set of weights per epoch, others in the next
        assert len({(x, w) for e, x, w in calls if e == epoch}) == 1
    assert len({x for _, x, _ in calls}) == len({w for *_, w in calls}) == 2
    task.accuracy = real_accuracy
    assert all(f == fresh for f, fresh in tournaments)  # no tournament compares older weights or batches
    for g, f in s.population.members:  # the final pick compares fitness of the final weights
        assert s.fitness(g) == f


def test_the_rl_log_and_summary_say_the_margin_and_the_tie_break(tmp_path):
    import json

    from nge.config import SearchRunConfig, load_config
    from nge.searching import run_search

    lines = []
    cfg = load_config(SearchRunConfig, "search", "smoke", ["runtime.progress=false", "runtime.threads=1",
                      "search.strategy=rl", "search.epochs=1", "search.arch.name=darts", "search.arch.lr=1e-12"])
    run_search(cfg, tmp_path / "rl", log=lines.append)  # 1e-3 randn logits that do not move: a tie-break
    summary = json.loads((tmp_path / "rl" / "summary.json").read_text())
    assert 0 < summary["mode_margin"] < strategies_module.TIE_BREAK_NATS and summary["tie_break"] is True
    warning = [line for line in lines if "tie-break" in line]
    assert len(warning) == 1 and warning[0].startswith("nge: warning: the rl cell is a tie-break")


def test_a_decided_rl_cell_reports_its_margin_and_no_tie_break(search_task, tmp_path):
    task = search_task("search.strategy=rl", "search.arch.name=darts")
    edges, ops = DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)
    with torch.no_grad():  # op k has logit k + 10 e: op gaps 1, gaps between edges' best 10
        alpha = torch.arange(ops).float() + 10.0 * torch.arange(edges).float()[:, None]
        task.arch.alpha_normal.copy_(alpha)
        task.arch.alpha_reduce.copy_(alpha)
    lines = []
    fields = task.strategy.finish(RunDir.open(tmp_path / "rl", False, False), lines.append)
    assert fields == {"mode_margin": 1.0, "tie_break": False}
    assert lines == ["rl: mode margin 1 nats (log-probability of the chosen cell minus the runner-up's)"]


@pytest.mark.parametrize("fitness, same, tie", [((0.5, 0.5), False, True), ((0.5, 0.25), False, False),
                                                 ((0.5, 0.5), True, False)])
def test_the_ea_pick_is_a_tie_break_when_another_cell_is_as_fit(search_task, tmp_path, fitness, same, tie):
    task = search_task("search.strategy=ea", "search.ea.population=2", "search.ea.tournament=2")
    s = task.strategy
    for k, f in enumerate(fitness):
        s.population.add(random_genotype(0 if same else k), f)
    lines = []
    fields = s.finish(RunDir.open(tmp_path / "ea", False, False), lines.append)
    margin = math.inf if same else fitness[0] - fitness[1]
    assert fields["mode_margin"] == margin and fields["tie_break"] == tie
    assert len(lines) == 1 and lines[0].startswith("nge: warning: the ea cell is a tie-break") == tie
    assert (tmp_path / "ea" / "population.json").is_file()


def test_an_old_rl_run_dir_with_the_old_decay_is_refused_in_one_line_or_resumes_with_it(tmp_path, capsys):
    """A run directory from before the strategy defaults: rl with weight decay 1e-3, no search.ea.entropy_weight."""
    import yaml

    from nge.cli import main
    from nge.engine import load_checkpoint, save_checkpoint

    out = tmp_path / "rl"
    cmd = ["search", "--preset", "smoke", "--out", str(out)]
    args = ["runtime.progress=false", "runtime.threads=1", "search.strategy=rl"]
    assert main([*cmd, *args, "search.epochs=1", "search.arch.weight_decay=0.001"]) == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    del ckpt["config"]["search"]["ea"]["entropy_weight"]  # as the older version wrote it
    save_checkpoint(ckpt, out / "checkpoint.pt")
    capsys.readouterr()
    assert main([*cmd, "--resume", *args, "search.epochs=2"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("nge: error: cannot resume") and "\n" not in err
    assert "search.arch.weight_decay (run: 0.001, now: 0.0)" in err and "search.arch.weight_decay=0.001" in err
    assert main([*cmd, "--resume", *args, "search.epochs=2", "search.arch.weight_decay=0.001"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["search"]["arch"]["weight_decay"] == 1e-3
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
