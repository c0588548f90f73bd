"""Shared fixtures. Helpers live in `tests/helpers/` (imported as `helpers.*`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.files import make_cifar10, make_fashion_mnist
from helpers.tasks import tiny_search, tiny_train

torch.set_num_threads(2)


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
