"""Resampling between voxel grids given by affines: predictions back to the original image (stage 6).

A grid is a shape and a voxel-to-world affine. For every voxel of the destination grid its world position is
mapped into the source grid (``inv(src_affine) @ dst_affine``) and the source is sampled there. This handles
reorientation (RAS processing grid vs. an LPS or oblique original), resampling and padding in one step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import affine_transform


def _matrix(src_affine: np.ndarray, dst_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    return m[:3, :3], m[:3, 3]


def resample_probabilities(probs: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
                           dst_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of class probabilities, channel by channel.

    Args:
        probs: (K, X, Y, Z) probabilities on the source grid.

    Returns:
        (K, X', Y', Z') float32; take the argmax afterwards for labels.
    """
    mat, off = _matrix(src_affine, dst_affine)
    shape = tuple(int(s) for s in dst_shape)
    return np.stack([affine_transform(p.astype(np.float32), mat, off, output_shape=shape, order=1, mode="nearest")
                     for p in probs])
