"""nge fit: the budget's arithmetic, a fit on `nge synth folder` data end to end (files, budget, ONNX
against PyTorch), a fit interrupted in each of its phases and resumed, and bad input in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nge
from helpers.draws import examples
from nge import cli, fitting
from nge import export as export_module
from nge.config import TrainRunConfig, load_config
from nge.data import write_synthetic_folder
from nge.errors import NGEError
from nge.fit_report import clock
from nge.genotypes import DARTS_V2

# the smoke presets at one thread: every phase in seconds
TINY = """search_preset: smoke
train_preset: smoke
search: [runtime.threads=1]
train: [runtime.threads=1]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_synthetic_folder(tmp_path / "images")


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


# ---------------------------------------------------------------------------- the budget


def test_parse_time():
    assert fitting.parse_time("30m") == 1800
    assert fitting.parse_time("1h30m") == 5400
    assert fitting.parse_time("90s") == 90
    assert fitting.parse_time("1.5h") == 5400
    assert fitting.parse_time(12) == 12
    for bad in ("30", "m", "-5m", "0s", "5 minutes", True):
        with pytest.raises(NGEError):
            fitting.parse_time(bad)
    assert clock(5400) == "1h30m" and clock(754) == "12m34s" and clock(42) == "42s"


def _shape(n_train: int, n_test: int) -> fitting.DataShape:
    return fitting.DataShape({}, 1, 28, [str(i) for i in range(10)], n_train, n_test, "")


def _cal(step: float, image: float) -> fitting.Calibration:
    return fitting.Calibration(step * 2, step * 1.5, step, image, 0.02, "DARTS_V2")


@given(seconds=st.floats(1, 20_000), n_train=st.integers(8, 100_000), n_test=st.integers(1, 20_000),
       step=st.floats(1e-3, 3.0), image=st.floats(1e-5, 1e-2))
@settings(max_examples=examples(200))
def test_the_training_plan_fits_its_time(seconds, n_train, n_test, step, image):
    """A plan's predicted time never exceeds what it was given, its images are the set's or fewer, and
    where it refuses not even one minimal epoch fits."""
    cfg = load_config(TrainRunConfig, "train", "quick", [])
    shape, cal = _shape(n_train, n_test), _cal(step, image)
    batch = fitting.batch_for(cfg.data.batch_size, n_train)
    plan = fitting.plan_train(seconds, cfg, shape, cal, batch)
    one_epoch = (fitting.setup_seconds(shape) + fitting.LOOP_OVERHEAD * step * min(n_train, fitting.MIN_TRAIN_BATCHES * batch)
                 / batch + n_test * image)
    if plan is None:
        assert one_epoch > seconds
        return
    assert one_epoch <= seconds * 1.0001 + fitting.LOOP_OVERHEAD * step  # the minimal epoch's rounding to batches
    assert plan.seconds <= seconds * 1.0001
    assert 1 <= plan.epochs <= fitting.MAX_TRAIN_EPOCHS
    assert min(n_train, fitting.MIN_TRAIN_BATCHES * batch) <= plan.images <= n_train
    if plan.epochs < fitting.MAX_TRAIN_EPOCHS:  # it uses the time but one epoch and each epoch's last, partial batch
        per_epoch = fitting.LOOP_OVERHEAD * step * (plan.images // batch + 1) + n_test * image
        waste = per_epoch + plan.epochs * fitting.LOOP_OVERHEAD * step
        assert plan.seconds >= seconds - fitting.setup_seconds(shape) - waste - 1e-6


def test_plans_grow_with_the_budget():
    """More time: never fewer images, and the search and training of a 20-minute fit look like `quick`'s."""
    cfg = load_config(TrainRunConfig, "train", "quick", [])
    shape, cal = _shape(60_000, 10_000), _cal(0.5, 1e-3)
    plans = [fitting.plan_train(s, cfg, shape, cal, 96) for s in (120, 600, 900, 3600, 36_000)]
    work = [p.images * p.epochs for p in plans]
    assert work == sorted(work) and work[0] < work[-1]
    assert plans[-1].images >= 0.98 * 60_000 and plans[-1].epochs > 50  # ten hours: the whole set, many epochs
    assert 3 <= plans[2].epochs <= 12 and 10_000 <= plans[2].images <= 40_000  # quick: 6 epochs of 20,000


def test_split_overrides_routes_keys_and_refuses_the_planned_ones():
    got = fitting.split_overrides(["model.C=8", "search.arch.lr=1e-3", "train.lr=0.1", "data.crop_pad=0"])
    assert got["search"] == ["model.C=8", "search.arch.lr=1e-3", "data.crop_pad=0"]
    assert got["train"] == ["model.C=8", "train.lr=0.1", "data.crop_pad=0"]
    for key in ("train.epochs=3", "search.epochs=3", "data.limit=100", "data.name=cifar10"):
        with pytest.raises(NGEError, match="nge fit chooses"):
            fitting.split_overrides([key])
    with pytest.raises(NGEError, match="neither"):
        fitting.split_overrides(["model.nope=1"])


# ---------------------------------------------------------------------------- whole fits


def _files(out: Path) -> None:
    for name in ("model.pt", "model.onnx", "genotype.json", "report.md", "fit.json", "report/confusion.png",
                 "report/predictions.png", "train/curves.png"):
        assert (out / name).is_file(), name
    state = json.loads((out / "fit.json").read_text())
    assert sorted(state["done"]) == sorted(fitting.PHASES)
    report = (out / "report.md").read_text()
    for link in [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (out / link).is_file(), link  # every picture the report shows is there
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert state["test_acc"] == pytest.approx(summary["final_test_acc"], abs=1e-6)  # the report's pass = the training's
    assert f"{100 * state['test_acc']:.2f}%" in report


def _onnx_equals_pytorch(out: Path, folder: Path) -> None:
    """The exported file's predictions on the test images are PyTorch's (onnxruntime, not nge's check)."""
    import onnxruntime

    model = nge.load(out)
    files = sorted((folder / "test").glob("*/*.png"))
    x = model.preprocess(files)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    want = model(x).detach().numpy()
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.abs(got - want).max() < 1e-3


@pytest.mark.slow
def test_fit_interrupted_in_every_phase_resumes_to_a_complete_run(folder, tiny, tmp_path, monkeypatch):
    """SIGINT in the search's and the training's epochs (a checkpoint, then resume from it), and an
    interrupt in the export and in the report: each resume continues where the last stopped."""
    out = tmp_path / "fit"
    lines: list[str] = []
    hits = {"search": 0, "train": 0}

    def log(msg: str) -> None:
        lines.append(msg)
        for phase in hits:
            if f"{phase}:" in msg.split("]")[0] and "epoch 1/" in msg and not hits[phase]:
                hits[phase] += 1
                signal.raise_signal(signal.SIGINT)  # the engine stops after this epoch, checkpointed

    def fit(**kw):
        return nge.fit(folder, "20s", out, preset=tiny, log=log, **kw)

    with pytest.raises(NGEError, match="stopped by SIGINT after epoch 1.*nge fit .* --resume --out"):
        fit()
    state = json.loads((out / "fit.json").read_text())
    assert state["done"] == [] and (out / "search" / "checkpoint.pt").is_file()
    with pytest.raises(NGEError, match="stopped by SIGINT after epoch 1"):
        fit(resume=True)
    state = json.loads((out / "fit.json").read_text())
    assert state["done"] == ["search"] and (out / "train" / "checkpoint.pt").is_file()
    search_epochs = [json.loads(x)["epoch"] for x in (out / "search" / "metrics.jsonl").read_text().splitlines()]
    assert search_epochs == list(range(1, state["plan"]["search"]["epochs"] + 1))  # resumed, not restarted

    for phase, module, name in (("export", export_module, "export"), ("report", fitting, "write_report")):
        real = getattr(module, name)

        def interrupted(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(module, name, interrupted)
        if phase == "export":  # the command line: a resume may leave out all but DATA
            assert cli.main(["fit", str(folder), "--resume", "--out", str(out)]) == 130
        else:
            with pytest.raises(KeyboardInterrupt):
                fit(resume=True)
        monkeypatch.setattr(module, name, real)
        assert phase not in json.loads((out / "fit.json").read_text())["done"]
    with pytest.raises(NGEError, match=r"other settings: --time \(run: 20s, now: 40s\)"):
        nge.fit(folder, "40s", out, resume=True, log=False)
    model = fit(resume=True)
    state = json.loads((out / "fit.json").read_text())
    assert state["done"] == list(fitting.PHASES)
    train_epochs = [json.loads(x)["epoch"] for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert train_epochs == list(range(1, state["plan"]["train"]["epochs"] + 1))
    assert model.classes == ("blue", "green", "red")
    _files(out)
    _onnx_equals_pytorch(out, folder)
    assert (out / "search" / "normal.png").is_file() and "search/probs.png" in (out / "report.md").read_text()
    assert any("plan: train" in x for x in lines)


@pytest.mark.slow
def test_fit_within_budget_and_the_fallback_cell(folder, tiny, tmp_path, capsys):
    """A share too small to search trains the fallback cell, says so in one line, and the whole command
    ends within its budget + 10%."""
    out = tmp_path / "fit"
    assert cli.main(["fit", str(folder), "--time", "20s", "--preset", tiny, "--search-share", "0.02", "--out", str(out),
                     "data.crop_pad=1"]) == 0
    err = capsys.readouterr()
    assert "too little to search" in err.err and "training DARTS_V2 instead" in err.err
    printed = json.loads(err.out.strip().splitlines()[-1])
    assert printed["report"] == str(out / "report.md")
    state = json.loads((out / "fit.json").read_text())
    assert state["plan"]["cell"] == "DARTS_V2" and state["plan"]["search"] is None
    assert sum(state["spent"].values()) <= 1.1 * 20
    assert json.loads((out / "genotype.json").read_text()) == nge.load(out).genotype.to_dict()
    assert nge.load(out).genotype == DARTS_V2
    assert load_config(TrainRunConfig, "train", str(out / "train" / "config.yaml"), []).data.crop_pad == 1
    _files(out)
    assert "DARTS_V2 (the budget left too little time to search)" in (out / "report.md").read_text()


# ---------------------------------------------------------------------------- bad input


def _fails(capsys, *argv: str) -> str:
    assert cli.main(["fit", *argv]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("nge: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n") and "Traceback" not in err
    return errors[0]


def test_bad_input_is_one_line_and_writes_nothing(folder, tiny, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "missing folder" in _fails(capsys, str(empty), "--time", "5m", "--out", str(out))
    one = tmp_path / "one"
    (one / "train" / "a").mkdir(parents=True)
    (one / "test" / "a").mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(next((folder / split / "red").iterdir()), one / split / "a" / "x.png")
    assert "one class folder" in _fails(capsys, str(one), "--time", "5m", "--out", str(out))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "test" / "red" / "bad.png").write_bytes(b"not an image")
    assert "bad.png" in _fails(capsys, str(broken), "--time", "5m", "--out", str(out))
    assert "not a duration" in _fails(capsys, str(folder), "--time", "30", "--out", str(out))
    assert "--time is required" in _fails(capsys, str(folder), "--out", str(out))
    assert "no such folder" in _fails(capsys, str(tmp_path / "nowhere"), "--time", "5m", "--out", str(out))
    assert "too small to train anything" in _fails(capsys, str(folder), "--time", "2s", "--preset", tiny, "--out", str(out))
    assert "nge fit chooses train.epochs" in _fails(capsys, str(folder), "--time", "5m", "--out", str(out), "train.epochs=3")
    assert not out.exists()  # nothing written by any refusal
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):  # as root every folder is writable: nothing to refuse
            assert "not writable" in _fails(capsys, str(folder), "--time", "5m", "--out", str(locked / "fit"))
            assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
    parent_file = tmp_path / "a_file"
    parent_file.write_text("x")
    assert "is not a folder" in _fails(capsys, str(folder), "--time", "5m", "--out", str(parent_file / "fit"))
    out.mkdir()
    (out / "something").write_text("x")
    assert "already exists" in _fails(capsys, str(folder), "--time", "5m", "--out", str(out))
    assert "cannot resume: no fit.json" in _fails(capsys, str(folder), "--resume", "--out", str(tmp_path / "none"))
