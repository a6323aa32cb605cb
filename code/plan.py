#!/usr/bin/env python
"""Stage 0: the dataset's fingerprint, ``<work_root>/<task>/fingerprint.json`` (docs/method.md, "The fingerprint").

    python code/plan.py --data_root data --task Task99_Demo --work_root work

Checks the task as every stage does, then reads every training case once (shared among the processes under
horovodrun or torchrun), with a progress bar: per case its voxel size, shape and the shape of its non-zero region;
per channel the foreground intensities' percentiles 0.5, 50 and 99.5, mean and standard deviation from a seeded
sample; per class its voxels and the cases holding it. A fingerprint made from the same files (names, sizes,
modification times) is reused; changed files make a new one. It prints the medians and the intensity statistics,
the figures to choose ``--spacing``, ``--intensity`` and ``--ct_window`` from.
"""

from __future__ import annotations

import json
from pathlib import Path

from config import load_config, resolve_task
from dints.data import fingerprint as fp
from dints.data.msd import check_headers, check_labels
from dints.io import write_json
from dints.pipeline.cli import cli_main
from dints.pipeline.stage import init_processes
from dints.run import dist, layout
from dints.run.runlog import setup_logging

FINGERPRINT = "fingerprint.json"


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


def run_plan(cfg) -> Path:
    """Write (or reuse) the task's fingerprint; returns its path."""
    d = init_processes(cfg.device)
    cfg, task = resolve_task(cfg)
    log = setup_logging(None)
    out = layout.task_dir(cfg.work_root, task.name) / FINGERPRINT
    stamp = layout.task_dir(cfg.work_root, task.name) / layout.LABEL_STAMP

    def check() -> tuple[dict, dict | None]:  # the task's checks, what the fingerprint depends on, the saved one
        check_headers(task)
        check_labels(task, stamp, progress=True)
        return fp.file_key(task), json.loads(out.read_text()) if out.is_file() else None

    key, saved = dist.on_main(check)
    if isinstance(saved, dict) and saved.get("key") == key:
        log.info("fingerprint of %s unchanged (same files): %s", task.name, out)
        for line in describe(saved):
            log.info("%s", line)
        return out
    from tqdm import tqdm

    per_case = fp.per_case_samples(len(task.training))
    mine = list(range(d.rank, len(task.training), d.world_size))
    facts = [(i, fp.case_facts(task.training[i], task.num_classes, per_case, fp.case_rng(i)))
             for i in tqdm(mine, desc="fingerprint", disable=not d.is_main, leave=False)]
    gathered = dist.gather_to_main(facts)
    if d.is_main:
        ordered = [f for _, f in sorted((pair for part in gathered for pair in part), key=lambda p: p[0])]
        result = fp.summarise(ordered, task, key)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
        for line in describe(result):
            log.info("%s", line)
        log.info("fingerprint -> %s", out)
    dist.barrier()
    return out


def main(argv: list[str] | None = None) -> Path:
    return run_plan(load_config(argv, "search", prog="plan.py", description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    cli_main(main)
