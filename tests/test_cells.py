"""search.arch.cells (issue 35, item 1): how the cell types are parameterised (shared, distinct, separate),
and the normal/reduce argmax agreement in the search telemetry and the ablation tables."""

from __future__ import annotations

import json

import pytest
import torch

from nge.ablate import tabulate, write_tables
from nge.arch import NGE, build_arch
from nge.config import (
    KEYS_SINCE_FINGERPRINTS,
    AblateConfig,
    AblateRow,
    SearchRunConfig,
    inert_keys,
    load_config,
)
from nge.engine import RunDir
from nge.errors import NGEError
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, random_genotype
from nge.spaces import get_space
from nge.telemetry import cells_agreement, probs_telemetry, random_cells_agreement

EMBEDDINGS = ["plain", "rnn", "nge"]
E, O = DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)  # noqa: E741

# P before search.arch.cells existed (seed 0, init=normal): row 0 of P_normal and row 13 of P_reduce
BEFORE = {
    "plain": ([0.141775, 0.148922, 0.14289, 0.149049, 0.131905, 0.127882, 0.157578],
              [0.140514, 0.146447, 0.138718, 0.155591, 0.128053, 0.128831, 0.161846]),
    "rnn": ([0.13867, 0.14298, 0.142606, 0.147774, 0.142368, 0.140564, 0.145038],
            [0.143722, 0.1418, 0.135823, 0.148652, 0.145943, 0.136269, 0.14779]),
    "nge": ([0.123865, 0.110201, 0.155661, 0.135395, 0.119109, 0.158194, 0.197574],
            [0.11538, 0.113892, 0.172143, 0.141908, 0.105067, 0.170495, 0.181114]),
}
# the shared layers' parameter names, as before the key existed
SHARED_NAMES = {
    "plain": ["x_normal", "x_reduce", "proj.weight", "head.mlp.0.weight", "head.mlp.2.weight", "head.op_fc.weight"],
    "nge": ["x_normal", "x_reduce", "gcn.0.weight", "gcn.1.weight", "gcn.2.weight", "head.mlp.0.weight",
            "head.mlp.2.weight", "head.op_fc.weight"],
}


def _built(name: str, init: str = "uniform", seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_arch(name, init=init, **kw)


# ------------------------------------------------------------------------------------ shared = today's


@pytest.mark.parametrize("name", EMBEDDINGS)
@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_shared_is_the_parameterisation_without_the_key(name, init):
    absent, shared = _built(name, init), _built(name, init, cells="shared")
    assert list(absent.state_dict()) == list(shared.state_dict())
    assert all(torch.equal(v, shared.state_dict()[k]) for k, v in absent.state_dict().items())
    pa, ps = absent(), shared()
    assert all(torch.equal(a, b) for a, b in zip(pa, ps, strict=True))
    assert torch.equal(pa.normal, pa.reduce)  # one X start, one set of layers: the two types' P are identical
    # the same numbers drawn, in the same order: the next draw is the same too
    torch.manual_seed(0)
    build_arch(name, init=init)
    after_absent = torch.rand(4)
    torch.manual_seed(0)
    build_arch(name, init=init, cells="shared")
    assert torch.equal(after_absent, torch.rand(4))


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_shared_reproduces_the_p_from_before_the_key(name):
    p = _built(name, "normal", cells="shared")()
    assert torch.allclose(p.normal[0], torch.tensor(BEFORE[name][0]), atol=2e-6)
    assert torch.allclose(p.reduce[13], torch.tensor(BEFORE[name][1]), atol=2e-6)


def test_the_config_default_is_shared_and_the_search_builds_it(search_task):
    assert load_config(SearchRunConfig, "search", "smoke", []).search.arch.cells == "shared"
    default, shared = search_task(), search_task("search.arch.cells=shared")
    assert [n for n, _ in default.arch.named_parameters()] == SHARED_NAMES["nge"]
    assert all(torch.equal(a, b) for a, b in zip(default.probs(), shared.probs(), strict=True))


# ------------------------------------------------------------------------------------- parameter sets


@pytest.mark.parametrize("name", ["plain", "nge"])
def test_shared_and_distinct_have_one_set_of_layers(name):
    for cells in ("shared", "distinct"):
        a = _built(name, cells=cells)
        assert [n for n, _ in a.named_parameters()] == SHARED_NAMES[name] and a.per_cell is None


def test_separate_has_one_disjoint_set_of_layers_per_cell_type():
    shared, sep = _built("nge"), _built("nge", cells="separate")
    layers = [n for n in SHARED_NAMES["nge"] if not n.startswith("x_")]
    assert [n for n, _ in sep.named_parameters()] == (
        ["x_normal", "x_reduce"] + [f"per_cell.normal.{n}" for n in layers] + [f"per_cell.reduce.{n}" for n in layers])
    shapes = dict((n, p.shape) for n, p in shared.named_parameters())
    for n, p in sep.named_parameters():
        assert p.shape == shapes[n.split(".", 2)[-1] if n.startswith("per_cell") else n]
    normal, reduce = ({p.data_ptr() for p in sep.per_cell[c].parameters()} for c in ("normal", "reduce"))
    assert len(normal) == len(reduce) == len(layers) and not normal & reduce
    n_x = 2 * 6 * 64
    assert sum(p.numel() for p in sep.parameters()) == n_x + 2 * (sum(p.numel() for p in shared.parameters()) - n_x)
    assert not hasattr(sep, "gcn") and not hasattr(sep, "head")
    assert torch.equal(sep.x_normal, torch.eye(6, 64)) and torch.equal(sep.x_reduce, torch.eye(6, 64))


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_with_separate_layers_each_type_hears_only_its_own(name):
    a = _built(name, cells="separate")
    p = a()
    (p.normal * torch.randn(E, O)).sum().backward()  # a loss on the normal cell's P alone
    for n, prm in a.named_parameters():
        own = n.startswith("per_cell.normal.") or n == "x_normal"
        assert (prm.grad is not None and prm.grad.abs().sum() > 0) == own, n
    if name == "rnn":
        assert {n.split(".")[2] for n, _ in a.named_parameters() if n.startswith("per_cell.reduce.")} == {"proj", "head", "rnn"}


def test_distinct_starts_every_node_of_every_type_at_its_own_one_hot():
    a = _built("nge", cells="distinct")
    x = torch.cat([a.x_normal, a.x_reduce]).detach()
    assert torch.equal(x, torch.eye(12, 64))  # 12 distinct rows of the 64 x 64 identity
    assert len({tuple(r.tolist()) for r in x}) == 12


def test_distinct_refuses_too_few_dimensions_in_one_line():
    assert torch.equal(torch.cat([NGE(node_dim=12, cells="distinct").x_normal,
                                  NGE(node_dim=12, cells="distinct").x_reduce]).detach(), torch.eye(12))
    with pytest.raises(NGEError, match=r"node_dim >= 2 cell types x 6 nodes = 12 .* got 11") as e:
        NGE(node_dim=11, cells="distinct")
    assert "\n" not in str(e.value)
    NGE(node_dim=11)  # shared needs only |V| = 6
    with pytest.raises(ValueError, match="unknown cells 'both'"):
        build_arch("nge", cells="both")


@pytest.mark.parametrize("name", EMBEDDINGS)
@pytest.mark.parametrize("cells", ["distinct", "separate"])
def test_every_parameter_learns_in_every_reading(name, cells):
    a = _built(name, cells=cells)
    p = a()
    target = torch.randn(2, E, O)
    (((p.normal - target[0]) ** 2).sum() + ((p.reduce - target[1]) ** 2).sum()).backward()
    for n, prm in a.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, n


# ------------------------------------------------------------------------------------------- initial P


@pytest.mark.parametrize("name", EMBEDDINGS)
@pytest.mark.parametrize("cells", ["shared", "distinct", "separate"])
def test_uniform_init_starts_every_reading_near_uniform(name, cells):
    for m in _built(name, cells=cells)():
        assert torch.allclose(m, torch.full_like(m, 1 / O), atol=0.01)


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_initial_p_of_the_two_types(name):
    for init in ("uniform", "normal"):
        shared = _built(name, init)()
        assert torch.equal(shared.normal, shared.reduce)  # identical X through identical layers
        distinct = _built(name, init, cells="distinct")()
        assert not torch.equal(distinct.normal, distinct.reduce)  # other X through the same layers
    sep = _built(name, "normal", cells="separate")()
    assert (sep.normal - sep.reduce).abs().max() > 1e-3  # each type its own layers, drawn at standard scale
    assert not torch.allclose(sep.normal, sep.reduce, atol=1e-3)


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_with_one_cell_type_the_three_readings_are_one(name):
    sp = get_space("nb201")
    built = [_built(name, "normal", topology=sp.topology, n_ops=len(sp.primitives), cell_types=sp.cell_types,
                    cells=cells) for cells in ("shared", "distinct", "separate")]
    first = built[0].state_dict()
    for other in built[1:]:
        assert list(other.state_dict()) == list(first)
        assert all(torch.equal(v, other.state_dict()[k]) for k, v in first.items())
        assert torch.equal(other()[0], built[0]()[0])


def test_darts_ignores_the_key():
    a, b = _built("darts"), _built("darts", cells="separate")
    assert all(torch.equal(x, y) for x, y in zip(a(), b(), strict=True))


# ---------------------------------------------------------------------------------------------- config


def test_config_key_values_and_darts_refusal():
    for cells in ("shared", "distinct", "separate"):
        cfg = load_config(SearchRunConfig, "search", "smoke", [f"search.arch.cells={cells}"])
        assert cfg.search.arch.cells == cells
    with pytest.raises(NGEError, match="search.arch.cells"):
        load_config(SearchRunConfig, "search", "smoke", ["search.arch.cells=both"])
    with pytest.raises(NGEError, match=r"search.arch.cells has no effect with search.arch.name=darts .*; drop it$"):
        load_config(SearchRunConfig, "search", "smoke", ["search.arch.name=darts", "search.arch.cells=separate"])
    darts = load_config(SearchRunConfig, "search", "smoke", ["search.arch.name=darts"])
    nge = load_config(SearchRunConfig, "search", "smoke", [])
    assert "search.arch.cells" in inert_keys(darts) and "search.arch.cells" not in inert_keys(nge)
    # one cell type: allowed (the three readings are the same there)
    assert load_config(SearchRunConfig, "search", "nb201-quick", ["search.arch.cells=separate"]).search.arch.cells == "separate"
    assert "search.arch.cells" in KEYS_SINCE_FINGERPRINTS


def test_the_search_builds_the_configured_reading(search_task):
    task = search_task("search.arch.cells=separate")
    assert task.arch.per_cell is not None and list(task.arch.per_cell) == ["normal", "reduce"]
    assert {id(q) for q in task.arch_opt.param_groups[0]["params"]} == {id(q) for q in task.arch.parameters()}
    t = task.telemetry(task.probs())
    assert t["cells_agreement"] == cells_agreement(task.probs().normal, task.probs().reduce)


# ------------------------------------------------------------------------------------------- telemetry


def test_cells_agreement_on_hand_made_p():
    normal = torch.full((E, O), 0.1)
    normal[torch.arange(E), torch.arange(E) % O] = 0.4  # edge e's argmax: op e mod 7
    reduce = normal.clone()
    for e in range(3, E):  # edges 3.. move their argmax one op on: 3 of 14 agree
        reduce[e] = normal[e].roll(1)
    assert cells_agreement(normal, reduce) == pytest.approx(3 / 14)
    assert cells_agreement(normal, normal) == 1.0
    t = probs_telemetry(normal, reduce)
    assert t["cells_agreement"] == pytest.approx(3 / 14) and t["normal_distinct"] == 7
    assert "cells_agreement" not in probs_telemetry(normal, names=("cell",))  # one cell type: no pair
    with pytest.raises(ValueError, match="one shape"):
        cells_agreement(normal, normal[:5])


def test_cells_agreement_of_independent_random_cells_is_one_over_o():
    assert random_cells_agreement() == 1 / 7 and random_cells_agreement(5) == 1 / 5
    g = torch.Generator().manual_seed(0)
    draws = [cells_agreement(torch.rand(E, O, generator=g), torch.rand(E, O, generator=g)) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(1 / 7, abs=0.005)  # std of the mean: 0.0015


# ------------------------------------------------------------------------------------------ the table


def _lines(agreements: dict[int, float | None]) -> list[dict]:
    """Two training lines per seed of a searched row 'nge' (as the table holds them) and one random row."""
    rows = []
    for seed, value in agreements.items():
        g = json.dumps(random_genotype(seed).to_dict())
        for t in (0, 1000):
            line = {"row": "nge", "seed": seed, "train_seed": seed + t, "search_val_acc": 0.5, "search_seconds": 60.0,
                    "genotype": g, "normal_ops": 3, "reduce_ops": 3, "test_acc[smoke]": 0.5, "train_seconds[smoke]": 6.0}
            rows.append(line if value is None else {**line, "cells_agreement": value})
    return rows + [{"row": "random", "seed": s, "train_seed": s, "search_val_acc": None, "search_seconds": 0.0,
                    "genotype": json.dumps(random_genotype(s).to_dict()), "normal_ops": 5, "reduce_ops": 5,
                    "test_acc[smoke]": 0.5, "train_seconds[smoke]": 6.0} for s in agreements]


ACFG = AblateConfig(seeds=2, search_preset="smoke", train_presets=["smoke"],
                    rows=[AblateRow("random", "Random cells"), AblateRow("nge", "NGE")])


def _table(tmp_path, rows: list[dict]) -> list[str]:
    acfg = ACFG
    run = RunDir(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_tables(rows, acfg, run)
    return run.file("ablation.md").read_text().splitlines()


def _column(lines: list[str], label: str) -> str:
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    row = next(line for line in lines if line.startswith(f"| {label} |"))
    return [c.strip() for c in row.strip("|").split("|")][head.index("Normal/reduce agreement (%)")]


def test_the_table_shows_the_agreement_once_per_search(tmp_path):
    lines = _table(tmp_path / "a", _lines({0: 0.5, 1: 0.25}))
    # one value per search (its two training lines count once): mean 37.5, std of (50, 25) = 17.7
    assert _column(lines, "NGE") == "37.5 ± 17.7" and _column(lines, "Random cells") == "n/a"
    assert any("1/7 = 14.3% for independent uniformly random cells" in line for line in lines)
    again = tabulate(ACFG, tmp_path / "a" / "ablation.csv", tmp_path / "again")  # read back from its CSV
    assert _column((again / "ablation.md").read_text().splitlines(), "NGE") == "37.5 ± 17.7"
    old = _table(tmp_path / "b", _lines({0: None, 1: None}))  # a table from before the column
    assert _column(old, "NGE") == "n/a"
