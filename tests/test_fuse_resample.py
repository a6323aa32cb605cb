"""Fusing fold probabilities and resampling between grids, against hand-computed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dints.evaluate.fusion import fuse_probabilities
from dints.evaluate.inference import load_probs, save_probs
from dints.evaluate.resample import resample_probabilities

ROOT = Path(__file__).resolve().parents[1]


def test_fuse_hand_computed():
    a = np.array([[0.6, 0.1], [0.3, 0.2], [0.1, 0.7]], np.float32).reshape(3, 2, 1, 1)
    b = np.array([[0.1, 0.5], [0.8, 0.3], [0.1, 0.2]], np.float32).reshape(3, 2, 1, 1)
    fused = fuse_probabilities([a, b])
    assert np.allclose(fused[:, 0, 0, 0], [0.35, 0.55, 0.10]) and np.allclose(fused[:, 1, 0, 0], [0.3, 0.25, 0.45])
    assert fused.argmax(0).ravel().tolist() == [1, 2]  # neither fold alone gives this pair
    with pytest.raises(ValueError):
        fuse_probabilities([a, b[:, :1]])


def _grid(shape, spacing, flip=(1, 1, 1), perm=(0, 1, 2), origin=(0.0, 0.0, 0.0)):
    aff = np.zeros((4, 4))
    for i, (p, f, s) in enumerate(zip(perm, flip, spacing)):
        aff[p, i] = f * s
    aff[:3, 3] = origin
    aff[3, 3] = 1
    return aff


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


def _write_probs(path, prob, affine, image):
    save_probs(path, prob, affine, image)


@pytest.fixture()
def fused_setup(demo_copy, tmp_path):
    """Hand-made fold probabilities for the demo task's test images (folds 0 and 1)."""
    work = tmp_path / "work"
    run = work / "search-bilevel-ent-mem0.8-Task99_Demo"
    test_images = sorted((demo_copy / "Task99_Demo" / "imagesTs").glob("*.nii.gz"))
    probs = {}
    for img in test_images:
        orig = nib.load(str(img))
        shape = orig.shape
        rng = np.random.default_rng(len(probs))
        p0 = rng.dirichlet([1, 1, 1], size=shape).transpose(3, 0, 1, 2).astype(np.float32)
        p1 = rng.dirichlet([1, 1, 1], size=shape).transpose(3, 0, 1, 2).astype(np.float32)
        # the "processing grid" here is the original grid itself, so stage 6 must return the fused labels exactly
        _write_probs(run / "test-fold0" / img.name.replace(".nii.gz", ".npz"), p0, orig.affine, img)
        _write_probs(run / "test-fold1" / img.name.replace(".nii.gz", ".npz"), p1, orig.affine, img)
        probs[img.name] = (p0, p1)
    return demo_copy, work, run, probs


def _fuse(data_root, work, *extra):
    return subprocess.run([sys.executable, str(ROOT / "code" / "fuse.py"), "--data_root", str(data_root), "--task",
                           "Task99_Demo", "--work_root", str(work), *extra], capture_output=True, text=True)


@pytest.mark.slow
def test_fuse_and_resample_stages(fused_setup, tmp_path):
    data_root, work, run, probs = fused_setup
    r = _fuse(data_root, work, "--folds", "0", "1", "2")
    assert r.returncode == 0, r.stderr
    assert "missing [2]" in r.stderr  # a missing fold is reported, not fatal
    for name, (p0, p1) in probs.items():
        cid = name.replace(".nii.gz", "")
        f16 = lambda p: p.astype(np.float16).astype(np.float32)  # noqa: E731  (files store float16)
        expect = ((f16(p0) + f16(p1)) / 2).argmax(0)
        fused = nib.load(str(run / "fused" / name))
        assert np.array_equal(np.asarray(fused.dataobj), expect)
        assert np.allclose(load_probs(run / "fused" / f"{cid}.npz")["prob"], (f16(p0) + f16(p1)) / 2, atol=1e-3)
    size = tmp_path / "msd_size.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_msd_size.py"), str(data_root / "Task99_Demo"),
                    "--out", str(size)], check=True, capture_output=True)
    r = _fuse(data_root, work, "--resample", "1", "--msd_size", str(size))
    assert r.returncode == 0, r.stderr
    final = sorted((run / "final").iterdir())
    assert [f.name for f in final] == sorted(probs)  # one file per test image, named as the image
    for f in final:
        orig = nib.load(str(data_root / "Task99_Demo" / "imagesTs" / f.name))
        out = nib.load(str(f))
        assert out.shape == orig.shape and np.allclose(out.affine, orig.affine)
        assert out.get_data_dtype() == np.uint8
        assert np.array_equal(np.asarray(out.dataobj), np.asarray(nib.load(str(run / "fused" / f.name)).dataobj))


@pytest.mark.slow
def test_resample_errors(fused_setup, tmp_path):
    data_root, work, run, probs = fused_setup
    r = _fuse(data_root, work, "--resample", "1")
    assert r.returncode == 2 and "run stage 5 (fuse) first" in r.stderr
    assert _fuse(data_root, work, "--folds", "0", "1").returncode == 0
    size = tmp_path / "msd_size.json"
    name = sorted(probs)[0]
    size.write_text(json.dumps({"Task99_Demo": {}}))
    r = _fuse(data_root, work, "--resample", "1", "--msd_size", str(size))
    assert r.returncode == 2 and f"case '{name}' of task Task99_Demo is missing" in r.stderr
    assert "Traceback" not in r.stderr
    size.write_text(json.dumps({"Task99_Demo": {n: [1, 2, 3] for n in probs}}))
    r = _fuse(data_root, work, "--resample", "1", "--msd_size", str(size))
    assert r.returncode == 2 and "disagrees with the original image" in r.stderr
    size.write_text(json.dumps({"Other": {}}))
    r = _fuse(data_root, work, "--resample", "1", "--msd_size", str(size))
    assert r.returncode == 2 and "no entry for task 'Task99_Demo'" in r.stderr
    assert not (run / "final").exists()  # nothing half-written


@pytest.mark.slow
def test_fuse_without_probabilities_is_an_error(demo_copy, tmp_path):
    r = _fuse(demo_copy, tmp_path / "work")
    assert r.returncode == 2 and "run stage 4 first" in r.stderr and "Traceback" not in r.stderr


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
