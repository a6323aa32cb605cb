"""Typed settings the library reads, resolved once at a stage's edge from its options.

The stage entry points parse their options (``code/config.py``) and build these frozen dataclasses from them; library
code receives only the values it uses and never sees, imports or changes the configuration itself.

    data = DataSettings.from_options(cfg)            # any object with same-named attributes
    infer = InferSettings.from_options(cfg, tta=False)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T", bound="_FromOptions")

#: The options that decide how an image is preprocessed (resampled, normalised, padded, cut into windows). A resumed
#: run must have the run's values, every fold of a model folder the same ones, and prediction repeats them.
PREPROCESSING_KEYS = ("spacing", "intensity", "ct_window", "patch_size")

_TRAINING = ("task", "fold", "num_folds", "seed", *PREPROCESSING_KEYS, "batch_size", "num_samples", "iters",
             "base_lr", "momentum", "weight_decay", "grad_clip", "amp")
_INFERENCE = ("task", "fold", "num_folds", "split", *PREPROCESSING_KEYS, "checkpoint", "tta", "sw_overlap", "amp")
#: The options that decide each stage's result. The search and retraining also refuse to resume from a checkpoint
#: written with other values for them.
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "search": (*_TRAINING, "blocks", "levels", "channel_mul", "opset", "cellop", "use_downsample", "warmup_iters",
               "use_max", "path_num", "path_iters", "mem", "decode", "decode_band", "EF", "ef_end", "EP", "topology", "topology_weight",
               "arch_lr"),
    "retrain": (*_TRAINING, "arch", "arch_seed", "arch_mem", "channel_mul", "lr_schedule", "lr_milestones", "val_interval", "sw_overlap"),
    "val": (*_INFERENCE, "save_val"),
    "test": _INFERENCE,
    "fuse": ("task", "num_folds"),
    "resample": ("task", "num_folds"),
}


#: Retraining options that only a random baseline reads.
_RANDOM_ONLY = ("arch_seed", "arch_mem")


def decisive_keys(kind: str, config: dict[str, Any]) -> tuple[str, ...]:
    """The :data:`RECORD_KEYS` of ``kind`` that decide this run's result: a retraining reads ``--arch_seed`` and
    ``--arch_mem`` only for ``--arch random``, so for any other architecture they may change freely."""
    keys = RECORD_KEYS[kind]
    if kind == "retrain" and config.get("arch") != "random":
        keys = tuple(k for k in keys if k not in _RANDOM_ONLY)
    return keys


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class _FromOptions:
    @classmethod
    def from_options(cls: type[T], opts: Any, **overrides: Any) -> T:
        """Pick this dataclass's fields from ``opts`` by name (lists become tuples); ``overrides`` win.

        Raises:
            AttributeError: ``opts`` lacks a field that ``overrides`` does not give.
        """
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            values[f.name] = overrides[f.name] if f.name in overrides else _freeze(getattr(opts, f.name))
        return cls(**values)


@dataclass(frozen=True)
class DataSettings(_FromOptions):
    """What the data pipeline needs: preprocessing, crops, caching and the data stream's seed.

    Attributes:
        task: task folder name (the disk cache lives in ``<work_root>/<task>/cache``).
        work_root: the run root.
        spacing: target voxel size in mm, or None for each image's own.
        intensity: ``ct``, ``zscore`` or ``zscore_nonzero``.
        ct_window: HU window of ``ct``.
        patch_size: crop size in voxels.
        batch_size: crops per process per step.
        num_samples: crops per loaded volume.
        cache: ``none``, ``memory`` or ``disk``.
        cache_rate: fraction cached in memory.
        num_workers: loader workers.
        seed: run seed.
        in_channels: image channels.
        num_classes: classes, background included.
    """

    task: str
    work_root: str
    spacing: tuple[float, float, float] | None
    intensity: str
    ct_window: tuple[float, float]
    patch_size: tuple[int, int, int]
    batch_size: int
    num_samples: int
    cache: str
    cache_rate: float
    num_workers: int
    seed: int
    in_channels: int
    num_classes: int


@dataclass(frozen=True)
class InferSettings(_FromOptions):
    """Sliding-window inference: window, windows per batch, overlap, flip TTA, mixed precision (CUDA only)."""

    patch_size: tuple[int, int, int]
    sw_batch_size: int
    sw_overlap: float
    tta: bool
    amp: bool


@dataclass(frozen=True)
class LoopSettings(_FromOptions):
    """The training-loop harness's cadence (:mod:`dints.train.runloop`)."""

    iters: int
    val_interval: int
    log_interval: int
    ckpt_interval: int


@dataclass(frozen=True)
class SearchSettings(_FromOptions):
    """The bilevel step's optimisers, schedules, losses and the crop batch its memory estimate is sized for."""

    base_lr: float
    momentum: float
    weight_decay: float
    arch_lr: float
    grad_clip: float
    iters: int
    warmup_iters: int
    EF: int
    ef_end: float
    EP: int
    topology: int
    topology_weight: float
    mem: float
    decode: str
    decode_band: float
    use_max: int
    batch_size: int
    num_samples: int
    patch_size: tuple[int, int, int]
