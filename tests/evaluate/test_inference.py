"""Whole-image inference: flip test-time augmentation and the probability files."""

from __future__ import annotations

import numpy as np
import torch

from config import load_config
from dints.data.msd import load_task
from dints.data.transforms import infer_transforms
from dints.evaluate.inference import load_probs, predict_case, predict_volume, save_probs
from dints.run.settings import DataSettings, InferSettings


class Lopsided(torch.nn.Module):
    """A fixed model that is not flip-symmetric (so flips change its output)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 3, padding=1)
        torch.manual_seed(0)
        torch.nn.init.normal_(self.conv.weight)

    def forward(self, x):
        ramp = torch.linspace(0, 1, x.shape[2]).view(1, 1, -1, 1, 1)
        return self.conv(x) + ramp


def test_flip_tta_averages_the_four_passes(demo_root, tiny_args):
    cfg = load_config(tiny_args(), "test")
    task = load_task(demo_root, "Task99_Demo")
    net = Lopsided().eval()
    image = task.test[0]["image"]
    transform = infer_transforms(DataSettings.from_options(cfg, in_channels=1, num_classes=3))
    plain_settings = InferSettings.from_options(cfg, tta=False)
    plain, affine = predict_case(net, image, transform, plain_settings, torch.device("cpu"))
    tta, affine2 = predict_case(net, image, transform, InferSettings.from_options(cfg, tta=True), torch.device("cpu"))
    x = transform({"image": str(image)})["image"].as_tensor()[None]
    expect = predict_volume(net, x, plain_settings)
    for axis in (2, 3, 4):  # independent: flip the input, predict, flip back
        expect += predict_volume(net, x.flip(axis), plain_settings).flip(axis)
    expect = (expect / 4)[0].numpy()
    assert np.allclose(tta, expect, atol=1e-5) and not np.allclose(plain, tta, atol=1e-3)
    assert np.allclose(tta.sum(0), 1.0, atol=1e-5) and np.array_equal(affine, affine2)


def test_probability_file_roundtrip(demo_root, tmp_path):
    task = load_task(demo_root, "Task99_Demo")
    image = task.test[0]["image"]
    prob = np.random.default_rng(0).dirichlet([1, 1, 1], size=(4, 5, 6)).transpose(3, 0, 1, 2)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    save_probs(tmp_path / "c.npz", prob, aff, image)
    back = load_probs(tmp_path / "c.npz")
    import nibabel as nib

    orig = nib.load(str(image))
    assert np.allclose(back["prob"], prob, atol=1e-3)  # float16 storage
    assert np.array_equal(back["affine"], aff) and np.allclose(back["orig_affine"], orig.affine)
    assert back["orig_shape"] == orig.shape and back["image"] == str(image)
