"""nnU-Net v2 raw dataset folders, read as they are: ``DatasetXXX_Name/dataset.json``, ``imagesTr/``, ``labelsTr/``
and optional ``imagesTs/``, one file per channel (``<case>_<XXXX><file_ending>``), nothing converted on disk.

A case's image is the list of its channel files, in channel order; loading stacks them into one multi-channel
volume. Predictions for a case are named ``<case><file_ending>``, as nnU-Net names its own. NIfTI only; region-based
labels and an ignore label are refused, each in one line naming ``dataset.json``.
"""

from __future__ import annotations

import re
from pathlib import Path

from dints.data.jsonfields import int_keyed
from dints.errors import DataError

#: The file endings read here (NIfTI).
FILE_ENDINGS = (".nii.gz", ".nii")
#: A channel file: ``<case>_<XXXX><ending>`` (groups: case, channel, ending).
CHANNEL_FILE = re.compile(r"^(.+)_(\d{4})(\.nii\.gz|\.nii)$")


def is_nnunet(meta: dict) -> bool:
    """Whether a ``dataset.json`` is nnU-Net v2's (``channel_names`` and ``file_ending``) rather than MSD's."""
    return "channel_names" in meta and "file_ending" in meta


def resolve_folder(data_root: str | Path, task: str) -> str:
    """The task folder a ``--task`` names: itself, or for a number (``4``, ``004``) the one ``Dataset004_*`` folder
    under ``data_root``.

    Raises:
        DataError: no such dataset folder, or several.
    """
    if not task.isdigit():
        return task
    root = Path(data_root)
    number = int(task)
    found = sorted(p.name for p in root.glob(f"Dataset{number:03d}_*") if p.is_dir()) if root.is_dir() else []
    if not found:
        raise DataError(f"--task {task}: no folder Dataset{number:03d}_<name> under {root}")
    if len(found) > 1:
        raise DataError(f"--task {task}: several folders under {root} match ({', '.join(found)}); name one")
    return found[0]


def _labels(meta: dict, dj: Path) -> dict[int, str]:
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{dj}: 'labels' must be a non-empty mapping of class names to integers")
    if "ignore" in labels:
        raise DataError(f"{dj}: 'labels' has an ignore label ('ignore'), which this pipeline does not support; "
                        "remove it (and its voxels) or map them to a class")
    regions = [name for name, v in labels.items() if isinstance(v, (list, tuple))]
    if regions:
        raise DataError(f"{dj}: 'labels' is region-based ({regions[0]!r} is a list of values), which this pipeline "
                        "does not support; give each class one integer")
    out: dict[int, str] = {}
    for name, v in labels.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"{dj}: label {name!r} must be an integer, got {v!r}")
        if v in out:
            raise DataError(f"{dj}: labels {out[v]!r} and {name!r} share the value {v}")
        out[v] = str(name)
    if sorted(out) != list(range(len(out))):
        raise DataError(f"{dj}: the label values must be 0..{len(out) - 1} (background 0, consecutive), "
                        f"got {sorted(out)}")
    if len(out) < 2:
        raise DataError(f"{dj}: 'labels' must hold background (0) and at least one foreground class")
    return out


def _file_ending(meta: dict, dj: Path) -> str:
    ending = meta["file_ending"]
    if ending not in FILE_ENDINGS:
        raise DataError(f"{dj}: 'file_ending' is {ending!r}; this pipeline reads NIfTI only "
                        f"({' or '.join(map(repr, FILE_ENDINGS))})")
    return ending


def _cases(folder: Path, ending: str, channels: int, dj: Path) -> dict[str, list[Path]]:
    """Each case of an images folder with its channel files in order. Raises DataError on a missing channel."""
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = CHANNEL_FILE.match(p.name)
        if m is None or m.group(3) != ending:
            if p.name.endswith(ending):
                raise DataError(f"{p}: not named <case>_<XXXX>{ending} (a four-digit channel index), as {dj} "
                                "'channel_names' requires")
            continue
        found.setdefault(m.group(1), {})[int(m.group(2))] = p
    out = {}
    for case, files in found.items():
        extra = sorted(set(files) - set(range(channels)))
        if extra:
            raise DataError(f"{files[extra[0]]}: channel {extra[0]:04d}, but {dj} 'channel_names' declares "
                            f"{channels} channel(s) (0000..{channels - 1:04d})")
        missing = [k for k in range(channels) if k not in files]
        if missing:
            raise DataError(f"{folder / f'{case}_{missing[0]:04d}{ending}'} does not exist: case {case} needs "
                            f"{channels} channel file(s) ({dj} 'channel_names')")
        out[case] = [files[k] for k in range(channels)]
    return out


def read_cases(root: Path, meta: dict) -> tuple[dict[int, str], dict[int, str], list[dict], list[dict]]:
    """Read an nnU-Net v2 dataset folder.

    Returns:
        ``(channels, labels, training, test)``: channel index -> name, class index -> name, and the cases sorted by
        id: training ``{"image": [channel files], "label": Path, "id", "name"}``,
        test ``{"image": [channel files], "id", "name"}`` (``name``: ``<case><file_ending>``, the prediction's).

    Raises:
        DataError: naming ``dataset.json`` or the file at fault.
    """
    dj = root / "dataset.json"
    channels = int_keyed(meta["channel_names"], "channel_names", dj)
    labels = _labels(meta, dj)
    ending = _file_ending(meta, dj)
    for sub in ("imagesTr", "labelsTr"):
        if not (root / sub).is_dir():
            raise DataError(f"{root / sub} does not exist (an nnU-Net dataset keeps its training cases there)")
    images = _cases(root / "imagesTr", ending, len(channels), dj)
    training = []
    for p in sorted((root / "labelsTr").iterdir()):
        if not p.name.endswith(ending):
            continue
        case = p.name[: -len(ending)]
        if case not in images:
            raise DataError(f"{root / 'imagesTr' / f'{case}_0000{ending}'} does not exist: label {p} has no image")
        training.append({"image": images.pop(case), "label": p, "id": case, "name": p.name})
    if images:
        case = sorted(images)[0]
        raise DataError(f"{root / 'labelsTr' / f'{case}{ending}'} does not exist: {len(images)} case(s) in "
                        f"{root / 'imagesTr'} have no label (the first: {case})")
    if not training:
        raise DataError(f"{root / 'labelsTr'}: no label files ending in {ending}")
    declared = meta.get("numTraining")
    if declared is not None and declared != len(training):
        raise DataError(f"{dj}: 'numTraining' is {declared} but {root / 'labelsTr'} holds {len(training)} cases")
    test = []
    if (root / "imagesTs").is_dir():
        test = [{"image": files, "id": case, "name": f"{case}{ending}"}
                for case, files in sorted(_cases(root / "imagesTs", ending, len(channels), dj).items())]
    return channels, labels, training, test
