#!/usr/bin/env python
"""Print a task's results: each fold's validation Dice (stage 3) and where the final label maps are (stage 6).

    python code/report.py --config configs/tiny.yaml --task Task99_Demo --work_root work
"""

from __future__ import annotations

import json

from config import load_config
from dints.pipeline.cli import cli_main
from dints.data.msd import load_task
from dints.run import layout


def report(cfg) -> str:
    """The results table as Markdown text."""
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    folds = cfg.folds if cfg.folds is not None else list(range(cfg.num_folds))
    lines, means = [], []
    for k in folds:
        f = layout.eval_dir(run, "val", k) / layout.SUMMARY
        if not f.is_file():
            lines.append(f"| {k} | (not evaluated) | |")
            continue
        s = json.loads(f.read_text())
        per_class = ", ".join(f"{n} {c['dice']['mean']:.3f}" for n, c in s["classes"].items() if c["dice"]["mean"] is not None)
        lines.append(f"| {k} | {s['mean_dice']:.4f} | {per_class} |")
        means.append(s["mean_dice"])
    out = [f"Task {cfg.task}: validation Dice per fold (foreground classes, original label grids)", "",
           "| fold | mean foreground Dice | per class |", "|---|---|---|", *lines]
    if means:
        out.append(f"| mean | {sum(means) / len(means):.4f} | over {len(means)} fold(s) |")
    final = run / layout.FINAL_SUMMARY
    if final.is_file():
        s = json.loads(final.read_text())
        out += ["", f"Final label maps ({len(s['files'])} test images, original grids): {s['folder']}"]
    elif not load_task(cfg.data_root, cfg.task).test:
        out += ["", "No final label maps: dataset.json lists no test images."]
    else:
        out += ["", f"No final label maps yet ({final} does not exist: stages 4-6 make them)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    text = report(load_config(argv, "fuse", prog="report.py", description=__doc__.split("\n\n")[0]))
    print(text)
    return text


if __name__ == "__main__":
    cli_main(main)
