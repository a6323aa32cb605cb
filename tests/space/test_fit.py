"""The patch and batch search (dints.space.fit) on hand-made memory functions."""

from __future__ import annotations

import math

import pytest

from dints.space import fit


def test_patch_steps_by_hand():
    # Median image 100 x 70 x 40, divisor 32: start at 96 x 64 x 32. Ratios to the image: 0.96, 0.91, 0.8 -> x loses
    # 32 (64: 0.64), then y (32: 0.46), then x (32), then nothing is above 32.
    assert list(fit.patch_steps((100, 70, 40), 32)) == [(96, 64, 32), (64, 64, 32), (64, 32, 32), (32, 32, 32)]
    # A side smaller than the divisor still gets one step (the crop is padded).
    assert list(fit.patch_steps((20, 20, 20), 16)) == [(16, 16, 16)]


def memory_of(per_voxel: int, fixed: int):
    return lambda patch, n: fixed + n * per_voxel * math.prod(patch)


def test_largest_patch_then_largest_batch():
    mem = memory_of(10, 1000)
    budget = 1000 + 10 * 150_000  # 150k voxels: one 64x64x32 crop (131k), not one 96x64x32 (197k) nor two 64x64x32
    found = fit.fit(mem, (100, 70, 40), 32, budget)
    assert found.patch == (64, 64, 32) and found.batch == 1
    assert found.larger_patch == (96, 64, 32) and found.larger_patch_bytes > budget
    assert found.predicted <= budget < found.next_batch_bytes
    # The median image itself fits: the batch grows, to three crops of 64x64x32 exactly.
    found = fit.fit(mem, (64, 64, 32), 32, 1000 + 10 * 64 * 64 * 32 * 3)
    assert found.patch == (64, 64, 32) and found.batch == 3 and found.larger_patch is None
    # Retraining's least batch of 2 changes the patch when one crop fits and two do not.
    found = fit.fit(mem, (100, 70, 40), 32, 1000 + 10 * 64 * 64 * 32 * 3 // 2, min_batch=2)
    assert found.patch == (64, 32, 32) and found.batch == 3 and found.larger_patch == (64, 64, 32)


def test_batch_cap_and_does_not_fit():
    mem = memory_of(1, 0)
    found = fit.fit(mem, (32, 32, 32), 32, 10**9, max_batch=lambda patch: 4)
    assert found.batch == 4 and found.capped
    with pytest.raises(fit.DoesNotFit, match="32x32x32 patch with batch 1 needs"):
        fit.fit(memory_of(1, 10**9), (64, 64, 64), 32, 100)


def test_budget_keeps_the_headroom():
    assert fit.budget_bytes(1000) == int(1000 * 0.85 * 1024**2)


def test_windows_as_monai_scans():
    # 100 voxels, 64-voxel windows, overlap 0.5: step 32, windows at 0 and 32 and one more to reach the end -> 3.
    assert fit.windows((100, 64, 10), (64, 64, 64), 0.5) == 3 * 1 * 1
