#!/usr/bin/env python
"""Stages 3 and 4: evaluate a fold's retrained model on its validation cases, or infer on the test images.

    python code/test.py --split val  --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work
    python code/test.py --split test --config configs/tiny.yaml --data_root data --task Task99_Demo --fold 0 --work_root work

The model is ``<search run>/retrain-fold<k>/best.pt`` (the best validation Dice of that fold's retraining) unless
``--checkpoint`` names another. ``--tta 1`` adds flip test-time augmentation.

``--split val`` writes ``<search run>/val-fold<k>/``: ``metrics.csv`` (per case and class: Dice and 95% Hausdorff
distance in mm, on the original label grid) and ``summary.json`` (means and per-class statistics; empty classes are
counted, never averaged as NaN). ``--split test`` writes ``<search run>/test-fold<k>/<case>.npz`` per test image:
class probabilities on the processing grid and the original grid they map back to (stage 5 fuses them).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config import load_config  # noqa: E402
from dints import dist  # noqa: E402
from dints.errors import DataError, cli_main  # noqa: E402
from dints.evaluate import dist_sum  # noqa: E402
from dints.inference import original_grid, predict_case, save_probs  # noqa: E402
from dints.io import write_csv, write_json  # noqa: E402
from dints.metrics import case_metrics, summarise  # noqa: E402
from dints.modelfile import load_trained  # noqa: E402
from dints.resample import resample_probabilities  # noqa: E402
from dints.stage import prepare, search_dir  # noqa: E402
from dints.transforms import infer_transforms  # noqa: E402


def checkpoint_path(cfg) -> Path:
    """``--checkpoint`` or the fold's ``best.pt``."""
    return Path(cfg.checkpoint) if cfg.checkpoint else search_dir(cfg) / f"retrain-fold{cfg.fold}" / "best.pt"


def out_dir(cfg) -> Path:
    """``<search run>/val-fold<k>`` or ``<search run>/test-fold<k>``."""
    return search_dir(cfg) / f"{cfg.split}-fold{cfg.fold}"


def _fmt(x: float) -> float | str:
    return "" if math.isnan(x) else round(x, 5)


def evaluate_validation(net, ctx, cfg) -> Path:
    """Per-case metrics of the fold's validation cases on their original label grids."""
    d, task, out = dist.info(), ctx.task, ctx.run_dir
    names = [task.labels[k] for k in range(1, task.num_classes)]
    transform = infer_transforms(cfg)
    ids = ctx.val_ids
    rows = []
    for i, cid in enumerate(ids):
        if i % d.world_size != d.rank:
            continue
        case = task.case(cid)
        probs, affine = predict_case(net, case["image"], cfg, ctx.device, bool(cfg.tta), transform)
        orig_affine, shape, spacing = original_grid(case["label"])
        pred = resample_probabilities(probs, affine, orig_affine, shape).argmax(0)
        ref = np.asarray(nib.load(str(case["label"])).dataobj).astype(np.int64)
        m = case_metrics(pred, ref.reshape(shape), task.num_classes, spacing)
        rows.append({"index": i, "case": cid, **m})
        ctx.logger.info("%s: Dice %s", cid, [None if math.isnan(v) else round(v, 4) for v in m["dice"]])
    rows = _gather(rows, ids, task.num_classes - 1)
    if d.is_main:
        table = [{"case": r["case"], **{f"dice_{n}": _fmt(v) for n, v in zip(names, r["dice"])},
                  **{f"hd95_{n}": _fmt(v) for n, v in zip(names, r["hd95"])}} for r in rows]
        write_csv(out / "metrics.csv", table)
        summary = summarise(rows, names)
        summary.update(fold=cfg.fold, checkpoint=str(checkpoint_path(cfg)), tta=bool(cfg.tta))
        write_json(out / "summary.json", summary)
        ctx.logger.info("fold %d: mean foreground Dice %.4f over %d cases -> %s", cfg.fold, summary["mean_dice"] or 0,
                        len(rows), out / "summary.json")
    return out


def _gather(rows: list[dict], ids: list[str], k: int) -> list[dict]:
    """Every rank's rows on every rank, in case order (a fixed-size tensor allreduce; no pickling)."""
    if dist.info().world_size == 1:
        return rows
    buf = torch.zeros(len(ids), 2 * k + 1, dtype=torch.float64)
    for r in rows:
        buf[r["index"]] = torch.tensor([1.0, *r["dice"], *r["hd95"]], dtype=torch.float64)
    nan_mask = torch.isnan(buf)
    buf = dist_sum(torch.nan_to_num(buf, nan=0.0))
    nan_any = dist_sum(nan_mask.double()) > 0
    buf[nan_any] = float("nan")
    return [{"index": i, "case": cid, "dice": buf[i, 1:k + 1].tolist(), "hd95": buf[i, k + 1:].tolist()}
            for i, cid in enumerate(ids)]


def infer_test(net, ctx, cfg) -> Path:
    """Probability files of every test image of dataset.json."""
    d, task, out = dist.info(), ctx.task, ctx.run_dir
    if not task.test:
        raise DataError(f"{task.root / 'dataset.json'}: 'test' lists no images")
    transform = infer_transforms(cfg)
    for i, case in enumerate(task.test):
        if i % d.world_size != d.rank:
            continue
        probs, affine = predict_case(net, case["image"], cfg, ctx.device, bool(cfg.tta), transform)
        save_probs(out / f"{case['id']}.npz", probs, affine, case["image"])  # each rank writes its own cases
        ctx.logger.info("%s: probabilities %s -> %s", case["id"], tuple(probs.shape), out / f"{case['id']}.npz")
    dist.barrier()
    if d.is_main:
        write_json(out / "summary.json", {"fold": cfg.fold, "checkpoint": str(checkpoint_path(cfg)), "tta": bool(cfg.tta),
                                          "cases": [c["id"] for c in task.test]})
    return out


def run_test(cfg) -> Path:
    """Stage 3 (``--split val``) or stage 4 (``--split test``) for fold ``cfg.fold``; returns the output folder."""
    ckpt = checkpoint_path(cfg)
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    net, state = load_trained(ckpt, device)  # first: a missing model changes nothing on disk
    ctx = prepare(cfg, out_dir(cfg), f"test_{cfg.split}.log")
    net = net.to(ctx.device)
    for key in ("in_channels", "num_classes"):
        if state[key] != getattr(cfg, key):
            raise DataError(f"{ckpt} was trained with {key} {state[key]} but the task has {getattr(cfg, key)}")
    ctx.logger.info("model %s (iteration %d, validation Dice %.4f during retraining)", ckpt, state["iteration"],
                    state["best_dice"])
    if cfg.split == "val":
        return evaluate_validation(net, ctx, cfg)
    return infer_test(net, ctx, cfg)


def main(argv: list[str] | None = None) -> Path:
    return run_test(load_config(argv, "test"))


if __name__ == "__main__":
    cli_main(main)
