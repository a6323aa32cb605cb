"""Task folders: read and validate ``dataset.json`` and its files, in the Medical Segmentation Decathlon's layout or
nnU-Net v2's (:mod:`dints.data.nnunet`, told apart by ``dataset.json``'s keys).

Every problem a user can cause is a :class:`~dints.errors.DataError` whose one-line message names the file.
Header checks (shapes, affines, channels) read NIfTI headers only; the label-value check reads every label once
and records the result in a stamp file so later stages skip it while the files are unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np

from dints.data import nnunet
from dints.data.jsonfields import int_keyed
from dints.errors import DataError
from dints.io import write_json
from dints.run.runlog import get_logger

REQUIRED_KEYS = ("labels", "modality", "training")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def case_id(path: str | Path) -> str:
    """Case name of an image or label path: the file name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for suf in NIFTI_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


@dataclass
class Task:
    """A validated task.

    Attributes:
        name: task folder name, e.g. ``Task09_Spleen`` or ``Dataset004_Hippocampus``.
        root: the task folder.
        modality: channel index -> modality name, from ``dataset.json`` (nnU-Net: ``channel_names``).
        labels: class index -> class name (background included).
        training: ``[{"image": Path, "label": Path, "id": str, "name": str}, ...]`` sorted by id; nnU-Net's
            ``image`` is the list of the case's channel files (:func:`image_files`, :func:`image_source`), and
            ``name`` is the file name its prediction gets.
        test: ``[{"image": Path, "id": str, "name": str}, ...]`` sorted by id (``image`` as in ``training``).
        layout: ``"msd"`` or ``"nnunet"``.
    """

    name: str
    root: Path
    modality: dict[int, str]
    labels: dict[int, str]
    training: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    layout: str = "msd"

    @property
    def in_channels(self) -> int:
        """Number of image channels (one per modality)."""
        return len(self.modality)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.labels)

    @property
    def case_ids(self) -> list[str]:
        """Ids of the training cases, sorted."""
        return [c["id"] for c in self.training]

    def case(self, cid: str) -> dict:
        """The training entry with id ``cid``."""
        for c in self.training:
            if c["id"] == cid:
                return c
        raise KeyError(cid)


def image_files(entry: dict) -> list[Path]:
    """A case's image files: its one file (MSD: several channels are the 4th axis), or one per channel (nnU-Net)."""
    image = entry["image"]
    return [Path(f) for f in image] if isinstance(image, (list, tuple)) else [Path(image)]


def image_source(entry: dict) -> str | list[str]:
    """What MONAI's ``LoadImage`` reads for a case: its file, or its channel files, which it stacks as channels."""
    image = entry["image"]
    return [str(f) for f in image] if isinstance(image, (list, tuple)) else str(image)


def output_name(entry: dict) -> str:
    """The file name of a case's predicted label map: the image's own name (MSD), or ``<case><file_ending>``
    (nnU-Net, without the channel suffix)."""
    return entry.get("name") or image_files(entry)[0].name


def _resolve(root: Path, rel: object, what: str, where: Path) -> Path:
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{where}: {what} must be a file path, got {rel!r}")
    path = (root / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if not path.is_file():
        raise DataError(f"{where}: {what} file {path} does not exist")
    return path


def read_json_object(path: Path, what: str = "a JSON object") -> dict:
    """A JSON file that must hold an object.

    Raises:
        DataError: not valid JSON, or not an object (``expected <what>``).
    """
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected {what}")
    return data


def load_task(data_root: str | Path, task: str) -> Task:
    """Read ``<data_root>/<task>/dataset.json`` and check its keys and that every file it names exists.

    Paths in ``dataset.json`` are resolved against the task folder. A ``dataset.json`` with ``channel_names`` and
    ``file_ending`` is nnU-Net v2's: its cases are the files of ``imagesTr/``, ``labelsTr/`` and ``imagesTs/``
    (:func:`dints.data.nnunet.read_cases`).

    Raises:
        DataError: missing folder or dataset.json, invalid JSON, missing keys, missing files, duplicate case ids.
    """
    root = Path(data_root) / task
    dj = root / "dataset.json"
    if not root.is_dir():
        raise DataError(f"task folder {root} does not exist (check --data_root and --task)")
    if not dj.is_file():
        raise DataError(f"{dj} does not exist")
    meta = read_json_object(dj)
    if nnunet.is_nnunet(meta):
        channels, labels, training, test = nnunet.read_cases(root, meta)
        return Task(name=task, root=root, modality=channels, labels=labels, training=training, test=test,
                    layout="nnunet")
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise DataError(f"{dj}: missing key '{key}'")
    modality = int_keyed(meta["modality"], "modality", dj)
    labels = int_keyed(meta["labels"], "labels", dj)
    if len(labels) < 2:
        raise DataError(f"{dj}: 'labels' must list background and at least one foreground class")
    if not isinstance(meta["training"], list) or not meta["training"]:
        raise DataError(f"{dj}: 'training' must be a non-empty list of {{image, label}} entries")
    training, seen = [], set()
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DataError(f"{dj}: training entry {i} must have 'image' and 'label'")
        img = _resolve(root, entry["image"], "image", dj)
        lbl = _resolve(root, entry["label"], "label", dj)
        cid = case_id(img)
        if cid in seen:
            raise DataError(f"{dj}: training case '{cid}' is listed twice")
        seen.add(cid)
        training.append({"image": img, "label": lbl, "id": cid, "name": img.name})
    test = []
    for i, rel in enumerate(meta.get("test", []) or []):
        if isinstance(rel, dict):  # some derived datasets write {"image": ...}
            rel = rel.get("image")
        img = _resolve(root, rel, "test image", dj)
        test.append({"image": img, "id": case_id(img), "name": img.name})
    if isinstance(meta.get("numTraining"), int) and meta["numTraining"] != len(training):
        # Informational in MSD; a subset of the cases is legitimate, so warn rather than stop.
        get_logger().warning("%s: numTraining is %d but 'training' lists %d cases", dj, meta["numTraining"], len(training))
    training.sort(key=lambda c: c["id"])
    test.sort(key=lambda c: c["id"])
    return Task(name=task, root=root, modality=modality, labels=labels, training=training, test=test)


def read_header(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a NIfTI file, from its header.

    Raises:
        DataError: the file cannot be read as NIfTI (naming it).
    """
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for unreadable files
        raise DataError(f"{path}: cannot be read as NIfTI ({exc.__class__.__name__}: {exc})") from None
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64)


def check_headers(task: Task, cases: Iterable[dict] | None = None, atol: float = 1e-3) -> None:
    """Check each training image against its label (same grid, same affine) and the channel count.

    Args:
        task: the task from :func:`load_task`.
        cases: entries to check (default every training case).
        atol: absolute tolerance on affine entries (mm); MSD headers differ in the last digits now and then.

    Raises:
        DataError: naming the file whose shape, affine or channel count is wrong.
    """
    n_ch = task.in_channels
    for c in task.training if cases is None else cases:
        lshape, laff = read_header(c["label"])
        lshape3 = _spatial(lshape)
        if len(lshape3) != 3:
            raise DataError(f"{c['label']}: expected a 3-D label map, got shape {lshape}")
        for path, ishape, iaff in _image_headers(c, n_ch, test=False):
            if tuple(ishape[:3]) != tuple(lshape3):
                raise DataError(f"{c['label']}: shape {lshape3} differs from its image's {tuple(ishape[:3])}"
                                + (f" ({path.name})" if isinstance(c["image"], list) else ""))
            if not np.allclose(iaff, laff, atol=atol, rtol=1e-4):
                raise DataError(f"{c['label']}: affine differs from its image's ({path.name})")
    for c in task.test:
        headers = _image_headers(c, n_ch, test=True)
        first, shape0, aff0 = headers[0]
        for path, shape, aff in headers[1:]:
            if tuple(shape[:3]) != tuple(shape0[:3]) or not np.allclose(aff, aff0, atol=atol, rtol=1e-4):
                raise DataError(f"{path}: its grid (shape {tuple(shape[:3])}) differs from {first.name}'s "
                                f"({tuple(shape0[:3])}); the channels of a case must share one grid")


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without a trailing axis of length 1 (a 3-D volume saved as 4-D)."""
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def _image_headers(entry: dict, n_ch: int, test: bool) -> list[tuple[Path, tuple[int, ...], np.ndarray]]:
    """Each image file of a case with its shape and affine, after checking its channels against ``n_ch``."""
    if not isinstance(entry["image"], list):  # MSD: one file, channels on the 4th axis
        path = Path(entry["image"])
        shape, affine = read_header(path)
        channels = shape[3] if len(shape) == 4 else 1
        if test and (len(shape) not in (3, 4) or channels != n_ch):
            raise DataError(f"{path}: shape {shape} does not match {n_ch} channel(s) declared in dataset.json")
        if len(shape) not in (3, 4):
            raise DataError(f"{path}: expected a 3-D or 4-D image, got shape {shape}")
        if channels != n_ch:
            raise DataError(f"{path}: has {channels} channel(s) but dataset.json 'modality' declares {n_ch}")
        return [(path, shape, affine)]
    out = []
    for path in image_files(entry):  # nnU-Net: one 3-D file per channel
        shape, affine = read_header(path)
        if len(_spatial(shape)) != 3:
            raise DataError(f"{path}: expected a 3-D image (one file per channel), got shape {shape}")
        out.append((path, _spatial(shape), affine))
    return out


def file_stamps(paths: Iterable[Path]) -> list[list]:
    """Each file's name, size and modification time: what a check or a summary of the files is reused on."""
    return [[str(p), p.stat().st_size, int(p.stat().st_mtime)] for p in paths]


def check_labels(task: Task, stamp: str | Path | None = None, progress: bool = False) -> None:
    """Check that every label map holds only integer values in ``0..num_classes-1``.

    Reads every label once; with ``stamp`` the result is recorded (file names, sizes, modification times) and
    the check is skipped next time while nothing changed.

    Raises:
        DataError: naming the first label file with values outside the declared classes.
    """
    paths = [c["label"] for c in task.training]
    key = {"num_classes": task.num_classes, "files": file_stamps(paths)}
    if stamp is not None and Path(stamp).is_file():
        try:
            if json.loads(Path(stamp).read_text()) == key:
                return
        except json.JSONDecodeError:
            pass
    it: Iterable[Path] = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc="checking labels", leave=False)
    for p in it:
        data = np.asanyarray(nib.load(str(p)).dataobj)
        values = np.unique(data)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise DataError(f"{p}: label values must be integers, found {values[np.mod(values, 1) != 0][:5].tolist()}")
        bad = values[(values < 0) | (values >= task.num_classes)]
        if bad.size:
            raise DataError(
                f"{p}: label values {bad.astype(int).tolist()} outside the {task.num_classes} classes "
                f"declared in dataset.json 'labels' (0..{task.num_classes - 1})"
            )
    if stamp is not None:
        write_json(stamp, key)


def to_ras(values, affine: np.ndarray) -> list:
    """Per-array-axis values (a shape, voxel sizes) in the RAS axis order the stages reorient the array to."""
    out = [None] * 3
    for k, axis in enumerate(nib.orientations.io_orientation(affine)[:3, 0]):
        out[int(axis)] = values[k]
    return out


def volume_shapes(task: Task, spacing: list[float] | None) -> list[tuple[int, int, int]]:
    """Approximate spatial size of each training image after reorienting to RAS and resampling to ``spacing``.

    Read from headers only (no voxel data). ``spacing`` None keeps each image's own voxel size.
    """
    out = []
    for c in task.training:
        img = nib.load(str(image_files(c)[0]))
        ras_shape = np.array(to_ras(img.shape[:3], img.affine), dtype=float)
        ras_zoom = np.array(to_ras(nib.affines.voxel_sizes(img.affine)[:3], img.affine), dtype=float)
        if spacing is not None:
            ras_shape = np.round(ras_shape * ras_zoom / np.asarray(spacing, dtype=float))
        out.append(tuple(int(s) for s in ras_shape))
    return out
