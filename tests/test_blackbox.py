"""Black-box search on the NAS-Bench-201 table (`nge.blackbox`): budgets, picks, populations, policies."""

import numpy as np
import pytest
import torch

from nge.arch import NGE
from nge.blackbox import (
    METHODS,
    POPULATION,
    Oracle,
    main,
    mutation_logq,
    nge_policy,
    nge_rl,
    policy_entropy,
    run_method,
)
from nge.errors import NGEError
from nge.spaces.nb201 import PRIMITIVES, Nb201Genotype
from nge.spaces.nb201_table import N_CELLS, load_table, ops_to_index
from nge.strategies import nb201_mutation_options

LR = {"reinforce": 0.1, "nge-rl": 0.001, "logits-ea": 0.01, "nge-ea": 0.001}


@pytest.fixture(autouse=True)
def one_thread():
    """As `run_method` does: tiny tensors, and two threads on a busy machine are 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(method, seed=0, noise=0.5, budget=40, **hp):
    return run_method(method, seed, noise, budget, **({"lr": LR[method]} if method in LR else {}), **hp)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_spends_exactly_its_budget_and_picks_a_queried_cell(method):
    r = _run(method, budget=37)
    assert len(r.cells) == len(r.signals) == 37 and np.all((r.cells >= 0) & (r.cells < N_CELLS))
    for b in (1, 10, 37):
        k = r.pick(b)
        assert 0 <= k < b and r.signals[k] == r.signals[:b].max()
        assert r.best_so_far()[b - 1] == r.true[k]  # the curve is the pick's true value


@pytest.mark.parametrize("method", METHODS)
def test_a_shorter_budget_is_the_prefix_of_a_longer_run_and_runs_are_deterministic(method):
    short, long, again = _run(method, seed=3, budget=25), _run(method, seed=3, budget=60), _run(method, seed=3, budget=60)
    assert np.array_equal(short.cells, long.cells[:25])
    assert np.array_equal(long.cells, again.cells) and np.array_equal(long.signals, again.signals)
    assert long.info == again.info


def test_random_search_pick_is_the_max_over_its_draws():
    acc = load_table().acc["cifar10"]
    for seed in range(5):
        r = run_method("random", seed, 0.0, 100)
        rng = np.random.default_rng(seed)  # the draws, made again independently
        draws = [int(rng.integers(N_CELLS)) for _ in range(100)]
        assert r.cells.tolist() == draws
        assert r.true[r.pick(100)] == max(acc[d] for d in draws)


def test_oracle_noise_is_fixed_per_cell_and_seed_and_zero_means_the_table():
    acc = load_table().acc["cifar10"]
    a, b, c = Oracle(1, 0.5), Oracle(1, 0.5), Oracle(2, 0.5)
    assert np.array_equal(a.signal, b.signal) and not np.array_equal(a.signal, c.signal)
    assert a.query(7) == a.query(7) and a.n == 2  # a re-query returns the same value and costs a query
    assert abs(float(np.std(a.signal - acc)) - 0.5) < 0.02
    assert np.array_equal(Oracle(1, 0.0).signal, acc)
    with pytest.raises(NGEError, match="noise"):
        Oracle(0, -1.0)


def test_regularised_evolution_population_never_exceeds_its_size():
    assert _run("re", budget=200).info["max_population"] == POPULATION
    assert _run("re", budget=200, population=4, sample=2).info["max_population"] == 4
    assert _run("nge-ea", budget=60).info["max_population"] == POPULATION
    # the first `population` queries are the random search's draws (paired seeds)
    assert np.array_equal(_run("re", seed=5).cells[:POPULATION], _run("random", seed=5).cells[:POPULATION])


def test_regularised_evolution_finds_top_cells_without_noise():
    rank = load_table().rank["cifar10"]
    ranks = [int(rank[r.cells[r.pick(500)]]) for r in (run_method("re", s, 0.0, 500) for s in range(10))]
    assert sum(k <= 50 for k in ranks) >= 9, ranks  # seeds 0..9 give ranks 1..8
    rnd = [int(rank[r.cells[r.pick(500)]]) for r in (run_method("random", s, 0.0, 500) for s in range(10))]
    assert np.median(ranks) < np.median(rnd)


def test_reinforce_entropy_falls():
    h = _run("reinforce", noise=0.0, budget=300).info["entropy"]
    assert len(h) == 300 and h[0] > 9.6 and h[-1] < h[0] - 1.0  # uniform: 6 ln 5 = 9.66 nats


def test_nge_rl_uses_the_nge_module_logits():
    arch = nge_policy(0)
    assert isinstance(arch, NGE) and arch.cell_logits().shape == (1, 6, 5)
    before = arch.cell_logits()[0].detach().clone()
    oracle = Oracle(0, 0.0)
    info = nge_rl(oracle, 50, 0, lr=0.003, arch=arch)
    after = arch.cell_logits()[0].detach()
    assert not torch.allclose(before, after)  # the module learned
    assert info["entropy"][-1] == pytest.approx(float(policy_entropy(after)), abs=1e-6)
    assert info["mode"][-1] == int(ops_to_index(after.argmax(dim=-1).numpy()))
    # same seed, fresh module: the same run
    again = nge_rl(Oracle(0, 0.0), 50, 0, lr=0.003)
    assert again == info


def test_nge_ea_mutation_distribution_is_the_search_strategy_one():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    ops = np.array([0, 3, 1, 4, 2, 3])
    logq = mutation_logq(logits, ops)
    assert torch.isinf(logq[np.arange(6), ops]).all() and float(logq.exp().sum()) == pytest.approx(1.0)
    g = Nb201Genotype(tuple(PRIMITIVES[k] for k in ops))
    for m, q in nb201_mutation_options(logits[None], g):
        assert float(logq[m.slot, PRIMITIVES.index(m.value)]) == pytest.approx(float(q), abs=1e-5)
    uniform = mutation_logq(torch.zeros(6, 5), ops).exp()
    assert torch.allclose(uniform[torch.isfinite(mutation_logq(torch.zeros(6, 5), ops))], torch.full((24,), 1 / 24))


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["--noise", "x", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nge blackbox: error:") and err.count("\n") == 1
    with pytest.raises(NGEError, match="unknown black-box method"):
        run_method("bogus", 0, 0.0, 10)
    with pytest.raises(NGEError, match="budget"):
        run_method("random", 0, 0.0, 0)
