"""``msd_size.json``, the authors' published code's table of original image sizes: ``{task: {image file name: [x, y,
z]}}``.

Written by ``scripts/make_msd_size.py`` from a task's images; stage 6 (``fuse.py --resample 1 --msd_size FILE``)
checks every result's grid against it when given (the grid itself comes from the original image, or from the one
stage 4 recorded).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

from dints.data.msd import image_files, load_task, output_name, read_json_object
from dints.errors import DataError, UserError
from dints.io import write_json


def task_sizes(task_dir: str | Path) -> dict[str, list[int]]:
    """Spatial size ``[x, y, z]`` of every training and test image of a task, keyed by file name.

    Raises:
        DataError: bad dataset.json, or an image that cannot be read (naming it).
    """
    task_dir = Path(task_dir)
    task = load_task(task_dir.parent, task_dir.name)
    sizes = {}
    for entry in task.training + task.test:
        path = image_files(entry)[0]
        try:
            shape = nib.load(str(path)).shape
        except Exception as exc:
            raise DataError(f"{path}: cannot be read as NIfTI ({exc})") from None
        sizes[output_name(entry)] = [int(s) for s in shape[:3]]
    return dict(sorted(sizes.items()))


def _read_table(path: Path) -> dict:
    return read_json_object(path, "a JSON object of tasks")


def update_msd_size(path: str | Path, task_dirs: list[str | Path]) -> dict[str, int]:
    """Write the sizes of the given tasks into ``path``, keeping the other tasks an existing file holds.

    Returns:
        Images recorded per task.

    Raises:
        UserError: ``path`` exists but is not a JSON table.
    """
    path = Path(path)
    table: dict = {}
    if path.is_file():
        try:
            table = _read_table(path)
        except DataError:
            raise UserError(f"{path}: exists but is not valid JSON; remove it or choose another --out") from None
    counts = {}
    for t in task_dirs:
        table[Path(t).name] = task_sizes(t)
        counts[Path(t).name] = len(table[Path(t).name])
    write_json(path, table)
    return counts


def read_msd_size(path: str | Path, task: str) -> dict[str, list[int]]:
    """The task's entry of an msd_size.json file.

    Raises:
        DataError: missing or invalid file, or no entry for the task.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--msd_size: {path} does not exist (scripts/make_msd_size.py writes it)")
    table = _read_table(path)
    if task not in table:
        raise DataError(f"{path}: has no entry for task '{task}' (it holds {sorted(table)})")
    entry = table[task]
    if not isinstance(entry, dict):
        raise DataError(f"{path}: the entry of task '{task}' must map case file names to [x, y, z] sizes")
    for name, size in entry.items():
        if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) and v > 0 for v in size)):
            raise DataError(f"{path}: size of '{name}' must be 3 positive integers [x, y, z], got {size!r}")
    return entry
