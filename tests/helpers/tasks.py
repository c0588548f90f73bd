"""The tiny search and training tasks most engine-level tests run (seconds on a CPU)."""

from __future__ import annotations

import os
import signal

import torch

from nge.config import SearchRunConfig, TrainRunConfig, load_config
from nge.data import make_synthetic
from nge.genotypes import BUILTIN_GENOTYPES
from nge.searching import SearchTask
from nge.training import TrainTask

QUIET = ["runtime.progress=false"]


def tiny_search(*overrides: str) -> SearchTask:
    """The smoke search on 64 synthetic 8x8 images of 4 classes (32 train / 32 val)."""
    cfg = load_config(SearchRunConfig, "search", "smoke", [*QUIET, *overrides])
    torch.manual_seed(0)
    data = make_synthetic(n_train=64, n_test=8, num_classes=4, channels=3, size=8)
    return SearchTask(cfg, data, torch.device("cpu"))


def tiny_train(*overrides: str) -> TrainTask:
    """DARTS_V2 under the smoke training preset on 48 synthetic 12x12 images of 4 classes."""
    cfg = load_config(TrainRunConfig, "train", "smoke", [*QUIET, *overrides])
    torch.manual_seed(0)
    data = make_synthetic(n_train=48, n_test=16, num_classes=4, channels=3, size=12)
    return TrainTask(cfg, BUILTIN_GENOTYPES["DARTS_V2"], data, torch.device("cpu"))


def sigterm_at_step(task, call: int) -> None:
    """Send this process SIGTERM during the `call`-th training step of `task` (1-based)."""
    real, calls = task.train_step, {"n": 0}

    def step(x, y, meter):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        real(x, y, meter)

    task.train_step = step


def without_seconds(rows: list[dict]) -> list[dict]:
    """Metrics rows without the time fields (wall clock, CPU), for exact comparison of runs."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")} for r in rows]
