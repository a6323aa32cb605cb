"""The plan's voxel-size and intensity rules (dints.data.planrules) on hand-worked fingerprints."""

from __future__ import annotations

import pytest

from dints.data.planrules import plan_intensity, plan_spacing, resampled_shape


def test_isotropic_one_millimetre_stays_native():
    # Median (1.0, 1.0, 1.02): within 5% of 1 mm on every axis, whatever single cases are.
    spacings = [(1, 1, 1), (0.98, 1.0, 1.02), (1.2, 1.2, 1.2)]
    spacing, why = plan_spacing(spacings, [(140, 170, 140)] * 3)
    assert spacing is None and "native" in why


def test_isotropic_but_finer_is_resampled_to_one_millimetre():
    spacing, why = plan_spacing([(0.8, 0.8, 0.8)] * 2, [(200, 200, 200)] * 2)
    assert spacing == [1.0, 1.0, 1.0] and "resampled to 1 mm" in why


def test_thin_stack_of_thick_slices_keeps_its_tenth_percentile():
    # 0.7 x 0.7 x 5 mm, 20 slices: 5 > 3 * 0.7 (coarse) and 20 * 5 = 100 mm is under a third of 512 * 0.7 = 358 mm
    # (thin). Slice spacings 4, 5, 5, 5, 6: the 10th percentile lies 0.4 of the way from 4 to 5, 4.4 mm.
    spacings = [(0.7, 0.7, z) for z in (4, 5, 5, 5, 6)]
    spacing, why = plan_spacing(spacings, [(512, 512, 20)] * 5)
    assert spacing == [1.0, 1.0, 4.4]
    assert "axis 2 is coarse" in why and "10th percentile" in why


def test_thick_slices_over_a_long_extent_go_to_one_millimetre():
    # Spleen-like: 0.79 x 0.79 x 5 mm but 90 slices, 450 mm: not under a third of 404 mm, so 1 mm (the paper's).
    spacing, _ = plan_spacing([(0.79, 0.79, 5.0)] * 3, [(512, 512, 90)] * 3)
    assert spacing == [1.0, 1.0, 1.0]


def test_the_coarse_axis_may_be_any_axis_and_keeps_at_least_one_millimetre():
    # Mixed: the first axis is the coarse one. Spacings 5, 5, 6: 10th percentile 5.0.
    spacing, _ = plan_spacing([(5, 0.7, 0.7), (5, 0.6, 0.6), (6, 0.8, 0.8)], [(20, 512, 512)] * 3)
    assert spacing == [5.0, 1.0, 1.0]
    # A coarse axis finer than 1 mm (0.9 against 0.2): its 10th percentile, 0.82, is raised to the others' 1 mm.
    spacing, _ = plan_spacing([(0.2, 0.2, z) for z in (0.8, 0.9, 1.0)], [(1000, 1000, 10)] * 3)
    assert spacing == [1.0, 1.0, 1.0]


def test_ct_window_from_the_foreground_percentiles():
    stats = {"0": {"samples": 100, "percentile_00_5": -87.0, "percentile_99_5": 199.0}}
    assert plan_intensity({"0": "CT"}, stats, 1.0)[:2] == ("ct", [-87.0, 199.0])
    # Two CT channels: one window spanning both.
    stats["1"] = {"samples": 100, "percentile_00_5": -120.0, "percentile_99_5": 150.0}
    assert plan_intensity({"0": "CT", "1": "ct"}, stats, 1.0)[:2] == ("ct", [-120.0, 199.0])
    # CT without any foreground sample: the default window.
    assert plan_intensity({"0": "CT"}, {"0": {"samples": 0}}, 1.0)[:2] == ("ct", None)


@pytest.mark.parametrize("ratio, expected", [(0.36, "zscore_nonzero"), (0.749, "zscore_nonzero"), (0.75, "zscore"),
                                             (1.0, "zscore")])
def test_zscore_over_the_non_zero_voxels_when_cropping_keeps_under_three_quarters(ratio, expected):
    names = {"0": "FLAIR", "1": "T1w"}
    assert plan_intensity(names, {}, ratio)[:2] == (expected, None)
    # One CT channel among MR ones is not a CT task.
    assert plan_intensity({"0": "CT", "1": "MR"}, {}, ratio)[0] == expected


def test_resampled_shape():
    assert resampled_shape([512, 512, 90], [0.79, 0.79, 5.0], [1.0, 1.0, 1.0]) == [404, 404, 450]
    assert resampled_shape([36, 50, 35], [1.0, 1.0, 1.0], None) == [36, 50, 35]
