"""Schedules of the search and retraining (dints.train.schedule), hand-worked."""

from __future__ import annotations

import pytest

from dints.train.schedule import ramp, step_lr, temperature


def test_schedules():
    # lr halves at 40% and 80% of the 100 post-warmup iterations of a 200-iteration search with 100 warmup
    assert step_lr(0.1, 0, 200, (0.4, 0.8), start=100) == 0.1
    assert step_lr(0.1, 139, 200, (0.4, 0.8), start=100) == 0.1
    assert step_lr(0.1, 140, 200, (0.4, 0.8), start=100) == 0.05
    assert step_lr(0.1, 180, 200, (0.4, 0.8), start=100) == 0.025
    assert ramp(99, 100, 200) == 0.0 and ramp(100, 100, 200) == 0.01 and ramp(199, 100, 200) == 1.0
    assert temperature(150, 100, 200, 0, 0.1) == 1.0
    assert temperature(100, 100, 201, 2, 0.1) == 1.0
    assert temperature(200, 100, 201, 2, 0.1) == pytest.approx(0.1)
    assert temperature(150, 100, 201, 2, 0.1) == pytest.approx(0.55)
