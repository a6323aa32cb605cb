#!/usr/bin/env python
"""Print a task's results: each fold's validation Dice (stage 3) and where the final label maps are (stage 6).

    python code/report.py --config configs/tiny.yaml --task Task99_Demo --work_root work
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import load_config  # noqa: E402
from dints.errors import cli_main  # noqa: E402
from dints.stage import search_dir  # noqa: E402


def report(cfg) -> str:
    """The results table as Markdown text."""
    run = search_dir(cfg)
    folds = cfg.folds if cfg.folds is not None else list(range(cfg.num_folds))
    lines, means = [], []
    for k in folds:
        f = run / f"val-fold{k}" / "summary.json"
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
    final = run / "final_summary.json"
    if final.is_file():
        s = json.loads(final.read_text())
        out += ["", f"Final label maps ({len(s['files'])} test images, original grids): {s['folder']}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> str:
    text = report(load_config(argv, "fuse"))
    print(text)
    return text


if __name__ == "__main__":
    cli_main(main)
