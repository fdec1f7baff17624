"""The learning-rate schedule, per step: linear warmup, then cosine decay (or constant)."""
from __future__ import annotations

import math

from gir.train.config import TrainConfig


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The rate for 1-based `step`: lr * step / warmup_steps during warmup, then
    0.5 * lr * (1 + cos(pi * progress)), progress = (steps done after warmup) / (steps after warmup):
    the first step after warmup gets the full rate and no step gets zero."""
    if step < 1 or steps_per_epoch < 1:
        raise ValueError(f"step and steps_per_epoch must be >= 1, got {step} and {steps_per_epoch}")
    lr = config.learning_rate
    warmup = config.warmup_epochs * steps_per_epoch
    if step <= warmup:
        return lr * step / warmup
    if not config.cosine:
        return lr
    total = config.epochs * steps_per_epoch
    progress = min(1.0, max(0.0, step - 1 - warmup) / max(1.0, total - warmup))
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))
