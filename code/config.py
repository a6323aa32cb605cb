"""Every option of every stage, in one place: name, type, default (the paper's value) and a one-line meaning.

Precedence, lowest first: the defaults below, the task's plan (``<work_root>/<task>/plan.yaml``, written by
``code/plan.py`` when it exists: docs/method.md, "The plan"), the preset file given by ``--config`` (its top-level
keys, then its section named after the stage: ``search:``, ``retrain:``, ``test:`` or ``fuse:``), then the command
line.
An unknown key in a preset, a value of the wrong type, or a key that says where the data and runs are (a preset
says how to run, not where) is an error naming the file and the key.

    cfg = load_config(sys.argv[1:], stage="search")

From the shell::

    python code/config.py STAGE [options]        # the resolved options of a stage, as JSON
    python code/config.py status KIND [options]  # for code/main.sh: which folds of a stage are finished
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from dints.data.msd import Task, load_task
from dints.data.nnunet import resolve_folder
from dints.errors import ConfigError, DataError
from dints.pipeline import records
from dints.pipeline.cli import OneLineParser, cli_main
from dints.run.layout import BASELINES, PLAN, baseline_of, task_dir
from dints.space.sizes import num_paths

STAGES = ("search", "retrain", "test", "fuse")
#: Options a preset cannot set: they say where the data, the runs and the inputs are, or which fold or split to run.
#: They come from the command line (code/main.sh: DATA_ROOT, WORK_ROOT, TASKS, FOLDS, ARCH, ARCH_SEED, ARCH_MEM,
#: CHECKPOINT, MSD_SIZE).
NOT_IN_PRESETS = ("data_root", "work_root", "task", "fold", "folds", "split", "resample", "arch", "arch_seed",
                  "arch_mem", "checkpoint", "msd_size")

# Defaults that differ between stages (docs/method.md, "Relaxation and losses" and "The stages").
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "search": {"batch_size": 1, "iters": 20000, "warmup_iters": 10000, "channel_mul": 0.5, "val_interval": 1000},
    # retrain: channel_mul None = twice the searched architecture's channel_mul.
    "retrain": {"batch_size": 2, "iters": 20000, "warmup_iters": 0, "channel_mul": None, "val_interval": 1000},
    "test": {"batch_size": 1, "iters": 0, "warmup_iters": 0, "channel_mul": None, "val_interval": 0},
    "fuse": {"batch_size": 1, "iters": 0, "warmup_iters": 0, "channel_mul": None, "val_interval": 0},
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default; keeps the description's line breaks."""

    def _fill_text(self, text, width, indent):  # noqa: D102
        return "".join(indent + line for line in text.splitlines(keepends=True))


def build_parser(stage: str, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of one stage (every stage shares every option; defaults may differ per stage).

    Args:
        stage: the option set: ``search``, ``retrain``, ``test`` or ``fuse``.
        prog: the command's name in its usage line (default ``<stage>.py``).
        description: the command's description (default: the stage's).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    sd = STAGE_DEFAULTS[stage]
    p = OneLineParser(
        prog=prog or f"{stage}.py",
        description=(description or f"DiNTS stage '{stage}'.") + " Options come from the defaults, then --config "
                    "PRESET.yaml, then flags.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--config", type=str, default=None, help="preset YAML file (e.g. configs/tiny.yaml) setting defaults")

    g = p.add_argument_group("task and data")
    g.add_argument("--data_root", type=str, default="data", help="folder holding the task folders (MSD or nnU-Net v2)")
    g.add_argument("--task", type=str, default=None, help="task folder name; the dataset is <data_root>/<task>/dataset.json "
                                                          "(a number N: the nnU-Net folder DatasetNNN_<name>)")
    g.add_argument("--work_root", type=str, default="work", help="where run folders, splits and caches go")
    g.add_argument("--fold", type=int, default=0, help="cross-validation fold to run (0-based)")
    g.add_argument("--num_folds", type=int, default=5, help="number of cross-validation folds")
    g.add_argument("--in_channels", type=int, default=None, help="input channels (default: from dataset.json 'modality')")
    g.add_argument("--num_classes", type=int, default=None, help="classes incl. background (default: from dataset.json 'labels')")
    g.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("X", "Y", "Z"),
                   help="target voxel spacing in mm; 'native' (preset: null) keeps each image's spacing")
    g.add_argument("--intensity", type=str, default="zscore", choices=["ct", "zscore", "zscore_nonzero"],
                   help="intensity normalisation: CT window to [0,1], z-score, or z-score over non-zero voxels (per channel)")
    g.add_argument("--ct_window", type=float, nargs=2, default=[-1000.0, 1000.0], metavar=("LOW", "HIGH"),
                   help="HU window clipped and scaled to [0,1] when --intensity ct")
    g.add_argument("--patch_size", type=int, nargs=3, default=[96, 96, 96], metavar=("X", "Y", "Z"),
                   help="training crop size in voxels (sides divisible by 2^(levels+1))")
    g.add_argument("--batch_size", type=int, default=sd["batch_size"], help="crops per process per step")
    g.add_argument("--num_samples", type=int, default=1, help="crops drawn from one volume each time it is loaded")
    g.add_argument("--cache", type=str, default="memory", choices=["none", "memory", "disk"],
                   help="cache preprocessed volumes in memory, on disk (<work_root>/<task>/cache) or not at all")
    g.add_argument("--cache_rate", type=float, default=1.0, help="fraction of volumes cached with --cache memory")
    g.add_argument("--num_workers", type=int, default=4, help="data-loader worker processes")
    g.add_argument("--seed", type=int, default=0, help="random seed (splits, initialisation, sampling, augmentation)")

    g = p.add_argument_group("search space")
    g.add_argument("--blocks", type=int, default=12, help="number of blocks B")
    g.add_argument("--levels", type=int, default=4, help="number of resolution levels D")
    g.add_argument("--channel_mul", type=float, default=sd["channel_mul"],
                   help="channel multiplier (level r has int(32*2^(r+1)*channel_mul) channels); retrain: None doubles the search's")
    g.add_argument("--opset", type=int, default=1, choices=[0, 1], help="operation set: 0 C2FNAS-style, 1 DiNTS")
    g.add_argument("--cellop", type=int, default=None, help="candidate operations per cell, the first N of the opset (default all)")
    g.add_argument("--use_downsample", type=int, default=1, choices=[0, 1],
                   help="1: stems halve the input resolution first (level r at 1/2^(r+1)); 0: level r at 1/2^r")

    g = p.add_argument_group("search (stage 1)")
    g.add_argument("--iters", type=int, default=sd["iters"], help="training iterations")
    g.add_argument("--warmup_iters", type=int, default=sd["warmup_iters"], help="weight-only iterations before architecture steps")
    g.add_argument("--EF", type=int, default=0, choices=[0, 2], help="temperature schedule: 0 none (tau=1), 2 linear decay to --ef_end")
    g.add_argument("--ef_end", type=float, default=0.1, help="final temperature with --EF 2")
    g.add_argument("--EP", type=int, default=1, choices=[0, 1], help="entropy loss on (1) or off (0)")
    g.add_argument("--topology", type=int, default=1, choices=[0, 1], help="topology loss on (1) or off (0)")
    g.add_argument("--topology_weight", type=float, default=0.001, help="weight of the topology loss")
    g.add_argument("--mem", type=float, default=0.8,
                   help="memory budget as a fraction of the full supernet (MEM in the authors' published code)")
    g.add_argument("--decode", type=str, default="paper", choices=["paper", "budget"],
                   help="paper: the most probable topology-consistent architecture, whatever its memory (the paper's "
                        "decode); budget: the most probable one whose memory ratio lies in [--mem - --decode_band, "
                        "--mem], or, if none does, at most --mem")
    g.add_argument("--decode_band", type=float, default=0.1,
                   help="with --decode budget: how far under --mem to look first, as a fraction of the full supernet's "
                        "memory (1: anything within --mem)")
    g.add_argument("--use_max", type=int, default=1, choices=[0, 1],
                   help="1: one-shot supernet (every path and op runs; the paper's search); 0: sample --path_num paths "
                        "per block")
    g.add_argument("--path_num", type=int, default=5, help="paths sampled per block when --use_max 0")
    g.add_argument("--path_iters", type=int, default=1, help="resample the paths every this many iterations")
    g.add_argument("--recompute", type=int, default=1, choices=[0, 1],
                   help="1: the supernet's pseudo-3D ops keep only their input and recompute their two convolutions in "
                        "the backward pass (about 0.6x the activation memory of a one-shot step, for extra compute; "
                        "without mixed precision only); 0: keep them (same results)")
    g.add_argument("--arch_lr", type=float, default=1e-3,
                   help="Adam learning rate of the architecture parameters (each set, alpha_a and alpha_c), multiplied "
                        "by the number of processes")

    g = p.add_argument_group("optimisation")
    g.add_argument("--base_lr", type=float, default=0.025, help="SGD learning rate, multiplied by the number of processes")
    g.add_argument("--lr_schedule", type=str, default="step", choices=["step", "cosine", "poly"],
                   help="retrain: step halves --base_lr at each of --lr_milestones (the paper's); cosine decays it "
                        "to 0 along half a cosine; poly as (1 - it/iters)^0.9 (nnU-Net's)")
    g.add_argument("--lr_milestones", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8], metavar="FRAC",
                   help="retrain with --lr_schedule step: fractions of --iters at which the learning rate halves")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--weight_decay", type=float, default=4e-5, help="SGD weight decay")
    g.add_argument("--grad_clip", type=float, default=0.5, help="gradient-norm clipping (0 disables)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="mixed precision (CUDA only)")

    g = p.add_argument_group("run control")
    g.add_argument("--resume", type=str, default="auto", choices=["auto", "yes", "no"],
                   help="auto: resume from latest.pt if it exists; yes: require it; no: start afresh")
    g.add_argument("--val_interval", type=int, default=sd["val_interval"], help="validate (and save the architecture) every N iterations")
    g.add_argument("--log_interval", type=int, default=20, help="log losses every N iterations")
    g.add_argument("--ckpt_interval", type=int, default=100, help="write latest.pt every N iterations")
    g.add_argument("--device", type=str, default="auto", choices=["auto", "cpu", "cuda"], help="compute device")
    g.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of one line")

    g = p.add_argument_group("inference, test and fuse (stages 3-6)")
    g.add_argument("--split", type=str, default="val", choices=["val", "test"], help="test.py: validation cases of the fold, or dataset.json's test images")
    g.add_argument("--sw_overlap", type=float, default=0.625, help="sliding-window overlap")
    g.add_argument("--sw_batch_size", type=int, default=2, help="windows per sliding-window batch")
    g.add_argument("--tta", type=int, default=0, choices=[0, 1], help="flip test-time augmentation")
    g.add_argument("--save_val", type=int, default=0, choices=[0, 1],
                   help="test.py --split val: also write each case's probabilities (<case>.npz) beside its label map "
                        "(<case>.nii.gz, original grid, always written)")
    g.add_argument("--arch", type=str, default=None,
                   help="retrain.py: the architecture, a file (arch.json or a MONAI .pth) or a baseline: "
                        f"{', '.join(BASELINES)} (these words win over files of those names: ./random is the file); "
                        "default: the search run's arch.json")
    g.add_argument("--arch_seed", type=int, default=0, help="retrain.py --arch random: the seed of the draw")
    g.add_argument("--arch_mem", type=float, default=None,
                   help="retrain.py --arch random: the memory ratio to draw at, in (0, 1] (within 0.03); default: "
                        "the searched architecture's mem_ratio")
    g.add_argument("--checkpoint", type=str, default=None, help="model checkpoint to test (default: the fold's best.pt)")
    g.add_argument("--folds", type=int, nargs="+", default=None,
                   help="the folds to run, instead of --fold: retrain.py and test.py run each in turn in one process; "
                        "fuse.py fuses them (default 0..num_folds-1)")
    g.add_argument("--resample", type=int, default=0, choices=[0, 1], help="fuse.py: 1 brings fused labels back to the original grids (stage 6)")
    g.add_argument("--msd_size", type=str, default=None, help="fuse.py --resample: msd_size.json with each case's original size")
    return p


def _option_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}


def _type_name(action: argparse.Action) -> str:
    if isinstance(action, argparse.BooleanOptionalAction):
        return "true/false"
    t = getattr(action.type, "__name__", "str")
    if action.nargs not in (None,):
        n = action.nargs if isinstance(action.nargs, int) else "one or more"
        return f"a list of {n} {t}"
    return t


def _check_scalar(value: Any, action: argparse.Action) -> Any:
    """Return ``value`` converted to the action's type, or raise TypeError."""
    if isinstance(action, argparse.BooleanOptionalAction):
        if isinstance(value, bool):
            return value
        raise TypeError
    t = action.type or str
    if isinstance(value, bool):
        raise TypeError
    if t is int and isinstance(value, int):
        out: Any = value
    elif t is float and isinstance(value, (int, float)):
        out = float(value)
    elif t is str and isinstance(value, str):
        out = value
    else:
        raise TypeError
    if action.choices is not None and out not in action.choices:
        raise TypeError
    return out


def _convert_preset_value(key: str, value: Any, action: argparse.Action, where: str) -> Any:
    if value is None:
        if action.default is None or key == "spacing":
            return None
        raise ConfigError(f"{where}: option '{key}' cannot be null (expects {_type_name(action)})")
    try:
        if action.nargs is None or isinstance(action, argparse.BooleanOptionalAction):
            return _check_scalar(value, action)
        if not isinstance(value, list):
            raise TypeError
        if isinstance(action.nargs, int) and len(value) != action.nargs:
            raise TypeError
        if not value:
            raise TypeError
        return [_check_scalar(v, action) for v in value]
    except TypeError:
        choices = f" from {list(action.choices)}" if action.choices else ""
        raise ConfigError(
            f"{where}: option '{key}' expects {_type_name(action)}{choices}, got {value!r}"
        ) from None


def read_preset(path: str | Path, stage: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a preset YAML file: its top-level options, overridden by its section for ``stage``.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key or a value of the wrong type (naming the key).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--config: preset '{path}' is a folder, expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"--config: preset file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    actions = {k: a for k, a in _option_keys(parser).items() if k in _stage_keys(stage)}
    out: dict[str, Any] = {}
    sections = [(data, str(path))]
    for s in STAGES:
        section = data.get(s)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: section '{s}' must be a mapping of option names to values")
        if s == stage:
            sections.append((section, f"{path} [{s}]"))
    for mapping, where in sections:
        for key, value in mapping.items():
            if key in STAGES and mapping is data:
                continue
            if key in NOT_IN_PRESETS:
                raise ConfigError(f"{where}: '{key}' cannot be set in a preset (a preset says how to run, not where "
                                  "or on what): give --" + key + " on the command line")
            if key not in actions:
                raise ConfigError(f"{where}: unknown option '{key}'")
            out[key] = _convert_preset_value(key, value, actions[key], where)
    return out


def _stage_keys(stage: str) -> set[str]:
    """The options every command of ``stage`` takes (a command may add its own, which presets cannot set)."""
    return set(_option_keys(build_parser(stage)))


def _spacing_arg(argv: list[str]) -> tuple[list[str], bool]:
    """Accept ``--spacing native`` on the command line (argparse alone wants three floats)."""
    out, native = [], False
    i = 0
    while i < len(argv):
        if argv[i] == "--spacing" and i + 1 < len(argv) and argv[i + 1].lower() in ("native", "none"):
            native = True
            i += 2
            continue
        if argv[i].lower() in ("--spacing=native", "--spacing=none"):
            native = True
            i += 1
            continue
        out.append(argv[i])
        i += 1
    return out, native


def cli_keys(argv: Sequence[str], parser: argparse.ArgumentParser) -> set[str]:
    """Option names given explicitly on the command line."""
    flags = {}
    for a in parser._actions:
        for s in a.option_strings:
            flags[s] = a.dest
    keys = set()
    for tok in argv:
        name = tok.split("=", 1)[0]
        if name in flags:
            keys.add(flags[name])
    return keys


def plan_file(work_root: str | Path, task: str) -> Path:
    """Where the plan of a task is written (code/plan.py) and read (:func:`load_config`)."""
    return task_dir(work_root, task) / PLAN


def load_config(argv: Sequence[str] | None, stage: str, prog: str | None = None, description: str | None = None,
                add_options: Callable[[argparse.ArgumentParser], None] | None = None,
                use_plan: bool = True) -> argparse.Namespace:
    """Parse one stage's options: defaults, then the task's plan, then ``--config`` preset, then the command line.

    Args:
        argv: command-line arguments without the program name (``None``: ``sys.argv[1:]``).
        stage: one of ``search``, ``retrain``, ``test``, ``fuse``.
        prog, description: the command's name and description in ``--help`` (default: the stage's).
        add_options: adds a command's own options to the stage's parser (they show in its ``--help``; presets
            cannot set them).
        use_plan: read ``<work_root>/<task>/plan.yaml`` when it exists (code/plan.py itself does not).

    Returns:
        The resolved options. ``cfg.stage`` is the stage, ``cfg.sources`` maps each option set by the plan, the
        preset or the command line to ``"plan <path>"``, ``"<preset path>"`` or ``"command line"`` (recorded in
        each run's ``config_<stage>.json``; used to word mismatch errors).

    Raises:
        ConfigError: bad preset (unknown key, wrong type) or an inconsistent combination of options.
        SystemExit: argparse's own errors on the command line (exit 2) and ``--help`` (exit 0).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(stage, prog, description)
    if add_options is not None:
        add_options(parser.add_argument_group(f"{parser.prog} only"))
    pre = argparse.ArgumentParser(add_help=False)
    for name in ("--config", "--task"):
        pre.add_argument(name, default=None)
    pre.add_argument("--data_root", default=parser.get_default("data_root"))
    pre.add_argument("--work_root", default=parser.get_default("work_root"))
    known, _ = pre.parse_known_args(argv)
    sources: dict[str, str] = {}
    if use_plan and known.task:
        task = resolve_folder(known.data_root, known.task) if known.task.isdigit() else known.task
        plan = plan_file(known.work_root, task)
        if plan.is_file():
            planned = read_preset(plan, stage, parser)
            parser.set_defaults(**planned)
            sources.update({k: f"plan {plan}" for k in planned})
    if known.config:
        preset = read_preset(known.config, stage, parser)
        parser.set_defaults(**preset)
        sources.update({k: str(known.config) for k in preset})
    argv, native = _spacing_arg(argv)
    cfg = parser.parse_args(argv)
    for k in cli_keys(argv, parser):
        sources[k] = "command line"
    if native:
        cfg.spacing = None
        sources["spacing"] = "command line"
    cfg.stage = stage
    cfg.sources = sources
    validate(cfg)
    if cfg.task.isdigit():  # nnU-Net's way of naming a dataset: --task 4 is <data_root>/Dataset004_<name>
        cfg.task = resolve_folder(cfg.data_root, cfg.task)
    return cfg


def load_fold_configs(argv: Sequence[str] | None, stage: str) -> list[argparse.Namespace]:
    """A per-fold stage's configurations, one per fold it runs: each of ``--folds`` in turn, as if run with
    ``--fold k`` (``{fold}`` in a value stands for k, as in main.sh's CHECKPOINT), else ``--fold``'s one.

    One process running several folds starts torch and MONAI once, not once per fold; code/main.sh runs a stage's
    unfinished folds so. Each configuration is the one a run with ``--fold k`` alone would record (``folds`` None).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    base = load_config([v.replace("{fold}", "0") for v in argv], stage)
    folds = [base.fold] if base.folds is None else list(dict.fromkeys(base.folds))
    configs = []
    for k in folds:
        cfg = load_config([v.replace("{fold}", str(k)) for v in argv] + ["--fold", str(k)], stage)
        cfg.folds = None
        cfg.sources.pop("folds", None)
        configs.append(cfg)
    return configs


def where(cfg: argparse.Namespace, key: str) -> str:
    """How an option got its value, for error messages: ``--key`` plus its source."""
    src = getattr(cfg, "sources", {}).get(key)
    return f"--{key}" + (f" (from {src})" if src and src != "command line" else "")


def validate(cfg: argparse.Namespace) -> None:
    """Checks that need several options, or ranges argparse cannot express. Raises ConfigError."""
    positive = ["num_folds", "batch_size", "num_samples", "blocks", "log_interval", "ckpt_interval", "sw_batch_size"]
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where(cfg, key)} must be >= 1, got {getattr(cfg, key)}")
    for key in ("iters", "warmup_iters", "val_interval", "num_workers", "seed", "arch_seed"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{where(cfg, key)} must be >= 0, got {getattr(cfg, key)}")
    if cfg.levels < 2:
        raise ConfigError(f"{where(cfg, 'levels')} must be >= 2, got {cfg.levels}")
    if not 0 <= cfg.fold < cfg.num_folds:
        raise ConfigError(f"{where(cfg, 'fold')} must be in 0..{cfg.num_folds - 1}, got {cfg.fold}")
    if cfg.folds is not None and any(not 0 <= k < cfg.num_folds for k in cfg.folds):
        raise ConfigError(f"{where(cfg, 'folds')} must be in 0..{cfg.num_folds - 1}, got {' '.join(map(str, cfg.folds))}")
    if cfg.stage == "search" and cfg.warmup_iters > cfg.iters:
        raise ConfigError(f"{where(cfg, 'warmup_iters')} ({cfg.warmup_iters}) exceeds --iters ({cfg.iters})")
    if any(not 0 < m <= 1 for m in cfg.lr_milestones):
        raise ConfigError(f"{where(cfg, 'lr_milestones')} must be fractions in (0, 1], got {cfg.lr_milestones}")
    if cfg.channel_mul is not None and cfg.channel_mul <= 0:
        raise ConfigError(f"{where(cfg, 'channel_mul')} must be > 0, got {cfg.channel_mul}")
    if not 0 < cfg.mem <= 1:
        raise ConfigError(f"{where(cfg, 'mem')} must be in (0, 1], got {cfg.mem}")
    if not 0 <= cfg.decode_band <= 1:
        raise ConfigError(f"{where(cfg, 'decode_band')} must be in [0, 1], got {cfg.decode_band}")
    if cfg.arch_mem is not None and not 0 < cfg.arch_mem <= 1:
        raise ConfigError(f"{where(cfg, 'arch_mem')} must be in (0, 1], got {cfg.arch_mem}")
    if not 0 <= cfg.sw_overlap < 1:
        raise ConfigError(f"{where(cfg, 'sw_overlap')} must be in [0, 1), got {cfg.sw_overlap}")
    if not 0 < cfg.cache_rate <= 1:
        raise ConfigError(f"{where(cfg, 'cache_rate')} must be in (0, 1], got {cfg.cache_rate}")
    if cfg.spacing is not None and any(s <= 0 for s in cfg.spacing):
        raise ConfigError(f"{where(cfg, 'spacing')} must be positive, got {cfg.spacing}")
    if any(s < 1 for s in cfg.patch_size):
        raise ConfigError(f"{where(cfg, 'patch_size')} must be positive, got {cfg.patch_size}")
    lo, hi = cfg.ct_window
    if lo >= hi:
        raise ConfigError(f"{where(cfg, 'ct_window')} must be LOW < HIGH, got {cfg.ct_window}")
    for key in ("in_channels", "num_classes", "cellop"):
        v = getattr(cfg, key)
        if v is not None and v < 1:
            raise ConfigError(f"{where(cfg, key)} must be >= 1, got {v}")
    if cfg.num_classes is not None and cfg.num_classes < 2:
        raise ConfigError(f"{where(cfg, 'num_classes')} must be >= 2 (background included), got {cfg.num_classes}")
    n_paths = num_paths(cfg.levels)
    if not cfg.use_max and not 1 <= cfg.path_num <= n_paths:  # one-shot searches run every path
        raise ConfigError(f"{where(cfg, 'path_num')} must be in 1..{n_paths} (paths per block for {cfg.levels} levels)")
    if cfg.path_iters < 1:
        raise ConfigError(f"{where(cfg, 'path_iters')} must be >= 1, got {cfg.path_iters}")
    if cfg.task is None:
        raise ConfigError("--task is required (the task folder name under --data_root)")
    check_paths(cfg)


def check_paths(cfg: argparse.Namespace) -> None:
    """Folders that are files, files that are folders, and a run root nobody can write. Raises ConfigError."""
    for key in ("data_root", "work_root"):
        path = Path(getattr(cfg, key))
        for p in (path, *path.parents):
            if p.exists():
                if not p.is_dir():
                    what = "is a file" if p == path else f"lies inside {p}, which is a file"
                    raise ConfigError(f"{where(cfg, key)} {path}: {what}, not a folder")
                if key == "work_root" and not os.access(p, os.W_OK | os.X_OK):
                    raise ConfigError(f"{where(cfg, key)} {path}: {p} is not writable (run results go there)")
                break
    for key in ("arch", "checkpoint", "msd_size"):
        value = getattr(cfg, key)
        if key == "arch" and baseline_of(value):
            continue  # a baseline, not a path
        if value is not None and Path(value).is_dir():
            raise ConfigError(f"{where(cfg, key)} {value}: is a folder, expected a file")


def preset_value(cfg: argparse.Namespace, stage: str, key: str) -> Any:
    """What ``key`` is for another ``stage`` under ``cfg``'s preset: the stage's default, then the preset's value
    (its top level, then that stage's section); the command line, which set ``cfg``'s own stage, does not count.

    Raises:
        ConfigError: a bad preset (as :func:`read_preset`).
    """
    parser = build_parser(stage)
    preset = read_preset(cfg.config, stage, parser) if cfg.config else {}
    return preset.get(key, parser.get_default(key))


def to_dict(cfg: argparse.Namespace) -> dict[str, Any]:
    """The resolved configuration as a JSON-serialisable dict (what run folders record)."""
    return {k: v for k, v in sorted(vars(cfg).items())}


def resolve_task(cfg: argparse.Namespace) -> tuple[argparse.Namespace, Task]:
    """Load the task's dataset.json and resolve the channel and class counts from it.

    Returns:
        ``(resolved, task)``: a copy of ``cfg`` with ``in_channels``/``num_classes`` filled in from dataset.json
        (``cfg`` itself is not changed), and the task.

    Raises:
        DataError: bad dataset.json, or a preset or flag that disagrees with it.
    """
    task = load_task(cfg.data_root, cfg.task)
    resolved = argparse.Namespace(**vars(cfg))
    for key, value, source in (("in_channels", task.in_channels, "'modality'"),
                               ("num_classes", task.num_classes, "'labels'")):
        set_to = getattr(cfg, key)
        if set_to is not None and set_to != value:
            raise DataError(f"{where(cfg, key)} is {set_to} but {task.root / 'dataset.json'} {source} declares {value}")
        setattr(resolved, key, value)
    return resolved, task


def stage_status(argv: Sequence[str]) -> list[str]:
    """For ``code/main.sh``: which units of a stage to run, one line each.

    ``argv`` is ``KIND [--force] [--search_seeds K] OPTIONS...``, where OPTIONS are the stage's own (a ``{fold}`` in a
    value stands for each fold) and, for the per-fold kinds, ``--folds`` lists the folds (default: every fold of
    ``--num_folds``).

    Returns:
        Lines ``<fold or -> run``, ``<fold or -> done <marker>``, or ``- none`` (stages 4-6 of a task with no test
        images). The search with ``--search_seeds K`` (K >= 2, main.sh's SEARCH_SEEDS): ``- done <marker>`` when
        the choice among the K seeded searches is made, else a line ``<seed> run`` or ``<seed> done <marker>`` per
        seed (``--seed`` and the next K-1), then ``- run`` (the choice).

    Raises:
        ConfigError: bad options, or a finished stage made with other options (:func:`dints.pipeline.records.status`).
    """
    p = OneLineParser(prog="config.py status", description=stage_status.__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=records.KINDS, help="the stage (val: stage 3, test: stage 4, resample: stage 6)")
    p.add_argument("--force", action="store_true", help="FORCE=1: every unit runs (the options are still checked)")
    p.add_argument("--search_seeds", type=int, default=1,
                   help="search: SEARCH_SEEDS, how many seeded searches to choose among (1: one search)")
    a, rest = p.parse_known_args(argv)
    if a.search_seeds < 1:
        raise ConfigError(f"--search_seeds must be >= 1, got {a.search_seeds}")
    stage = records.STAGE_OF[a.kind]
    options = [*rest, *(["--split", a.kind] if stage == "test" else [])]
    base = load_config([v.replace("{fold}", "0") for v in options], stage)
    resolved, task = resolve_task(base)
    if a.kind == "search" and a.search_seeds > 1:
        return seeded_search_status(options, base, a.search_seeds, a.force)
    if a.kind in ("test", "fuse", "resample") and not task.test:
        return ["- none"]
    if a.kind not in records.PER_FOLD:
        units = [(None, base)]
    else:
        folds = records.effective_folds(vars(base))
        units = [(k, load_config([v.replace("{fold}", str(k)) for v in options] + ["--fold", str(k)], stage))
                 for k in folds]
    out = []
    for fold, cfg in units:
        current = to_dict(cfg)
        if a.force:
            out.append(f"{'-' if fold is None else fold} run")
            continue
        what, marker = records.status(a.kind, current, cfg.work_root, cfg.task, cfg.mem, fold)
        out.append(f"{'-' if fold is None else fold} {what}" + (f" {marker}" if what == "done" else ""))
    return out


def seeded_search_status(options: Sequence[str], base: argparse.Namespace, count: int, force: bool) -> list[str]:
    """:func:`stage_status` of a search that chooses among ``count`` seeded searches (``--seed`` and the next ones).

    Raises:
        ConfigError: the choice, or one of the searches, is finished but was made otherwise.
    """
    seeds = list(range(base.seed, base.seed + count))
    if not force:
        what, marker = records.status("search", to_dict(base), base.work_root, base.task, base.mem,
                                      chosen_among=seeds)
        if what == "done":
            return [f"- done {marker}"]
    out = []
    for s in seeds:
        cfg = load_config([*options, "--seed", str(s)], "search")
        what, marker = ("run", None) if force else records.status(
            "search", to_dict(cfg), cfg.work_root, cfg.task, cfg.mem, seed=s)
        out.append(f"{s} {what}" + (f" {marker}" if what == "done" else ""))
    return [*out, "- run"]


def main(argv: list[str] | None = None) -> None:
    """``config.py STAGE [options]`` prints a stage's resolved options; ``config.py status KIND ...`` is for main.sh."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        print("\n".join(stage_status(argv[1:])))
        return
    if not argv or argv[0] not in STAGES:
        p = OneLineParser(prog="config.py", description=__doc__.split("\n\n")[0],
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="STAGE: search, retrain, test or fuse; `config.py STAGE --help` lists its options. "
                                 "KIND: search, retrain, val, test, fuse or resample.")
        p.add_argument("command", choices=[*STAGES, "status"], help="a stage, or status")
        p.parse_args(argv[:1])
        return
    print(json.dumps(to_dict(load_config(argv[1:], argv[0], prog=f"config.py {argv[0]}")), indent=2))


if __name__ == "__main__":
    cli_main(main)
