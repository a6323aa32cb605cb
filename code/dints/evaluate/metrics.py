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


def dice_per_class(pred: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    """Dice of each foreground class between two label maps (the project's one Dice).

    Args:
        pred: predicted labels, integers in ``0..num_classes-1``, any shape.
        ref: reference labels, same shape.
        num_classes: classes incl. background.

    Returns:
        ``(num_classes - 1,)`` float64: Dice of classes 1..K-1, ``2|P∩G| / (|P| + |G|)``; NaN where both maps lack
        the class (no evidence either way; such entries are left out of means, never counted as 0 or 1).
    """
    p = torch.as_tensor(pred).long().flatten()
    g = torch.as_tensor(ref).long().flatten()
    if p.shape != g.shape:
        raise ValueError(f"prediction has {p.numel()} voxels but the reference {g.numel()}")
    # Counts by class with bincount: exact integers, and no one-hot copy of a whole CT volume.
    inter = torch.bincount(g[p == g], minlength=num_classes)[1:num_classes].double()
    counts = torch.bincount(p, minlength=num_classes) + torch.bincount(g, minlength=num_classes)
    denom = counts[1:num_classes].double()
    out = 2 * inter / denom
    return torch.where(denom > 0, out, torch.full_like(out, float("nan")))


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


def case_metrics(pred: np.ndarray, ref: np.ndarray, num_classes: int,
                 spacing: Sequence[float]) -> dict[str, list[float]]:
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
    return {"dice": dice_per_class(pred, ref, num_classes).tolist(),
            "hd95": [hd95(pred == c, ref == c, spacing) for c in range(1, num_classes)]}


def defined_mean(values: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is defined.

    The one rule for averaging Dice over cases and over classes, in validation during training
    (:func:`dints.evaluate.validation.validate`) and in test summaries (:func:`summarise`): an undefined value (a
    class absent from both masks) is left out, never counted as 0 or 1.
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
