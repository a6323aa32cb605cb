"""Fusing the folds' predictions (stage 5): average the class probabilities, then take the argmax."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def fuse_probabilities(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the folds' probabilities.

    Args:
        probs: one (K, X, Y, Z) array per fold, all on the same grid.

    Returns:
        float32 (K, X, Y, Z); its argmax over axis 0 is the fused label map.
    """
    if not probs:
        raise ValueError("nothing to fuse")
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"probabilities of different shapes cannot be fused: {sorted(shapes)}")
    out = np.zeros(probs[0].shape, dtype=np.float64)
    for p in probs:
        out += p
    return (out / len(probs)).astype(np.float32)
