"""Transform pipelines and loaders on the demo task: shapes, dtypes, value ranges, determinism, resume."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from config import load_config, resolve_task
from dints.data.loader import ResumableSampler, train_loader, val_loader
from dints.data.splits import make_folds, search_halves
from dints.data.transforms import preprocess, train_transforms, val_transforms
from dints.run.settings import DataSettings


@pytest.fixture()
def setup(demo_root, tiny_args):
    def make(*extra):
        cfg, task = resolve_task(load_config(tiny_args(*extra), "search"))
        folds = make_folds(task.case_ids, cfg.num_folds, cfg.seed)
        return DataSettings.from_options(cfg), task, folds

    return make


def test_fold0_training_crops_have_patch_size(setup):
    cfg, task, folds = setup()
    w, _ = search_halves(folds[0]["train"], cfg.seed)
    loader = train_loader(cfg, task, w)
    seen = torch.zeros(3)
    for _ in range(6):
        b = next(loader)
        assert b["image"].shape == (cfg.batch_size, 1, 32, 32, 32)
        assert b["label"].shape == (cfg.batch_size, 1, 32, 32, 32)
        assert b["image"].dtype == torch.float32 and b["label"].dtype == torch.float32
        assert not isinstance(b["image"], MetaTensor)  # plain tensors into the network
        assert torch.isfinite(b["image"]).all()
        vals = b["label"].unique()
        assert set(vals.tolist()) <= {0.0, 1.0, 2.0}
        for k in range(3):
            seen[k] += (b["label"] == k).any(dim=(1, 2, 3, 4)).sum()
    # class-balanced sampling: crops are centred on each class alike, so the small lesion class is in most crops
    assert seen[2] >= 0.5 * 12, seen


def test_preprocessing_resamples_reorients_and_normalises(setup, demo_root):
    cfg, task, _ = setup()
    case = task.training[0]
    out = Compose(preprocess(cfg))({"image": str(case["image"]), "label": str(case["label"])})
    img, lbl = out["image"], out["label"]
    assert img.dtype == torch.float32 and lbl.dtype == torch.uint8
    assert np.allclose(nib.affines.voxel_sizes(img.affine.numpy()), 2.0)
    assert nib.aff2axcodes(img.affine.numpy()) == ("R", "A", "S")
    orig = nib.load(str(case["image"]))
    extent = np.array(orig.shape) * np.array(orig.header.get_zooms())
    # 2 mm grid covering the original extent, then padded to the patch size
    assert all(abs(s - max(e / 2.0, 32)) <= 2 for s, e in zip(img.shape[1:], extent)), (img.shape, extent)
    body = img[0][img[0] != 0]
    assert abs(float(img.mean())) < 0.2 and 0.7 < float(img.std()) < 1.3  # z-score (padding adds zeros)
    assert set(lbl.unique().tolist()) == {0, 1, 2}
    # nearest-neighbour labels: the organ keeps about its physical volume
    vox = np.prod(orig.header.get_zooms())
    orig_lbl = np.asarray(nib.load(str(case["label"])).dataobj)
    assert abs((lbl == 1).sum().item() * 8.0 / ((orig_lbl == 1).sum() * vox) - 1) < 0.15
    assert body.numel() > 0


def test_ct_window_maps_to_unit_range(setup):
    cfg, task, _ = setup("--intensity", "ct", "--ct_window", "-100", "200")
    case = task.training[1]
    img = Compose(preprocess(cfg))({"image": str(case["image"]), "label": str(case["label"])})["image"]
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img.max()) == pytest.approx(1.0)  # lesions (~260 HU) clip at the top of the window


def test_native_spacing_keeps_voxel_size(setup):
    cfg, task, _ = setup("--spacing", "native")
    case = task.training[0]
    img = Compose(preprocess(cfg))({"image": str(case["image"]), "label": str(case["label"])})["image"]
    orig = nib.load(str(case["image"]))
    assert np.allclose(sorted(nib.affines.voxel_sizes(img.affine.numpy())), sorted(orig.header.get_zooms()), atol=1e-4)


def test_loader_is_deterministic_and_resumes_exactly(setup):
    cfg, task, folds = setup()
    ids = folds[0]["train"][:4]
    a = train_loader(cfg, task, ids)
    stream = [next(a)["image"] for _ in range(7)]  # crosses epoch boundaries (2 batches per epoch)
    b = train_loader(cfg, task, ids)
    for _ in range(3):
        next(b)
    state = b.state_dict()
    c = train_loader(cfg, task, ids)
    c.load_state_dict(state)
    for i in range(3, 7):
        assert torch.equal(next(c)["image"], stream[i]), i
    assert not torch.equal(stream[0], stream[2])  # augmentation differs between epochs


def test_resumable_sampler_shards_and_offsets():
    s0, s1 = ResumableSampler(7, seed=1, rank=0, world_size=2), ResumableSampler(7, seed=1, rank=1, world_size=2)
    i0, i1 = s0.indices(0), s1.indices(0)
    assert len(i0) == len(i1) == 4 and set(i0) | set(i1) == set(range(7))
    s0.offset = 3
    assert list(s0) == i0[3:] and len(s0) == 1
    assert s0.indices(1) != i0 or s0.indices(2) != i0  # reshuffled per epoch


def test_validation_volumes(setup):
    cfg, task, folds = setup()
    vl = val_loader(cfg, task, folds[0]["val"])
    batches = list(vl)
    assert len(batches) == len(folds[0]["val"])
    for b in batches:
        assert b["image"].shape[:2] == (1, 1) and b["label"].shape == b["image"].shape
        assert all(s >= 32 for s in b["image"].shape[2:])


def test_val_transforms_label_float(setup):
    cfg, task, _ = setup()
    case = task.training[2]
    out = val_transforms(cfg)({"image": str(case["image"]), "label": str(case["label"])})
    assert out["label"].dtype == torch.float32 and out["image"].shape == out["label"].shape


def test_train_transforms_split_cached_and_random(setup):
    cfg, _, _ = setup()
    cached, rand = train_transforms(cfg)
    from monai.transforms import Randomizable

    assert not any(isinstance(t, Randomizable) for t in cached.transforms)
    assert isinstance(rand.transforms[0], Randomizable)
