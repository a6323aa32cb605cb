"""Resampling between voxel grids (dints.evaluate.resample) against hand-computed results, and a stage-6 round trip from an oblique, anisotropic original."""

from __future__ import annotations


import nibabel as nib
import numpy as np
import torch

from dints.evaluate.resample import resample_probabilities


def test_resampling_hand_computed():
    # identity grids leave data alone; a one-voxel shift moves it by one voxel
    probs = np.zeros((2, 4, 1, 1), np.float32)
    probs[1, :, 0, 0] = [0.0, 1.0, 0.0, 0.0]
    probs[0] = 1 - probs[1]
    eye = np.eye(4)
    assert np.allclose(resample_probabilities(probs, eye, eye, (4, 1, 1)), probs)
    shifted = eye.copy()
    shifted[0, 3] = 1.0  # destination voxel i sits at source voxel i + 1
    out = resample_probabilities(probs, eye, shifted, (4, 1, 1))
    assert np.allclose(out[1, :, 0, 0], [1.0, 0.0, 0.0, 0.0])
    half = eye.copy()
    half[0, 3] = 0.5  # halfway between voxels: linear interpolation
    assert np.allclose(resample_probabilities(probs, eye, half, (4, 1, 1))[1, :2, 0, 0], [0.5, 0.5])


def _oblique_affine(spacing, origin):
    """An oblique LPS-like grid: rotated 20 degrees about z and 10 degrees about x, anisotropic voxels."""
    a, b = np.radians(20.0), np.radians(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rz @ rx @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def _world_labels(affine, shape):
    """Two nested ellipsoids defined in world millimetres, sampled on the grid: 1 outside, 2 inside."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    d = xyz - centre
    labels = np.zeros(len(d), np.uint8)
    labels[((d / [16.0, 13.0, 15.0]) ** 2).sum(1) <= 1] = 1
    labels[((d - [3.0, 2.0, 0.0]) ** 2).sum(1) <= 8.0**2] = 2
    return labels.reshape(shape)


def test_stage6_round_trip_from_an_oblique_anisotropic_original(tmp_path):
    # The path of a prediction in stages 3-6: the original (oblique, 0.8 x 0.9 x 2.5 mm, LPS) is preprocessed by
    # the pipeline's own transforms onto a RAS-ordered 2 mm grid; probabilities there (here the one-hot labels themselves)
    # are resampled with the processing grid's affine back onto the original grid. The labels must come back; with
    # the processing grid's first axis flipped (a wrong affine), they must not.
    from types import SimpleNamespace

    from dints.data.transforms import val_transforms
    from dints.evaluate.metrics import dice_per_class

    shape, spacing = (60, 56, 20), (0.8, 0.9, 2.5)
    orig = _oblique_affine(spacing, origin=(30.0, 20.0, -25.0))
    labels = _world_labels(orig, shape)
    assert (labels == 1).sum() > 2000 and (labels == 2).sum() > 1000
    image = (labels * 100 + np.random.default_rng(0).normal(0, 5, shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(image, orig), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(labels, orig), tmp_path / "lab.nii.gz")

    cfg = SimpleNamespace(spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16], intensity="zscore", ct_window=[0, 1])
    data = val_transforms(cfg)({"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")})
    proc = np.asarray(data["label"].affine, dtype=np.float64)
    # 2 mm voxels, axes turned to the nearest RAS directions (the rotation itself is kept, as MONAI's Spacingd does)
    assert np.allclose(np.linalg.norm(proc[:3, :3], axis=0), 2.0) and (np.diag(proc)[:3] > 0).all()
    proc_labels = data["label"][0].numpy().astype(np.int64)
    probs = np.stack([(proc_labels == k).astype(np.float32) for k in range(3)])

    back = resample_probabilities(probs, proc, orig, shape).argmax(0)
    dice = dice_per_class(torch.as_tensor(back), torch.as_tensor(labels), 3)
    assert (dice >= 0.9).all(), dice

    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, proc_labels.shape[0] - 1  # voxel i of the array read as voxel n - 1 - i
    wrong = resample_probabilities(probs, proc @ flip, orig, shape).argmax(0)
    assert dice_per_class(torch.as_tensor(wrong), torch.as_tensor(labels), 3).min() < 0.5
