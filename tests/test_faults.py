"""Crash safety and hostile input: kills at random points, signals, non-finite losses, junk files."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.draws import examples
from helpers.tasks import sigterm_at_step, tiny_train, without_seconds
from nge.config import SearchRunConfig, TrainRunConfig, load_config
from nge.engine import RunDir, fit, load_checkpoint
from nge.errors import NGEError
from nge.space import Genotype
from nge.training import TrainTask

pytestmark = pytest.mark.faults

# 4 epochs of 10 optimiser steps each (search: 5 weight and 5 arch steps).
SEARCH = ["search", "--preset", "smoke", "runtime.progress=false", "search.epochs=4",
          "data.synthetic.n_train=160", "runtime.threads=1"]
TRAIN = ["train", "--genotype", "DARTS_V2", "--preset", "smoke", "runtime.progress=false", "train.epochs=4",
         "data.synthetic.n_train=160", "runtime.threads=1"]


DIE_AT = Path(__file__).parent / "helpers" / "die_at.py"


def run(args: list[str], out: Path, *extra: str, die: str | None = None) -> subprocess.CompletedProcess:
    """`nge ARGS --out OUT EXTRA`, or with `die` (see helpers/die_at.py) one that dies at that point."""
    cmd = [sys.executable, str(DIE_AT), die] if die else [sys.executable, "-m", "nge"]
    return subprocess.run([*cmd, *args, "--out", str(out), *extra], capture_output=True, text=True, timeout=300)


def outcome(out: Path) -> dict:
    """What must match between an interrupted-and-resumed run and an uninterrupted one."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    result = {"metrics": without_seconds(rows)}
    if (out / "probs.jsonl").exists():
        result["probs"] = (out / "probs.jsonl").read_text()
        result["genotype"] = (out / "genotype.json").read_text()
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("ref")
    refs = {}
    for name, args in (("search", SEARCH), ("train", TRAIN)):
        proc = run(args, base / name)
        assert proc.returncode == 0, proc.stderr
        refs[name] = outcome(base / name)
    return refs


@pytest.mark.parametrize("kind", ["search", "train"])
def test_kills_at_seeded_points_then_resume_gives_the_same_result(tmp_path, reference, kind):
    """SIGKILL at seeded steps and in the middle of a checkpoint or log write; resume each time.

    Everything is compared exactly: on CPU with a fixed seed the resumed run replays the same
    random numbers (loader order and augmentation per epoch, RNG states in the checkpoint)."""
    args = SEARCH if kind == "search" else TRAIN
    rng = random.Random(1234 + len(kind))
    out = tmp_path / "run"
    # each point lies before the end of what is left: the first kill loses at most epoch 2, a write
    # (config, then checkpoint and log per epoch) at most one more epoch, so 10+ steps remain
    points = [f"step:{rng.randint(12, 20)}:KILL", f"write:{rng.randint(2, 4)}:KILL", f"step:{rng.randint(3, 9)}:KILL"]
    for die in points:
        proc = run(args, out, "--resume" if (out / "checkpoint.pt").exists() else "--force", die=die)
        assert proc.returncode == -signal.SIGKILL, (die, proc.stderr)
    proc = run(args, out, "--resume" if (out / "checkpoint.pt").exists() else "--force")
    assert proc.returncode == 0, proc.stderr
    assert outcome(out) == reference[kind]
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


@pytest.mark.parametrize("kind", ["search", "train"])
def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(tmp_path, reference, kind):
    args = SEARCH if kind == "search" else TRAIN
    out = tmp_path / "run"
    proc = run(args, out, die="step:13:TERM")  # epoch 2, its 3rd step
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "stopped by SIGTERM at epoch 2" in lines[-1] and "--resume" in lines[-1]
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["cursor"] == ({"weights": 3} if kind == "search" else {"train": 3})
    proc = run(args, out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert outcome(out) == reference[kind]


def test_signal_mid_phase_checkpoints_the_position_and_resumes_exactly(tmp_path):
    """In process (the CLI test above goes through a subprocess): SIGTERM during step 3 of epoch 2."""
    full = tiny_train("train.epochs=3")
    want = fit(full, 3, RunDir.open(tmp_path / "full", False, False))
    task = tiny_train("train.epochs=3")
    sigterm_at_step(task, len(task.train_loader) + 3)
    run = RunDir.open(tmp_path / "run", False, False)
    with pytest.raises(NGEError, match="stopped by SIGTERM at epoch 2, train step 3"):
        fit(task, 3, run)
    ckpt = load_checkpoint(run.file("checkpoint.pt"))
    assert ckpt["epoch"] == 1 and ckpt["cursor"] == {"train": 3} and ckpt["meters"]["train"]["n"] == 3 * 16
    got = fit(tiny_train("train.epochs=3"), 3, run, resume=True)
    assert without_seconds(got) == without_seconds(want)


def poison(task: TrainTask, at_call: int) -> None:
    """Make the loss NaN at one call of the training loss."""
    real, calls = task.loss, {"n": 0}

    def loss(x, y):
        calls["n"] += 1
        value, logits = real(x, y)
        return (value * float("nan"), logits) if calls["n"] == at_call else (value, logits)

    task.loss = loss


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    task = tiny_train("train.epochs=3")
    per_epoch = len(task.train_loader)
    poison(task, per_epoch + 2)  # epoch 2, step 2
    run = RunDir.open(tmp_path / "run", False, False)
    with pytest.raises(NGEError) as e:
        fit(task, 3, run)
    assert "epoch 2" in str(e.value) and "step 2" in str(e.value) and "non-finite loss" in str(e.value)
    ckpt = load_checkpoint(run.file("checkpoint.pt"))
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["task"]["net"].values() if v.is_floating_point())


def test_nan_loss_is_skipped_when_asked(tmp_path):
    task = tiny_train("train.epochs=2", "runtime.nonfinite=skip")
    poison(task, 2)
    rows = fit(task, 2, RunDir.open(tmp_path / "run", False, False))
    assert len(rows) == 2
    assert all(torch.isfinite(p).all() for p in task.net.parameters())


def test_truncated_or_foreign_checkpoint_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "nge", *SEARCH[:4], "search.epochs=1", "--out", str(out)]
    assert subprocess.run(cli, capture_output=True, timeout=300).returncode == 0
    ckpt = out / "checkpoint.pt"
    data = ckpt.read_bytes()
    for content in (data[: len(data) // 2], b"garbage", b""):
        ckpt.write_bytes(content)
        proc = subprocess.run([*cli, "--resume"], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1 and "checkpoint" in proc.stderr, proc.stderr
    torch.save({"epoch": 1, "task": {}, "evil": Genotype}, ckpt)  # a class reference: refused by weights_only
    with pytest.raises(NGEError, match="not a readable nge checkpoint"):
        load_checkpoint(ckpt)


def test_bad_genotype_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "g.json"
    for text in ('{"normal": [["sep_conv_3x3", 0]]', '{"normal": 5}', "\x00\x01", "[]"):
        bad.write_text(text)
        proc = subprocess.run([sys.executable, "-m", "nge", "train", "--genotype", str(bad), "--preset", "smoke",
                               "--out", str(tmp_path / "t")], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "g.json" in proc.stderr
        assert not (tmp_path / "t").exists()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True) | st.text(max_size=15)
    | st.sampled_from(["sep_conv_3x3", "skip_connect", "none"]),
    lambda children: st.lists(children, max_size=9) | st.dictionaries(
        st.sampled_from(["normal", "normal_concat", "reduce", "reduce_concat", "x"]), children, max_size=5),
    max_leaves=40,
)


@settings(max_examples=examples(300))
@given(json_values)
def test_genotype_loader_accepts_only_valid_genotypes(value):
    try:
        g = Genotype.from_dict(value)
    except NGEError as e:
        assert "\n" not in str(e)
        return
    assert Genotype.from_json(g.to_json()) == g


@settings(max_examples=examples(150))
@given(st.lists(st.text(max_size=30), max_size=3))
def test_config_overrides_with_junk_give_config_or_one_line_error(items):
    for schema, kind in ((SearchRunConfig, "search"), (TrainRunConfig, "train")):
        try:
            load_config(schema, kind, "smoke", items)
        except NGEError as e:
            assert "\n" not in str(e)


@settings(max_examples=examples(60))
@given(st.binary(max_size=200))
def test_idx_reader_rejects_junk_with_a_message_naming_the_file(tmp_path_factory, blob):
    from nge.data import read_idx

    path = tmp_path_factory.mktemp("idx") / "junk-idx"
    path.write_bytes(blob)
    try:
        read_idx(path)
    except NGEError as e:
        assert "junk-idx" in str(e)


def test_a_signal_after_the_last_step_finishes_the_run_and_stops_a_sequential_ablation(tmp_path, monkeypatch):
    """SIGTERM during the last epoch's evaluation: the run finishes (nothing is left to checkpoint), and
    the signal is kept for the caller; a sequential ablation then stops before its next run."""
    import os

    from nge import ablate
    from nge.config import AblateRow
    from nge.engine import late_stop

    task = tiny_train("train.epochs=2")
    real = task.end_epoch

    def end_epoch(epoch, meters):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(epoch, meters)

    task.end_epoch = end_epoch
    assert len(fit(task, 2, RunDir.open(tmp_path / "run", False, False))) == 2
    assert late_stop() == "SIGTERM" and late_stop() is None

    ran = []

    def fake_train(cfg, genotype, out, log=None, force=False, resume=False):
        ran.append(out.parent.name)
        t = tiny_train("train.epochs=1")
        t.end_epoch = lambda epoch, meters, real=t.end_epoch: (os.kill(os.getpid(), signal.SIGTERM), real(epoch, meters))[1]
        fit(t, 1, RunDir.open(out, force, resume))
        return {"final_test_acc": 0.5, "wall_seconds": 1.0, "params": 1}

    monkeypatch.setattr(ablate, "run_train", fake_train)
    acfg = load_config(ablate.AblateConfig, "ablate", "smoke", [])
    acfg.rows, acfg.seeds = [AblateRow("random")], 2
    with pytest.raises(NGEError, match=r"stopped by SIGTERM after ablation \[1/2\] random, seed 0: train .*--resume"):
        ablate.run_ablation(acfg, ["runtime.progress=false"], tmp_path / "abl", log=lambda *_: None)
    assert ran == ["random-seed0"]  # seed 1 never started
