"""The NAS-Bench-201 space: genotype strings, networks, the fused supernet, and searches in it."""

import copy
import json
from collections import Counter

import pytest
import torch

from nge.arch import build_arch
from nge.errors import NGEError
from nge.genotypes import resolve_genotype
from nge.spaces import SPACES, genotype_from_dict, nb201
from nge.spaces.nb201 import PRIMITIVES, Nb201Genotype, Nb201Network, Nb201SuperNet, reference_forward

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def one_hot(g: Nb201Genotype) -> torch.Tensor:
    p = torch.zeros(6, 5)
    for e, op in enumerate(g.ops):
        p[e, PRIMITIVES.index(op)] = 1.0
    return p


def test_cell_string_round_trips_in_edge_order():
    g = Nb201Genotype.from_str(BEST)
    assert g.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert g.to_str() == BEST
    assert [(s, t) for s, t, _ in g.edges()] == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert genotype_from_dict(json.loads(g.to_json())) == g
    for seed in range(50):
        r = nb201.random_genotype(seed)
        assert Nb201Genotype.from_str(str(r)) == r


@pytest.mark.parametrize("bad", ["", "|none~0|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "none~0+a+b",
                                 "|none~0|+|none~0|+|none~0|none~1|none~2|"])
def test_a_malformed_cell_string_is_a_one_line_error_naming_it(bad):
    with pytest.raises(NGEError) as e:
        Nb201Genotype.from_str(bad)
    assert "\n" not in str(e.value) and bad.strip() in str(e.value)


def test_random_cells_are_uniform_per_edge():
    counts = Counter((e, op) for seed in range(2000) for e, op in enumerate(nb201.random_genotype(seed).ops))
    assert len(counts) == 30
    assert all(330 <= n <= 470 for n in counts.values())  # 400 expected, sd 18


def test_resolve_genotype_reads_strings_random_and_json_of_either_space(tmp_path):
    assert resolve_genotype(BEST) == Nb201Genotype.from_str(BEST)
    assert resolve_genotype("random:3", space="nb201") == nb201.random_genotype(3)
    assert resolve_genotype("random:3") != nb201.random_genotype(3)  # darts by default
    nb201.random_genotype(5).save(tmp_path / "genotype.json")
    assert resolve_genotype(str(tmp_path)) == nb201.random_genotype(5)


def test_derive_is_argmax_per_edge_and_keeps_none():
    p = torch.full((6, 5), 0.1)
    p[torch.arange(6), torch.tensor([0, 1, 2, 3, 4, 0])] = 0.6
    assert nb201.derive(p).ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none")


def test_network_of_a_cell_without_a_path_to_the_output_gives_zeros_there():
    g = Nb201Genotype.from_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|")
    cell = nb201.InferCell(g, 4)
    assert torch.equal(cell(torch.randn(2, 4, 8, 8)), torch.zeros(2, 4, 8, 8))
    skip = nb201.InferCell(Nb201Genotype.from_str("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"), 4)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(skip(x), x)


def test_network_has_the_benchmark_layout():
    net = Nb201Network(Nb201Genotype.from_str(BEST), C=16, N=5, num_classes=10)
    kinds = [type(c).__name__ for c in net.cells]
    assert kinds == ["InferCell"] * 5 + ["ResNetBasicBlock"] + ["InferCell"] * 5 + ["ResNetBasicBlock"] + ["InferCell"] * 5
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None
    assert net.classifier.in_features == 64


@pytest.mark.parametrize("side", [21, 23, 32])
def test_the_reduction_block_takes_odd_sides_and_pools_as_the_benchmark_on_even_ones(side):
    """The shortcut's pool rounds up as the strided conv does (a 21x21 image ends 6x6); on even sides it
    is the benchmark's 2x2 average pool."""
    block = nb201.ResNetBasicBlock(3, 4)
    x = torch.randn(2, 3, side, side)
    assert block(x).shape == (2, 4, -(-side // 2), -(-side // 2))
    if side % 2 == 0:
        assert torch.equal(block.downsample[0](x), torch.nn.functional.avg_pool2d(x, 2))
    logits, _ = Nb201Network(Nb201Genotype.from_str(BEST), C=4, N=1, num_classes=3)(x)
    supernet = Nb201SuperNet(C=4, N=1, num_classes=3)
    assert logits.shape == supernet(x, (torch.full((6, 5), 0.2),)).shape == (2, 3)


def test_fused_supernet_equals_the_plain_mixed_sum_in_value_gradient_and_running_stats():
    torch.manual_seed(0)
    net = Nb201SuperNet(C=4, N=1, num_classes=3).train()
    ref = copy.deepcopy(net)
    x = torch.randn(4, 3, 8, 8)
    p = torch.softmax(2 * torch.randn(6, 5), -1).requires_grad_()
    out, out_ref = net(x, (p,)), reference_forward(ref, x, (p,))
    assert torch.allclose(out, out_ref, atol=1e-5)
    g, g_ref = torch.autograd.grad(out.square().sum(), p)[0], torch.autograd.grad(out_ref.square().sum(), p)[0]
    assert torch.allclose(g, g_ref, atol=1e-4, rtol=1e-4)
    # the reference calls each edge's conv alone, so each edge's BN channels get their own update, as fused
    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        if "running" in name:
            assert torch.allclose(a, b, atol=1e-6), name


def test_forward_path_is_forward_at_a_one_hot_p():
    torch.manual_seed(1)
    net = Nb201SuperNet(C=4, N=1, num_classes=3).train()
    x = torch.randn(4, 3, 8, 8)
    for seed in range(5):
        g = nb201.random_genotype(seed)
        assert torch.allclose(net.forward_path(x, g), net(x, (one_hot(g),)), atol=1e-5)


@pytest.mark.parametrize("name", ["darts", "plain", "rnn", "nge"])
def test_every_parameterisation_gives_one_6x5_p_for_the_nb201_cell(name):
    sp = SPACES["nb201"]
    arch = build_arch(name, sp.topology, len(sp.primitives), cell_types=sp.cell_types, op_bias=True)
    p = arch()
    assert len(p) == 1 and p[0].shape == (6, 5)
    assert torch.allclose(p[0].sum(1), torch.ones(6))
    assert arch.cell_logits().shape == (1, 6, 5)


def test_nb201_search_writes_its_cell_and_its_ground_truth(tmp_path):
    from nge.config import SearchRunConfig, load_config
    from nge.searching import run_search
    from nge.spaces.nb201_table import lookup

    cfg = load_config(SearchRunConfig, "search", "smoke", ["search.space=nb201", "model.layers=3", "runtime.progress=false",
                                                            "search.select=perturbation", "search.select_batches=1"])
    lines = []
    summary = run_search(cfg, tmp_path / "s", log=lines.append)
    g = Nb201Genotype.from_dict(json.loads((tmp_path / "s" / "genotype.json").read_text()))
    assert summary["space"] == "nb201" and summary["genotype"] == g.to_dict()
    assert summary["ground_truth"] == lookup(g)
    assert summary["argmax_ground_truth"] == lookup(genotype_from_dict(summary["argmax_genotype"]))
    assert f"CIFAR-10 {lookup(g)['cifar10']['accuracy']:.2f}" in "\n".join(lines)
    probs = [json.loads(r) for r in (tmp_path / "s" / "probs.jsonl").read_text().splitlines()]
    assert set(probs[-1]) == {"epoch", "cell"} and len(probs[-1]["cell"]) == 6
    assert set(summary["telemetry"]) == {f"cell_{k}" for k in ("entropy", "margin", "distinct", "majority", "spread")}
    imp = json.loads((tmp_path / "s" / "importance.json").read_text())
    assert g == nb201.derive(torch.tensor(imp["cell"]["ops"]))
    assert (tmp_path / "s" / "cell.png").stat().st_size > 1000


def test_nb201_refuses_a_depth_that_is_not_three_stages():
    from nge.config import SearchRunConfig, load_config

    with pytest.raises(NGEError, match="multiple of 3"):
        load_config(SearchRunConfig, "search", "smoke", ["search.space=nb201", "model.layers=4"])


def test_nb201_policy_is_a_categorical_per_edge():
    import math

    from nge.strategies import POLICIES

    pi = POLICIES["nb201"]
    zero = torch.zeros(1, 6, 5)
    assert float(pi.entropy(zero)) == pytest.approx(6 * math.log(5))
    g = nb201.random_genotype(0)
    assert float(pi.log_prob(zero, g)) == pytest.approx(6 * math.log(1 / 5))
    options = pi.mutation_options(zero, g)
    assert len(options) == 24 and all(float(q.exp()) == pytest.approx(1 / 24) for _, q in options)
    logits = torch.randn(1, 6, 5, generator=torch.Generator().manual_seed(0))
    options = pi.mutation_options(logits, g)
    assert float(torch.stack([q for _, q in options]).exp().sum()) == pytest.approx(1.0)
    p = torch.softmax(logits[0], -1)
    m, q = options[0]  # edge 0 to its first other op: P(edge 0) * P[0, j] / (1 - P[0, current])
    cur, j = PRIMITIVES.index(g.ops[0]), PRIMITIVES.index(m.value)
    w = 1 - p[torch.arange(6), [PRIMITIVES.index(o) for o in g.ops]]
    assert float(q.exp()) == pytest.approx(float(w[0] / w.sum() * p[0, j] / (1 - p[0, cur])), rel=1e-5)
    child = pi.mutate(g, m)
    assert child.ops[1:] == g.ops[1:] and child.ops[0] == m.value != g.ops[0]
    assert pi.mode(logits) == nb201.derive(p)
    top = logits[0].topk(2, -1).values
    assert pi.margin(logits) == pytest.approx(float((top[:, 0] - top[:, 1]).min()), rel=1e-6)
    gen = torch.Generator().manual_seed(1)
    draws = Counter(pi.sample(logits, gen).ops[0] for _ in range(3000))
    for k, op in enumerate(PRIMITIVES):
        assert draws[op] / 3000 == pytest.approx(float(p[0, k]), abs=0.04)


@pytest.mark.parametrize("strategy", ["rl", "ea"])
def test_rl_and_ea_search_the_nb201_space(tmp_path, strategy):
    from nge.config import SearchRunConfig, load_config
    from nge.searching import run_search
    from nge.spaces.nb201_table import lookup

    ea = ["search.ea.population=3", "search.ea.tournament=2"] if strategy == "ea" else []
    cfg = load_config(SearchRunConfig, "search", "smoke", ["search.space=nb201", "model.layers=3", "runtime.progress=false",
                                                            f"search.strategy={strategy}", "search.epochs=3", *ea])
    summary = run_search(cfg, tmp_path / "s", log=lambda *_: None)
    g = genotype_from_dict(summary["genotype"])
    assert isinstance(g, Nb201Genotype) and summary["ground_truth"] == lookup(g)


def test_train_builds_the_benchmark_network_for_a_cell_string(tmp_path):
    from nge.config import TrainRunConfig, load_config
    from nge.training import run_train

    cfg = load_config(TrainRunConfig, "train", "smoke", ["model.layers=3", "runtime.progress=false", "train.epochs=1"])
    summary = run_train(cfg, BEST, tmp_path / "t", log=lambda *_: None)
    assert summary["genotype"] == {"space": "nb201", "cell": BEST}
    assert 0.0 <= summary["final_test_acc"] <= 1.0
    net = Nb201Network(Nb201Genotype.from_str(BEST), C=cfg.model.C, N=1, num_classes=4)
    assert summary["params"] == sum(p.numel() for p in net.parameters())
    from nge.export import export
    from nge.inference import load

    model = load(tmp_path / "t")
    assert model.genotype == Nb201Genotype.from_str(BEST)
    export(tmp_path / "t", "pt2", tmp_path / "m.pt2", log=lambda *_: None)  # checked against PyTorch inside
    assert (tmp_path / "m.pt2").stat().st_size > 1000


@pytest.mark.slow  # 4 tiny searches
def test_nb201_ablation_judges_every_cell_by_the_table_without_training(tmp_path):
    import csv
    import io

    import yaml

    from nge.ablate import run_ablation
    from nge.config import AblateConfig, load_config
    from nge.spaces.nb201_table import lookup, uniform_mean

    preset = tmp_path / "gt.yaml"
    preset.write_text(yaml.safe_dump({
        "seeds": 2, "search_preset": "smoke", "train_presets": [],
        "search_overrides": ["search.space=nb201", "model.layers=3", "search.epochs=1", "search.select=perturbation",
                             "search.select_batches=1", "runtime.progress=false"],
        "rows": [{"name": "random"}, {"name": "nge"}, {"name": "darts", "search": ["search.arch.name=darts"]}]}))
    acfg = load_config(AblateConfig, "ablate", str(preset), [])
    run_ablation(acfg, [], tmp_path / "out", log=lambda *_: None)
    lines = list(csv.DictReader(io.StringIO((tmp_path / "out" / "ablation.csv").read_text())))
    assert [(r["row"], int(r["seed"])) for r in lines] == [(n, s) for n in ("random", "nge", "darts") for s in (0, 1)]
    for r in lines:
        g = genotype_from_dict(json.loads(r["genotype"]))
        assert float(r["gt_cifar10"]) == pytest.approx(lookup(g)["cifar10"]["accuracy"])
        if r["row"] == "random":
            assert g == nb201.random_genotype(int(r["seed"]))
        else:  # the search's own cell, and its argmax-P cell beside it
            assert g.to_dict() == json.loads((tmp_path / "out" / f"{r['row']}-seed{r['seed']}" / "search" / "summary.json")
                                             .read_text())["genotype"]
            argmax = genotype_from_dict(json.loads(r["argmax_genotype"]))
            assert float(r["argmax_gt_cifar10"]) == pytest.approx(lookup(argmax)["cifar10"]["accuracy"])
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert f"| random (exact, all 15,625) | {uniform_mean('cifar10'):.2f}" in md
    nge = [float(r["gt_cifar10"]) for r in lines if r["row"] == "nge"]
    assert f"{sum(nge) / 2:.2f} ± " in md
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 1000


def test_supernet_has_the_benchmark_authors_weights_less_their_conv_biases():
    # AutoDL-Projects' TinyNetworkDarts(C=16, N=5, 10 classes) has 1,692,826 weights; its search convs carry a
    # bias (bias = not affine) that the batch norm after them cancels: 15 cells x 6 edges x 2 convs x C_out = 6,720
    net = Nb201SuperNet(C=16, N=5, num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 1_692_826 - 6_720
