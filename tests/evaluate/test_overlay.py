"""Overlay geometry (dints.evaluate.overlay), hand-worked: the slices' focus, contour pixels, and a case that looks the
same whether its file is stored flipped, permuted or oblique."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from dints.evaluate import overlay


def test_the_slices_pass_through_the_largest_component():
    truth = np.zeros((20, 20, 10), np.uint8)
    truth[2:5, 2:5, 2:5] = 1  # 27 voxels
    truth[10:16, 8:14, 3:9] = 2  # 216 voxels, centre (12.5, 10.5, 5.5)
    assert overlay.focus(truth, np.zeros_like(truth)) == (12, 10, 6)  # (12.5, 10.5, 5.5), rounded half to even
    # No reference foreground: the prediction's largest component; neither: the centre.
    pred = np.zeros_like(truth)
    pred[0:2, 0:2, 0:2] = 1
    assert overlay.focus(np.zeros_like(truth), pred) == (0, 0, 0)
    assert overlay.focus(np.zeros_like(truth), np.zeros_like(truth)) == (10, 10, 5)


def test_contour_is_the_inner_boundary():
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    ring = overlay.contour(mask)
    want = mask.copy()
    want[3:6, 3:6] = False
    assert np.array_equal(ring, want) and ring.sum() == 16
    edge = np.zeros((4, 4), bool)
    edge[:, :2] = True  # touching the border: border pixels count as boundary
    assert overlay.contour(edge)[:, 0].all()


def _case(tmp_path, name, affine, image, truth, pred):
    paths = []
    for kind, data in (("img", image), ("lab", truth), ("pred", pred)):
        paths.append(tmp_path / f"{name}_{kind}.nii.gz")
        nib.save(nib.Nifti1Image(data, affine), paths[-1])
    return paths


def test_a_flipped_permuted_or_oblique_file_gives_the_same_overlay(tmp_path):
    rng = np.random.default_rng(0)
    shape, spacing = (24, 20, 12), (0.8, 1.0, 2.5)
    image = rng.normal(100, 10, shape).astype(np.float32)
    truth = np.zeros(shape, np.uint8)
    truth[6:14, 4:9, 3:8] = 1  # off-centre and asymmetric: a wrong flip or swap would move it
    pred = np.roll(truth, 2, axis=0)
    ras = np.diag([*spacing, 1.0])
    ref = overlay.overlay(*_case(tmp_path, "ras", ras, image, truth, pred))
    # The same voxels stored flipped along x and with y and z swapped (the affine says where each one is).
    flip = np.array([[-1, 0, 0, shape[0] - 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    stored = lambda a: np.flip(a, 0).transpose(0, 2, 1)  # noqa: E731
    lps = ras @ np.linalg.inv(flip)
    other = overlay.overlay(*_case(tmp_path, "lps", lps, stored(image), stored(truth), stored(pred)))
    assert other.focus == ref.focus
    for name in ref.views:
        assert np.array_equal(other.views[name], ref.views[name]), name
        assert other.spacing[name] == ref.spacing[name]
    # Slightly oblique (8 degrees about z): the closest canonical axes are the same, so is the overlay.
    c, s = np.cos(np.radians(8)), np.sin(np.radians(8))
    rot = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    oblique = overlay.overlay(*_case(tmp_path, "obl", rot @ ras, image, truth, pred))
    for name in ref.views:
        assert np.array_equal(oblique.views[name], ref.views[name]), name
    # The reference is drawn in its colour where only it lies, the prediction in its own.
    ax = ref.views["axial"]
    assert (ax == overlay.TRUTH).all(-1).any() and (ax == overlay.PRED).all(-1).any()
    assert ax.shape == (shape[1], shape[0], 3)  # rows: y (anterior up), columns: x


def test_the_rows_put_anterior_and_superior_up(tmp_path):
    shape = (10, 12, 8)
    image = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.uint8)
    truth[4:7, 8:11, 5:7] = 1  # anterior (high y) and superior (high z)
    ov = overlay.overlay(*_case(tmp_path, "up", np.eye(4), image, truth, truth))
    axial = (ov.views["axial"] != 0).any(-1)  # contour pixels (the image is black)
    rows = np.nonzero(axial.any(1))[0]
    assert rows.max() < shape[1] // 2  # high y is drawn in the upper half
    coronal = (ov.views["coronal"] != 0).any(-1)
    assert np.nonzero(coronal.any(1))[0].max() < shape[2] // 2  # high z in the upper half
