"""What every stage does first: processes, logging, the task's data checks, splits and the run folder."""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import dist
from .errors import ConfigError
from .io import write_json
from .msd import Task, check_headers, check_labels, load_task, resolve_channels_classes
from .runlog import setup_logging
from .splits import load_or_create_splits


def task_dir(cfg) -> Path:
    """``<work_root>/<task>``: the task's splits, label-check stamp and data cache."""
    return Path(cfg.work_root) / cfg.task


def search_dir(cfg) -> Path:
    """The search run folder, named as in the seed: ``<work_root>/search-bilevel-ent-mem<mem>-<task>``."""
    return Path(cfg.work_root) / f"search-bilevel-ent-mem{cfg.mem:g}-{cfg.task}"


def resolve_device(cfg) -> torch.device:
    """The compute device from ``--device`` (auto: CUDA when available), one GPU per local rank."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    if cfg.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    idx = dist.info().local_rank % torch.cuda.device_count()
    torch.cuda.set_device(idx)
    return torch.device("cuda", idx)


@dataclass
class StageContext:
    """What a stage needs after preparation."""

    cfg: object
    task: Task
    folds: list[dict]
    run_dir: Path
    device: torch.device
    logger: logging.Logger

    @property
    def train_ids(self) -> list[str]:
        """Training cases of ``cfg.fold``."""
        return self.folds[self.cfg.fold]["train"]

    @property
    def val_ids(self) -> list[str]:
        """Validation cases of ``cfg.fold``."""
        return self.folds[self.cfg.fold]["val"]


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


def prepare(cfg, run_dir: Path, log_name: str) -> StageContext:
    """Initialise processes and logging, validate the task, load or make the splits, record the configuration.

    Args:
        cfg: resolved options (``config.load_config``); ``in_channels``/``num_classes`` are filled in here.
        run_dir: the stage's output folder (created on rank 0).
        log_name: log file name inside ``run_dir``.

    Raises:
        UserError: bad data or options, in one line naming the file or option.
    """
    d = dist.init("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    task = load_task(cfg.data_root, cfg.task)
    resolve_channels_classes(cfg, task)
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    logger = setup_logging(run_dir / log_name if d.is_main else None)
    logger.info("task %s: %d training cases, %d test images, %d channel(s), %d classes",
                task.name, len(task.training), len(task.test), task.in_channels, task.num_classes)
    check_headers(task)
    check_labels(task, task_dir(cfg) / "labels_checked.json", progress=d.is_main, write_stamp=d.is_main)
    folds = load_or_create_splits(task_dir(cfg) / "splits.json", task.case_ids, cfg.num_folds, cfg.seed, task.name)
    if d.is_main:
        from config import to_dict  # local: config imports this package

        write_json(run_dir / f"config_{cfg.stage}.json", {"config": to_dict(cfg), "environment": environment()})
    dist.barrier()
    device = resolve_device(cfg)
    return StageContext(cfg, task, folds, run_dir, device, logger)
