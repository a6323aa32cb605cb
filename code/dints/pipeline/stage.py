"""What every stage does first: processes, logging, the task's data checks, splits and the run folder."""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dints.data.msd import Task, check_headers, check_labels, volume_shapes
from dints.data.splits import load_or_create_splits
from dints.errors import ConfigError
from dints.io import write_json
from dints.run import dist, layout, lock
from dints.run.runlog import setup_logging
from dints.space.sizes import input_divisor


def resolve_device(device: str) -> torch.device:
    """The compute device from ``--device`` (auto: CUDA when available), one GPU per local rank."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    idx = dist.info().local_rank % torch.cuda.device_count()
    torch.cuda.set_device(idx)
    return torch.device("cuda", idx)


def init_processes(device: str) -> dist.DistInfo:
    """Join the process group of the launcher, if any (NCCL when this run will use CUDA, else gloo)."""
    return dist.init("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass
class StageContext:
    """What a stage needs after preparation: the validated task, this fold's cases, the run folder, device, log."""

    task: Task
    train_ids: list[str]
    val_ids: list[str]
    run_dir: Path
    device: torch.device
    logger: logging.Logger
    record: dict[str, Any]
    stage: str

    def record_config(self) -> None:
        """Write ``config_<stage>.json`` (rank 0): once the stage's checks have passed, so that a refused run never
        overwrites the record of the run that made the folder's results."""
        if dist.info().is_main:
            write_record(self.run_dir / layout.config_record(self.stage), self.record)
        dist.barrier()


def write_record(path: Path, config: dict[str, Any], **extra: Any) -> Path:
    """Write a stage's record: its resolved configuration, the software environment and ``extra`` facts (what
    :mod:`dints.pipeline.records` compares when the stage is asked for again)."""
    return write_json(path, {"config": config, "environment": environment(), **extra})


def environment() -> dict:
    """The run's software environment, recorded beside the configuration."""
    import monai

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": torch.cuda.device_count(),
        "world_size": dist.info().world_size,
        "launcher": dist.info().backend,
    }


def prepare(task: Task, run_dir: Path, log_name: str, *, work_root: str, fold: int, num_folds: int, seed: int,
            device: str, record: dict[str, Any], stage: str) -> StageContext:
    """Start logging, validate the task's files, load or make the splits, record the configuration.

    Call :func:`init_processes` first. Nothing is written before the data checks pass, except the run folder, its
    lock and its log; the stage calls :meth:`StageContext.record_config` once its own checks have passed too.

    Args:
        task: the task, loaded and checked against the options at the stage's edge.
        run_dir: the stage's output folder (created on rank 0).
        log_name: log file name inside ``run_dir``.
        work_root: run root (splits and label stamp go to ``<work_root>/<task>``).
        fold: this stage's fold.
        num_folds: cross-validation folds.
        seed: the split's seed.
        device: ``--device``.
        record: the resolved configuration, written to ``config_<stage>.json`` with the environment.
        stage: the stage's name.

    Raises:
        UserError: bad data, in one line naming the file.
    """
    d = dist.info()
    dev = resolve_device(device)  # first: NCCL's collectives below need each rank on its own GPU
    notes = dist.on_main(lambda: lock_run(run_dir))  # one run per folder: refuse before touching anything in it
    logger = setup_logging(run_dir / log_name if d.is_main else None)
    for note in notes:
        logger.warning("%s", note)
    logger.info("task %s: %d training cases, %d test images, %d channel(s), %d classes",
                task.name, len(task.training), len(task.test), task.in_channels, task.num_classes)
    tdir = layout.task_dir(work_root, task.name)

    def check_and_split() -> list[dict]:  # on rank 0, which alone writes the label stamp and splits.json
        check_headers(task)
        check_labels(task, tdir / layout.LABEL_STAMP, progress=True)
        given = task.root / "splits_final.json" if task.layout == "nnunet" else None  # nnU-Net's own folds
        return load_or_create_splits(tdir / layout.SPLITS, task.case_ids, num_folds, seed, task.name,
                                     given if given is not None and given.is_file() else None)

    folds = dist.on_main(check_and_split)
    return StageContext(task, folds[fold]["train"], folds[fold]["val"], run_dir, dev, logger, record, stage)


def lock_run(run_dir: Path) -> list[str]:
    """Create ``run_dir`` and hold its lock (:mod:`dints.run.lock`) for the rest of the stage; returns its notes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return lock.acquire(run_dir).notes


def check_patch(patch_size: Sequence[int], levels: int, use_downsample: bool, option: str,
                task: Task | None = None, spacing: Sequence[float] | None = None) -> None:
    """Patch sides must be divisible by ``2^(levels + use_downsample)`` and, when ``task`` is given, not exceed
    every training volume after resampling to ``spacing``.

    Args:
        option: how to name the patch option in the message (e.g. ``--patch_size (from configs/x.yaml)``).

    Raises:
        ConfigError: naming ``option``.
    """
    factor = input_divisor(levels, use_downsample)
    if any(s % factor for s in patch_size):
        raise ConfigError(f"{option} {list(patch_size)}: every side must be divisible by "
                          f"2^(levels+{int(use_downsample)}) = {factor} for {levels} levels")
    if task is None:
        return
    largest = np.array(volume_shapes(task, spacing)).max(axis=0)
    too_big = [i for i in range(3) if patch_size[i] > largest[i]]
    if too_big:
        raise ConfigError(
            f"{option} {list(patch_size)} is larger than every training volume along axis "
            f"{too_big} after resampling (largest {largest.tolist()} voxels): crops would be mostly padding; "
            "use a smaller --patch_size or a finer --spacing")
