"""runtime.tensorboard=true: event files TensorBoard's own reader reads back; a one-line error without it."""

import sys

import pytest

from nge.config import SearchRunConfig, TrainRunConfig, load_config
from nge.errors import NGEError
from nge.searching import run_search
from nge.training import run_train

QUIET = ["runtime.progress=false", "runtime.tensorboard=true"]


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_search_writes_metrics_telemetry_p_and_cells(tmp_path):
    cfg = load_config(SearchRunConfig, "search", "smoke", QUIET)
    summary = run_search(cfg, tmp_path / "run", log=lambda m: None)
    acc = events(tmp_path / "run" / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "normal_entropy", "reduce_margin",
            "normal_distinct"} <= scalars
    assert [e.step for e in acc.Scalars("val_acc")] == [1, 2]
    assert acc.Scalars("val_acc")[-1].value == pytest.approx(summary["final_val_acc"])
    assert {"P", "cells/normal", "cells/reduce"} <= set(acc.Tags()["images"])
    assert len(acc.Images("P")) == 2


@pytest.mark.slow
def test_training_writes_its_metrics(tmp_path):
    cfg = load_config(TrainRunConfig, "train", "smoke", [*QUIET, "train.epochs=1"])
    summary = run_train(cfg, "DARTS_V2", tmp_path / "run", log=lambda m: None)
    acc = events(tmp_path / "run" / "tensorboard")
    assert acc.Scalars("test_acc")[-1].value == pytest.approx(summary["final_test_acc"])
    assert {"train_loss", "lr", "drop_path"} <= set(acc.Tags()["scalars"])


def test_without_the_package_it_is_a_one_line_error_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    cfg = load_config(SearchRunConfig, "search", "smoke", QUIET)
    with pytest.raises(NGEError, match=r"pip install 'nge\[tensorboard\]'") as e:
        run_search(cfg, tmp_path / "run", log=lambda m: None)
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()
