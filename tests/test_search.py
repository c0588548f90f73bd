import pytest
import torch

from nge.engine import RunDir, fit


def test_weight_phase_sends_no_gradient_to_the_arch(search_task):
    from nge.engine import Meter

    task = search_task()
    x, y = next(iter(task.train_loader))
    before = {k: v.clone() for k, v in task.net.state_dict().items()}
    task.weight_step(x, y, task.arch(), Meter())
    assert all(p.grad is None for p in task.arch.parameters())
    changed = [k for k, v in task.net.state_dict().items() if not torch.equal(v, before[k])]
    assert any("weight" in k for k in changed)


def test_arch_phase_leaves_the_weights_unchanged(search_task):
    from nge.engine import Meter

    task = search_task()
    x, y = next(iter(task.val_loader))
    w_before = [p.clone() for p in task.net.parameters()]
    a_before = [p.clone() for p in task.arch.parameters()]
    task.arch_step(x, y, Meter())
    assert all(torch.equal(a, b) for a, b in zip(task.net.parameters(), w_before, strict=True))
    assert all(p.grad is None for p in task.net.parameters())
    assert all(p.requires_grad for p in task.net.parameters())  # unfrozen afterwards
    assert any(not torch.equal(a, b) for a, b in zip(task.arch.parameters(), a_before, strict=True))


def test_epoch_alternation_holds_p_fixed_during_the_weight_phase(monkeypatch, tmp_path, search_task):
    task = search_task("search.epochs=1")
    seen = []
    real = task.weight_step
    monkeypatch.setattr(task, "weight_step", lambda x, y, p, m: (seen.append(p.normal.clone()), real(x, y, p, m)))
    fit(task, 1, RunDir.open(tmp_path / "run", False, False))
    assert len(seen) == len(task.train_loader) and all(torch.equal(seen[0], s) for s in seen)


def test_batch_alternation_updates_p_between_weight_steps(monkeypatch, tmp_path, search_task):
    task = search_task("search.alternation=batch")
    seen = []
    real = task.weight_step
    monkeypatch.setattr(task, "weight_step", lambda x, y, p, m: (seen.append(p.normal.clone()), real(x, y, p, m)))
    fit(task, 1, RunDir.open(tmp_path / "run", False, False))
    assert len(seen) >= 2 and not torch.equal(seen[0], seen[-1])


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path, search_task):
    full = search_task("search.epochs=3")
    fit(full, 3, RunDir.open(tmp_path / "full", False, False))
    part = search_task("search.epochs=3")
    run = RunDir.open(tmp_path / "part", False, False)
    fit(part, 2, run)
    resumed = search_task("search.epochs=3")
    fit(resumed, 3, run, resume=True)
    assert resumed.genotype() == full.genotype()
    for a, b in zip(resumed.p_history, full.p_history, strict=True):
        assert torch.allclose(a.normal, b.normal) and torch.allclose(a.reduce, b.reduce)
