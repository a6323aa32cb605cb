"""Per-case metrics and their summary, against hand-worked cases (empty classes included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dints.evaluate.metrics import case_metrics, dice_per_class, hd95, summarise


def test_dice_hand_worked():
    p = np.zeros((4, 4, 4), np.int64)
    g = np.zeros((4, 4, 4), np.int64)
    p[0, 0, :4] = 1  # 4 voxels
    g[0, 0, 2:4] = 1  # 2 voxels, both inside p

    def dice(a, b):
        return dice_per_class(a, b, 2)[0].item()

    assert dice(p, g) == pytest.approx(2 * 2 / (4 + 2))
    assert dice(p, np.zeros_like(g)) == 0.0  # class predicted but absent: 0
    assert dice(np.zeros_like(p), g) == 0.0  # class missed: 0
    assert math.isnan(dice(np.zeros_like(p), np.zeros_like(g)))  # absent and not predicted: undefined


def test_hd95_hand_worked_with_spacing():
    p = np.zeros((10, 3, 3), bool)
    g = np.zeros((10, 3, 3), bool)
    p[1, 1, 1] = True
    g[7, 1, 1] = True  # 6 voxels apart along x
    assert hd95(p, g, (2.0, 1.0, 1.0)) == pytest.approx(12.0)
    assert math.isnan(hd95(p, np.zeros_like(g), (1, 1, 1)))


def test_case_metrics_and_empty_classes():
    ref = np.zeros((6, 6, 6), np.int64)
    pred = np.zeros_like(ref)
    ref[1:3, 1:3, 1:3] = 1  # 8 voxels
    pred[1:3, 1:3, 1:2] = 1  # 4 of them
    # class 2 absent from both; class 3 predicted only
    pred[5, 5, 5] = 3
    m = case_metrics(pred, ref, 4, (1, 1, 1))
    assert m["dice"][0] == pytest.approx(2 * 4 / 12)
    assert math.isnan(m["dice"][1]) and m["dice"][2] == 0.0
    assert m["hd95"][0] == pytest.approx(1.0) and math.isnan(m["hd95"][1]) and math.isnan(m["hd95"][2])


def test_summary_leaves_undefined_values_out_and_counts_them():
    rows = [{"dice": [0.8, float("nan")], "hd95": [2.0, float("nan")]},
            {"dice": [0.6, 0.5], "hd95": [4.0, 3.0]},
            {"dice": [1.0, 0.0], "hd95": [0.0, float("nan")]}]
    s = summarise(rows, ["organ", "lesion"])
    assert s["classes"]["organ"]["dice"]["mean"] == pytest.approx(0.8)
    assert s["classes"]["lesion"]["dice"]["mean"] == pytest.approx(0.25) and s["classes"]["lesion"]["dice"]["n"] == 2
    assert s["classes"]["lesion"]["empty_both"] == 1 and s["classes"]["lesion"]["hd95_undefined"] == 2
    assert s["mean_dice"] == pytest.approx((0.8 + 0.25) / 2)
    assert "nan" not in repr(s).lower()


def test_dice_per_class_matches_hand_worked():
    import torch

    pred = torch.tensor([0, 1, 1, 2, 2, 0])
    ref = torch.tensor([0, 1, 2, 2, 2, 0])
    d = dice_per_class(pred, ref, 4)
    assert d[0].item() == pytest.approx(2 * 1 / 3) and d[1].item() == pytest.approx(2 * 2 / 5)
    assert math.isnan(d[2].item())


def test_validation_and_test_summaries_average_over_defined_classes_only():
    # Two validation cases, three classes; class 2 appears in neither reference nor prediction. The model predicts
    # class 1 on the first half of axis 0 (32 voxels).
    import torch

    from dints.evaluate.metrics import case_metrics, defined_mean, summarise
    from dints.evaluate.validation import validate
    from dints.run.settings import InferSettings

    class LeftHalf(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            logits[:, 0] = 1.0
            logits[:, 1, : x.shape[2] // 2] = 2.0  # class 1 on the first half of axis 0
            return logits

    shape = (4, 4, 4)
    a = torch.zeros(shape)
    a[:, :2, :2] = 1  # 16 voxels, 8 of them in the left half
    b = torch.zeros(shape)
    b[:2] = 1  # exactly the left half
    loader = [{"image": torch.zeros(1, 1, *shape), "label": lab[None, None]} for lab in (a, b)]
    infer = InferSettings(patch_size=(4, 4, 4), sw_batch_size=1, sw_overlap=0.0, tta=False, amp=False)
    res = validate(LeftHalf(), loader, 3, infer, torch.device("cpu"))
    # predicted class 1: 32 voxels. Case A: 2*8/(32+16) = 1/3; case B: 2*32/(32+32) = 1.
    assert res["class_dice"][0] == pytest.approx((1 / 3 + 1.0) / 2)
    assert math.isnan(res["class_dice"][1])  # no case has class 2: undefined, not 0
    assert res["mean_dice"] == pytest.approx((1 / 3 + 1.0) / 2)  # the mean of the defined classes only

    pred = np.zeros(shape, np.int64)
    pred[:2] = 1
    rows = [case_metrics(pred, lab.numpy().astype(np.int64), 3, (1, 1, 1)) for lab in (a, b)]
    assert summarise(rows, ["one", "two"])["mean_dice"] == pytest.approx(res["mean_dice"])
    assert math.isnan(defined_mean([float("nan")])) and defined_mean([0.5, float("nan"), 1.0]) == 0.75
