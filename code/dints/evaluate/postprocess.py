"""Post-processing chosen on the validation folds, as nnU-Net does: keep only the largest connected component of a
class, for the classes where that raises the cross-validated Dice.

For each foreground class, the mean Dice over every fold's validation cases is computed with and without the
filter, on the label maps stage 3 saves (``val-fold<k>/<case>.nii.gz``, original grids). The filter is chosen for a
class when it raises that mean; prediction then applies it to that class.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from dints.evaluate.metrics import defined_mean, dice_per_class


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """``labels`` with every voxel of a class in ``classes`` outside its largest 26-connected component set to 0.

    Args:
        labels: integer label map (X, Y, Z).
        classes: foreground classes to filter.

    Returns:
        A new label map.
    """
    out = labels.copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for c in classes:
        comp, n = ndimage.label(labels == c, structure=structure)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[(comp > 0) & (comp != int(sizes.argmax()))] = 0
    return out


def choose_largest_component(cases: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    """The classes whose largest-component filter raises the mean validation Dice.

    Args:
        cases: ``(prediction, reference)`` label maps of every validation case of every fold.
        num_classes: classes incl. background.

    Returns:
        ``{"largest_component": [classes], "dice": {class: {"plain": mean, "filtered": mean}}}``.
    """
    plain = [dice_per_class(p, r, num_classes).tolist() for p, r in cases]
    chosen, table = [], {}
    for c in range(1, num_classes):
        filtered = [dice_per_class(keep_largest_component(p, [c]), r, num_classes)[c - 1].item() for p, r in cases]
        before, after = defined_mean([row[c - 1] for row in plain]), defined_mean(filtered)
        table[c] = {"plain": before, "filtered": after}
        if after > before:
            chosen.append(c)
    return {"largest_component": chosen, "dice": table}
