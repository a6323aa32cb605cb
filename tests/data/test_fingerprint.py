"""The dataset fingerprint (code/plan.py, stage 0) on hand-made cases whose figures are known."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dints.data.fingerprint import nonzero_box

# Array axis 0 runs along S at 1.5 mm, axis 1 along A at 3 mm, axis 2 along R at 2 mm: RAS order is (2, 1, 0).
AFFINE = np.array([[0, 0, 2.0, 10], [0, 3.0, 0, -5], [1.5, 0, 0, 7], [0, 0, 0, 1]])


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))


def _case(root: Path, name: str, image: np.ndarray, label: np.ndarray) -> dict:
    _save(image, root / "imagesTr" / f"{name}.nii.gz")
    _save(label.astype(np.uint8), root / "labelsTr" / f"{name}.nii.gz")
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


@pytest.fixture()
def hand_made(tmp_path) -> Path:
    """Two cases, shape (10, 8, 6): the image is zero outside [2:7, 1:5, :] (box 5 x 4 x 6); in case a, 40 voxels of
    class 1 at intensity 100 and 40 of class 2 at 200; in case b, 40 of class 1 at 100 and nothing of class 2."""
    root = tmp_path / "data" / "Task90_Hand"
    training = []
    for name, lesion in (("a", True), ("b", False)):
        image = np.zeros((10, 8, 6), np.float32)
        image[2:7, 1:5, :] = 50.0
        label = np.zeros((10, 8, 6), np.uint8)
        label[2:7, 1:3, 0:4] = 1  # 5 * 2 * 4 = 40 voxels
        image[label == 1] = 100.0
        if lesion:
            label[2:7, 3:5, 0:4] = 2
            image[label == 2] = 200.0
        training.append(_case(root, name, image, label))
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "MR"}, "labels": {"0": "background", "1": "organ", "2": "lesion"}, "training": training}))
    return tmp_path


def _plan(data: Path, work: Path) -> dict:
    from helpers import stages

    stages.module("plan").main(["--data_root", str(data), "--task", "Task90_Hand", "--work_root", str(work)])
    return json.loads((work / "Task90_Hand" / "fingerprint.json").read_text())


def test_known_figures(hand_made):
    f = _plan(hand_made / "data", hand_made / "work")
    assert [c["spacing"] for c in f["cases"]] == [[2.0, 3.0, 1.5]] * 2  # RAS order, not the array's
    assert [c["shape"] for c in f["cases"]] == [[6, 8, 10]] * 2
    assert [c["shape_nonzero"] for c in f["cases"]] == [[6, 4, 5]] * 2
    assert f["median"]["nonzero_ratio"] == pytest.approx(120 / 480)
    s = f["intensity"]["0"]
    # Foreground: 80 voxels at 100 (40 in each case) and 40 at 200 (case a); each case gives half the samples, so the
    # pooled sample is 3/4 at 100 (all of b's, half of a's) and 1/4 at 200.
    assert (s["percentile_00_5"], s["median"], s["percentile_99_5"]) == (100.0, 100.0, 200.0)
    assert s["mean"] == pytest.approx(125.0, abs=0.5) and s["std"] == pytest.approx(np.sqrt(0.75 * 0.25) * 100, abs=0.5)
    assert f["classes"] == {"1": {"name": "organ", "voxels": 80, "cases": ["a", "b"]},
                            "2": {"name": "lesion", "voxels": 40, "cases": ["a"]}}


def test_reused_while_the_files_are_unchanged(hand_made, capfd):
    data, work = hand_made / "data", hand_made / "work"
    _plan(data, work)
    path = work / "Task90_Hand" / "fingerprint.json"
    os.utime(path, (1, 1))
    _plan(data, work)
    assert path.stat().st_mtime == 1  # not written again
    label = data / "Task90_Hand" / "labelsTr" / "b.nii.gz"
    arr = np.asarray(nib.load(str(label)).dataobj).copy()
    arr[8, 6, 5] = 2
    _save(arr, label)
    f = _plan(data, work)
    assert path.stat().st_mtime != 1 and f["classes"]["2"]["cases"] == ["a", "b"]


def test_nonzero_box_of_any_channel():
    c = np.zeros((2, 6, 6, 6))
    c[0, 1, 2, 3] = 1
    c[1, 4, 2, 5] = -3
    assert nonzero_box(c) == [4, 1, 3]
    assert nonzero_box(np.zeros((1, 3, 4, 5))) == [3, 4, 5]


def test_a_corrupt_fingerprint_is_made_again(hand_made):
    data, work = hand_made / "data", hand_made / "work"
    first = _plan(data, work)
    path = work / "Task90_Hand" / "fingerprint.json"
    path.write_text('{"key": ')  # cut short, e.g. by a full disk
    assert _plan(data, work) == first
