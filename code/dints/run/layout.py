"""The run layout: every run-folder and file name of the pipeline, spelled once.

    <work_root>/<task>/                                 splits.json, labels_checked.json, cache/
    <work_root>/search-bilevel-ent-mem<MEM>-<task>/     stage 1 (the name the authors' published code uses; MEM as
                                                        %g: 0.80 -> 0.8): arch.json, arch.pth, arch_<iter>.json,
                                                        latest.pt, metrics.csv, summary.json, search.log, tb/,
                                                        config_search.json, postprocessing.json
        seeds/seed<s>/                                  stage 1 with SEARCH_SEEDS=K: one search per seed, each laid
                                                        out as above; the chosen one's files are copied up beside
                                                        search_choice.json
        retrain-fold<k>/                                stage 2: best.pt, latest.pt, metrics.csv, summary.json, ...
        retrain-<baseline>-fold<k>/                     stage 2 with --arch random, cvpr or unet (and its arch.json)
        val-fold<k>/  test-fold<k>/                     stages 3, 4
        fused/  final/  final_summary.json              stages 5, 6

The shell drivers never spell a path: ``python code/config.py status`` resolves the options as a stage would and asks
this module, so Python and shell can never disagree on a name. Importing it loads nothing heavy.
"""

from __future__ import annotations

from pathlib import Path

#: Stage summaries: a stage whose summary exists is finished (the drivers skip it).
SUMMARY = "summary.json"
FINAL_SUMMARY = "final_summary.json"
#: Files of a search run folder.
ARCH = "arch.json"
ARCH_MONAI = "arch.pth"
POSTPROCESSING = "postprocessing.json"
#: Stage 1 with several seeds (main.sh's SEARCH_SEEDS): the folder of the seeded searches inside the search run
#: folder, and the record of the choice among them.
SEEDS = "seeds"
SEARCH_CHOICE = "search_choice.json"
#: Files of a training run folder (the search's and each retrained fold's).
LATEST = "latest.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
PROGRESS = "progress.png"
TENSORBOARD = "tb"
#: Files of a task's folder in the run root.
SPLITS = "splits.json"
LABEL_STAMP = "labels_checked.json"
FINGERPRINT = "fingerprint.json"
PLAN = "plan.yaml"
CACHE = "cache"
#: The ``--arch`` words that select a built-in baseline instead of an architecture file (docs/method.md,
#: "Baselines"); a baseline retrains into its own ``retrain-<baseline>-fold<k>``.
BASELINES = ("random", "cvpr", "unet")
#: Log file of each stage, in its output folder (stages 5 and 6: in the search run folder).
LOGS = {"search": "search.log", "retrain": "retrain.log", "val": "test_val.log", "test": "test_test.log",
        "fuse": "fuse.log", "resample": "resample.log"}


def config_record(stage: str) -> str:
    """``config_<stage>.json``: the configuration and software environment a stage ran with, in its folder."""
    return f"config_{stage}.json"


def arch_snapshot(iteration: int) -> str:
    """Name (without suffix) of the architecture decoded at a validation of the search: ``arch_<iteration>``."""
    return f"arch_{iteration}"


def mem_tag(mem: float) -> str:
    """The memory budget as it appears in folder names: shortest form, ``0.80`` and ``0.8`` both give ``0.8``."""
    return f"{float(mem):g}"


def retrain_arch(work_root: str | Path, task: str, mem: float, arch: str | None) -> Path:
    """The architecture file retraining reads: ``--arch`` FILE, else the search run's ``arch.json`` (also for a
    baseline: the searched architecture whose space and sizes it takes, if any)."""
    if arch and not baseline_of(arch):
        return Path(arch)
    return search_dir(work_root, task, mem) / ARCH


def task_dir(work_root: str | Path, task: str) -> Path:
    """``<work_root>/<task>``: the task's splits, label-check stamp and data cache."""
    return Path(work_root) / task


def search_dir(work_root: str | Path, task: str, mem: float) -> Path:
    """The search run folder, named as the authors' published code names it: ``<work_root>/search-bilevel-ent-mem<mem>-<task>``."""
    return Path(work_root) / f"search-bilevel-ent-mem{mem_tag(mem)}-{task}"


def search_seed_dir(work_root: str | Path, task: str, mem: float, seed: int) -> Path:
    """``<search run>/seeds/seed<s>``: one of several seeded searches (main.sh's SEARCH_SEEDS), with the files a search
    run folder has; the chosen one is copied into the search run folder."""
    return search_dir(work_root, task, mem) / SEEDS / f"seed{seed}"


def baseline_of(arch: str | None) -> str | None:
    """The baseline an ``--arch`` value selects (one of :data:`BASELINES`), or None for a file or no ``--arch``.

    The words win over a file of the same name in the current folder; ``./random`` names the file.
    """
    return arch if arch in BASELINES else None


def retrain_dir(run: Path, fold: int, baseline: str | None = None) -> Path:
    """``<search run>/retrain-fold<k>`` (best.pt, latest.pt, metrics.csv, summary.json), or for a baseline
    ``<search run>/retrain-<baseline>-fold<k>``, which the searched architecture's stages 3-6 never read."""
    if baseline is None:
        return Path(run) / f"retrain-fold{fold}"
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
    return Path(run) / f"retrain-{baseline}-fold{fold}"


def eval_dir(run: Path, split: str, fold: int) -> Path:
    """``<search run>/val-fold<k>`` (stage 3) or ``<search run>/test-fold<k>`` (stage 4)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    return Path(run) / f"{split}-fold{fold}"


def fused_dir(run: Path) -> Path:
    """``<search run>/fused``: stage 5's fused labels and probabilities."""
    return Path(run) / "fused"


def final_dir(run: Path) -> Path:
    """``<search run>/final``: stage 6's label maps on the original image grids."""
    return Path(run) / "final"


def best_checkpoint(run: Path, fold: int) -> Path:
    """``<search run>/retrain-fold<k>/best.pt``: the fold's model, the best validation Dice of its retraining."""
    return retrain_dir(run, fold) / BEST


def stage_marker(work_root: str | Path, task: str, mem: float, kind: str, fold: int | None = None,
                 baseline: str | None = None, *, seed: int | None = None) -> Path:
    """The file whose existence means a stage (for a fold) is finished.

    Args:
        kind: ``search``, ``retrain``, ``val``, ``test``, ``fuse`` or ``resample``.
        fold: the fold, for ``retrain``, ``val`` and ``test``.
        baseline: for ``retrain``, the baseline retrained (:data:`BASELINES`), or None for an architecture file.
        seed: for ``search``, one of several seeded searches (:func:`search_seed_dir`); None: the search run folder.
    """
    run = search_dir(work_root, task, mem)
    if kind in ("retrain", "val", "test") and fold is None:
        raise ValueError(f"{kind}: a fold is needed")
    if seed is not None:
        if kind != "search":
            raise ValueError(f"{kind}: only the search has seeded folders")
        return search_seed_dir(work_root, task, mem, seed) / SUMMARY
    return {
        "search": lambda: run / SUMMARY,  # written after arch.json, arch.pth and the pictures (with SEARCH_SEEDS:
        # after the chosen search's files and search_choice.json)
        "retrain": lambda: retrain_dir(run, fold, baseline) / SUMMARY,
        "val": lambda: eval_dir(run, "val", fold) / SUMMARY,
        "test": lambda: eval_dir(run, "test", fold) / SUMMARY,
        "fuse": lambda: fused_dir(run) / SUMMARY,
        "resample": lambda: run / FINAL_SUMMARY,
    }[kind]()
