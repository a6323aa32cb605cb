#!/usr/bin/env python
"""Write ``msd_size.json`` (the seed's format) from the original images of one or more MSD task folders.

    python scripts/make_msd_size.py data/Task09_Spleen [data/Task07_Pancreas ...] --out msd_size.json

Output: ``{"<TaskName>": {"<case file name>": [x, y, z], ...}, ...}`` with the spatial size of every image
listed in each task's ``dataset.json`` (training and test). Stage 6 (``fuse.py --resample``) reads it. An
existing output file is updated: tasks given here replace their entries, other tasks are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from dints.errors import DataError, UserError, cli_main  # noqa: E402
from dints.io import write_json  # noqa: E402
from dints.msd import load_task  # noqa: E402


def task_sizes(task_dir: str | Path) -> dict[str, list[int]]:
    """Spatial size ``[x, y, z]`` of every training and test image of a task, keyed by file name."""
    task_dir = Path(task_dir)
    task = load_task(task_dir.parent, task_dir.name)
    sizes = {}
    for entry in task.training + task.test:
        path = entry["image"]
        try:
            shape = nib.load(str(path)).shape
        except Exception as exc:
            raise DataError(f"{path}: cannot be read as NIfTI ({exc})") from None
        sizes[path.name] = [int(s) for s in shape[:3]]
    return dict(sorted(sizes.items()))


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks", nargs="+", help="MSD task folders (each holding dataset.json)")
    p.add_argument("--out", required=True, help="msd_size.json to write (updated if it exists)")
    a = p.parse_args(argv)
    out = Path(a.out)
    table: dict = {}
    if out.is_file():
        try:
            table = json.loads(out.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{out}: exists but is not valid JSON; remove it or choose another --out") from None
    for t in a.tasks:
        table[Path(t).name] = task_sizes(t)
        print(f"{Path(t).name}: {len(table[Path(t).name])} images")
    write_json(out, table)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    cli_main(main)
