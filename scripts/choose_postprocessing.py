#!/usr/bin/env python
"""Choose the post-processing on the validation folds: keep the largest connected component of a class where that
raises the cross-validated Dice (as nnU-Net does). Writes ``<search run>/postprocessing.json``.

    python scripts/choose_postprocessing.py --config configs/tiny.yaml --task Task99_Demo --work_root work

It reads the label maps stage 3 writes, ``val-fold<k>/<case>.nii.gz``, of ``--folds`` (default all) against the
labels of dataset.json; scripts/export_model.py puts the choice into the model folder and code/predict.py applies
it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from config import load_config  # noqa: E402
from dints.data.msd import load_task  # noqa: E402
from dints.data.splits import load_or_create_splits  # noqa: E402
from dints.errors import UserError  # noqa: E402
from dints.pipeline.cli import cli_main  # noqa: E402
from dints.evaluate.postprocess import choose_largest_component  # noqa: E402
from dints.io import write_json  # noqa: E402
from dints.run import layout  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(argv, "fuse", prog="choose_postprocessing.py", description=__doc__.split("\n\n")[0])
    task = load_task(cfg.data_root, cfg.task)
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    splits = load_or_create_splits(layout.task_dir(cfg.work_root, cfg.task) / layout.SPLITS, task.case_ids,
                                   cfg.num_folds, cfg.seed, task.name)
    cases = []
    for k in cfg.folds if cfg.folds is not None else range(cfg.num_folds):
        for cid in splits[k]["val"]:
            pred = layout.eval_dir(run, "val", k) / f"{cid}.nii.gz"
            if not pred.is_file():
                raise UserError(f"{pred} does not exist: run stage 3 for fold {k} first")
            ref = np.asarray(nib.load(str(task.case(cid)["label"])).dataobj).astype(np.int64)
            cases.append((np.asarray(nib.load(str(pred)).dataobj).astype(np.int64), ref.reshape(ref.shape[:3])))
    choice = choose_largest_component(cases, task.num_classes)
    out = {"largest_component": choice["largest_component"], "cases": len(cases),
           "dice": {task.labels[c]: v for c, v in choice["dice"].items()}}
    write_json(run / layout.POSTPROCESSING, out)
    for c, v in choice["dice"].items():
        keep = "keep largest component" if c in choice["largest_component"] else "leave as is"
        print(f"{task.labels[c]}: mean Dice {v['plain']:.4f} plain, {v['filtered']:.4f} filtered -> {keep}")
    print(f"wrote {run / layout.POSTPROCESSING} ({len(cases)} validation cases)")
    return out


if __name__ == "__main__":
    cli_main(main)
