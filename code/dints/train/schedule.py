"""Schedules of the search and retraining, as pure functions of the iteration (docs/method.md, "Relaxation and losses"
and "The stages")."""

from __future__ import annotations

import math
from typing import Sequence


def step_lr(base_lr: float, it: int, total: int, milestones: Sequence[float], start: int = 0) -> float:
    """Learning rate halved at each milestone fraction of the iterations after ``start``.

    Args:
        base_lr: learning rate before the first milestone.
        it: current iteration (0-based).
        total: total iterations of the run.
        milestones: fractions of ``total - start`` at which the rate halves, e.g. ``(0.4, 0.8)``.
        start: first iteration the milestones count from (the search's warmup; 0 for retraining).

    Returns:
        ``base_lr * 0.5 ** (number of milestones passed)``.
    """
    span = max(total - start, 1)
    passed = sum(1 for m in milestones if it >= start + m * span)
    return base_lr * 0.5**passed


def ramp(it: int, warmup: int, total: int) -> float:
    """Weight ``w(t)`` of the architecture regularisers: 0 during warmup, then linear up to 1 at the last iteration."""
    if it < warmup:
        return 0.0
    return min(1.0, (it - warmup + 1) / max(total - warmup, 1))


def temperature(it: int, warmup: int, total: int, ef: int, ef_end: float) -> float:
    """Temperature ``tau``: 1 with ``EF`` 0; with ``EF`` 2 linear from 1 to ``ef_end`` over the post-warmup iterations."""
    if ef == 0 or it < warmup:
        return 1.0
    if ef != 2:
        raise ValueError(f"EF must be 0 or 2, got {ef}")
    frac = min(1.0, (it - warmup) / max(total - warmup - 1, 1))
    return 1.0 + (ef_end - 1.0) * frac


def retrain_lr(base_lr: float, it: int, total: int, schedule: str, milestones: Sequence[float]) -> float:
    """Learning rate of retraining at iteration ``it`` of ``total``.

    Args:
        schedule: ``step`` (:func:`step_lr` at ``milestones``, the paper's), ``cosine`` (half a cosine from
            ``base_lr`` at iteration 0 down to 0 at ``total``) or ``poly`` (``base_lr * (1 - it / total) ** 0.9``).
        milestones: fractions of ``total`` at which ``step`` halves the rate (unused by the others).
    """
    frac = min(max(it, 0) / max(total, 1), 1.0)
    if schedule == "step":
        return step_lr(base_lr, it, total, milestones)
    if schedule == "cosine":
        return 0.5 * base_lr * (1.0 + math.cos(math.pi * frac))
    if schedule == "poly":
        return base_lr * (1.0 - frac) ** 0.9
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")
