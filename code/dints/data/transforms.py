"""MONAI transform pipelines: preprocessing (cached), training augmentation, validation and inference.

Preprocessing (deterministic, so cacheable): load, channel first, reorient to RAS, resample to the target
spacing, normalise intensities, pad to the patch size, cast. Training adds class-balanced crops around the
labels and augmentation. Inference keeps the processing grid's affine, with which predictions are resampled back
to the original image's grid (:mod:`dints.evaluate.resample`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.transforms import (
    CastToTyped,
    ClassesToIndicesd,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImage,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandZoomd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from dints.errors import DataError
from dints.run.settings import DataSettings

IMAGE, LABEL = "image", "label"
#: Largest random rotation about each axis (radians), as in the authors' training transforms.
ROTATE_RAD = 0.3
#: Cap on the voxel indices kept per class for crop sampling (bounds cache memory on large CT volumes).
MAX_INDICES_PER_CLASS = 20000


class ReadImaged(MapTransform):
    """``LoadImaged`` one key at a time, so that a file that cannot be read (truncated, corrupt) is named in one
    line instead of surfacing as a decompression error deep in a DataLoader. A list of files (an nnU-Net case's
    channel files) is stacked as channels; the file that cannot be read, or that holds NaN or infinite voxels, is the
    one named."""

    def __init__(self, keys: Sequence[str]):
        super().__init__(keys)
        self._load = {k: LoadImaged(k, image_only=True) for k in self.keys}

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            source = d[key]
            try:
                d = self._load[key](d)
            except Exception as exc:
                named, exc = _unreadable(source, exc)
                words = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise DataError(f"{named}: cannot be read as an image ({exc.__class__.__name__}: {words})") from None
            if isinstance(source, (list, tuple)):  # one file per channel: name the channel at fault
                for path, channel in zip(source, d[key]):
                    _require_finite(channel, path)
        return d


def _unreadable(source, exc: Exception) -> tuple[object, Exception]:
    """The file of ``source`` (one, or a list of channel files) that cannot be read, with its error."""
    if not isinstance(source, (list, tuple)):
        return source, exc
    for path in source:
        try:
            LoadImage(image_only=True)(path)
        except Exception as one:
            return path, one
    return ", ".join(map(str, source)), exc


def _require_finite(img, name) -> None:
    bad = ~torch.isfinite(torch.as_tensor(img))
    if bool(bad.any()):
        raise DataError(f"{name}: {int(bad.sum())} voxel(s) are NaN or infinite; replace them (for example "
                        "with the background intensity) before using the image")


class RequireFinited(MapTransform):
    """Refuse an image holding NaN or infinite voxels, naming its file: normalisation would spread them over the
    whole volume, and the network would learn or predict nothing from it. (Constant and all-zero images are fine:
    normalisation maps them to zeros.)"""

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            _require_finite(img, getattr(img, "meta", {}).get("filename_or_obj", key))
        return d


def _normalise(data: DataSettings) -> list:
    if data.intensity == "ct":
        lo, hi = data.ct_window
        return [ScaleIntensityRanged(IMAGE, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)]
    return [NormalizeIntensityd(IMAGE, nonzero=data.intensity == "zscore_nonzero", channel_wise=True)]


def preprocess(data: DataSettings, keys: Sequence[str] = (IMAGE, LABEL)) -> list:
    """Deterministic preprocessing of ``keys`` (``image`` and optionally ``label``). An image with NaN or infinite
    voxels is refused (:class:`RequireFinited`).

    Returns:
        A list of transforms producing float32 ``image`` (C, X, Y, Z) in RAS at ``data.spacing`` (or native
        spacing when it is None), normalised, padded to at least ``data.patch_size``; ``label`` (1, X, Y, Z)
        uint8 on the same grid.
    """
    keys = list(keys)
    has_label = LABEL in keys
    xs: list = [
        ReadImaged(keys),
        RequireFinited(IMAGE),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if data.spacing is not None:
        modes = ["bilinear" if k == IMAGE else "nearest" for k in keys]
        xs.append(Spacingd(keys, pixdim=tuple(data.spacing), mode=modes))
    xs += _normalise(data)
    xs.append(SpatialPadd(keys, spatial_size=tuple(data.patch_size), mode="constant"))
    xs.append(CastToTyped(IMAGE, dtype=torch.float32))
    if has_label:
        xs.append(CastToTyped(LABEL, dtype=torch.uint8))
    return xs


def train_transforms(data: DataSettings) -> tuple[Compose, Compose]:
    """Training pipeline split into its cacheable part and its random part.

    Returns:
        ``(cached, random)``. ``cached`` ends with per-class voxel indices; ``random`` draws ``data.num_samples``
        class-balanced crops of ``data.patch_size`` and augments them as the DiNTS authors do: rotation up to
        0.3 rad about each axis (p 0.2), zoom 0.8-1.2 (p 0.16), Gaussian smoothing with sigma 0.5-1.15 (p 0.15),
        intensity scale by up to 30% (p 0.5) and shift by up to 0.1 (p 0.5), Gaussian noise with std 0.01
        (p 0.15), and a flip along each axis (p 0.5). Each crop: image float32 (C, *patch), label float32
        (1, *patch) with integer class values.
    """
    n = data.num_classes
    cached = preprocess(data) + [
        ClassesToIndicesd(LABEL, num_classes=n, max_samples_per_class=MAX_INDICES_PER_CLASS),
    ]
    patch = tuple(data.patch_size)
    # Magnitudes and probabilities of the DiNTS authors' training transforms (MONAI's DiNTS tutorial,
    # search_dints.py / train_dints.py), in their order.
    rand = [
        RandCropByLabelClassesd(
            [IMAGE, LABEL], label_key=LABEL, spatial_size=patch, ratios=[1] * n, num_classes=n,
            num_samples=data.num_samples, indices_key=f"{LABEL}_cls_indices", warn=False,
        ),
        RandRotated([IMAGE, LABEL], range_x=ROTATE_RAD, range_y=ROTATE_RAD, range_z=ROTATE_RAD, prob=0.2,
                    mode=["bilinear", "nearest"], padding_mode="zeros", keep_size=True),
        RandZoomd([IMAGE, LABEL], prob=0.16, min_zoom=0.8, max_zoom=1.2, mode=["trilinear", "nearest"],
                  align_corners=[True, None], keep_size=True),
        RandGaussianSmoothd(IMAGE, prob=0.15, sigma_x=(0.5, 1.15), sigma_y=(0.5, 1.15), sigma_z=(0.5, 1.15)),
        RandScaleIntensityd(IMAGE, factors=0.3, prob=0.5),
        RandShiftIntensityd(IMAGE, offsets=0.1, prob=0.5),
        RandGaussianNoised(IMAGE, prob=0.15, std=0.01),
        RandFlipd([IMAGE, LABEL], prob=0.5, spatial_axis=0),
        RandFlipd([IMAGE, LABEL], prob=0.5, spatial_axis=1),
        RandFlipd([IMAGE, LABEL], prob=0.5, spatial_axis=2),
        CastToTyped([IMAGE, LABEL], dtype=torch.float32),
        EnsureTyped([IMAGE, LABEL], track_meta=False),
    ]
    return Compose(cached), Compose(rand)


def val_transforms(data: DataSettings) -> Compose:
    """Validation pipeline: preprocessing of image and label, whole volumes (sliding-window inference)."""
    return Compose(preprocess(data) + [CastToTyped(LABEL, dtype=torch.float32)])


def infer_transforms(data: DataSettings) -> Compose:
    """Inference pipeline for images without labels.

    The output ``image`` is a MetaTensor whose ``affine`` is the processing grid's voxel-to-world affine: with the
    original image's affine, :func:`dints.evaluate.resample.resample_probabilities` maps predictions back.
    """
    return Compose(preprocess(data, keys=(IMAGE,)))

