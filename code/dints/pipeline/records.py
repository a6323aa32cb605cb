"""What a finished stage records, and whether ``code/main.sh`` may reuse it.

Every stage writes ``config_<stage>.json`` (:func:`dints.run.layout.config_record`): the resolved options it ran with
and the software environment. A stage is finished when its marker exists (:func:`dints.run.layout.stage_marker`).
The options that decide a stage's result are :data:`dints.run.settings.RECORD_KEYS`; a finished stage whose record
holds other values for them is not reused as if it were the new one: the driver refuses, naming the first option
that differs.
The folds are the exception: stage 5 fuses again when asked for other folds than it fused, and stage 6 resamples
again when stage 5 has fused again.

With several seeded searches (main.sh's SEARCH_SEEDS), each search keeps its record in its own folder
(:func:`dints.run.layout.search_seed_dir`), and the search run folder's record is the chosen search's with the seeds it
was chosen among (``search_seeds``) and the one chosen (``chosen_seed``): it passes for a run that asks for the same
seeds, and for no other (not for one search, nor for other seeds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from dints.errors import ConfigError
from dints.run import layout
from dints.run.settings import decisive_keys

#: What main.sh can ask about: the stages, with stages 3/4 and 5/6 told apart.
KINDS = ("search", "retrain", "val", "test", "fuse", "resample")
#: The option set (``code/config.py``'s stage) each kind runs with.
STAGE_OF = {"search": "search", "retrain": "retrain", "val": "test", "test": "test", "fuse": "fuse",
            "resample": "fuse"}
#: Kinds that run once per fold.
PER_FOLD = ("retrain", "val", "test")

def record_file(kind: str, work_root: str | Path, task: str, mem: float, fold: int | None = None,
                baseline: str | None = None, *, seed: int | None = None) -> Path:
    """Where ``kind`` keeps its record: in its output folder (stages 5 and 6: beside it, in the search run); for a
    retrained baseline (:data:`dints.run.layout.BASELINES`), in its own ``retrain-<baseline>-fold<k>``.

    ``seed``: for ``search``, one of several seeded searches (in its own folder); None: the search run folder.
    """
    run = layout.search_dir(work_root, task, mem)
    if kind == "search":
        folder = run if seed is None else layout.search_seed_dir(work_root, task, mem, seed)
        return folder / layout.config_record("search")
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


def seeds_words(seeds: Sequence[int] | None) -> str:
    """How a search run was made, in words: one search, or a choice among seeded searches."""
    if not seeds:
        return "one search (SEARCH_SEEDS unset or 1)"
    return f"a choice among SEARCH_SEEDS={len(seeds)} searches (seeds {seeds[0]}..{seeds[-1]})"


def status(kind: str, current: dict[str, Any], work_root: str | Path, task: str, mem: float,
           fold: int | None = None, *, seed: int | None = None,
           chosen_among: Sequence[int] | None = None) -> tuple[str, Path]:
    """Whether ``kind`` (for ``fold``) must run: ``("run", marker)`` or ``("done", marker)``.

    Args:
        current: this run's resolved configuration (option name -> JSON value). A retraining whose ``arch`` names a
            baseline is looked for in that baseline's folder.
        seed: for ``search``, the seeded search in its own folder (:func:`dints.run.layout.search_seed_dir`).
        chosen_among: for ``search`` in the search run folder, the seeds this run chooses among (main.sh's
            SEARCH_SEEDS >= 2; their ``--seed`` is not compared); None: one search.

    Raises:
        ConfigError: the stage is finished but was made with other values of
            :data:`dints.run.settings.RECORD_KEYS`, or (the search) made by a choice among other seeds, or by one
            search where this run chooses among several (naming what differs and the two ways out).
    """
    baseline = layout.baseline_of(current.get("arch")) if kind == "retrain" else None
    marker = layout.stage_marker(work_root, task, mem, kind, fold, baseline, seed=seed)
    if not marker.is_file():
        return "run", marker
    path = record_file(kind, work_root, task, mem, fold, baseline, seed=seed)
    saved = read_record(path)
    if saved is None:  # finished before stages kept records (stages 5 and 6): cheap to redo
        return ("run" if kind in ("fuse", "resample") else "done"), marker
    if kind == "fuse" and effective_folds(saved["config"]) != effective_folds(current):
        return "run", marker  # other folds asked for: fuse again
    if kind == "resample" and saved.get("fused_folds") != fused_folds(work_root, task, mem):
        return "run", marker  # stage 5 fused again since
    what = f"{kind}{f' ({baseline})' if baseline else ''} of {task}" + (f" fold {fold}" if fold is not None else "") + (
        f" seed {seed}" if seed is not None else "")
    ways_out = "FORCE=1 redoes it (replacing its results), or another WORK_ROOT keeps both"
    keys = decisive_keys(kind, current)
    if kind == "search" and seed is None:
        made = saved.get("search_seeds")
        wanted = list(chosen_among) if chosen_among else None
        if made != wanted:
            raise ConfigError(f"{what} is finished ({marker}) but was made by {seeds_words(made)}, and this run asks "
                              f"for {seeds_words(wanted)}; {ways_out}")
        if wanted:
            keys = tuple(k for k in keys if k != "seed")  # the seeds compared above
    key = first_difference(saved["config"], current, keys)
    if key is not None:
        raise ConfigError(
            f"{what} is finished ({marker}) but was made with --{key} {json.dumps(saved['config'].get(key))}, "
            f"and this run has {json.dumps(current.get(key))}; {ways_out}")
    return "done", marker
