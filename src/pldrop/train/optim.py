"""Optimizer pieces of a pretraining run: the learning-rate schedule, its horizon, parameter groups."""

from __future__ import annotations

import math
from typing import Any

import torch


def lr_at(step: int, peak: float, horizon: int, schedule: str, warmup_ratio: float,
          decay_rate: float = 0.99, decay_every: int = 10) -> float:
    """Learning rate at ``step``: linear warm-up, then linear decay to 0 at ``horizon``, the
    paper's exponential decay (``decay_rate`` every ``decay_every`` steps), or constant.

    >>> [round(lr_at(s, 1.0, 100, "linear", 0.1), 3) for s in (0, 5, 10, 55, 100)]
    [0.1, 0.6, 1.0, 0.5, 0.0]
    >>> round(lr_at(30, 1.0, 100, "exp", 0.1, 0.5, 10), 3)
    0.25
    """
    warmup = max(1, round(warmup_ratio * horizon)) if warmup_ratio > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    if schedule == "exp":
        return peak * decay_rate ** ((step - warmup) / decay_every)
    return peak * max(0.0, (horizon - step) / max(1, horizon - warmup))


def lr_at_fraction(fraction: float, peak: float, schedule: str, warmup_ratio: float, decay_rate: float = 0.99,
                   decay_every: int = 10, steps_after_warmup: int = 0) -> float:
    """Learning rate under a time budget, where ``fraction`` = training time / budget.

    The same shapes as :func:`lr_at`, with the fraction of the budget in place of step / horizon:
    warm-up over the first ``warmup_ratio`` of the budget (a fraction of the budget, not of steps:
    lr = peak·fraction/warmup_ratio, so the first step, at fraction 0, takes lr 0), then linear decay to 0
    at the budget's end, or constant. As training time only grows, the learning rate never rises after
    the warm-up, whatever the load on the machine. ``exp`` decays by ``decay_rate`` every
    ``decay_every`` steps counted from the end of the warm-up (``steps_after_warmup``).

    >>> [round(lr_at_fraction(f, 1.0, "linear", 0.1), 3) for f in (0.0, 0.05, 0.1, 0.55, 1.0)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    >>> lr_at_fraction(0.5, 1.0, "constant", 0.1), round(lr_at_fraction(0.5, 1.0, "exp", 0.1, 0.5, 10, 20), 3)
    (1.0, 0.25)
    """
    f = min(1.0, max(0.0, fraction))
    if f < warmup_ratio:
        return peak * f / warmup_ratio
    if schedule == "constant":
        return peak
    if schedule == "exp":
        return peak * decay_rate ** (steps_after_warmup / decay_every)
    return peak * max(0.0, (1.0 - f) / (1.0 - warmup_ratio))


def horizon_for(budget, global_batch: int) -> int | None:
    """Steps the lr schedule and γ = 100/T assume, from a step or sample budget (None: a time budget).

    >>> from pldrop.train.config import BudgetConfig
    >>> horizon_for(BudgetConfig(max_samples=100), 32), horizon_for(BudgetConfig(max_minutes=1), 32)
    (4, None)
    """
    if budget.horizon_steps:
        return budget.horizon_steps
    if budget.max_steps:
        return budget.max_steps
    if budget.max_samples:
        return math.ceil(budget.max_samples / global_batch)
    return None


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """BERT's convention: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
