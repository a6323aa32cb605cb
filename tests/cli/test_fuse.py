"""Fusing fold probabilities and resampling between grids, against hand-computed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dints.evaluate.inference import load_probs, save_probs

ROOT = Path(__file__).resolve().parents[2]


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


