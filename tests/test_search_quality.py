"""Search telemetry, the random-cell baseline and the search remedies (issue: search quality)."""

import itertools
import json
from pathlib import Path

import pytest
import torch

from nge.arch import ARCH_PARAMS, build_arch, scale_shared_offset
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


@pytest.mark.slow
def test_faithful_search_is_unchanged_when_no_remedy_is_set(tmp_path):
    """P after the smoke search equals what the code gave before the remedies existed: bitwise on the
    kind of CPU and torch it was recorded with, to float rounding elsewhere."""
    golden = json.loads((Path(__file__).parent / "data" / "faithful_smoke_p.json").read_text())
    same_machine = (golden["torch"], golden["cpu"]) == (torch.__version__, torch.backends.cpu.get_cpu_capability())
    for param in ("nge", "darts"):
        last = _probs(_search(tmp_path, param, f"search.arch.name={param}"))[-1]
        for cell in ("normal", "reduce"):
            got, want = torch.tensor(last[cell]), torch.tensor(golden[param][cell])
            assert torch.equal(got, want) if same_machine else torch.allclose(got, want, atol=1e-5)


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
