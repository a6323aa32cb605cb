#!/usr/bin/env python
"""Write a Medical Segmentation Decathlon submission: ``<TaskXX_Name>/<case>.nii.gz`` for every test image, in one zip.

    python scripts/make_submission.py --config configs/Task09_Spleen.yaml --task Task09_Spleen --work_root work \\
        --out submission.zip [--labels DIR]

The label maps come from stage 6 (``<search run>/final/``) or ``--labels DIR`` (e.g. code/predict.py's output).
Each must exist, be a .nii.gz file, match its original image's shape and affine, and hold integers; the cases the Decathlon
says must not be submitted (liver_141, 156, 160, 161, 162, 164, 167, 182, 189, 190 and hepaticvessel_247) are left
out. Several tasks go into one zip by running the command once per task with the same ``--out`` (entries of the
task are replaced, others kept).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from config import load_config  # noqa: E402
from dints.data.msd import image_files, load_task  # noqa: E402
from dints.errors import DataError  # noqa: E402
from dints.pipeline.cli import cli_main  # noqa: E402
from dints.io import atomic_write  # noqa: E402
from dints.run import layout  # noqa: E402

#: Test cases the Decathlon asks not to submit.
EXCLUDED = {f"liver_{n}" for n in (141, 156, 160, 161, 162, 164, 167, 182, 189, 190)} | {"hepaticvessel_247"}


def check_against_image(label: Path, image: Path) -> None:
    """The label map must lie on the original image's grid.

    Raises:
        DataError: naming the file whose shape or affine differs.
    """
    lab, img = nib.load(str(label)), nib.load(str(image))
    if tuple(lab.shape[:3]) != tuple(img.shape[:3]) or len(lab.shape) != 3:
        raise DataError(f"{label}: shape {tuple(lab.shape)} differs from its image {image} ({tuple(img.shape[:3])})")
    if not np.allclose(lab.affine, img.affine, atol=1e-3, rtol=1e-4):
        raise DataError(f"{label}: affine differs from its image {image}")
    if not np.issubdtype(lab.get_data_dtype(), np.integer):
        raise DataError(f"{label}: holds {lab.get_data_dtype()} values, not integer labels")


def options(p) -> None:
    p.add_argument("--out", required=True, help="submission zip (updated when it exists)")
    p.add_argument("--labels", default=None, help="folder of label maps (default: stage 6's final/)")


def main(argv: list[str] | None = None) -> Path:
    cfg = load_config(argv, "fuse", prog="make_submission.py", description=__doc__.split("\n\n")[0],
                          add_options=options)
    task = load_task(cfg.data_root, cfg.task)
    labels = Path(cfg.labels) if cfg.labels else layout.final_dir(layout.search_dir(cfg.work_root, cfg.task, cfg.mem))
    if not task.test:
        raise DataError(f"{task.root / 'dataset.json'}: 'test' lists no images")
    entries, skipped = {}, []
    for case in task.test:
        if case["id"] in EXCLUDED:
            skipped.append(case["id"])
            continue
        f = labels / f"{case['id']}.nii.gz"
        if not f.is_file():
            raise DataError(f"{f} does not exist: every test image needs a .nii.gz label map (stage 6, or --labels)")
        check_against_image(f, image_files(case)[0])
        entries[f"{task.name}/{case['id']}.nii.gz"] = f
    out = Path(cfg.out)
    keep = {}
    if out.is_file():
        with zipfile.ZipFile(out) as z:
            keep = {n: z.read(n) for n in z.namelist() if not n.startswith(f"{task.name}/")}

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for n, data in sorted(keep.items()):
                z.writestr(n, data)
            for n, f in sorted(entries.items()):
                z.write(f, n)

    atomic_write(out, write)
    print(f"{out}: {len(entries)} label maps of {task.name}" + (f" (left out as the Decathlon asks: {skipped})"
                                                               if skipped else ""))
    return out


if __name__ == "__main__":
    cli_main(main)
