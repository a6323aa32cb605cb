#!/usr/bin/env python
"""Stages 5 and 6: fuse the folds' test probabilities, then bring the labels back to the original images.

    python code/fuse.py --config configs/tiny.yaml --data_root data --task Task99_Demo --work_root work
    python code/fuse.py --resample 1 --config configs/tiny.yaml --data_root data --task Task99_Demo --work_root work

Stage 5 averages ``<search run>/test-fold<k>/<case>.npz`` over ``--folds`` (default all), reporting folds that are
missing, and writes ``<search run>/fused/<case>.nii.gz`` (argmax labels on the processing grid) and
``<case>.npz`` (the averaged probabilities), with ``fused/summary.json`` naming the folds. Stage 6 (``--resample 1``)
resamples each fused result to its original image grid — probabilities trilinearly, then the argmax — and writes
``<search run>/final/<file>`` with the original image's header and affine, one file per test image, named as the
image: ready to submit. The grid is the original image's (its header), or, where the original image is not at hand,
the one stage 4 recorded in the probability file. ``--msd_size`` (``{task: {file: [x, y, z]}}``, optional)
cross-checks every size against a table of original sizes: a case missing from it, or a size that disagrees, is an
error. Each stage records its options in ``<search run>/config_fuse.json`` / ``config_resample.json``. A task with
no test images has nothing to fuse: both stages say so and succeed.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from config import load_config, to_dict
from dints.data.msd import image_files, load_task, output_name
from dints.data.msd_size import read_msd_size
from dints.errors import DataError, UserError
from dints.pipeline.cli import cli_main
from dints.pipeline.records import effective_folds, fused_folds
from dints.pipeline.stage import write_record
from dints.evaluate.fusion import fuse_probabilities
from dints.evaluate.inference import load_probs, save_labels, save_probs
from dints.evaluate.resample import resample_probabilities
from dints.io import write_json
from dints.run import dist, layout, lock
from dints.run.runlog import setup_logging


def search_run(cfg) -> Path:
    """The search run folder the stage works in."""
    return layout.search_dir(cfg.work_root, cfg.task, cfg.mem)


def fuse_folds(cfg, task, log) -> Path:
    """Stage 5: average the available folds per test case, argmax, write labels and probabilities."""
    run = search_run(cfg)
    folds = effective_folds(vars(cfg))
    out = layout.fused_dir(run)
    missing_all, plan = [], []
    for case in task.test:  # every case has some fold before anything is written
        files = {k: layout.eval_dir(run, "test", k) / f"{case['id']}.npz" for k in folds}
        have = {k: f for k, f in files.items() if f.is_file()}
        missing = sorted(set(folds) - set(have))
        if not have:
            raise UserError(f"{case['id']}: no fold has test probabilities ({files[folds[0]]} missing); run stage 4 "
                            "first")
        if missing:
            missing_all.append((case["id"], missing))
        plan.append((case, have, missing))
    write_record(run / layout.config_record("fuse"), to_dict(cfg))
    for case, have, missing in plan:
        parts = [load_probs(f) for f in have.values()]
        grids = {tuple(p["prob"].shape) for p in parts}
        if len(grids) != 1 or not all(np.allclose(p["affine"], parts[0]["affine"], atol=1e-4) for p in parts):
            raise DataError(f"{case['id']}: the folds' probabilities lie on different grids {sorted(grids)}; "
                            "were they made with different preprocessing options?")
        prob = fuse_probabilities([p["prob"] for p in parts])
        ref = parts[0]
        save_labels(out / f"{case['id']}.nii.gz", prob.argmax(0), ref["affine"])
        save_probs(out / f"{case['id']}.npz", prob, ref["affine"], ref["image"],
                   orig=(ref["orig_affine"], ref["orig_shape"]), dtype=np.float32, folds=np.array(sorted(have)))
        log.info("%s: fused folds %s%s", case["id"], sorted(have), f" (missing {missing})" if missing else "")
    if missing_all:
        log.warning("%d test case(s) fused without some folds: %s", len(missing_all), missing_all)
    write_json(out / layout.SUMMARY, {"folds": folds, "cases": [c["id"] for c in task.test],
                                      "missing": {c: m for c, m in missing_all}})
    log.info("fused %d test case(s) from folds %s -> %s", len(task.test), folds, out)
    if len(folds) < cfg.num_folds:
        log.warning("fused %d of the %d folds (%s); once every fold has its test probabilities, fuse them all "
                    "(bash code/main.sh 5 6 without FOLDS, or --folds %s)", len(folds), cfg.num_folds, folds,
                    " ".join(map(str, range(cfg.num_folds))))
    return out


def resample_to_original(cfg, task, log) -> Path:
    """Stage 6: every fused result on its original image grid, as NIfTI with the original header."""
    run = search_run(cfg)
    sizes = read_msd_size(cfg.msd_size, task.name) if cfg.msd_size else None
    out = layout.final_dir(run)
    plan = []
    for case in task.test:  # every input is there and agrees before anything is written
        src = layout.fused_dir(run) / f"{case['id']}.npz"
        if not src.is_file():
            raise UserError(f"{src} does not exist; run stage 5 (fuse) first")
        name, image = output_name(case), image_files(case)[0]  # nnU-Net: <case><file_ending>, its first channel
        if image.is_file():
            img = nib.load(str(image))
            header, affine, shape = img.header, np.asarray(img.affine, dtype=np.float64), tuple(img.shape[:3])
            origin = f"the original image {image}"
        else:  # no original image here: the grid recorded at stage 4 (read without the probabilities)
            with np.load(src) as z:
                header, affine, shape = None, z["orig_affine"], tuple(int(v) for v in z["orig_shape"])
            origin = f"the original size recorded in {src}"
        if sizes is not None:
            if name not in sizes:
                raise DataError(f"{cfg.msd_size}: case '{name}' of task {task.name} is missing")
            want = tuple(int(s) for s in sizes[name])
            if want != shape:
                raise DataError(f"{cfg.msd_size}: size {list(want)} of '{name}' disagrees with {origin} "
                                f"({list(shape)})")
        plan.append((case, src, name, header, affine, shape))
    for case, src, name, header, affine, shape in plan:
        fused = load_probs(src)
        prob = resample_probabilities(fused["prob"], fused["affine"], affine, shape)
        save_labels(out / name, prob.argmax(0), affine, header)
        log.info("%s: %s on the original grid %s -> %s", case["id"], tuple(fused["prob"].shape[1:]), shape, out / name)
    write_record(run / layout.config_record("resample"), to_dict(cfg),
                 fused_folds=fused_folds(cfg.work_root, cfg.task, cfg.mem))
    write_json(run / layout.FINAL_SUMMARY, {"folder": str(out), "msd_size": cfg.msd_size,
                                            "files": [output_name(c) for c in task.test]})
    log.info("final label maps (one per test image, original grids) -> %s", out)
    return out


def run_fuse(cfg) -> Path:
    """Stage 5 (default) or stage 6 (``--resample 1``) on rank 0; returns the output folder."""
    if not dist.info().is_main:
        return search_run(cfg)
    task = load_task(cfg.data_root, cfg.task)
    run = search_run(cfg)
    out = layout.final_dir(run) if cfg.resample else layout.fused_dir(run)
    # One run at a time; the lock lies beside the output folder, which holds only results (final/ is delivered).
    if not task.test:
        setup_logging(None).info("%s: dataset.json lists no test images: nothing to %s", cfg.task,
                                 "resample" if cfg.resample else "fuse")
        return out
    notes = lock.acquire(run, f".{out.name}.lock", clean=out).notes
    log = setup_logging(run / layout.LOGS["resample" if cfg.resample else "fuse"])
    for note in notes:
        log.warning("%s", note)
    return resample_to_original(cfg, task, log) if cfg.resample else fuse_folds(cfg, task, log)


def main(argv: list[str] | None = None) -> Path:
    return run_fuse(load_config(argv, "fuse"))


if __name__ == "__main__":
    cli_main(main)
