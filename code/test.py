#!/usr/bin/env python
"""Stages 3 and 4: evaluate a fold's retrained model on its validation cases, or infer on the test images.

    python code/test.py --split val  --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work
    python code/test.py --split test --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

The model is ``<search run>/retrain-fold<k>/best.pt`` (the best validation Dice of that fold's retraining) unless
``--checkpoint`` names another. ``--tta 1`` adds flip test-time augmentation.

``--split val`` writes ``<search run>/val-fold<k>/``: ``metrics.csv`` (per case and class: Dice and 95% Hausdorff
distance in mm, on the original label grid), ``summary.json`` (means and per-class statistics; empty classes are
counted, never averaged as NaN) and each case's predicted label map ``<case>.nii.gz`` on its original grid (the
results page draws them; ``--save_val 1`` adds the probabilities, ``<case>.npz``). ``--split test`` writes
``<search run>/test-fold<k>/<case>.npz`` per test image: class probabilities on the processing grid and the original
grid they map back to (stage 5 fuses them).

``--folds 0 1 2`` instead of ``--fold`` evaluates those folds in turn in one process (code/main.sh does so).
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from config import load_fold_configs, resolve_task, to_dict
from dints.data.msd import image_files, image_source, load_task
from dints.data.transforms import infer_transforms
from dints.errors import DataError
from dints.pipeline.cli import cli_main, run_folds
from dints.evaluate.inference import original_grid, predict_case, save_labels, save_probs
from dints.evaluate.metrics import case_metrics, summarise
from dints.evaluate.resample import resample_probabilities
from dints.io import write_csv, write_json
from dints.run import dist, layout
from dints.run.runlog import setup_logging
from dints.run.settings import DataSettings, InferSettings
from dints.pipeline.stage import init_processes, prepare
from dints.train.checkpoint import load as load_checkpoint
from dints.train.modelfile import load_trained


def checkpoint_path(cfg) -> Path:
    """``--checkpoint`` or the fold's ``best.pt``."""
    run = layout.search_dir(cfg.work_root, cfg.task, cfg.mem)
    return Path(cfg.checkpoint) if cfg.checkpoint else layout.best_checkpoint(run, cfg.fold)


def _fmt(x: float) -> float | str:
    return "" if math.isnan(x) else round(x, 5)


def evaluate_validation(net, ctx, cfg) -> Path:
    """Per-case metrics of the fold's validation cases on their original label grids."""
    d, task, out = dist.info(), ctx.task, ctx.run_dir
    names = [task.labels[k] for k in range(1, task.num_classes)]
    transform, infer = infer_transforms(DataSettings.from_options(cfg)), InferSettings.from_options(cfg)
    ids = ctx.val_ids
    mine = {}
    for start in range(0, len(ids), d.world_size):  # one case per rank per round
        i, saved = start + d.rank, None
        if i < len(ids):
            case = task.case(ids[i])
            probs, affine = predict_case(net, image_source(case), transform, infer, ctx.device)
            orig_affine, shape, spacing = original_grid(case["label"])
            pred = resample_probabilities(probs, affine, orig_affine, shape).argmax(0)
            ref = np.asarray(nib.load(str(case["label"])).dataobj).astype(np.int64)
            m = case_metrics(pred, ref.reshape(shape), task.num_classes, spacing)
            mine[i] = m["dice"] + m["hd95"]
            ctx.logger.info("%s: Dice %s", ids[i], [None if math.isnan(v) else round(v, 4) for v in m["dice"]])
            saved = (case, pred.astype(np.uint8), probs.astype(np.float16) if cfg.save_val else None, affine,
                     orig_affine)
        for item in dist.gather_to_main(saved) or []:  # rank 0 writes every rank's case of this round
            if item is not None:
                case, pred, probs, affine, orig_affine = item
                save_labels(out / f"{case['id']}.nii.gz", pred, orig_affine)
                if probs is not None:
                    save_probs(out / f"{case['id']}.npz", probs, affine, image_files(case)[0])
    k = task.num_classes - 1
    table = dist.gather_rows(mine, len(ids), 2 * k).tolist()  # every rank's cases, in case order
    rows = [{"case": cid, "dice": r[:k], "hd95": r[k:]} for cid, r in zip(ids, table)]
    ctx.record_config()  # with the results: a stage refused half-way leaves a finished run's record alone
    if d.is_main:
        write_csv(out / layout.METRICS, [{"case": r["case"], **{f"dice_{n}": _fmt(v) for n, v in zip(names, r["dice"])},
                                         **{f"hd95_{n}": _fmt(v) for n, v in zip(names, r["hd95"])}} for r in rows])
        summary = summarise(rows, names)
        summary.update(fold=cfg.fold, checkpoint=str(checkpoint_path(cfg)), tta=bool(cfg.tta))
        write_json(out / layout.SUMMARY, summary)
        ctx.logger.info("fold %d: mean foreground Dice %.4f over %d cases -> %s", cfg.fold, summary["mean_dice"] or 0,
                        len(rows), out / layout.SUMMARY)
    return out


def infer_test(net, ctx, cfg) -> Path:
    """Probability files of every test image of dataset.json."""
    d, task, out = dist.info(), ctx.task, ctx.run_dir
    transform, infer = infer_transforms(DataSettings.from_options(cfg)), InferSettings.from_options(cfg)
    for start in range(0, len(task.test), d.world_size):  # one case per rank per round; rank 0 writes them all
        i = start + d.rank
        mine = None
        if i < len(task.test):
            probs, affine = predict_case(net, image_source(task.test[i]), transform, infer, ctx.device)
            mine = (task.test[i], probs.astype(np.float16), affine)  # float16: what the file stores anyway
        for item in dist.gather_to_main(mine) or []:
            if item is not None:
                case, probs, affine = item
                save_probs(out / f"{case['id']}.npz", probs, affine, image_files(case)[0])
                ctx.logger.info("%s: probabilities %s -> %s", case["id"], tuple(probs.shape), out / f"{case['id']}.npz")
    ctx.record_config()
    if d.is_main:
        write_json(out / layout.SUMMARY, {"fold": cfg.fold, "checkpoint": str(checkpoint_path(cfg)), "tta": bool(cfg.tta),
                                          "cases": [c["id"] for c in task.test]})
    return out


def run_test(cfg) -> Path:
    """Stage 3 (``--split val``) or stage 4 (``--split test``) for fold ``cfg.fold``; returns the output folder."""
    ckpt = checkpoint_path(cfg)
    init_processes(cfg.device)
    if cfg.split == "test" and not load_task(cfg.data_root, cfg.task).test:
        setup_logging(None).info("%s: dataset.json lists no test images: nothing to infer", cfg.task)
        return layout.eval_dir(layout.search_dir(cfg.work_root, cfg.task, cfg.mem), cfg.split, cfg.fold)
    # Rank 0 reads the model (other nodes may not see its disk), before anything is written.
    net, state = load_trained(ckpt, torch.device("cpu"), state=dist.on_main(lambda: load_checkpoint(ckpt)))
    cfg, task = resolve_task(cfg)
    for key in ("in_channels", "num_classes"):
        if state[key] != getattr(cfg, key):
            raise DataError(f"{ckpt} was trained with {key} {state[key]} but the task has {getattr(cfg, key)}")
    out = layout.eval_dir(layout.search_dir(cfg.work_root, cfg.task, cfg.mem), cfg.split, cfg.fold)
    ctx = prepare(task, out, layout.LOGS[cfg.split], work_root=cfg.work_root, fold=cfg.fold, num_folds=cfg.num_folds,
                  seed=cfg.seed, device=cfg.device, record=to_dict(cfg), stage="test")
    net = net.to(ctx.device)
    ctx.logger.info("model %s (iteration %d, validation Dice %.4f during retraining)", ckpt, state["iteration"],
                    state["best_dice"])
    out = evaluate_validation(net, ctx, cfg) if cfg.split == "val" else infer_test(net, ctx, cfg)
    dist.barrier()  # every rank leaves together, after rank 0's writes
    return out


def main(argv: list[str] | None = None) -> list[Path]:
    return run_folds(run_test, load_fold_configs(argv, "test"))


if __name__ == "__main__":
    cli_main(main)
