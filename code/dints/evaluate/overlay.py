"""Overlays of a case: three orthogonal slices through the largest foreground component, the image in grey with the
reference and the predicted contours in two colours, on the original image's grid.

Every volume is first turned to its closest canonical orientation (RAS: nibabel's ``as_closest_canonical``, which only
permutes and flips axes), so a case looks the same whatever its file's axis order or flips, and each slice is shown
with the anatomical direction up (anterior or superior) and in physical proportions (voxel sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import nibabel as nib
import numpy as np
from scipy import ndimage

matplotlib.use("Agg")  # draw to files only
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dints.io import atomic_write  # noqa: E402

#: RGB of the reference contour, the predicted contour, and where they coincide.
TRUTH, PRED, BOTH = (0, 200, 0), (230, 30, 30), (250, 220, 0)
#: The three views: (name, the axis the slice is taken across, the axes shown as (rows, columns)).
VIEWS = (("axial", 2, (1, 0)), ("coronal", 1, (2, 0)), ("sagittal", 0, (2, 1)))


def canonical(img: nib.Nifti1Image, channel: int = 0) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The image's data in its closest canonical (RAS) orientation, and its voxel sizes there.

    Args:
        img: a 3-D image or label map, or a 4-D image (channels last).
        channel: the channel of a 4-D image.

    Returns:
        ``(array (X, Y, Z), (sx, sy, sz))``, X increasing to the right, Y anterior, Z superior.
    """
    if len(img.shape) == 4:
        img = img.slicer[..., channel]
    can = nib.as_closest_canonical(img)
    return np.asanyarray(can.dataobj), tuple(float(z) for z in can.header.get_zooms()[:3])


def focus(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int, int]:
    """The voxel the three slices pass through: the centre of mass of the reference's largest foreground component
    (26-connected), else of the prediction's, else the volume's centre."""
    for labels in (truth, pred):
        comp, n = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), bool))
        if n:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            centre = ndimage.center_of_mass(comp == sizes.argmax())
            return tuple(int(round(c)) for c in centre)
    return tuple(s // 2 for s in truth.shape)


def contour(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a 2-D mask: mask pixels with a 4-neighbour outside it (or at the border)."""
    mask = mask.astype(bool)
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def _grey(slice2d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = np.clip((slice2d.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat((v * 255).astype(np.uint8)[..., None], 3, axis=-1)


def view(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, at: Sequence[int], axis: int,
         shown: tuple[int, int], window: tuple[float, float]) -> np.ndarray:
    """One slice as an RGB array: the image in grey, the reference's and the prediction's foreground contours.

    The slice is taken across ``axis`` at ``at[axis]``; rows are axis ``shown[0]`` and columns ``shown[1]``, with
    the row axis flipped so that its positive (anterior or superior) direction is up.

    Returns:
        uint8 ``(rows, columns, 3)``.
    """
    index = [slice(None)] * 3
    index[axis] = int(np.clip(at[axis], 0, image.shape[axis] - 1))
    order = tuple(shown)  # the two remaining axes, relabelled 0 and 1 after the slice removes ``axis``
    rel = [a - (a > axis) for a in order]

    def take(vol):
        return np.flipud(vol[tuple(index)].transpose(rel))

    rgb = _grey(take(image), *window)
    t, p = contour(take(truth) > 0), contour(take(pred) > 0)
    rgb[t & ~p], rgb[p & ~t], rgb[t & p] = TRUTH, PRED, BOTH
    return rgb


@dataclass
class Overlay:
    """The three views of a case and their pixel sizes (row, column), in mm."""

    views: dict[str, np.ndarray]
    spacing: dict[str, tuple[float, float]]
    focus: tuple[int, int, int]


def overlay(image_path: str | Path, truth_path: str | Path, pred_path: str | Path, channel: int = 0) -> Overlay:
    """The three views of a case from its files (original image, reference labels, predicted labels, all on the
    original grid).

    Raises:
        ValueError: the three do not share one grid.
    """
    image, spacing = canonical(nib.load(str(image_path)), channel)
    truth, _ = canonical(nib.load(str(truth_path)))
    pred, _ = canonical(nib.load(str(pred_path)))
    if not image.shape == truth.shape == pred.shape:
        raise ValueError(f"{image_path}, {truth_path} and {pred_path} lie on different grids "
                         f"({image.shape}, {truth.shape}, {pred.shape})")
    at = focus(truth, pred)
    finite = image[np.isfinite(image)]
    window = tuple(np.percentile(finite, (1, 99))) if finite.size else (0.0, 1.0)
    views = {name: view(image, truth, pred, at, axis, shown, window) for name, axis, shown in VIEWS}
    pixel = {name: (spacing[shown[0]], spacing[shown[1]]) for name, _, shown in VIEWS}
    return Overlay(views, pixel, at)


def save_overlay(ov: Overlay, path: str | Path, title: str = "") -> Path:
    """Draw the three views side by side, in physical proportions, with a legend, into a PNG."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    for ax, (name, rgb) in zip(axes, ov.views.items()):
        rows_mm, cols_mm = ov.spacing[name]
        ax.imshow(rgb, aspect=rows_mm / cols_mm, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.legend(handles=[Patch(color=np.array(c) / 255, label=t) for c, t in
                        ((TRUTH, "reference"), (PRED, "prediction"), (BOTH, "both"))],
               loc="lower center", ncol=3, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
    return out
