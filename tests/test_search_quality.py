"""Search telemetry, the random-cell baseline and the search remedies (issue: search quality)."""

import itertools
import json
from pathlib import Path

import pytest
import torch

from nge.arch import ARCH_PARAMS, DartsAlpha, build_arch, scale_shared_offset
from nge.cli import main
from nge.errors import NGEError
from nge.genotypes import resolve_genotype
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, Genotype, random_genotype
from nge.telemetry import cell_telemetry, op_counts, probs_telemetry

QUIET = ["runtime.progress=false", "runtime.threads=1"]
E, O = DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)  # noqa: E741


# ------------------------------------------------------------------------------------------- telemetry


def test_telemetry_of_uniform_p():
    t = cell_telemetry(torch.full((E, O), 1 / O))
    assert t["entropy"] == pytest.approx(1.0)
    assert t["margin"] == pytest.approx(0.0)
    assert t["spread"] == pytest.approx(0.0)
    assert t["distinct"] == 1 and t["majority"] == 1.0  # ties go to the first op on every edge


def test_telemetry_of_one_hot_p():
    ops = [k % O for k in range(E)]  # 0..6, 0..6: every op on two edges
    p = torch.nn.functional.one_hot(torch.tensor(ops), O).double()
    t = cell_telemetry(p)
    assert t["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert t["margin"] == pytest.approx(1.0)
    assert t["distinct"] == O
    assert t["majority"] == pytest.approx(2 / E)
    assert t["spread"] == pytest.approx(1 - 2 / E)  # TV distance of a one-hot row from the mean row


def test_telemetry_separates_a_shared_offset_from_edge_specific_rows():
    torch.manual_seed(0)
    shared = torch.randn(O).expand(E, O) * 3  # every edge the same logits: a shared offset only
    t = cell_telemetry(torch.softmax(shared, 1))
    assert t["spread"] == pytest.approx(0.0, abs=1e-12) and t["distinct"] == 1 and t["majority"] == 1.0
    assert t["entropy"] < 0.9  # decided, yet the same decision on every edge
    specific = shared + torch.randn(E, O) * 3
    s = cell_telemetry(torch.softmax(specific, 1))
    assert s["spread"] > 0.2 and s["distinct"] >= 3 and s["majority"] < 0.8
    both = probs_telemetry(torch.softmax(shared, 1), torch.softmax(specific, 1))
    assert both["normal_spread"] == t["spread"] and both["reduce_distinct"] == s["distinct"]


def test_op_counts_in_op_order():
    cell = (("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0), ("max_pool_3x3", 2),
            ("sep_conv_3x3", 1), ("skip_connect", 3), ("dil_conv_5x5", 0), ("sep_conv_3x3", 4))
    assert op_counts(cell) == {"skip_connect": 2, "max_pool_3x3": 1, "sep_conv_3x3": 4, "dil_conv_5x5": 1}
    assert list(op_counts(cell)) == ["skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_5x5"]


# ---------------------------------------------------------------------------------- random baseline


def test_random_genotypes_are_valid_seeded_and_distinct():
    g = random_genotype(3)
    assert Genotype.from_dict(json.loads(g.to_json())) == g  # passes every validation
    assert random_genotype(3) == g and random_genotype(4) != g
    assert resolve_genotype("random:3") == g
    assert len({random_genotype(s) for s in range(50)}) == 50


def test_random_genotypes_cover_the_space():
    n_in = DEFAULT_TOPOLOGY.n_inputs
    ops_seen = {(cell, k): set() for cell in ("normal", "reduce") for k in range(8)}
    pairs_seen = {(cell, node): set() for cell in ("normal", "reduce") for node in range(n_in, n_in + 4)}
    for seed in range(600):
        g = random_genotype(seed)
        for cell in ("normal", "reduce"):
            pairs = getattr(g, cell)
            for k, (op, _) in enumerate(pairs):
                ops_seen[cell, k].add(op)
            for node in range(n_in, n_in + 4):
                a, b = pairs[2 * (node - n_in)][1], pairs[2 * (node - n_in) + 1][1]
                assert a < b  # two distinct inputs, in order
                pairs_seen[cell, node].add((a, b))
    assert all(seen == set(PRIMITIVES) for seen in ops_seen.values())
    for (_, node), seen in pairs_seen.items():
        assert seen == set(itertools.combinations(range(node), 2))


@pytest.mark.parametrize("spec", ["random:", "random:x", "random:-1"])
def test_bad_random_spec_is_one_line(spec):
    with pytest.raises(NGEError, match="random:SEED"):
        resolve_genotype(spec)


# ------------------------------------------------------------------------------------------- remedies


def test_shared_offset_scales_the_mean_over_edges_only():
    logits = torch.randn(2, E, O)
    assert torch.equal(scale_shared_offset(logits, 1.0), logits)
    zero = scale_shared_offset(logits, 0.0)
    assert torch.allclose(zero.mean(1), torch.zeros(2, O), atol=1e-6)
    centred = logits - logits.mean(1, keepdim=True)
    assert torch.allclose(zero, centred, atol=1e-6)  # how the edges differ is untouched
    assert torch.allclose(scale_shared_offset(logits, 0.25).mean(1), 0.25 * logits.mean(1), atol=1e-6)


@pytest.mark.parametrize("name", list(ARCH_PARAMS))
def test_without_shared_offset_no_op_leads_on_every_edge(name):
    torch.manual_seed(0)
    arch = build_arch(name, shared_offset=0.0)
    with torch.no_grad():  # edge-specific noise on the first weight matrix
        p = next(q for q in arch.parameters() if q.dim() == 2)
        p.add_(torch.randn_like(p))
        logits = arch.logits()
    assert torch.allclose(arch().normal, torch.softmax(logits[0] - logits[0].mean(0), -1))
    shifted = arch.logits() + torch.tensor([0, 0, 0, 50.0, 0, 0, 0])  # a shared offset, however large
    assert torch.allclose(torch.softmax(scale_shared_offset(shifted, 0.0), -1)[0], arch().normal, atol=1e-6)
    t = cell_telemetry(arch().normal.detach())
    assert t["distinct"] >= 2 and t["majority"] < 1


@pytest.mark.parametrize("name", list(ARCH_PARAMS))
def test_normal_init_gives_every_edge_its_own_start(name):
    torch.manual_seed(0)
    uniform = cell_telemetry(build_arch(name)().normal.detach())
    torch.manual_seed(0)
    normal = cell_telemetry(build_arch(name, init="normal")().normal.detach())
    assert uniform["entropy"] > 0.999 and uniform["spread"] < 0.001
    assert normal["spread"] > 3 * uniform["spread"] and normal["margin"] > 3 * uniform["margin"]


def _search(tmp_path: Path, name: str, *overrides: str) -> Path:
    out = tmp_path / name
    assert main(["search", "--preset", "smoke", "--out", str(out), *QUIET, *overrides]) == 0
    return out


def _probs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "probs.jsonl").read_text().splitlines()]


def _pre_remedy_logits(arch) -> torch.Tensor:
    """The logits as the code computed them before the remedies, from the parameters, in float64."""
    if isinstance(arch, DartsAlpha):
        return torch.stack([arch.alpha_normal, arch.alpha_reduce]).double()
    w = lambda layer: layer.weight.detach().double()  # noqa: E731
    h = torch.stack([arch.x_normal, arch.x_reduce]).detach().double()
    a_hat = torch.tensor(DEFAULT_TOPOLOGY.adjacency(), dtype=torch.float64) + torch.eye(h.shape[1], dtype=torch.float64)
    for layer in arch.gcn:
        h = torch.relu(a_hat @ (h @ w(layer).T))
    src, dst = zip(*DEFAULT_TOPOLOGY.edges, strict=True)
    e = torch.cat([h[:, list(src)], h[:, list(dst)]], dim=-1)
    mlp = arch.head.mlp
    e = torch.relu(torch.relu(e @ w(mlp[0]).T) @ w(mlp[2]).T)
    return e @ w(arch.head.op_fc).T


@pytest.mark.parametrize("name", ["nge", "darts"])
@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_faithful_logits_equal_the_pre_remedy_formula(name, init):
    """shared_offset=1 leaves the logits as the paper's formula gives them (checked in float64)."""
    torch.manual_seed(0)
    arch = build_arch(name, init=init)
    want = _pre_remedy_logits(arch)
    assert torch.allclose(arch.cell_logits().double(), want, rtol=1e-5, atol=1e-7)
    assert torch.allclose(arch.logits().double(), want, rtol=1e-5, atol=1e-7)
    p = arch()
    assert torch.allclose(torch.stack([p.normal, p.reduce]).double(), torch.softmax(want, -1), atol=1e-6)


@pytest.mark.parametrize("name", ["nge", "darts"])
def test_shared_offset_acts_on_cell_logits_only(name):
    """logits() is the parameterisation's raw output; cell_logits() (what P and the sampling strategies
    read) keeps `shared_offset` of the mean over edges. Swapping the two fails here."""
    torch.manual_seed(0)
    arch = build_arch(name, init="normal", shared_offset=0.25)
    raw = _pre_remedy_logits(arch)
    kept = raw - 0.75 * raw.mean(1, keepdim=True)
    assert torch.allclose(arch.logits().double(), raw, rtol=1e-5, atol=1e-6)
    assert torch.allclose(arch.cell_logits().double(), kept, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(arch.cell_logits().double(), raw, atol=1e-3)
    p = arch()
    assert torch.allclose(torch.stack([p.normal, p.reduce]).double(), torch.softmax(kept, -1), atol=1e-6)


def test_the_faithful_search_keeps_the_papers_arch_optimiser(tmp_path):
    """What the faithful gd search optimises P with (docs/paper.md section 3; docs/design.md, "Why the
    embedding's weight decay is 0 in quick-rl"): Adam, lr 6e-4, betas (0.5, 0.999), coupled weight decay 1e-3,
    in every gd preset; only `quick` departs (nge's remedy, a larger lr)."""
    from nge.config import SearchRunConfig, available_presets, load_config, to_dict
    from nge.data import load_dataset
    from nge.searching import SearchTask
    for preset in available_presets("search"):
        cfg = load_config(SearchRunConfig, "search", preset, [])
        if cfg.search.strategy != "gd":
            continue
        a = cfg.search.arch
        assert (a.beta1, a.beta2, a.weight_decay, a.init) == (0.5, 0.999, 1e-3, "uniform"), preset
        assert a.lr == 6e-4 or (preset, a.lr, a.shared_offset) == ("quick", 1.5e-3, 0.0), preset
    cfg = load_config(SearchRunConfig, "search", "smoke", ["runtime.threads=1"])
    data = load_dataset(cfg.data.name, cfg.data.root, to_dict(cfg.data.synthetic))
    task = SearchTask(cfg, data, torch.device("cpu"))
    opt = task.arch_opt
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (6e-4, (0.5, 0.999), 1e-3)
    assert {id(q) for q in g["params"]} == {id(q) for q in task.arch.parameters()}


@pytest.mark.slow
def test_the_same_search_gives_the_same_p(tmp_path):
    """Two identical searches in one process give bitwise the same P after every epoch (no test compares
    floats with a file recorded on another machine: kernels differ between CPUs of one kind)."""
    for param in ("nge", "darts"):
        first = _probs(_search(tmp_path, f"{param}-1", f"search.arch.name={param}"))
        second = _probs(_search(tmp_path, f"{param}-2", f"search.arch.name={param}"))
        assert first == second and len(first) == 3
        assert first[-1] != first[0]  # the search moved P


@pytest.mark.slow
def test_search_writes_telemetry_and_op_counts(tmp_path):
    out = _search(tmp_path, "t")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    probs = _probs(out)
    for row, p in zip(rows, probs[1:], strict=True):
        assert {k: row[k] for k in probs_telemetry(p["normal"], p["reduce"])} == probs_telemetry(p["normal"], p["reduce"])
    summary = json.loads((out / "summary.json").read_text())
    g = Genotype.from_dict(summary["genotype"])
    assert summary["op_counts"] == {"normal": op_counts(g.normal), "reduce": op_counts(g.reduce)}
    assert sum(summary["op_counts"]["normal"].values()) == 8
    assert summary["telemetry"] == probs_telemetry(probs[-1]["normal"], probs[-1]["reduce"])
    assert (out / "telemetry.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("param", ["darts", "nge"])
def test_each_remedy_changes_the_search(tmp_path, param):
    base = _probs(_search(tmp_path, "base", f"search.arch.name={param}"))
    centred = _probs(_search(tmp_path, "so", f"search.arch.name={param}", "search.arch.shared_offset=0"))
    last = torch.tensor(centred[-1]["normal"])
    assert centred[-1] != base[-1] and cell_telemetry(last)["majority"] < 1
    normal = _probs(_search(tmp_path, "normal", f"search.arch.name={param}", "search.arch.init=normal"))
    assert cell_telemetry(normal[0]["normal"])["spread"] > 3 * cell_telemetry(base[0]["normal"])["spread"]


@pytest.mark.parametrize("override, message", [
    ("search.arch.shared_offset=1.5", "shared_offset"),
    ("search.arch.init=gaussian", "init"),
])
def test_bad_remedy_values_are_refused_in_one_line(tmp_path, capsys, override, message):
    assert main(["search", "--preset", "smoke", "--out", str(tmp_path / "x"), *QUIET, override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
