"""Parameter and multiply-add counts of a network for one input, without training it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_mult_adds(model: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-adds of the convolutions and matrix products during `run()`, in eval mode (the usual
    convention: BN, pooling, activations and additions are not counted). Counted on the operations
    that run, so convs called functionally (the fast dilated forms in `ops`) count too. Divide by the
    batch size for a per-image figure."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run()
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2  # a multiply-add is two flops
