#!/usr/bin/env python
"""Generate the built-in demo task: a small MSD-format task of synthetic CT-like 3-D images.

    python scripts/make_demo_task.py --out /tmp/data/Task99_Demo [--cases 12 --test 3 --seed 0]
    python scripts/make_demo_task.py --out /tmp/data/Dataset099_Demo --format nnunet [--channels 2]

Each case has a body (soft tissue in air), an organ (class 1, a lobed ellipsoid with texture) and one or two
lesions inside it (class 2, brighter), with noise. Like real MSD data the images are int16 (Hounsfield-like),
labels uint8, voxels anisotropic, image sizes differ per case, and the affine is oblique (a rotation, flipped
x/y axes as from DICOM, and an offset). Writes ``dataset.json``, ``imagesTr/``, ``labelsTr/`` and ``imagesTs/``.

``--format nnunet`` writes the same cases as an nnU-Net v2 raw dataset: one file per channel
(``<case>_0000.nii.gz``), ``dataset.json`` with ``channel_names``, ``labels`` (name -> value) and ``file_ending``.
``--channels 2`` adds a second, MR-like channel: the same anatomy with other contrasts (lesion darker than the organ)
and its own noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

SPACING = (1.6, 1.6, 3.0)  # mm, anisotropic like thick-slice CT
BODY_HU, ORGAN_HU, LESION_HU, AIR_HU = 0.0, 140.0, 260.0, -900.0


def oblique_affine(spacing: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A voxel-to-world affine with flipped x/y, a rotation of 5-20 degrees about z, a small tilt and an offset."""
    a = np.radians(rng.uniform(5, 20)) * rng.choice([-1, 1])
    t = np.radians(rng.uniform(2, 6))
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([-spacing[0], -spacing[1], spacing[2]])
    aff[:3, 3] = rng.uniform(-120, 120, size=3)
    return aff


def _lobed_ellipsoid(grid_mm: list[np.ndarray], center: np.ndarray, radii: np.ndarray, rng: np.random.Generator,
                     lobes: float) -> np.ndarray:
    """Boolean mask of an ellipsoid whose radius varies smoothly with direction (a blob, not a sphere)."""
    d = [(g - c) / r for g, c, r in zip(grid_mm, center, radii)]
    rho = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) + 1e-6
    wobble = 1.0
    for _ in range(3):
        k = rng.normal(size=3)
        k /= np.linalg.norm(k)
        phase = rng.uniform(0, 2 * np.pi)
        freq = rng.integers(2, 4)
        wobble = wobble + lobes * np.sin(freq * (k[0] * d[0] + k[1] * d[1] + k[2] * d[2]) / rho + phase)
    return rho < wobble


def make_case(shape: tuple[int, int, int], rng: np.random.Generator, spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case.

    Returns:
        ``(image int16 (X, Y, Z), label uint8 (X, Y, Z))`` with labels 0 background, 1 organ, 2 lesion.
    """
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = np.array(shape) * np.array(spacing)
    body = _lobed_ellipsoid(grid, extent / 2, extent * np.array([0.46, 0.42, 0.6]), rng, 0.05)
    o_center = extent / 2 + rng.uniform(-0.12, 0.12, size=3) * extent
    o_radii = rng.uniform(0.18, 0.28, size=3) * extent.min() * np.array([1.0, 1.0, 1.3])
    organ = _lobed_ellipsoid(grid, o_center, o_radii, rng, 0.12) & body
    lesion = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 3)):
        offset = rng.uniform(-0.45, 0.45, size=3) * o_radii
        r = rng.uniform(7.0, 10.0)
        lesion |= _lobed_ellipsoid(grid, o_center + offset, np.array([r, r, r * 1.2]), rng, 0.08)
    lesion &= organ
    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[lesion] = 2
    texture = gaussian_filter(rng.normal(size=shape), sigma=1.5) * 60.0
    img = np.where(body, BODY_HU, AIR_HU) + texture
    img[organ] = ORGAN_HU + texture[organ]
    img[lesion] = LESION_HU + texture[lesion]
    img = gaussian_filter(img, sigma=0.6) + rng.normal(scale=18.0, size=shape)
    return np.clip(np.round(img), -1024, 3071).astype(np.int16), label


def _save(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(arr, affine)
    img.header.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def make_task(out: str | Path, cases: int = 12, test: int = 3, seed: int = 0,
              size_range: tuple[int, int] = (44, 60), z_range: tuple[int, int] = (18, 26)) -> Path:
    """Write an MSD-format demo task to ``out`` and return the path of its ``dataset.json``."""
    out = Path(out)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    training, testing = [], []
    for i in range(cases + test):
        shape = (int(rng.integers(*size_range)), int(rng.integers(*size_range)), int(rng.integers(*z_range)))
        image, label = make_case(shape, rng)
        affine = oblique_affine(SPACING, rng)
        name = f"demo_{i:03d}.nii.gz"
        if i < cases:
            _save(image, affine, out / "imagesTr" / name)
            _save(label, affine, out / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            _save(image, affine, out / "imagesTs" / name)
            testing.append(f"./imagesTs/{name}")
    meta = {
        "name": "Demo",
        "description": "Synthetic CT-like organ and lesion segmentation (generated by scripts/make_demo_task.py)",
        "tensorImageSize": "3D",
        "reference": "synthetic",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "organ", "2": "lesion"},
        "numTraining": len(training),
        "numTest": len(testing),
        "training": training,
        "test": testing,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    return out / "dataset.json"


def second_channel(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MR-like channel of a case: organ bright, lesion dark, air dark, smooth texture and its own noise (int16)."""
    out = np.where(image > -500, 300.0, 20.0)
    out[label == 1] = 600.0
    out[label == 2] = 350.0
    out = gaussian_filter(out, sigma=0.8) + rng.normal(scale=25.0, size=image.shape)
    return np.clip(np.round(out), 0, 4000).astype(np.int16)


def make_nnunet_task(out: str | Path, cases: int = 12, test: int = 3, seed: int = 0, channels: int = 1) -> Path:
    """The demo's cases as an nnU-Net v2 raw dataset in ``out``; returns its ``dataset.json``."""
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    out = Path(out)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng(seed + 1000)  # the second channel's noise: the first channel is the MSD demo's
    for i in range(cases + test):
        shape = (int(rng.integers(44, 60)), int(rng.integers(44, 60)), int(rng.integers(18, 26)))
        image, label = make_case(shape, rng)
        affine = oblique_affine(SPACING, rng)
        case, folder = f"demo_{i:03d}", "imagesTr" if i < cases else "imagesTs"
        _save(image, affine, out / folder / f"{case}_0000.nii.gz")
        if channels == 2:
            _save(second_channel(image, label, extra), affine, out / folder / f"{case}_0001.nii.gz")
        if i < cases:
            _save(label, affine, out / "labelsTr" / f"{case}.nii.gz")
    meta = {
        "channel_names": {"0": "CT", **({"1": "MR"} if channels == 2 else {})},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "name": "Demo",
        "description": "Synthetic organ and lesion segmentation (generated by scripts/make_demo_task.py)",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n")
    return out / "dataset.json"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="task folder to write, e.g. data/Task99_Demo")
    p.add_argument("--cases", type=int, default=12, help="training cases (images and labels)")
    p.add_argument("--test", type=int, default=3, help="test images (no labels)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--format", choices=["msd", "nnunet"], default="msd", help="folder layout: MSD or nnU-Net v2 raw")
    p.add_argument("--channels", type=int, choices=[1, 2], default=1, help="--format nnunet: image channels")
    a = p.parse_args(argv)
    if a.cases < 2 or a.test < 0:
        p.error("--cases must be >= 2 and --test >= 0")
    if a.channels != 1 and a.format != "nnunet":
        p.error("--channels 2 needs --format nnunet")
    if a.format == "nnunet":
        path = make_nnunet_task(a.out, a.cases, a.test, a.seed, a.channels)
    else:
        path = make_task(a.out, a.cases, a.test, a.seed)
    print(f"wrote {path} ({a.cases} training cases, {a.test} test images)")


if __name__ == "__main__":
    sys.exit(main())
