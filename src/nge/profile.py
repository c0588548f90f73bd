"""Parameter and multiply-add counts of a network for one input, without training it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def count_mult_adds(model: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-adds of conv and linear layers during `run()` (the usual convention: BN, pooling,
    activations and additions are not counted). Divide by the batch size for a per-image figure."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run()
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
