"""Search levers: the weights-only warm-up and DARTS-PT's perturbation selection."""

import json

import pytest
import torch

from nge.derive import derive
from nge.engine import RunDir, fit
from nge.space import DEFAULT_TOPOLOGY, PRIMITIVES, CellProbs
from nge.spaces import SPACES
from nge.strategies import perturbation_importance

importance_genotype = SPACES["darts"].from_importance

N_EDGES, N_OPS = DEFAULT_TOPOLOGY.n_edges, len(PRIMITIVES)


def random_probs(seed=0) -> CellProbs:
    g = torch.Generator().manual_seed(seed)
    return CellProbs(*(torch.randn(N_EDGES, N_OPS, generator=g).softmax(1) for _ in range(2)))


def test_importance_of_a_linear_loss_is_the_masked_share():
    probs, w = random_probs(0), random_probs(1)
    calls = []

    def loss(q: CellProbs) -> float:  # the loss falls by w . P: masking (e, k) raises it by w[e, k] P[e, k]
        calls.append(q)
        return -float((w.normal * q.normal).sum() + (w.reduce * q.reduce).sum())

    imp = perturbation_importance(loss, probs)
    assert len(calls) == 1 + 2 * N_EDGES * (N_OPS + 1)
    assert imp["base_loss"] == pytest.approx(loss(probs))
    for cell in ("normal", "reduce"):
        wp = (getattr(w, cell) * getattr(probs, cell)).double()
        torch.testing.assert_close(imp[cell]["ops"], wp, rtol=0, atol=1e-6)
        torch.testing.assert_close(imp[cell]["edges"], wp.sum(1), rtol=0, atol=1e-6)
    assert all(torch.equal(q.normal, probs.normal) or torch.equal(q.reduce, probs.reduce) for q in calls)


def test_the_importance_cell_keeps_the_most_important_edges_and_ops_not_p_s():
    ops = torch.zeros(N_EDGES, N_OPS, dtype=torch.float64)
    edges = torch.zeros(N_EDGES, dtype=torch.float64)
    expected = []
    for node in range(2, 6):
        rows = DEFAULT_TOPOLOGY.incoming(node)
        keep = rows[-2:]  # the last two inputs: never the first two, as ties would give
        for i, r in enumerate(keep):
            edges[r] = 1.0 + i
            ops[r, (node + i) % N_OPS] = 0.5
            ops[r, 0] = -1.0  # a large P would not matter: a negative importance is never chosen
        expected += [(PRIMITIVES[(node + i) % N_OPS], DEFAULT_TOPOLOGY.edges[r][0]) for i, r in enumerate(keep)]
    imp = {"normal": {"ops": ops, "edges": edges}, "reduce": {"ops": -ops, "edges": -edges}}
    g = importance_genotype(imp)
    assert g.normal == tuple(expected)
    assert [src for _, src in g.reduce] == [0, 1, 0, 1, 0, 1, 0, 1]  # the least negative: zero, ties to the earliest


def test_perturbation_selection_scores_masked_p_with_the_supernet_s_validation_loss(search_task, tmp_path, monkeypatch):
    from nge import strategies

    task = search_task("search.select=perturbation", "search.select_batches=1", "search.epochs=1")
    fit(task, 1, RunDir.open(tmp_path / "s", False, False))
    seen = []
    fake = {c: {"ops": torch.rand(N_EDGES, N_OPS, dtype=torch.float64), "edges": torch.rand(N_EDGES, dtype=torch.float64)}
            for c in ("normal", "reduce")}

    def importance(loss, probs, cell_types):
        seen.append((loss, probs))
        return fake

    monkeypatch.setattr(strategies, "perturbation_importance", importance)
    assert task.genotype() == importance_genotype(fake)
    assert task.genotype() == importance_genotype(fake) and len(seen) == 1  # measured once
    loss, p = seen[0]
    assert torch.equal(p.normal, task.p_history[-1].normal) and torch.equal(p.reduce, task.p_history[-1].reduce)
    x, y = next(task.val_loader.batches_from(0))  # the first validation batch, by an independent forward
    task.net.train()
    with torch.no_grad():
        expected = float(torch.nn.functional.cross_entropy(task.net(x, p), y))
    assert loss(p) == pytest.approx(expected, rel=1e-5)
    q = p.normal.clone()
    q[0] = 0
    assert loss(CellProbs(q, p.reduce)) != pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # 1 + 224 supernet validations
def test_perturbation_selection_through_the_cli(tmp_path):
    from nge.cli import main

    out = tmp_path / "pt"
    assert main(["search", "--preset", "smoke", "--out", str(out), "search.select=perturbation", "search.select_batches=1",
                 "search.epochs=1", "runtime.progress=false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    imp = json.loads((out / "importance.json").read_text())
    assert len(imp["normal"]["ops"]) == N_EDGES and len(imp["reduce"]["edges"]) == N_EDGES
    t = {c: {k: torch.tensor(v) for k, v in imp[c].items()} for c in ("normal", "reduce")}
    assert importance_genotype(t).to_dict() == summary["genotype"]
    last = json.loads((out / "probs.jsonl").read_text().splitlines()[-1])
    assert derive(torch.tensor(last["normal"]), torch.tensor(last["reduce"])).to_dict() == summary["argmax_genotype"]
    assert summary["select_seconds"] > 0


def _cheap_importance(seen: list):
    """A stand-in for perturbation_importance that scores P once: ops = P x the loss under P."""
    def importance(loss, probs, cell_types):
        base = loss(probs)
        seen.append((base, probs))
        return {"base_loss": base, **{c: {"ops": p.double().cpu() * base, "edges": p.double().cpu().sum(1) * base}
                                      for c, p in zip(cell_types, probs, strict=True)}}
    return importance


def test_selection_from_a_finished_search_selects_as_the_search_would(tmp_path, monkeypatch):
    from nge import strategies
    from nge.cli import main

    seen: list = []
    monkeypatch.setattr(strategies, "perturbation_importance", _cheap_importance(seen))
    pt = ["search.select=perturbation", "search.select_batches=2"]

    def search(name, *extra):
        return main(["search", "--preset", "smoke", "--out", str(tmp_path / name), "runtime.progress=false",
                     "runtime.threads=1", *extra])

    assert search("argmax") == 0 and search("pt", *pt) == 0  # a default search; one selecting after its epochs
    assert search("from", *pt, f"search.select_from={tmp_path / 'argmax'}") == 0  # no search, the selection only
    (base_pt, p_pt), (base_from, p_from) = seen
    assert base_from == base_pt  # the same supernet on the same validation batches
    assert all(torch.equal(a, b) for a, b in zip(p_pt, p_from, strict=True))  # under the same P
    s = {d: json.loads((tmp_path / d / "summary.json").read_text()) for d in ("argmax", "pt", "from")}
    assert s["from"]["genotype"] == s["pt"]["genotype"] != s["argmax"]["genotype"]
    assert s["from"]["argmax_genotype"] == s["argmax"]["genotype"]
    for f in ("importance.json", "genotype.json"):
        assert (tmp_path / "from" / f).read_text() == (tmp_path / "pt" / f).read_text()
    assert (tmp_path / "from" / "probs.jsonl").read_text() == (tmp_path / "argmax" / "probs.jsonl").read_text()
    assert s["from"]["final_val_acc"] == s["argmax"]["final_val_acc"] and s["from"]["select_from"] == str(tmp_path / "argmax")
    # its time is the selection's alone (an ablation's search_seconds: wall_seconds + select_seconds)
    assert s["from"]["epochs"] == 0 and s["from"]["wall_seconds"] == 0 and s["from"]["select_seconds"] > 0
    assert s["pt"]["epochs"] == 2 and s["pt"]["wall_seconds"] > 0
    assert not (tmp_path / "from" / "checkpoint.pt").exists()


def test_selection_from_refuses_a_run_it_cannot_select_from(tmp_path, capsys, monkeypatch):
    from nge.cli import main
    from nge.engine import load_checkpoint, save_checkpoint

    src, out = tmp_path / "src", tmp_path / "out"
    base = ["runtime.progress=false", "runtime.threads=1", "search.epochs=1"]
    assert main(["search", "--preset", "smoke", "--out", str(src), *base]) == 0
    capsys.readouterr()
    pt = ["search.select=perturbation", f"search.select_from={src}"]

    def error(*extra, to=out) -> str:
        assert main(["search", "--preset", "smoke", "--out", str(to), *(["--force"] if to == src else []), *base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("nge: error: ") and not out.exists(), err
        return err.strip()

    assert error(f"search.select_from={src}") == \
        "nge: error: bad configuration: search.select_from only selects: it needs search.select=perturbation"
    assert f"cannot select from {src}: the configuration differs from the run's in search.arch.lr (run: " in \
        error(*pt, "search.arch.lr=0.1")
    assert "search.epochs (run: 1, " in error(*pt, "search.epochs=2")
    assert error(*pt, to=src).endswith("is the output directory; give another --out")  # --force would delete it
    assert (src / "checkpoint.pt").is_file()
    assert error("search.select=perturbation", f"search.select_from={tmp_path}").endswith(
        "no checkpoint.pt there; give a search run directory")
    ckpt = load_checkpoint(src / "checkpoint.pt")
    save_checkpoint({**ckpt, "epoch": 0}, src / "checkpoint.pt")  # as if stopped before its one epoch ended
    assert error(*pt).endswith(
        f"the search has finished 0 of its 1 epochs; finish it first (nge search --resume --out {src} ...)")


@pytest.mark.parametrize("strategy", ["gd", "rl", "ea"])
def test_warm_up_epochs_train_the_weights_only(search_task, tmp_path, strategy):
    extra = ["search.ea.population=2", "search.ea.tournament=2"] if strategy == "ea" else []
    task = search_task(f"search.strategy={strategy}", "search.epochs=3", "search.warmup_epochs=1", *extra)
    arch0 = {k: v.clone() for k, v in task.arch.state_dict().items()}
    net0 = {k: v.clone() for k, v in task.net.named_parameters()}
    run = RunDir.open(tmp_path / strategy, False, False)
    metrics = fit(task, 1, run)
    assert all(torch.equal(v, arch0[k]) for k, v in task.arch.state_dict().items())
    assert not all(torch.equal(v, net0[k]) for k, v in task.net.named_parameters())
    assert "val_acc" not in metrics[-1] and "train_acc" in metrics[-1]
    if strategy == "ea":
        assert not task.strategy.population.members  # no cell was scored in the warm-up
    fit(task, 3, run, resume=True)
    assert not all(torch.equal(v, arch0[k]) for k, v in task.arch.state_dict().items())


def test_a_warm_up_counts_against_the_population_filling(tmp_path, capsys):
    from nge.cli import main

    # smoke: 3 validation batches per epoch; 2 epochs fill a population of 4, 1 arch epoch does not
    assert main(["search", "--preset", "smoke", "--out", str(tmp_path / "a"), "search.strategy=ea", "search.ea.population=4",
                 "search.ea.tournament=2", "search.warmup_epochs=1"]) != 0
    err = capsys.readouterr().err.strip()
    assert "1 epochs with an arch phase x 3 validation batches" in err and "search.epochs to at least 3" in err


def test_the_op_bias_is_the_only_offset_the_edges_share_and_it_learns(search_task, tmp_path):
    plain = search_task("search.arch.shared_offset=0")
    task = search_task("search.arch.shared_offset=0", "search.arch.op_bias=true")
    assert sum(p.numel() for p in task.arch.parameters()) == sum(p.numel() for p in plain.arch.parameters()) + 2 * N_OPS
    torch.testing.assert_close(task.arch.cell_logits(), plain.arch.cell_logits(), rtol=0, atol=0)  # starts at 0
    fit(task, 1, RunDir.open(tmp_path / "s", False, False))
    bias = task.arch.op_bias.detach()
    assert float(bias.abs().max()) > 0
    with torch.no_grad():
        torch.testing.assert_close(task.arch.cell_logits().mean(1, keepdim=True), bias, rtol=0, atol=1e-6)
