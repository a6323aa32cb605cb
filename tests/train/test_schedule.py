"""Schedules of the search and retraining (dints.train.schedule), hand-worked."""

from __future__ import annotations

import pytest

from dints.train.schedule import ramp, retrain_lr, step_lr, temperature


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


def test_retrain_lr_schedules():
    # step: the paper's halving at 20/40/60/80% of 100 iterations
    assert [retrain_lr(0.1, it, 100, "step", (0.2, 0.4, 0.6, 0.8)) for it in (0, 19, 20, 40, 99)] == [
        0.1, 0.1, 0.05, 0.025, 0.00625]
    # cosine: 0.05 * (1 + cos(pi * it / 100)); cos(0) = 1, cos(pi/4) = 0.70711, cos(pi/2) = 0, cos(pi) = -1
    assert retrain_lr(0.1, 0, 100, "cosine", ()) == pytest.approx(0.1)
    assert retrain_lr(0.1, 25, 100, "cosine", ()) == pytest.approx(0.05 * 1.7071068, abs=1e-8)
    assert retrain_lr(0.1, 50, 100, "cosine", ()) == pytest.approx(0.05)
    assert retrain_lr(0.1, 100, 100, "cosine", ()) == pytest.approx(0.0, abs=1e-12)
    # poly: 0.1 * 0.5 ** 0.9 = 0.053589 at half way
    assert retrain_lr(0.1, 50, 100, "poly", ()) == pytest.approx(0.0535887, abs=1e-7)
    assert retrain_lr(0.1, 0, 100, "poly", ()) == 0.1
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        retrain_lr(0.1, 0, 100, "linear", ())
