"""The plan's rules for the voxel size and the intensity normalisation, read off a dataset's fingerprint
(:mod:`dints.data.fingerprint`; docs/method.md, "The plan").

Each rule returns its value and one line saying the rule and the figures it came from, which ``plan.yaml`` keeps
as the value's comment.

- Voxel size: 1 mm on every axis, the paper's choice for the MSD tasks; a dataset whose median voxel size is
  already 1 mm on every axis (within :data:`NATIVE_TOLERANCE`) keeps each image's own (``native``: nothing to
  resample). One exception, nnU-Net's anisotropy rule: a coarse axis, whose median spacing is more than
  :data:`ANISOTROPY` times the others', and which at 1 mm would still hold under 1/:data:`ANISOTROPY` of the voxels
  of each other axis (a thin stack of thick slices), keeps the 10th percentile of its spacings (at least 1 mm):
  resampling it to 1 mm would invent most of its slices.
- Intensity: ``ct`` when every channel is CT, its window the pooled foreground's 0.5 and 99.5 percentiles (lowest
  and highest over the channels); else ``zscore_nonzero`` when cropping the median image to its non-zero region
  keeps under :data:`NONZERO_CROP` of it (nnU-Net's rule: a scan surrounded by zeros, e.g. a skull-stripped brain);
  else ``zscore``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: The target voxel size in mm (the paper's for the MSD tasks).
TARGET_MM = 1.0
#: A median voxel size within this fraction of 1 mm on every axis is kept as it is (native).
NATIVE_TOLERANCE = 0.05
#: nnU-Net's anisotropy threshold: a coarse axis more than 3x the others' spacing with under a third of their voxels.
ANISOTROPY = 3.0
#: The percentile of the coarse axis's spacings it keeps.
COARSE_PERCENTILE = 10
#: nnU-Net's threshold for z-scoring over the non-zero voxels: the non-zero region keeps under 75% of the image.
NONZERO_CROP = 0.75


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def plan_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> tuple[list[float] | None, str]:
    """The target voxel size from every training case's spacing and shape (mm and voxels, RAS order).

    Returns:
        ``(spacing, why)``: ``None`` for native, else three sizes in mm; the rule and figures as one line.
    """
    sp = np.asarray(spacings, dtype=np.float64)
    med = np.median(sp, axis=0)
    extent = np.median(np.asarray(shapes, dtype=np.float64) * sp, axis=0)  # mm
    if np.all(np.abs(med - TARGET_MM) <= NATIVE_TOLERANCE * TARGET_MM):
        return None, (f"median voxel size {_fmt(med)} mm is {TARGET_MM:g} mm on every axis (within "
                      f"{NATIVE_TOLERANCE:.0%}): native, nothing to resample")
    target = [TARGET_MM] * 3
    worst = int(np.argmax(med))
    others = [k for k in range(3) if k != worst]
    coarse = med[worst] > ANISOTROPY * med[others].max()
    thin = extent[worst] / TARGET_MM * ANISOTROPY < extent[others].min() / TARGET_MM
    if coarse and thin:
        kept = max(float(np.percentile(sp[:, worst], COARSE_PERCENTILE)), TARGET_MM)
        target[worst] = round(kept, 4)
        return target, (f"median voxel size {_fmt(med)} mm: {TARGET_MM:g} mm, but axis {worst} is coarse (over "
                        f"{ANISOTROPY:g}x the others) and thin ({extent[worst]:.0f} mm against {extent[others].min():.0f}"
                        f" mm, under 1/{ANISOTROPY:g}): it keeps the {COARSE_PERCENTILE}th percentile of its spacings, "
                        f"{kept:.3g} mm (nnU-Net's anisotropy rule)")
    return target, (f"median voxel size {_fmt(med)} mm: resampled to {TARGET_MM:g} mm on every axis (the paper's "
                    f"choice; no axis both over {ANISOTROPY:g}x the others' spacing and under 1/{ANISOTROPY:g} of their "
                    "extent)")


def plan_intensity(channels: dict[str, str], intensity: dict[str, dict[str, Any]],
                   nonzero_ratio: float | None) -> tuple[str, list[float] | None, str]:
    """The intensity normalisation from the channel names, the foreground statistics and the median non-zero ratio.

    Args:
        channels: channel index -> name (dataset.json's ``modality`` or ``channel_names``).
        intensity: the fingerprint's per-channel statistics (``percentile_00_5``, ``percentile_99_5``, ``samples``).
        nonzero_ratio: the median over cases of the non-zero region's share of the image.

    Returns:
        ``(intensity, ct_window, why)``: ``ct_window`` only for ``ct`` (else None).
    """
    names = [str(n) for n in channels.values()]
    if names and all(n.strip().upper() == "CT" for n in names):
        stats = [intensity[str(c)] for c in channels if intensity.get(str(c), {}).get("samples")]
        if stats:
            lo = min(s["percentile_00_5"] for s in stats)
            hi = max(s["percentile_99_5"] for s in stats)
            if hi > lo:
                window = [round(float(lo), 1), round(float(hi), 1)]
                return "ct", window, (f"every channel is CT: window = the foreground's 0.5 and 99.5 percentiles, "
                                      f"{window[0]:g} to {window[1]:g}")
        return "ct", None, "every channel is CT; no foreground voxel to take a window from: the default window"
    what = "not every channel is CT" if names else "no channel names"
    if nonzero_ratio is not None and nonzero_ratio < NONZERO_CROP:
        return "zscore_nonzero", None, (f"{what}; the non-zero region is {nonzero_ratio:.0%} of the median image "
                                        f"(under {NONZERO_CROP:.0%}): z-score over the non-zero voxels")
    share = "unknown" if nonzero_ratio is None else f"{nonzero_ratio:.0%}"
    return "zscore", None, (f"{what}; the non-zero region is {share} of the median image (not under "
                            f"{NONZERO_CROP:.0%}): z-score over every voxel")


def resampled_shape(shape: Sequence[float], spacing: Sequence[float], target: Sequence[float] | None) -> list[int]:
    """A shape in voxels of ``spacing`` mm, resampled to ``target`` mm (``None``: native, unchanged)."""
    if target is None:
        return [int(round(s)) for s in shape]
    return [max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target)]
