"""Inference on whole images (stages 3 and 4) and the per-fold probability files that connect stages 4-6.

A probability file ``<case>.npz`` holds:
``prob`` float16 (K, X, Y, Z) class probabilities on the processing grid (RAS, target spacing, padded);
``affine`` float64 4x4, that grid's voxel-to-world affine; ``orig_affine`` and ``orig_shape``, the original
image's grid; ``image``, the original image path. With these, stage 6 needs nothing else to return to the
original grid.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from dints.io import atomic_write
from dints.run.settings import InferSettings

FLIP_AXES = ((2,), (3,), (4,))  # spatial axes of an (N, C, X, Y, Z) tensor


def predict_volume(model: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                   infer: InferSettings) -> torch.Tensor:
    """Class probabilities of one preprocessed volume by sliding-window inference (Gaussian blending).

    Args:
        model: maps ``(N, C, *patch)`` to logits ``(N, K, *patch)``.
        image: ``(1, C, X, Y, Z)`` with sides >= the patch size.
        infer: window (``patch_size``), ``sw_batch_size``, ``sw_overlap``; ``amp`` runs the model in float16
            autocast on CUDA.

    Returns:
        Softmax probabilities ``(1, K, X, Y, Z)`` in float32.
    """
    amp = infer.amp and image.device.type == "cuda"
    with torch.no_grad(), torch.autocast(image.device.type, enabled=amp):
        logits = sliding_window_inference(
            image, roi_size=tuple(infer.patch_size), sw_batch_size=infer.sw_batch_size, predictor=model,
            overlap=infer.sw_overlap, mode="gaussian",
        )
    return torch.softmax(logits.float(), dim=1)


def predict_case(net: torch.nn.Module, image_path: str | Path | list[str], transform, infer: InferSettings,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of one image on the processing grid.

    Args:
        net: trained network in eval mode.
        image_path: NIfTI image (3-D, or 4-D with channels last), or one 3-D file per channel (stacked in order).
        transform: the inference Compose (:func:`dints.data.transforms.infer_transforms`).
        infer: sliding-window settings; ``tta`` also predicts on the image flipped along each spatial axis and
            averages (4 passes).
        device: where the network runs.

    Returns:
        ``(probs float32 (K, X, Y, Z), affine float64 (4, 4))`` of the processing grid.
    """
    data = transform({"image": image_path if isinstance(image_path, list) else str(image_path)})
    img = data["image"]
    affine = np.asarray(img.affine.numpy(), dtype=np.float64)
    x = img.as_tensor()[None].to(device)
    probs = predict_volume(net, x, infer)
    if infer.tta:
        for axes in FLIP_AXES:
            probs += predict_volume(net, x.flip(axes), infer).flip(axes)
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

    arrays = dict(prob=probs.astype(dtype), affine=affine, orig_affine=orig_affine, orig_shape=np.array(orig_shape),
                  image=np.array(str(image_path)), **extra)
    return atomic_write(path, lambda tmp: write_npz(tmp, arrays))


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes, without its time stamps: equal arrays give equal files (a rerun after an
    interruption rewrites finished cases byte for byte)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def load_probs(path: str | Path) -> dict:
    """Read a probability file: ``prob`` as float32, the grids as arrays, ``image`` as str."""
    with np.load(path) as z:
        return {"prob": z["prob"].astype(np.float32), "affine": z["affine"], "orig_affine": z["orig_affine"],
                "orig_shape": tuple(int(s) for s in z["orig_shape"]), "image": str(z["image"])}


def save_labels(path: str | Path, labels: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None) -> Path:
    """Write a uint8 label map as NIfTI (with ``header``'s fields when given), atomically."""
    img = nib.Nifti1Image(labels.astype(np.uint8), affine, header=header.copy() if header is not None else None)
    img.set_data_dtype(np.uint8)
    img.header.set_intent("none")  # a 4-D image's header says "vector"; a label map is not one
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)  # no time stamp: equal results give equal files
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
