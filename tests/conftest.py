"""Shared fixtures. Helpers live in `tests/helpers/` (imported as `helpers.*`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from helpers.files import make_cifar10, make_fashion_mnist
from helpers.tasks import tiny_search, tiny_train

torch.set_num_threads(2)

# Property tests draw the same examples in every run (the default, "ci"): a failure is never luck.
# By hand, `pytest --hypothesis-profile=random` (or NGE_HYPOTHESIS=random) draws fresh examples, ten
# times as many (helpers.draws.examples), and prints how to replay a failure.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=False)
settings.register_profile("random", derandomize=False, deadline=None, print_blob=True)
_PROFILE = os.environ.get("NGE_HYPOTHESIS", "ci")
if _PROFILE not in ("ci", "random"):
    raise pytest.UsageError(f"NGE_HYPOTHESIS={_PROFILE!r}: use ci (the default) or random")
settings.load_profile(_PROFILE)


@pytest.fixture
def fmnist_root(tmp_path: Path) -> Path:
    return make_fashion_mnist(tmp_path / "fmnist")


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    return make_cifar10(tmp_path / "cifar")


@pytest.fixture
def search_task():
    """A factory of tiny search tasks: `search_task(*overrides)`."""
    return tiny_search


@pytest.fixture
def train_task():
    """A factory of tiny training tasks: `train_task(*overrides)`."""
    return tiny_train
