"""Learning-rate schedules: pure functions of the position in the run, so a resumed run recomputes them."""

from __future__ import annotations

import math

import torch


def cosine_lr(base: float, final: float, epoch: int, epochs: int) -> float:
    """Cosine decay from `base` at epoch 0 towards `final` (reached after the last epoch)."""
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * epoch / epochs))


def linear_lr(base: float, step: int, steps_per_epoch: int, warmup_epochs: int, epochs: int) -> float:
    """Per step: linear warm-up from 0 over `warmup_epochs`, then linear decay to 0 at the end."""
    t, warm, total = step + 1, warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
    if t <= warm:
        return base * t / warm
    return base * max(0.0, (total - t + 1) / (total - warm))


def poly_lr(base: float, step: int, total_steps: int, power: float) -> float:
    """DeepLab's poly schedule: base * (1 - step / total) ** power."""
    return base * max(0.0, 1 - step / total_steps) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
