import pytest
import torch

from nge.config import SearchRunConfig, load_config
from nge.data import make_synthetic
from nge.engine import RunDir, fit
from nge.search import SearchTask


def tiny_task(*overrides: str) -> SearchTask:
    cfg = load_config(SearchRunConfig, "search", "smoke", ["runtime.progress=false", *overrides])
    torch.manual_seed(0)
    data = make_synthetic(n_train=64, n_test=8, num_classes=4, channels=3, size=8)
    return SearchTask(cfg, data, torch.device("cpu"))


def test_weight_phase_sends_no_gradient_to_the_embedding():
    from nge.engine import Meter

    task = tiny_task()
    x, y = next(iter(task.train_loader))
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    task.weight_step(x, y, task.arch(), Meter())
    assert all(p.grad is None for p in task.arch.parameters())
    changed = [k for k, v in task.net.state_dict().items() if not torch.equal(v, before[k])]
    assert any("weight" in k for k in changed)


def test_embedding_phase_leaves_the_weights_unchanged():
    from nge.engine import Meter

    task = tiny_task()
    x, y = next(iter(task.val_loader))
    w_before = [p.clone() for p in task.net.parameters()]
    a_before = [p.clone() for p in task.arch.parameters()]
    task.arch_step(x, y, Meter())
    assert all(torch.equal(a, b) for a, b in zip(task.net.parameters(), w_before, strict=True))
    assert all(p.grad is None for p in task.net.parameters())
    assert all(p.requires_grad for p in task.net.parameters())  # unfrozen afterwards
    assert any(not torch.equal(a, b) for a, b in zip(task.arch.parameters(), a_before, strict=True))


def test_epoch_alternation_holds_p_fixed_during_the_weight_phase(monkeypatch, tmp_path):
    task = tiny_task("search.epochs=1")
    seen = []
    real = task.weight_step
    monkeypatch.setattr(task, "weight_step", lambda x, y, p, m: (seen.append(p.normal.clone()), real(x, y, p, m)))
    fit(task, 1, RunDir.open(tmp_path / "run", False, False))
    assert len(seen) == len(task.train_loader) and all(torch.equal(seen[0], s) for s in seen)


def test_batch_alternation_updates_p_between_weight_steps(monkeypatch, tmp_path):
    task = tiny_task("search.alternation=batch")
    seen = []
    real = task.weight_step
    monkeypatch.setattr(task, "weight_step", lambda x, y, p, m: (seen.append(p.normal.clone()), real(x, y, p, m)))
    fit(task, 1, RunDir.open(tmp_path / "run", False, False))
    assert len(seen) >= 2 and not torch.equal(seen[0], seen[-1])


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path):
    full = tiny_task("search.epochs=3")
    fit(full, 3, RunDir.open(tmp_path / "full", False, False))
    part = tiny_task("search.epochs=3")
    run = RunDir.open(tmp_path / "part", False, False)
    fit(part, 2, run)
    resumed = tiny_task("search.epochs=3")
    fit(resumed, 3, run, resume=True)
    assert resumed.genotype() == full.genotype()
    for a, b in zip(resumed.p_history, full.p_history, strict=True):
        assert torch.allclose(a.normal, b.normal) and torch.allclose(a.reduce, b.reduce)
