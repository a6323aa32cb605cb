#!/usr/bin/env python
"""Stage 0: the dataset's fingerprint and the plan (docs/method.md, "The fingerprint" and "The plan").

    python code/plan.py --data_root data --task Task99_Demo --work_root work [--gpu_mb 24000]

Checks the task as every stage does, then reads every training case once (shared among the processes under
horovodrun or torchrun), with a progress bar: per case its voxel size, shape and the shape of its non-zero region;
per channel the foreground intensities' percentiles 0.5, 50 and 99.5, mean and standard deviation from a seeded
sample; per class its voxels and the cases holding it. ``<work_root>/<task>/fingerprint.json`` made from the same
files (names, sizes, modification times) is reused; changed files make a new one.

From the fingerprint and the GPU memory it writes ``<work_root>/<task>/plan.yaml``: the voxel size, the intensity
normalisation, and per stage the largest patch and batch whose predicted memory fits (each value with the rule and
figures it came from), and prints it. Every stage reads the plan under its preset and flags. Run again once the
search has decoded its architecture (code/main.sh does, before stage 2), it sizes retraining for that architecture
instead of the heaviest one of the space.
"""

from __future__ import annotations

import json
from pathlib import Path

import argparse

from config import load_config, plan_file, resolve_task
from dints.data import fingerprint as fp
from dints.data.msd import check_headers, check_labels
from dints.errors import ConfigError
from dints.io import atomic_write, write_json
from dints.pipeline import planning
from dints.pipeline.cli import cli_main
from dints.pipeline.stage import init_processes
from dints.run import dist, layout
from dints.run.runlog import setup_logging
from dints.space import fit
from dints.space.archfile import read_arch

FINGERPRINT = layout.FINGERPRINT
#: Beside plan.yaml: the GPU memory it was planned for (kept by later runs without --gpu_mb) and the architecture.
PLAN_INPUTS = "plan_inputs.json"


def read_json_or_none(path: Path) -> object:
    """A file this stage wrote before, or None when it is missing or unreadable (then it is made again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def describe(f: dict) -> list[str]:
    """The fingerprint in a few lines."""
    m = f["median"]
    lines = [f"{f['task']}: {len(f['cases'])} training cases; median voxel size (mm, RAS) "
             f"{[round(v, 3) for v in m['spacing']]}, median shape {[round(v) for v in m['shape']]}, "
             f"non-zero region {[round(v) for v in m['shape_nonzero']]} ({m['nonzero_ratio']:.0%} of the volume)"]
    for c, s in f["intensity"].items():
        if s["samples"]:
            lines.append(f"channel {c} ({s['name']}): foreground percentiles 0.5/50/99.5 {s['percentile_00_5']:.4g} / "
                         f"{s['median']:.4g} / {s['percentile_99_5']:.4g}, mean {s['mean']:.4g}, "
                         f"std {s['std']:.4g} ({s['samples']} samples)")
        else:
            lines.append(f"channel {c} ({s['name']}): no foreground voxel in any case")
    for k, c in f["classes"].items():
        lines.append(f"class {k} ({c['name']}): {c['voxels']} voxels in {len(c['cases'])} of {len(f['cases'])} cases")
    return lines


def fingerprint(cfg, task, log) -> dict:
    """Write (or reuse) the task's fingerprint; returns it (on every process)."""
    d = dist.info()
    out = layout.task_dir(cfg.work_root, task.name) / FINGERPRINT
    stamp = layout.task_dir(cfg.work_root, task.name) / layout.LABEL_STAMP

    def check() -> tuple[dict, dict | None]:  # the task's checks, what the fingerprint depends on, the saved one
        check_headers(task)
        check_labels(task, stamp, progress=True)
        return fp.file_key(task), read_json_or_none(out)

    key, saved = dist.on_main(check)
    if isinstance(saved, dict) and saved.get("key") == key:
        log.info("fingerprint of %s unchanged (same files): %s", task.name, out)
        for line in describe(saved):
            log.info("%s", line)
        return saved
    from tqdm import tqdm

    per_case = fp.per_case_samples(len(task.training))
    mine = list(range(d.rank, len(task.training), d.world_size))
    facts = [(i, fp.case_facts(task.training[i], task.num_classes, per_case, fp.case_rng(i)))
             for i in tqdm(mine, desc="fingerprint", disable=not d.is_main, leave=False)]
    gathered = dist.gather_to_main(facts)
    result = None
    if d.is_main:
        ordered = [f for _, f in sorted((pair for part in gathered for pair in part), key=lambda p: p[0])]
        result = fp.summarise(ordered, task, key)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        for line in describe(result):
            log.info("%s", line)
        log.info("fingerprint -> %s", out)
    return dist.on_main(lambda: result)


def retrained_arch(cfg, task) -> tuple[object | None, str | None]:
    """The architecture retraining will build: ``--arch`` FILE, else the search run's ``arch.json`` once it exists
    (a baseline is retrained at the searched architecture's sizes); ``(None, None)`` before the search."""
    path = layout.retrain_arch(cfg.work_root, task.name, cfg.mem, cfg.arch)
    given = cfg.arch and not layout.baseline_of(cfg.arch)  # --arch FILE: read it (missing: read_arch's one line)
    return (read_arch(path), str(path)) if given or path.is_file() else (None, None)


def write_plan(configs: dict, task, found: dict, gpu_mb: float, gpu_source: str, cuda: bool, log) -> Path:
    """Make the plan and write it when it changed; returns its path. ``cuda``: plan for a CUDA device (AMP as
    ``--amp`` says), else for a CPU run (float32)."""
    arch, arch_source = retrained_arch(configs["retrain"], task)
    try:
        entries = planning.make_plan(found, configs, gpu_mb, arch, arch_source, cuda=cuda)
    except fit.DoesNotFit as err:
        raise ConfigError(f"--gpu_mb {gpu_mb:g}: {err}: give more memory (--gpu_mb, main.sh's GPU_MB) or a smaller "
                          "network (--channel_mul, --blocks)") from None
    out = plan_file(configs["search"].work_root, task.name)
    header = [f"The plan of {task.name}, written by code/plan.py from {out.parent / FINGERPRINT} "
              f"({len(found['cases'])} training cases).",
              f"GPU memory: {gpu_mb:.0f} MB ({gpu_source}); each patch and batch below is predicted to fit "
              f"{fit.budget_bytes(gpu_mb) / fit.MB:.0f} MB, keeping {fit.HEADROOM:.0%} free (docs/method.md, "
              "\"The plan\").",
              "Precedence, lowest first: the defaults < this plan < the preset < main.sh's variables < EXTRA_ARGS and "
              "flags; a value marked [set by ...] is one of those, planned around.",
              "code/plan.py rewrites this file (main.sh 0, and before stage 2 for the searched architecture): to "
              "change a value, set it in a preset or on the command line."]
    log.info("plan for %.0f MB of GPU memory (%s), %.0f MB of it for a step", gpu_mb, gpu_source,
             fit.budget_bytes(gpu_mb) / fit.MB)
    text = planning.render(entries, header)
    if not out.is_file() or out.read_text() != text:
        atomic_write(out, lambda tmp: Path(tmp).write_text(text))
        log.info("plan -> %s", out)
    else:
        log.info("plan unchanged: %s", out)
    write_json(out.with_name(PLAN_INPUTS), {"gpu_mb": gpu_mb, "gpu_source": gpu_source, "cuda": cuda,
                                             "arch": arch_source})
    for line in planning.describe(entries):
        log.info("%s", line)
    return out


def plan_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--gpu_mb", type=float, default=None,
                       help="GPU memory to plan patches and batches for, in MB (default: the CUDA device's memory; "
                            f"without one, {planning.CPU_GPU_MB:g} for a CPU run; once planned, the plan's own)")
    group.add_argument("--if_planned", action="store_true",
                       help="only re-plan a task that has a plan (code/main.sh does before stage 2, once the search "
                            "has decoded the architecture retraining sizes for)")


def run_plan(argv: list[str] | None) -> Path:
    """Stage 0: the fingerprint, then the plan; returns the plan's path."""
    description = __doc__.split("\n\n")[0]
    configs = {stage: load_config(argv, stage, prog="plan.py", description=description, add_options=plan_options,
                                  use_plan=False) for stage in ("search", "retrain", "test")}
    cfg = configs["search"]
    if cfg.gpu_mb is not None and cfg.gpu_mb <= 0:
        raise ConfigError(f"--gpu_mb must be > 0 (MB of GPU memory), got {cfg.gpu_mb:g}")
    init_processes(cfg.device)
    resolved = {}
    for stage, c in configs.items():
        resolved[stage], task = resolve_task(c)
    log = setup_logging(None)
    plan = plan_file(cfg.work_root, task.name)
    if cfg.if_planned and not plan.is_file():
        log.info("%s has no plan (%s): nothing to re-plan", task.name, plan)
        return plan
    found = fingerprint(resolved["search"], task, log)
    inputs = plan.with_name(PLAN_INPUTS)
    kept = read_json_or_none(inputs) if plan.is_file() else None
    if cfg.gpu_mb is not None:  # AMP runs on CUDA only: planned for a --gpu_mb, a GPU runs it (with --amp)
        gpu_mb, gpu_source, cuda = cfg.gpu_mb, "--gpu_mb", True
    elif isinstance(kept, dict) and {"gpu_mb", "gpu_source", "cuda"} <= kept.keys():
        gpu_mb, gpu_source, cuda = float(kept["gpu_mb"]), str(kept["gpu_source"]), bool(kept["cuda"])
        log.info("planning for %g MB of GPU memory, as before (%s; --gpu_mb or GPU_MB changes it)", gpu_mb, gpu_source)
    else:  # without a CUDA device the run is on the CPU: float32
        gpu_mb, gpu_source = planning.default_gpu_mb()
        cuda = gpu_source.startswith("the memory")
    out = dist.on_main(lambda: write_plan(resolved, task, found, gpu_mb, gpu_source, cuda, log))
    dist.barrier()
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_plan(argv)


if __name__ == "__main__":
    cli_main(main)
