"""Inference on whole images (stages 3 and 4) and the per-fold probability files that connect stages 4-6.

A probability file ``<case>.npz`` holds:
``prob`` float16 (K, X, Y, Z) class probabilities on the processing grid (RAS, target spacing, padded);
``affine`` float64 4x4, that grid's voxel-to-world affine; ``orig_affine`` and ``orig_shape``, the original
image's grid; ``image``, the original image path. With these, stage 6 needs nothing else to return to the
original grid.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from .evaluate import predict_volume
from .io import atomic_write
from .transforms import infer_transforms

FLIP_AXES = ((2,), (3,), (4,))  # spatial axes of an (N, C, X, Y, Z) tensor


def predict_case(net: torch.nn.Module, image_path: str | Path, cfg, device: torch.device, tta: bool = False,
                 transform=None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of one image on the processing grid.

    Args:
        net: trained network in eval mode.
        image_path: NIfTI image (3-D, or 4-D with channels last).
        cfg: options (preprocessing, ``patch_size``, ``sw_*``, ``amp``).
        tta: also predict on the image flipped along each spatial axis and average (4 passes).
        transform: the inference Compose (built from ``cfg`` when None).

    Returns:
        ``(probs float32 (K, X, Y, Z), affine float64 (4, 4))`` of the processing grid.
    """
    transform = transform or infer_transforms(cfg)
    data = transform({"image": str(image_path)})
    img = data["image"]
    affine = np.asarray(img.affine.numpy(), dtype=np.float64)
    x = img.as_tensor()[None].to(device)
    amp = cfg.amp and device.type == "cuda"
    probs = predict_volume(net, x, cfg, amp)
    if tta:
        for axes in FLIP_AXES:
            probs += predict_volume(net, x.flip(axes), cfg, amp).flip(axes)
        probs /= 1 + len(FLIP_AXES)
    return probs[0].cpu().numpy(), affine


def original_grid(image_path: str | Path) -> tuple[np.ndarray, tuple[int, int, int], tuple[float, ...]]:
    """Affine, spatial shape and voxel size of an original image (header only)."""
    img = nib.load(str(image_path))
    return np.asarray(img.affine, dtype=np.float64), tuple(int(s) for s in img.shape[:3]), \
        tuple(float(z) for z in img.header.get_zooms()[:3])


def save_probs(path: str | Path, probs: np.ndarray, affine: np.ndarray, image_path: str | Path,
               orig: tuple[np.ndarray, tuple[int, ...]] | None = None, dtype=np.float16, **extra: np.ndarray) -> Path:
    """Write a probability file (see the module docstring), atomically.

    Args:
        orig: ``(orig_affine, orig_shape)``; read from the image's header when None.
        dtype: storage type of ``prob`` (float16 halves the per-fold files; fused files keep float32 so that
            stage 6 reproduces stage 5's argmax exactly where the grids coincide).
        **extra: further arrays to store (e.g. the folds a fused file averages).
    """
    orig_affine, orig_shape = orig if orig is not None else original_grid(image_path)[:2]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, prob=probs.astype(dtype), affine=affine, orig_affine=orig_affine,
                                orig_shape=np.array(orig_shape), image=str(image_path), **extra)

    return atomic_write(path, write)


def load_probs(path: str | Path) -> dict:
    """Read a probability file: ``prob`` as float32, the grids as arrays, ``image`` as str."""
    with np.load(path) as z:
        return {"prob": z["prob"].astype(np.float32), "affine": z["affine"], "orig_affine": z["orig_affine"],
                "orig_shape": tuple(int(s) for s in z["orig_shape"]), "image": str(z["image"])}


def save_labels(path: str | Path, labels: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None) -> Path:
    """Write a uint8 label map as NIfTI (with ``header``'s fields when given), atomically."""
    img = nib.Nifti1Image(labels.astype(np.uint8), affine, header=header.copy() if header is not None else None)
    img.set_data_dtype(np.uint8)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
