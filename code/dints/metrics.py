"""Per-case, per-class segmentation metrics with explicit handling of empty classes.

For a class c of one case, with prediction P and reference G:

- Dice = 2|P∩G| / (|P| + |G|); when both are empty it is undefined: NaN, flagged ``empty``, left out of means.
- HD95 (MONAI's 95th-percentile symmetric Hausdorff distance, in mm with the voxel spacing): NaN when either
  mask is empty (no surface to measure), left out of means; the summary counts those cases.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    denom = int(pred.sum()) + int(ref.sum())
    if denom == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, ref).sum()) / denom


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance (mm) of two boolean masks; NaN when either is empty."""
    if not pred.any() or not ref.any():
        return float("nan")
    p = torch.as_tensor(pred[None, None])
    g = torch.as_tensor(ref[None, None])
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        d = compute_hausdorff_distance(p, g, percentile=95, spacing=list(map(float, spacing)))
    return float(d.item())


def case_metrics(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: Sequence[float],
                 with_hd95: bool = True) -> dict[str, list[float]]:
    """Dice and HD95 of every foreground class of one case.

    Args:
        pred: predicted label map (X, Y, Z), integers.
        ref: reference label map, same shape.
        num_classes: classes incl. background.
        spacing: voxel size in mm (for HD95).

    Returns:
        ``{"dice": [K-1 floats], "hd95": [K-1 floats]}`` (NaN where undefined, see the module docstring).
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    out: dict[str, list[float]] = {"dice": [], "hd95": []}
    for c in range(1, num_classes):
        p, g = pred == c, ref == c
        out["dice"].append(dice(p, g))
        out["hd95"].append(hd95(p, g, spacing) if with_hd95 else float("nan"))
    return out


def defined_mean(values: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is defined.

    The one rule for averaging Dice over cases and over classes, in validation during training
    (:func:`dints.evaluate.validate`) and in test summaries (:func:`summarise`): an undefined value (a class absent
    from both masks) is left out, never counted as 0 or 1.
    """
    v = [float(x) for x in values if not math.isnan(float(x))]
    return float(np.mean(v)) if v else float("nan")


def _stats(values: list[float]) -> dict[str, float | int | None]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=float)
    return {"mean": float(v.mean()) if v.size else None, "std": float(v.std()) if v.size else None, "n": int(v.size)}


def summarise(rows: list[dict], class_names: Sequence[str]) -> dict:
    """Mean and per-class summary of per-case rows from :func:`case_metrics` (``{"dice": [...], "hd95": [...]}``).

    Returns:
        ``{"mean_dice": float, "cases": int, "classes": {name: {"dice": {mean, std, n}, "hd95": {...},
        "empty_both": int, "hd95_undefined": int}}}``. Class means use only defined values; ``mean_dice`` is the
        mean of the class means (classes with no defined value are left out). No NaN appears in the summary.
    """
    classes = {}
    means = []
    for k, name in enumerate(class_names):
        d = [r["dice"][k] for r in rows]
        h = [r["hd95"][k] for r in rows]
        ds = _stats(d)
        classes[name] = {"dice": ds, "hd95": _stats(h), "empty_both": sum(math.isnan(x) for x in d),
                         "hd95_undefined": sum(math.isnan(x) for x in h)}
        means.append(defined_mean(d))
    mean = defined_mean(means)
    return {"mean_dice": None if math.isnan(mean) else mean, "cases": len(rows), "classes": classes}
