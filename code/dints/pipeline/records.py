"""What a finished stage records, and whether ``code/main.sh`` may reuse it.

Every stage writes ``config_<stage>.json`` (:func:`dints.run.layout.config_record`): the resolved options it ran with
and the software environment. A stage is finished when its marker exists (:func:`dints.run.layout.stage_marker`).
The options that decide a stage's result are :data:`dints.run.settings.RECORD_KEYS`; a finished stage whose record holds other values
for them is not reused as if it were the new one: the driver refuses, naming the first option that differs.
The folds are the exception: stage 5 fuses again when asked for other folds than it fused, and stage 6 resamples
again when stage 5 has fused again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from dints.errors import ConfigError
from dints.run import layout
from dints.run.settings import RECORD_KEYS, decisive_keys

#: What main.sh can ask about: the stages, with stages 3/4 and 5/6 told apart.
KINDS = ("search", "retrain", "val", "test", "fuse", "resample")
#: The option set (``code/config.py``'s stage) each kind runs with.
STAGE_OF = {"search": "search", "retrain": "retrain", "val": "test", "test": "test", "fuse": "fuse",
            "resample": "fuse"}
#: Kinds that run once per fold.
PER_FOLD = ("retrain", "val", "test")

def record_file(kind: str, work_root: str | Path, task: str, mem: float, fold: int | None = None,
                baseline: str | None = None) -> Path:
    """Where ``kind`` keeps its record: in its output folder (stages 5 and 6: beside it, in the search run); for a
    retrained baseline (:data:`dints.run.layout.BASELINES`), in its own ``retrain-<baseline>-fold<k>``."""
    run = layout.search_dir(work_root, task, mem)
    if kind == "search":
        return run / layout.config_record("search")
    if kind == "retrain":
        return layout.retrain_dir(run, fold, baseline) / layout.config_record("retrain")
    if kind in ("val", "test"):
        return layout.eval_dir(run, kind, fold) / layout.config_record("test")
    return run / layout.config_record(kind)


def effective_folds(config: dict[str, Any]) -> list[int]:
    """The folds a fuse asks for: ``folds``, or every fold of ``num_folds``."""
    folds = config.get("folds")
    return sorted(int(k) for k in folds) if folds is not None else list(range(int(config["num_folds"])))


def fused_folds(work_root: str | Path, task: str, mem: float) -> list[int] | None:
    """The folds stage 5 last fused (its summary), or None before it finished."""
    summary = layout.stage_marker(work_root, task, mem, "fuse")
    if not summary.is_file():
        return None
    return sorted(json.loads(summary.read_text()).get("folds", []))


def read_record(path: Path) -> dict[str, Any] | None:
    """A record's content, or None when missing or unreadable (an older run folder)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("config"), dict) else None


def first_difference(saved: dict[str, Any], current: dict[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` whose value differs between two configurations (JSON values: lists, not tuples).

    A key the saved configuration lacks is not compared: it was written before the option existed, and a new
    option's default does what the code did before it (as :func:`dints.train.checkpoint.check_compatible` does).
    """
    def norm(v: Any) -> Any:
        return json.loads(json.dumps(v))

    for k in keys:
        if k in saved and norm(saved[k]) != norm(current.get(k)):
            return k
    return None


def status(kind: str, current: dict[str, Any], work_root: str | Path, task: str, mem: float,
           fold: int | None = None) -> tuple[str, Path]:
    """Whether ``kind`` (for ``fold``) must run: ``("run", marker)`` or ``("done", marker)``.

    Args:
        current: this run's resolved configuration (option name -> JSON value). A retraining whose ``arch`` names a
            baseline is looked for in that baseline's folder.

    Raises:
        ConfigError: the stage is finished but was made with other values of :data:`RECORD_KEYS` (naming the first
            option that differs and the two ways out).
    """
    baseline = layout.baseline_of(current.get("arch")) if kind == "retrain" else None
    marker = layout.stage_marker(work_root, task, mem, kind, fold, baseline)
    if not marker.is_file():
        return "run", marker
    path = record_file(kind, work_root, task, mem, fold, baseline)
    saved = read_record(path)
    if saved is None:  # finished before stages kept records (stages 5 and 6): cheap to redo
        return ("run" if kind in ("fuse", "resample") else "done"), marker
    if kind == "fuse" and effective_folds(saved["config"]) != effective_folds(current):
        return "run", marker  # other folds asked for: fuse again
    if kind == "resample" and saved.get("fused_folds") != fused_folds(work_root, task, mem):
        return "run", marker  # stage 5 fused again since
    key = first_difference(saved["config"], current, decisive_keys(kind, current))
    if key is not None:
        what = f"{kind}{f' ({baseline})' if baseline else ''} of {task}" + (f" fold {fold}" if fold is not None else "")
        raise ConfigError(
            f"{what} is finished ({marker}) but was made with --{key} {json.dumps(saved['config'].get(key))}, "
            f"and this run has {json.dumps(current.get(key))}; FORCE=1 redoes it (replacing its results), or "
            "another WORK_ROOT keeps both")
    return "done", marker
