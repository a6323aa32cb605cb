#!/usr/bin/env python
"""Write ``msd_size.json`` (the authors' published code's format) from the original images of MSD task folders.

    python scripts/make_msd_size.py data/Task09_Spleen [data/Task07_Pancreas ...] --out msd_size.json

Output: ``{"<TaskName>": {"<case file name>": [x, y, z], ...}, ...}`` with the spatial size of every image
listed in each task's ``dataset.json`` (training and test). Stage 6 (``fuse.py --resample 1 --msd_size FILE``, or
``MSD_SIZE=FILE`` for ``code/main.sh``) checks the final label maps' sizes against it. An existing output file is
updated: tasks given here replace their entries, other tasks are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from dints.data.msd_size import update_msd_size  # noqa: E402
from dints.pipeline.cli import cli_main  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks", nargs="+", help="MSD task folders (each holding dataset.json)")
    p.add_argument("--out", required=True, help="msd_size.json to write (updated if it exists)")
    a = p.parse_args(argv)
    for name, n in update_msd_size(a.out, a.tasks).items():
        print(f"{name}: {n} images")
    print(f"wrote {a.out}")
    return Path(a.out)


if __name__ == "__main__":
    cli_main(main)
