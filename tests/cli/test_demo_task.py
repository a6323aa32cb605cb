"""The demo-task generator writes a valid MSD task with realistic headers, and msd_size.json from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dints.data.msd import check_headers, check_labels, load_task

ROOT = Path(__file__).resolve().parents[2]


def test_generated_task_is_valid_msd(demo_root):
    task = load_task(demo_root, "Task99_Demo")
    check_headers(task)
    check_labels(task)
    meta = json.loads((demo_root / "Task99_Demo" / "dataset.json").read_text())
    assert meta["numTraining"] == 10 and len(meta["test"]) == 2 and meta["modality"] == {"0": "CT"}
    assert len(meta["labels"]) == 3  # background + two foreground classes


def test_images_and_labels_look_like_a_real_task(demo_root):
    task = load_task(demo_root, "Task99_Demo")
    shapes = set()
    for c in task.training:
        img, lbl = nib.load(str(c["image"])), nib.load(str(c["label"]))
        assert img.get_data_dtype() == np.int16 and lbl.get_data_dtype() == np.uint8
        x, y = np.asarray(img.dataobj), np.asarray(lbl.dataobj)
        counts = np.bincount(y.ravel(), minlength=3)
        assert counts[1] > 0 and counts[2] > 0, c["label"]  # both foreground classes present
        assert x[y == 2].mean() > x[y == 1].mean() > x[y == 0].mean()  # distinct intensities...
        assert x[y == 1].std() > 5  # ...with texture and noise
        zooms = img.header.get_zooms()
        assert zooms[2] > zooms[0] * 1.5  # anisotropic
        rot = img.affine[:3, :3] / np.array(zooms)
        assert not np.allclose(rot, np.diag(np.sign(np.diag(rot))), atol=1e-3)  # oblique, not axis-aligned
        assert np.abs(img.affine[:3, 3]).max() > 0  # offset
        assert np.allclose(img.affine, lbl.affine)
        shapes.add(img.shape)
    assert len(shapes) > 5  # image sizes differ per case
    # organ and lesion positions vary between cases
    centres = [np.argwhere(np.asarray(nib.load(str(c["label"])).dataobj) == 2).mean(0) for c in task.training[:4]]
    assert np.ptp(np.array(centres), axis=0).max() > 2


@pytest.mark.slow
def test_generator_cli_and_seed(tmp_path):
    out = tmp_path / "Task98_X"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_task.py"), "--out", str(out),
                        "--cases", "3", "--test", "1", "--seed", "5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert len(meta["training"]) == 3 and len(meta["test"]) == 1
    assert (out / "imagesTs" / "demo_003.nii.gz").is_file()


@pytest.mark.slow
def test_make_msd_size(demo_root, tmp_path):
    out = tmp_path / "msd_size.json"
    out.write_text(json.dumps({"OtherTask": {"a.nii.gz": [1, 2, 3]}}))
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_msd_size.py"), str(demo_root / "Task99_Demo"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = json.loads(out.read_text())
    assert table["OtherTask"] == {"a.nii.gz": [1, 2, 3]}  # other tasks kept
    sizes = table["Task99_Demo"]
    assert len(sizes) == 12
    for name, size in sizes.items():
        sub = "imagesTs" if name in ("demo_010.nii.gz", "demo_011.nii.gz") else "imagesTr"
        assert list(nib.load(str(demo_root / "Task99_Demo" / sub / name)).shape) == size


@pytest.mark.slow
def test_make_msd_size_bad_task_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_msd_size.py"), str(tmp_path / "nope"),
                        "--out", str(tmp_path / "o.json")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: task folder") and "Traceback" not in r.stderr
