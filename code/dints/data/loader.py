"""Datasets and loaders: cached preprocessing, seeded augmentation, a resumable endless iterator.

Augmentation of item ``i`` in epoch ``e`` is seeded from ``(seed, e, i)``, and the sampler's order from
``(seed, e)``: a run's data stream is a pure function of the seed, whatever the number of workers, and resuming
at ``(epoch, position)`` reproduces it without re-reading the skipped batches.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset, list_data_collate
from monai.transforms import Compose
from torch.utils.data import DataLoader, Sampler

from dints.data.msd import image_source
from dints.data.transforms import train_transforms, val_transforms
from dints.run import dist, layout
from dints.run.settings import PREPROCESSING_KEYS, DataSettings

#: What a disk-cached volume depends on: the preprocessing, and the channel and class counts (per-class indices).
CACHE_KEYS = (*PREPROCESSING_KEYS, "num_classes", "in_channels")


def cache_dir(data: DataSettings) -> Path:
    """Disk-cache folder of a task, keyed by the options that change preprocessing."""
    key = json.dumps({k: getattr(data, k) for k in CACHE_KEYS}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return layout.task_dir(data.work_root, data.task) / layout.CACHE / digest


def cached_dataset(items: list[dict], transform: Compose, data: DataSettings, workers: int | None = None):
    """Wrap ``items`` in the dataset type ``data.cache`` asks for (none, memory or disk)."""
    workers = data.num_workers if workers is None else workers
    if data.cache == "memory":
        return CacheDataset(items, transform, cache_rate=data.cache_rate, num_workers=max(workers, 1),
                            progress=dist.info().is_main, copy_cache=False)
    if data.cache == "disk":
        return PersistentDataset(items, transform, cache_dir=cache_dir(data))
    return Dataset(items, transform)


class SeededAugmentDataset(torch.utils.data.Dataset):
    """Applies a random Compose to the items of a (cached) dataset, seeded per ``(seed, epoch, index)``.

    Args:
        base: dataset returning preprocessed items (dicts).
        augment: random transforms; they receive a deep copy, so the cache is never modified.
        seed: run seed.
    """

    def __init__(self, base, augment: Compose, seed: int):
        self.base, self.augment, self.seed, self.epoch = base, augment, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        rs = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0]
        self.augment.set_random_state(seed=int(rs))
        return self.augment(copy.deepcopy(self.base[index]))


class ResumableSampler(Sampler[int]):
    """Shuffled, rank-sharded indices, seeded per epoch, that can start part-way through an epoch.

    Like ``DistributedSampler`` (indices padded to a multiple of the world size, each rank every world-th
    index) but with an explicit start ``offset`` for resuming.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.length, self.seed, self.rank, self.world = length, seed, rank, world_size
        self.shuffle, self.epoch, self.offset = shuffle, 0, 0

    def indices(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch`` (without the offset)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        per_rank = -(-self.length // self.world)
        order += order[: per_rank * self.world - len(order)]
        return order[self.rank :: self.world]

    def __len__(self) -> int:
        return -(-self.length // self.world) - self.offset

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices(self.epoch)[self.offset :])


class InfiniteLoader:
    """One persistent iterator over a DataLoader that restarts when exhausted (never ``next(iter(loader))``).

    ``state_dict()`` gives ``{"epoch", "position"}`` (batches consumed in the current epoch); a loader made with
    the same arguments and ``load_state_dict`` continues with exactly the batches that would have come next.
    """

    def __init__(self, dataset: SeededAugmentDataset, batch_size: int, seed: int, num_workers: int = 0):
        d = dist.info()
        self.dataset = dataset
        self.sampler = ResumableSampler(len(dataset), seed, d.rank, d.world_size)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.epoch, self.position = 0, 0
        self._it: Iterator | None = None

    def _start(self) -> None:
        self.dataset.epoch = self.sampler.epoch = self.epoch
        self.sampler.offset = self.position * self.batch_size
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=self.sampler,
                            num_workers=self.num_workers, collate_fn=list_data_collate,
                            persistent_workers=False,
                            # equal batches; a rank holding fewer cases than a batch keeps its short batch
                            drop_last=len(self.sampler.indices(0)) >= self.batch_size)
        self._it = iter(loader)

    def __iter__(self) -> "InfiniteLoader":
        return self

    def __next__(self):
        if self._it is None:
            self._start()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start()
            batch = next(self._it)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands: epoch and batches consumed in it."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` (takes effect at the next batch)."""
        self.epoch, self.position, self._it = int(state["epoch"]), int(state["position"]), None


def _items(task, ids: Sequence[str]) -> list[dict]:
    return [{"image": image_source(task.case(i)), "label": str(task.case(i)["label"])} for i in ids]


def train_loader(data: DataSettings, task, ids: Sequence[str], seed_offset: int = 0) -> InfiniteLoader:
    """Endless loader of augmented training crops of the cases ``ids``.

    Each batch: ``image`` float32 (batch_size * num_samples, C, *patch), ``label`` float32 (same, 1 channel).
    """
    cached, rand = train_transforms(data)
    base = cached_dataset(_items(task, ids), cached, data)
    ds = SeededAugmentDataset(base, rand, data.seed + seed_offset)
    return InfiniteLoader(ds, data.batch_size, data.seed + seed_offset, data.num_workers)


def val_loader(data: DataSettings, task, ids: Sequence[str]) -> DataLoader:
    """Loader of whole preprocessed validation volumes (batch 1), sharded by rank."""
    d = dist.info()
    items = _items(task, list(ids)[d.rank :: d.world_size])
    ds = cached_dataset(items, val_transforms(data), data)
    return DataLoader(ds, batch_size=1, shuffle=False, num_workers=data.num_workers)
