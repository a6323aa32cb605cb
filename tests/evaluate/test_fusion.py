"""Fusing the folds' probabilities (dints.evaluate.fusion), hand-computed."""

from __future__ import annotations


import numpy as np
import pytest

from dints.evaluate.fusion import fuse_probabilities


def test_fuse_hand_computed():
    a = np.array([[0.6, 0.1], [0.3, 0.2], [0.1, 0.7]], np.float32).reshape(3, 2, 1, 1)
    b = np.array([[0.1, 0.5], [0.8, 0.3], [0.1, 0.2]], np.float32).reshape(3, 2, 1, 1)
    fused = fuse_probabilities([a, b])
    assert np.allclose(fused[:, 0, 0, 0], [0.35, 0.55, 0.10]) and np.allclose(fused[:, 1, 0, 0], [0.3, 0.25, 0.45])
    assert fused.argmax(0).ravel().tolist() == [1, 2]  # neither fold alone gives this pair
    with pytest.raises(ValueError):
        fuse_probabilities([a, b[:, :1]])
