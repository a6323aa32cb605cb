#!/usr/bin/env python
"""Report a task's results: each fold's validation Dice and HD95 (stage 3) and where the final label maps are (stage
6), printed as Markdown and written to ``<search run>/report.md``; with ``--html``, the results page too.

Beside the mean over folds it gives the Dice of the fold the search ran on (its ``config_search.json`` says which):
the search trained on that fold's training cases, which are every other fold's validation cases, so that fold's
validation cases are the only ones it did not see.

    python code/report.py --config configs/tiny.yaml --task Task99_Demo --work_root work [--html]

``--html`` writes ``<search run>/report/index.html`` and its images: the configuration and where each value came
from, the searched architecture and the search's progress, each fold's progress and best Dice, the validation
table with a box plot per class, overlays of each fold's best and worst validation case, and the final label maps.
It opens from disk, with no network. A run that is not finished gives a page of what exists, naming what is
missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from config import load_config
from dints.data.msd import load_task
from dints.evaluate.report_page import INDEX, build, dice_summary
from dints.io import atomic_write
from dints.pipeline.cli import cli_main
from dints.run import layout


def _fmt(stats: dict | None, digits: int) -> str:
    m = None if stats is None else stats.get("mean")
    return "" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.{digits}f}"


def report(cfg, task) -> str:
    """The results table as Markdown text."""
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    folds = cfg.folds if cfg.folds is not None else list(range(cfg.num_folds))
    names = [task.labels[c] for c in range(1, task.num_classes)]
    lines, means = [], []
    for k in folds:
        f = layout.eval_dir(run, "val", k) / layout.SUMMARY
        if not f.is_file():
            lines.append(f"| {k} | (not evaluated) |" + " |" * (2 * len(names)))
            continue
        s = json.loads(f.read_text())
        classes = [s["classes"].get(n, {}) for n in names]
        lines.append(f"| {k} | {_fmt({'mean': s['mean_dice']}, 4)} | "
                     + " | ".join(_fmt(c.get("dice"), 3) for c in classes) + " | "
                     + " | ".join(_fmt(c.get("hd95"), 1) for c in classes) + " |")
        if s["mean_dice"] is not None:
            means.append(s["mean_dice"])
    out = [f"Task {cfg.task}: validation per fold (foreground classes, original label grids; HD95 in mm)", "",
           "| fold | mean Dice | " + " | ".join(f"Dice {n}" for n in names) + " | "
           + " | ".join(f"HD95 {n}" for n in names) + " |", "|---" * (2 + 2 * len(names)) + "|", *lines]
    if means:
        out.append(f"| mean | {sum(means) / len(means):.4f} | over {len(means)} fold(s) |" + " |" * (2 * len(names) - 1))
    summary = dice_summary(run, folds)
    if summary is not None:
        out += ["", f"Validation Dice, {summary[0]}.", summary[1]]
    final = run / layout.FINAL_SUMMARY
    if final.is_file():
        s = json.loads(final.read_text())
        out += ["", f"Final label maps ({len(s['files'])} test images, original grids): {s['folder']}"]
    elif not task.test:
        out += ["", "No final label maps: dataset.json lists no test images."]
    else:
        out += ["", f"No final label maps yet ({final} does not exist: stages 4-6 make them)."]
    return "\n".join(out)


def options(p) -> None:
    p.add_argument("--html", action="store_true", help="also write the results page, <search run>/report/index.html")
    p.add_argument("--overlay_channel", type=int, default=0,
                   help="the channel of a multi-channel image the page's overlays draw")


def main(argv: list[str] | None = None) -> str:
    cfg = load_config(argv, "fuse", prog="report.py", description=__doc__.split("\n\n")[0], add_options=options)
    task = load_task(cfg.data_root, cfg.task)
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    text = report(cfg, task)
    print(text)
    if run.is_dir():
        atomic_write(run / "report.md", lambda tmp: Path(tmp).write_text(text + "\n"))
    if cfg.html:
        if not run.is_dir():
            print(f"No results page: {run} does not exist (run stage 1 first).")
        else:
            folds = cfg.folds if cfg.folds is not None else list(range(cfg.num_folds))
            page = build(run, task, folds, cfg.overlay_channel)
            print(f"Results page: {page.folder / INDEX} ({len(page.images)} images"
                  + (f"; not finished: {len(page.missing)} part(s) missing" if page.missing else "") + ")")
    return text


if __name__ == "__main__":
    cli_main(main)
