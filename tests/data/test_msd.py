"""dataset.json reading and validation: one test per error kind, each naming the file at fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from config import load_config, resolve_task
from dints.data.msd import case_id, check_headers, check_labels, load_task
from dints.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
TASK = "Task99_Demo"


def dataset(root: Path) -> dict:
    return json.loads((root / TASK / "dataset.json").read_text())


def rewrite(root: Path, meta: dict) -> None:
    (root / TASK / "dataset.json").write_text(json.dumps(meta))


def first_label(root: Path) -> Path:
    return (root / TASK / dataset(root)["training"][0]["label"]).resolve()


def test_valid_task_loads_with_channels_and_classes(demo_root):
    task = load_task(demo_root, TASK)
    assert (task.in_channels, task.num_classes) == (1, 3)
    assert len(task.training) == 10 and len(task.test) == 2
    assert task.case_ids == sorted(task.case_ids) and task.case_ids[0] == "demo_000"
    assert all(c["image"].is_absolute() and c["image"].is_file() for c in task.training)  # resolved vs task folder
    check_headers(task)
    check_labels(task)


def test_case_id():
    assert case_id("a/b/spleen_12.nii.gz") == "spleen_12" and case_id("x.nii") == "x"


def test_missing_task_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task(tmp_path, TASK)


def test_missing_dataset_json(demo_copy):
    (demo_copy / TASK / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"dataset\.json does not exist"):
        load_task(demo_copy, TASK)


def test_invalid_json(demo_copy):
    (demo_copy / TASK / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_task(demo_copy, TASK)


@pytest.mark.parametrize("key", ["labels", "modality", "training"])
def test_missing_key(demo_copy, key):
    meta = dataset(demo_copy)
    del meta[key]
    rewrite(demo_copy, meta)
    with pytest.raises(DataError, match=f"missing key '{key}'"):
        load_task(demo_copy, TASK)


def test_bad_label_keys(demo_copy):
    meta = dataset(demo_copy)
    meta["labels"] = {"0": "background", "2": "organ"}
    rewrite(demo_copy, meta)
    with pytest.raises(DataError, match="keys of 'labels' must be 0..1"):
        load_task(demo_copy, TASK)


def test_missing_image_file(demo_copy):
    img = (demo_copy / TASK / dataset(demo_copy)["training"][3]["image"]).resolve()
    img.unlink()
    with pytest.raises(DataError, match=f"image file {img} does not exist"):
        load_task(demo_copy, TASK)


def test_missing_label_file(demo_copy):
    lbl = first_label(demo_copy)
    lbl.unlink()
    with pytest.raises(DataError, match=f"label file {lbl} does not exist"):
        load_task(demo_copy, TASK)


def test_missing_test_image(demo_copy):
    meta = dataset(demo_copy)
    meta["test"].append("./imagesTs/nope.nii.gz")
    rewrite(demo_copy, meta)
    with pytest.raises(DataError, match="test image file .*nope.nii.gz does not exist"):
        load_task(demo_copy, TASK)


def test_duplicate_case(demo_copy):
    meta = dataset(demo_copy)
    meta["training"].append(dict(meta["training"][0]))
    rewrite(demo_copy, meta)
    with pytest.raises(DataError, match="listed twice"):
        load_task(demo_copy, TASK)


def _replace_label(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> None:
    old = nib.load(str(path))
    arr = np.asarray(old.dataobj) if data is None else data
    nib.save(nib.Nifti1Image(arr, old.affine if affine is None else affine), str(path))


def test_label_shape_differs_from_image(demo_copy):
    lbl = first_label(demo_copy)
    arr = np.asarray(nib.load(str(lbl)).dataobj)
    _replace_label(lbl, data=arr[:-2])
    with pytest.raises(DataError, match=f"{lbl}: shape .* differs from its image"):
        check_headers(load_task(demo_copy, TASK))


def test_label_affine_differs_from_image(demo_copy):
    lbl = first_label(demo_copy)
    aff = nib.load(str(lbl)).affine.copy()
    aff[0, 3] += 5.0
    _replace_label(lbl, affine=aff)
    with pytest.raises(DataError, match=f"{lbl}: affine differs"):
        check_headers(load_task(demo_copy, TASK))


def test_label_values_outside_classes(demo_copy):
    lbl = first_label(demo_copy)
    arr = np.asarray(nib.load(str(lbl)).dataobj).copy()
    arr[0, 0, 0] = 7
    _replace_label(lbl, data=arr)
    with pytest.raises(DataError, match=rf"{lbl}: label values \[7\] outside the 3 classes"):
        check_labels(load_task(demo_copy, TASK))


def test_wrong_channel_count(demo_copy):
    img = (demo_copy / TASK / dataset(demo_copy)["training"][0]["image"]).resolve()
    old = nib.load(str(img))
    arr = np.asarray(old.dataobj)
    nib.save(nib.Nifti1Image(np.stack([arr, arr], axis=-1), old.affine), str(img))
    with pytest.raises(DataError, match=f"{img}: has 2 channel.* declares 1"):
        check_headers(load_task(demo_copy, TASK))


def test_label_check_stamp_skips_unchanged_files(demo_copy, tmp_path, monkeypatch):
    task = load_task(demo_copy, TASK)
    stamp = tmp_path / "stamp.json"
    check_labels(task, stamp)
    assert stamp.is_file()
    # Unchanged files: the stamp is enough, no label is read again.
    reads = []
    real_load = nib.load
    monkeypatch.setattr(nib, "load", lambda path, *a, **k: reads.append(path) or real_load(path, *a, **k))
    check_labels(load_task(demo_copy, TASK), stamp)
    assert reads == []
    check_labels(load_task(demo_copy, TASK), None)  # without a stamp every label is read
    assert len(reads) == len(task.training)
    monkeypatch.undo()
    # Corrupt a label without changing size or mtime is impossible to detect; changing the file is detected.
    lbl = first_label(demo_copy)
    arr = np.asarray(nib.load(str(lbl)).dataobj).copy()
    arr[0, 0, 0] = 9
    _replace_label(lbl, data=arr)
    with pytest.raises(DataError, match="outside"):
        check_labels(load_task(demo_copy, TASK), stamp)


def test_channels_and_classes_from_dataset_unless_set(demo_root, tmp_path):
    root = ["--data_root", str(demo_root), "--task", TASK]
    cfg = load_config(root, "search")
    resolved, task = resolve_task(cfg)
    assert (resolved.in_channels, resolved.num_classes) == (1, 3) and task.name == TASK
    assert cfg.in_channels is None and cfg.num_classes is None  # the parsed options are left as they were
    resolve_task(load_config([*root, "--num_classes", "3", "--in_channels", "1"], "search"))  # agreeing values are fine
    preset = tmp_path / "p.yaml"
    preset.write_text("num_classes: 2\n")
    cfg = load_config(["--config", str(preset), *root], "search")
    with pytest.raises(DataError, match=r"--num_classes \(from .*p\.yaml\) is 2 but .*dataset\.json 'labels' declares 3"):
        resolve_task(cfg)
    cfg = load_config([*root, "--in_channels", "4"], "search")
    with pytest.raises(DataError, match="--in_channels is 4 but .*'modality' declares 1"):
        resolve_task(cfg)


@pytest.mark.slow
def test_stage_exits_with_one_line_on_missing_label(demo_copy, tiny_args):
    lbl = first_label(demo_copy)
    lbl.unlink()
    out = subprocess.run([sys.executable, str(ROOT / "code" / "search.py"), *tiny_args(data_root=demo_copy)],
                         capture_output=True, text=True)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {demo_copy / TASK / 'dataset.json'}: label file {lbl} does not exist"]
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.slow
def test_stage_reports_preset_data_mismatch(demo_root, tiny_args):
    out = subprocess.run([sys.executable, str(ROOT / "code" / "search.py"), *tiny_args("--num_classes", "5")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: --num_classes is 5 but")
    assert "Traceback" not in out.stderr
