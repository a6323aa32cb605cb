"""A dataset's fingerprint: what its training cases are like, read once from the files.

Per case: the voxel size and shape (in RAS axis order, as the stages see them after reorientation) and the shape of
the bounding box of its non-zero region (any channel). Per channel: the intensities of the foreground (label > 0),
pooled over the cases from a seeded sample of each case's foreground (nnU-Net's method, with a smaller sample):
percentiles 0.5, 50 and 99.5, mean and standard deviation. Per class: its voxel count and the cases that hold it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import nibabel as nib
import numpy as np

from dints.data.msd import Task, file_stamps, image_files, to_ras

#: Foreground voxels sampled over the whole dataset per channel, shared equally among the cases (nnU-Net samples
#: 10^8; 10^6 give the percentiles to well under a percent of the range at a hundredth of the memory).
SAMPLES = 1_000_000
#: The sampling seed (nnU-Net's).
SEED = 1234
#: The fingerprint's format (a reader can refuse another).
FORMAT = 1


@dataclass
class CaseFacts:
    """One training case's part of the fingerprint."""

    id: str
    spacing: list[float]  # mm, RAS axis order
    shape: list[int]  # RAS axis order
    shape_nonzero: list[int]  # the non-zero region's bounding box
    samples: list[np.ndarray]  # per channel, the sampled foreground intensities
    class_voxels: list[int]  # per class (background included)


def nonzero_box(channels: np.ndarray) -> list[int]:
    """Shape of the bounding box of the voxels where any channel is non-zero (``channels``: (C, X, Y, Z)); the whole
    shape when there are none."""
    mask = np.any(channels != 0, axis=0)
    if not mask.any():
        return list(mask.shape)
    return [int(np.ptp(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != k)))[0]) + 1) for k in range(3)]


def read_case(entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A case's channels (C, X, Y, Z) float32, label (X, Y, Z) int and affine, from its files."""
    files = image_files(entry)
    first = nib.load(str(files[0]))
    if len(files) == 1:
        data = np.asarray(first.dataobj, dtype=np.float32)
        channels = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]
    else:
        channels = np.stack([np.asarray(nib.load(str(f)).dataobj, dtype=np.float32).reshape(first.shape[:3])
                             for f in files])
    label = np.asarray(nib.load(str(entry["label"])).dataobj).reshape(channels.shape[1:]).astype(np.int64)
    return channels, label, np.asarray(first.affine, dtype=np.float64)


def case_facts(entry: dict, num_classes: int, per_case: int, rng: np.random.Generator) -> CaseFacts:
    """The fingerprint of one case, sampling ``per_case`` foreground voxels per channel with ``rng``."""
    channels, label, affine = read_case(entry)
    zooms = nib.affines.voxel_sizes(affine)[:3]
    foreground = label > 0
    n = int(foreground.sum())
    picks = rng.integers(0, n, size=per_case) if n else np.zeros(0, dtype=np.int64)
    samples = [c[foreground][picks] for c in channels]
    counts = np.bincount(label.ravel(), minlength=num_classes)[:num_classes]
    return CaseFacts(entry["id"], [float(z) for z in to_ras(zooms, affine)], to_ras(label.shape, affine),
                     to_ras(nonzero_box(channels), affine), samples, [int(v) for v in counts])


def summarise(facts: Sequence[CaseFacts], task: Task, key: Any) -> dict:
    """The fingerprint (``fingerprint.json``'s content) from every case's facts, in case order."""
    def med(values) -> list[float]:
        return [float(v) for v in np.median(np.asarray(values, dtype=np.float64), axis=0)]

    intensity = {}
    for c, name in task.modality.items():
        pooled = np.concatenate([f.samples[c] for f in facts]) if facts else np.zeros(0)
        if pooled.size:
            p005, p50, p995 = np.percentile(pooled, [0.5, 50, 99.5])
            stats = {"percentile_00_5": float(p005), "median": float(p50), "percentile_99_5": float(p995),
                     "mean": float(pooled.mean()), "std": float(pooled.std()), "min": float(pooled.min()),
                     "max": float(pooled.max())}
        else:
            stats = {}
        intensity[str(c)] = {"name": name, "samples": int(pooled.size), **stats}
    ratios = [float(np.prod(f.shape_nonzero) / np.prod(f.shape)) for f in facts]
    classes = {str(k): {"name": task.labels[k], "voxels": sum(f.class_voxels[k] for f in facts),
                        "cases": [f.id for f in facts if f.class_voxels[k] > 0]} for k in range(1, task.num_classes)}
    return {
        "format": FORMAT, "task": task.name, "layout": task.layout, "key": key,
        "channels": {str(k): v for k, v in task.modality.items()},
        "cases": [{"id": f.id, "spacing": f.spacing, "shape": f.shape, "shape_nonzero": f.shape_nonzero}
                  for f in facts],
        "median": {"spacing": med([f.spacing for f in facts]), "shape": med([f.shape for f in facts]),
                   "shape_nonzero": med([f.shape_nonzero for f in facts]),
                   "nonzero_ratio": float(np.median(ratios)) if ratios else None},
        "intensity": intensity,
        "classes": classes,
        "sampling": {"samples": SAMPLES, "seed": SEED, "foreground": "label > 0"},
    }


def file_key(task: Task) -> dict:
    """What the fingerprint depends on: every training file (name, size, modification time) and the sampling; a
    fingerprint whose key differs is computed again."""
    files = file_stamps(p for c in task.training for p in [*image_files(c), c["label"]])
    return {"files": files, "samples": SAMPLES, "seed": SEED, "format": FORMAT}


def per_case_samples(cases: int) -> int:
    """Foreground samples per case and channel."""
    return max(1, SAMPLES // max(cases, 1))


def case_rng(index: int) -> np.random.Generator:
    """The sampling generator of the ``index``-th training case: the same whichever process reads it."""
    return np.random.default_rng([SEED, index])
