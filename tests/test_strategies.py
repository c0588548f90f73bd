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

from nge import search as search_module
from nge import strategies as strategies_module
from nge.engine import Meter, RunDir, fit
from nge.errors import NGEError
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellProbs, Genotype, Topology, random_genotype
from nge.strategies import (
    Population,
    cell_entropy,
    cell_log_prob,
    genotype_log_prob,
    mode_cell,
    mutate,
    mutation_log_prob,
    mutation_options,
    sample_cell,
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


def test_the_tournament_picks_the_fittest_of_a_uniform_draw():
    gs = [random_genotype(k) for k in range(5)]
    pop = Population(size=5, tournament=2)
    for g, f in zip(gs, [0.5, 0.9, 0.1, 0.3, 0.9], strict=True):
        pop.add(g, f)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    wins = Counter(gs.index(pop.select(gen)) for _ in range(n))
    # exact win rates of "best of 2 of 5 without replacement", ties to the youngest (index 4 over 1)
    pairs = list(itertools.combinations(range(5), 2))
    fit_ = [0.5, 0.9, 0.1, 0.3, 0.9]
    expect = Counter(max(p, key=lambda i: (fit_[i], i)) for p in pairs)
    assert wins[2] == 0
    for i in range(5):
        assert wins[i] / n == pytest.approx(expect[i] / len(pairs), abs=0.01)
    pop.tournament = 5
    assert all(pop.select(gen) == gs[4] for _ in range(10))
    assert pop.best() == (gs[4], 0.9)


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
        task = search_task(f"search.strategy={s}", "search.epochs=1")
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


def test_the_final_genotypes_follow_the_stated_rules(tmp_path, search_task):
    task = search_task("search.strategy=ea", "search.ea.population=2", "search.ea.tournament=2", "search.epochs=2")
    fit(task, 2, RunDir.open(tmp_path / "ea", False, False))
    fitness = [f for _, f in task.strategy.population.members]
    assert len(fitness) == 2
    best = max(range(2), key=lambda i: (fitness[i], i))
    assert task.genotype() == task.strategy.population.members[best][0]
    task = search_task("search.strategy=rl")
    with torch.no_grad():
        logits = task.arch.cell_logits()
    mode = task.genotype()
    assert genotype_log_prob(logits, mode) >= max(genotype_log_prob(logits, random_genotype(k)) for k in range(50))


def test_sampling_strategies_refuse_torchrun(monkeypatch, search_task):
    monkeypatch.setattr(search_module, "world", lambda: (0, 2))
    with pytest.raises(NGEError, match="search.strategy=rl runs in one process"):
        search_task("search.strategy=rl")


@pytest.mark.parametrize("overrides, fragment", [
    (["search.strategy=ea", "search.ea.tournament=30"], "tournament <= population"),
    (["search.strategy=ea", "search.ea.population=1"], "population >= 2"),
    (["search.strategy=rl", "search.rl.baseline_decay=1"], "baseline_decay in [0, 1)"),
    (["search.strategy=sa"], "search.strategy"),
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
            best = max(range(4), key=lambda i: (members[i]["fitness"], i))
            assert members[best]["genotype"] == genotype.to_dict()
        else:
            assert 0 <= rows[-1]["rl_baseline"] <= 1 and rows[-1]["policy_entropy"] > 0
