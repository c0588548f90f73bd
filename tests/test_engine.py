"""The engine on its own: run directories, atomic writes, checkpoints, the resume rules, meters,
schedules, and `fit`'s contracts."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from nge.config import RESUME_MAY_CHANGE, SearchRunConfig, load_config, to_dict
from nge.engine import (
    Meter,
    RunDir,
    atomic_write_text,
    check_resume,
    check_resume_config,
    cosine_lr,
    fit,
    linear_lr,
    load_checkpoint,
    poly_lr,
    save_checkpoint,
)
from nge.errors import NGEError
from nge.searching import run_search

# ---------------------------------------------------------------------------- run directory and files


def test_run_directory_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep").write_text("x")
    for resume in (False, True):
        with pytest.raises(NGEError, match="--resume|cannot resume"):
            RunDir.check(out, force=False, resume=resume)
    assert (out / "keep").exists()
    assert os.listdir(out) == ["keep"]


def test_force_replaces_a_run_directory_and_open_creates_it(tmp_path):
    out = tmp_path / "a" / "b"
    run = RunDir.open(out, force=False, resume=False)
    assert run.path == out and out.is_dir()
    run.write_json("summary.json", {"x": torch.tensor([1.5])})
    assert json.loads(run.file("summary.json").read_text()) == {"x": [1.5]}
    RunDir.open(out, force=True, resume=False)
    assert list(out.iterdir()) == []
    with pytest.raises(NGEError, match="exclude each other"):
        RunDir.open(out, force=True, resume=True)


def test_resume_needs_the_file_it_resumes_from(tmp_path):
    (tmp_path / "plan.yaml").write_text("x")
    RunDir.check(tmp_path, force=False, resume=True, resumes_from="plan.yaml")
    with pytest.raises(NGEError, match="no checkpoint.pt"):
        RunDir.check(tmp_path, force=False, resume=True)


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["f.txt"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from nge.engine import rundir

    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    for name, error in (("fsync", OSError(28, "No space left on device")), ("replace", KeyboardInterrupt())):
        def fail(*_args, error=error):
            raise error

        with monkeypatch.context() as m:
            m.setattr(rundir.os, name, fail)
            with pytest.raises(type(error)):
                atomic_write_text(path, "new")
        assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"], name
    with pytest.raises(TypeError):
        rundir.atomic_write_bytes(path, "not bytes")  # fails inside the write
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_rng_state_reads_cuda_only_where_cuda_is_initialised(monkeypatch):
    from nge.engine import rng_state

    def initialises(*_args):
        raise AssertionError("reading the CUDA RNG state would initialise CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, a CPU run: CUDA untouched
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", initialises)
    assert "cuda" not in rng_state()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a GPU run: its CUDA state is kept
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(4, dtype=torch.uint8)])
    assert torch.equal(rng_state()["cuda"][0], torch.zeros(4, dtype=torch.uint8))


def test_checkpoint_round_trip_and_refusals(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = {"epoch": 2, "task": {"w": torch.arange(3.0)}, "config": {"a": 1}}
    save_checkpoint(state, path)
    back = load_checkpoint(path)
    assert back["epoch"] == 2 and torch.equal(back["task"]["w"], torch.arange(3.0))
    torch.save({"no": "epoch"}, path)
    with pytest.raises(NGEError, match="missing epoch/task"):
        load_checkpoint(path)
    with pytest.raises(NGEError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


# ---------------------------------------------------------------------------- resume rules


def test_only_settings_that_cannot_change_results_may_differ_on_resume():
    saved = to_dict(load_config(SearchRunConfig, "search", "smoke", []))
    may = ("search.epochs", *RESUME_MAY_CHANGE)
    for harmless in ("runtime.threads=1", "runtime.progress=false", "runtime.device=cpu", "runtime.nonfinite=skip",
                     "model.checkpoint=edge", "search.epochs=9"):
        check_resume_config(saved, to_dict(load_config(SearchRunConfig, "search", "smoke", [harmless])), may)
    for changing in ("runtime.seed=1", "runtime.amp=true", "runtime.channels_last=true",
                     "data.train_portion=0.4", "search.arch.lr=0.1"):
        current = to_dict(load_config(SearchRunConfig, "search", "smoke", [changing]))
        with pytest.raises(NGEError, match=changing.split("=")[0].replace(".", r"\.")):
            check_resume_config(saved, current, may)


@pytest.mark.slow
def test_resume_with_another_seed_is_refused_before_any_work(tmp_path):
    cfg = load_config(SearchRunConfig, "search", "smoke", ["runtime.progress=false", "search.epochs=1"])
    run_search(cfg, tmp_path / "run", log=lambda m: None)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    changed = load_config(SearchRunConfig, "search", "smoke", ["runtime.progress=false", "search.epochs=2",
                                                               "runtime.seed=1"])
    with pytest.raises(NGEError, match=r"runtime\.seed"):
        run_search(changed, tmp_path / "run", resume=True, log=lambda m: None)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_a_checkpoint_without_a_config_cannot_be_resumed(tmp_path, train_task):
    run = RunDir.open(tmp_path / "run", False, False)
    fit(train_task("train.epochs=1"), 1, run)
    with pytest.raises(NGEError, match="records no configuration"):
        check_resume(run.path, {}, ())


# ---------------------------------------------------------------------------- meters and schedules


def test_meter_sums_and_round_trips():
    m = Meter(top5=True)
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [1.0, 0.0, 0.5]])
    y = torch.tensor([0, 1, 0, 2])
    m.update(torch.tensor(0.5), logits, y)
    m.update(torch.tensor(1.5), logits[:2], y[:2])
    r = m.result("val")
    assert r["val_loss"] == pytest.approx((0.5 * 4 + 1.5 * 2) / 6)
    assert r["val_acc"] == pytest.approx(4 / 6) and r["val_top5"] == 1.0
    back = Meter(top5=True)
    back.load_state_dict(m.state_dict())
    assert back.result("val") == pytest.approx(r)
    assert Meter().result("val") == {}


def test_cosine_schedule():
    assert cosine_lr(0.1, 0.0, 0, 10) == pytest.approx(0.1)
    assert cosine_lr(0.1, 0.0, 5, 10) == pytest.approx(0.05)
    assert cosine_lr(0.1, 0.01, 10, 10) == pytest.approx(0.01)
    assert all(cosine_lr(1, 0, e, 7) > cosine_lr(1, 0, e + 1, 7) for e in range(7))
    assert not math.isnan(cosine_lr(1, 0, 0, 1))


def test_linear_schedule_warms_up_then_decays_to_zero():
    lrs = [linear_lr(1.0, s, steps_per_epoch=2, warmup_epochs=2, epochs=5) for s in range(10)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # warm-up over 2 epochs of 2 steps
    assert lrs[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])  # reaches 0 after the last step
    assert linear_lr(0.3, 0, 4, 0, 2) == pytest.approx(0.3)


def test_poly_schedule():
    assert poly_lr(0.01, 0, 100, 0.9) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0


# ---------------------------------------------------------------------------- fit


def test_fit_checkpoints_config_and_meta_and_refuses_a_checkpoint_past_the_end(tmp_path, train_task):
    run = RunDir.open(tmp_path / "run", False, False)
    rows = fit(train_task("train.epochs=2"), 2, run, config={"k": 1}, meta={"note": "x"})
    ckpt = load_checkpoint(run.file("checkpoint.pt"))
    assert ckpt["epoch"] == 2 and ckpt["config"] == {"k": 1} and ckpt["note"] == "x" and ckpt["processes"] == 1
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [json.loads(x)["epoch"] for x in run.file("metrics.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(NGEError, match="past epoch 1"):
        fit(train_task("train.epochs=2"), 1, run, resume=True)


def test_a_run_of_another_nge_version_is_named_as_such():
    saved = {"search": {"param": "nge", "epochs": 2}}
    with pytest.raises(NGEError, match=r"other settings \(search\.arch\.name, search\.param\); start a new run"):
        check_resume_config(saved, {"search": {"arch": {"name": "nge"}, "epochs": 2}}, ())


def test_recomputation_changes_nothing_in_the_search(tmp_path, search_task):
    """Why a resume may change model.checkpoint: every mode gives bitwise the same P on the CPU."""
    final = {}
    for mode in ("none", "early", "edge", "cell"):
        task = search_task("search.epochs=2", f"model.checkpoint={mode}")
        fit(task, 2, RunDir.open(tmp_path / mode, False, False))
        final[mode] = task.p_history[-1]
    assert final["early"].normal.abs().sum() > 0
    for mode in ("early", "edge", "cell"):
        assert torch.equal(final[mode].normal, final["none"].normal) and torch.equal(final[mode].reduce, final["none"].reduce)


def test_auto_recomputes_the_early_cells_on_the_cpu_only():
    from nge.supernet import recompute_mode

    assert recompute_mode("auto", torch.device("cpu")) == "early"
    assert recompute_mode("auto", torch.device("cuda")) == "none"
    assert recompute_mode("cell", torch.device("cuda")) == "cell"


def test_progress_where_stderr_is_not_a_terminal_is_a_plain_line_now_and_then():
    import io

    from nge.engine.loop import progress, progress_lines

    ticks = iter([0.0, 10, 31, 40, 62, 70])  # the clock at the start and after each of 5 items
    stream = io.StringIO()
    assert list(progress_lines(range(5), 5, "epoch 1/2 weights", stream, 30.0, clock=lambda: next(ticks))) == list(range(5))
    lines = stream.getvalue().splitlines()
    assert lines == ["epoch 1/2 weights: 2/5 (40%), 15.50 s/step, about 46 s left",
                     "epoch 1/2 weights: 4/5 (80%), 15.50 s/step, about 16 s left"]
    # a stream that is not a terminal never gets carriage-return bar updates
    stream = io.StringIO()
    assert list(progress(range(50), 50, "x", True, stream=stream, every_s=0.0)) == list(range(50))
    assert "\r" not in stream.getvalue() and len(stream.getvalue().splitlines()) == 49
