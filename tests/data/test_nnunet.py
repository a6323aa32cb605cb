"""nnU-Net v2 raw datasets as input (dints.data.nnunet through load_task): the layout read as it is, and every bad
input refused in one line naming the file at fault."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from config import load_config
from dints.data.msd import check_headers, check_labels, image_files, image_source, load_task, output_name
from dints.data.splits import load_or_create_splits
from dints.errors import DataError
from scripts.make_demo_task import make_nnunet_task, make_task

NAME = "Dataset099_Demo"


@pytest.fixture(scope="module")
def nn_root(tmp_path_factory) -> Path:
    """A data root holding the demo as an nnU-Net dataset with 2 channels: 5 training cases, 2 test images."""
    root = tmp_path_factory.mktemp("nn")
    make_nnunet_task(root / NAME, cases=5, test=2, seed=0, channels=2)
    return root


@pytest.fixture()
def nn_copy(nn_root, tmp_path) -> Path:
    shutil.copytree(nn_root / NAME, tmp_path / NAME)
    return tmp_path


def test_the_layout_is_read_as_it_is(nn_root):
    task = load_task(nn_root, NAME)
    assert task.layout == "nnunet" and task.in_channels == 2 and task.modality == {0: "CT", 1: "MR"}
    assert task.labels == {0: "background", 1: "organ", 2: "lesion"}
    assert task.case_ids == [f"demo_{i:03d}" for i in range(5)]
    c = task.case("demo_003")
    assert [p.name for p in image_files(c)] == ["demo_003_0000.nii.gz", "demo_003_0001.nii.gz"]
    assert image_source(c) == [str(p) for p in image_files(c)]  # MONAI stacks the list as channels
    assert c["label"].name == "demo_003.nii.gz"
    assert [output_name(t) for t in task.test] == ["demo_005.nii.gz", "demo_006.nii.gz"]  # no channel suffix
    check_headers(task)
    check_labels(task)


def test_the_first_channel_is_the_msd_demo(nn_root, tmp_path):
    make_task(tmp_path / "Task99_Demo", cases=5, test=2, seed=0)
    msd = load_task(tmp_path, "Task99_Demo")
    nn = load_task(nn_root, NAME)
    for a, b in zip(msd.training + msd.test, nn.training + nn.test):
        x, y = nib.load(str(image_files(a)[0])), nib.load(str(image_files(b)[0]))
        assert np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj)) and np.allclose(x.affine, y.affine)
        assert output_name(a) == output_name(b)  # the same predicted file names in both layouts


def test_a_number_names_the_dataset(nn_root, tmp_path):
    assert load_config(["--data_root", str(nn_root), "--task", "99"], "search").task == NAME
    assert load_config(["--data_root", str(nn_root), "--task", "099"], "search").task == NAME
    with pytest.raises(DataError, match=r"--task 4: no folder Dataset004_<name> under"):
        load_config(["--data_root", str(nn_root), "--task", "4"], "search")
    (tmp_path / "Dataset099_A").mkdir()
    (tmp_path / "Dataset099_B").mkdir()
    with pytest.raises(DataError, match=r"several folders .* match \(Dataset099_A, Dataset099_B\)"):
        load_config(["--data_root", str(tmp_path), "--task", "99"], "search")


def _meta(root: Path, **change) -> None:
    path = root / NAME / "dataset.json"
    meta = json.loads(path.read_text())
    meta.update(change)
    path.write_text(json.dumps(meta))


def _rewrite(path: Path, fn: Callable[[np.ndarray], np.ndarray], affine=None) -> None:
    img = nib.load(str(path))
    arr = fn(np.asarray(img.dataobj))
    nib.save(nib.Nifti1Image(arr, img.affine if affine is None else affine), str(path))


def _file(root: Path, rel: str) -> Path:
    return root / NAME / rel


def _shifted(root: Path, rel: str) -> None:
    img = nib.load(str(_file(root, rel)))
    affine = img.affine.copy()
    affine[0, 3] += 5.0
    _rewrite(_file(root, rel), lambda a: a, affine)


#: (id, what breaks the copy, a regular expression the one error line must match). Each is refused by load_task
#: (the layout), check_headers (the grids) or check_labels (the values), as every stage does before writing.
BAD = [
    ("file_ending not NIfTI", lambda r: _meta(r, file_ending=".mha"),
     r"dataset\.json: 'file_ending' is '\.mha'; this pipeline reads NIfTI only"),
    ("region-based labels", lambda r: _meta(r, labels={"background": 0, "whole": [1, 2], "core": 2}),
     r"dataset\.json: 'labels' is region-based \('whole' is a list of values\)"),
    ("an ignore label", lambda r: _meta(r, labels={"background": 0, "organ": 1, "lesion": 2, "ignore": 3}),
     r"dataset\.json: 'labels' has an ignore label"),
    ("label values not consecutive", lambda r: _meta(r, labels={"background": 0, "organ": 1, "lesion": 3}),
     r"dataset\.json: the label values must be 0\.\.2 \(background 0, consecutive\), got \[0, 1, 3\]"),
    ("channel_names keys not 0..C-1", lambda r: _meta(r, channel_names={"0": "CT", "2": "MR"}),
     r"dataset\.json: the keys of 'channel_names' must be 0\.\.1, got \[0, 2\]"),
    ("numTraining disagrees", lambda r: _meta(r, numTraining=7),
     r"dataset\.json: 'numTraining' is 7 but .*labelsTr holds 5 cases"),
    ("a channel file missing", lambda r: _file(r, "imagesTr/demo_002_0001.nii.gz").unlink(),
     r"imagesTr/demo_002_0001\.nii\.gz does not exist: case demo_002 needs 2 channel file\(s\)"),
    ("a channel not declared", lambda r: shutil.copy(_file(r, "imagesTr/demo_002_0001.nii.gz"),
                                                     _file(r, "imagesTr/demo_002_0002.nii.gz")),
     r"imagesTr/demo_002_0002\.nii\.gz: channel 0002, but .*dataset\.json 'channel_names' declares 2 channel"),
    ("an image without the channel suffix", lambda r: _file(r, "imagesTr/demo_002_0001.nii.gz").rename(
        _file(r, "imagesTr/demo_002.nii.gz")), r"imagesTr/demo_002\.nii\.gz: not named <case>_<XXXX>\.nii\.gz"),
    ("a label without its image", lambda r: [_file(r, f"imagesTr/demo_001_000{k}.nii.gz").unlink() for k in (0, 1)],
     r"imagesTr/demo_001_0000\.nii\.gz does not exist: label .*labelsTr/demo_001\.nii\.gz has no image"),
    ("an image without its label", lambda r: _file(r, "labelsTr/demo_001.nii.gz").unlink(),
     r"labelsTr/demo_001\.nii\.gz does not exist: 1 case\(s\) in .*imagesTr have no label"),
    ("no imagesTr", lambda r: shutil.rmtree(_file(r, "imagesTr")), r"imagesTr does not exist"),
    ("a channel on another grid", lambda r: _rewrite(_file(r, "imagesTr/demo_002_0001.nii.gz"), lambda a: a[:-2]),
     r"labelsTr/demo_002\.nii\.gz: shape .* differs from its image's .* \(demo_002_0001\.nii\.gz\)"),
    ("a channel with another affine", lambda r: _shifted(r, "imagesTr/demo_002_0001.nii.gz"),
     r"labelsTr/demo_002\.nii\.gz: affine differs from its image's \(demo_002_0001\.nii\.gz\)"),
    ("a 4-D channel file", lambda r: _rewrite(_file(r, "imagesTr/demo_002_0000.nii.gz"),
                                              lambda a: np.stack([a, a], -1)),
     r"imagesTr/demo_002_0000\.nii\.gz: expected a 3-D image \(one file per channel\)"),
    ("test channels on different grids", lambda r: _rewrite(_file(r, "imagesTs/demo_006_0001.nii.gz"),
                                                            lambda a: a[:-2]),
     r"imagesTs/demo_006_0001\.nii\.gz: its grid .* differs from demo_006_0000\.nii\.gz's"),
    ("a test channel missing", lambda r: _file(r, "imagesTs/demo_005_0000.nii.gz").unlink(),
     r"imagesTs/demo_005_0000\.nii\.gz does not exist: case demo_005 needs 2 channel file\(s\)"),
    ("label value outside labels", lambda r: _rewrite(_file(r, "labelsTr/demo_003.nii.gz"),
                                                      lambda a: np.where(a == 2, 5, a).astype(np.uint8)),
     r"labelsTr/demo_003\.nii\.gz: label values \[5\] outside the 3 classes"),
]


@pytest.mark.parametrize("case_id,breaks,words", BAD, ids=[b[0] for b in BAD])
def test_bad_nnunet_input_is_one_line_naming_the_file(nn_copy, case_id, breaks, words):
    breaks(nn_copy)
    with pytest.raises(DataError) as err:
        task = load_task(nn_copy, NAME)
        check_headers(task)
        check_labels(task)
    message = str(err.value)
    assert "\n" not in message and re.search(words, message), message


def test_splits_final_gives_the_folds(nn_root, tmp_path):
    task = load_task(nn_root, NAME)
    given = tmp_path / "splits_final.json"
    folds = [{"train": ["demo_001", "demo_002", "demo_003", "demo_004"], "val": ["demo_000"]},
             {"train": ["demo_000", "demo_002", "demo_003", "demo_004"], "val": ["demo_001"]}]
    given.write_text(json.dumps(folds))
    splits = tmp_path / "splits.json"
    assert load_or_create_splits(splits, task.case_ids, 2, 0, NAME, given) == folds
    assert json.loads(splits.read_text())["folds"] == folds  # recorded for the other stages
    for broken, words in ((folds[:1], r"holds 1 folds but --num_folds is 2"),
                          ([folds[0], {"train": ["demo_009"], "val": ["demo_000"]}], r"fold 1 names cases .*demo_009"),
                          ([folds[0], {"train": ["demo_000"], "val": ["demo_000"]}], r"fold 1 trains and validates on"),
                          ({"folds": folds}, r"expected a list of")):
        given.write_text(json.dumps(broken))
        with pytest.raises(DataError, match=words):
            load_or_create_splits(splits, task.case_ids, 2, 0, NAME, given)


def _nan_voxels(root: Path, rel: str) -> None:
    _rewrite(_file(root, rel), lambda a: np.where(np.arange(a.size).reshape(a.shape) < 7, np.nan,
                                                  a.astype(np.float32)).astype(np.float32))


def _truncated(root: Path, rel: str) -> None:
    path = _file(root, rel)
    path.write_bytes(path.read_bytes()[:2000])


#: Through a stage as a user runs it (cli_main): exit 2, one error line naming the file. The images' voxels are
#: first read when the search fills its cache; the rest is refused before.
STAGE_BAD = [
    ("NaN voxels in a second channel", lambda r: [_nan_voxels(r, f"imagesTr/demo_00{i}_0001.nii.gz") for i in range(5)],
     r"imagesTr/demo_00\d_0001\.nii\.gz: 7 voxel\(s\) are NaN or infinite"),
    ("a channel file truncated", lambda r: [_truncated(r, f"imagesTr/demo_00{i}_0001.nii.gz") for i in range(5)],
     r"imagesTr/demo_00\d_0001\.nii\.gz: cannot be read"),
    ("region-based labels", BAD[1][1], BAD[1][2]),
    ("a channel file missing", BAD[6][1], BAD[6][2]),
]


@pytest.mark.parametrize("case_id,breaks,words", STAGE_BAD, ids=[b[0] for b in STAGE_BAD])
def test_a_stage_refuses_bad_nnunet_input_in_one_line(nn_copy, tmp_path, capfd, case_id, breaks, words):
    from helpers import stages

    breaks(nn_copy)
    argv = ["--config", stages.TINY, "--data_root", str(nn_copy), "--task", "99", "--work_root", str(tmp_path / "w"),
            *stages.FAST, "--num_folds", "2"]
    r = stages.run("search", argv, capfd)
    assert r.code == 2 and "Traceback" not in r.err, r.err[-2000:]
    assert len(r.error_lines) == 1 and re.search(words, r.error_lines[0]), r.err[-2000:]
