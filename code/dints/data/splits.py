"""Cross-validation folds, made once per task with a fixed seed and reused by every stage (``splits.json``).

The search further halves a fold's training part: one half updates the network weights, the other the
architecture parameters (docs/method.md, "The stages").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dints.errors import DataError
from dints.io import write_json


def make_folds(case_ids: list[str], num_folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """Split cases into ``num_folds`` folds: a seeded permutation, fold k validates on every num_folds-th case.

    Args:
        case_ids: unique case names (order does not matter: they are sorted first).
        num_folds: number of folds (>= 2).
        seed: permutation seed.

    Returns:
        ``[{"train": [...], "val": [...]}, ...]``, one dict per fold, lists sorted. The validation parts are
        disjoint and cover every case once; fold sizes differ by at most one.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("case ids must be unique")
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    if len(ids) < num_folds:
        raise DataError(f"{len(ids)} training cases cannot make {num_folds} folds (use --num_folds {len(ids)} or fewer)")
    perm = np.random.default_rng(seed).permutation(len(ids))
    folds = []
    for k in range(num_folds):
        val = sorted(ids[i] for i in perm[k::num_folds])
        val_set = set(val)
        folds.append({"train": [c for c in ids if c not in val_set], "val": val})
    return folds


def read_given_splits(path: str | Path, case_ids: list[str], num_folds: int) -> list[dict[str, list[str]]]:
    """The folds of an nnU-Net ``splits_final.json`` (``[{"train": [...], "val": [...]}, ...]``), checked against the
    task's cases.

    Raises:
        DataError: naming the file: not such a list, another fold count than ``--num_folds``, unknown cases, or a
            fold whose training and validation cases overlap or are empty.
    """
    path = Path(path)
    try:
        folds = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    ok = isinstance(folds, list) and all(isinstance(f, dict) and isinstance(f.get("train"), list)
                                         and isinstance(f.get("val"), list) for f in folds)
    if not ok:
        raise DataError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}}, one per fold")
    if len(folds) != num_folds:
        raise DataError(f"{path}: holds {len(folds)} folds but --num_folds is {num_folds}")
    known = set(case_ids)
    out = []
    for k, f in enumerate(folds):
        train, val = sorted(map(str, f["train"])), sorted(map(str, f["val"]))
        unknown = sorted((set(train) | set(val)) - known)
        if unknown:
            raise DataError(f"{path}: fold {k} names cases the dataset does not have: {unknown[:3]}")
        if set(train) & set(val):
            raise DataError(f"{path}: fold {k} trains and validates on {sorted(set(train) & set(val))[:3]}")
        if not train or not val:
            raise DataError(f"{path}: fold {k} has no {'training' if not train else 'validation'} cases")
        out.append({"train": train, "val": val})
    return out


def load_or_create_splits(path: str | Path, case_ids: list[str], num_folds: int, seed: int, task: str = "",
                          given: str | Path | None = None) -> list[dict]:
    """Return the folds saved at ``path``, creating the file on first use; with ``given`` (an nnU-Net dataset's
    ``splits_final.json``), that file's folds, which ``path`` then records.

    Raises:
        DataError: the saved file is unreadable, or its cases or fold count disagree with the task (it names
            the file; deleting it makes new splits).
    """
    path = Path(path)
    if given is not None:
        folds = read_given_splits(given, case_ids, num_folds)
        record = {"task": task, "source": str(given), "num_folds": num_folds, "folds": folds}
        if not path.is_file() or json.loads(path.read_text()) != record:
            write_json(path, record)
        return folds
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            folds = saved["folds"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}: not a valid splits file (delete it to make new splits)") from None
        if len(folds) != num_folds:
            raise DataError(f"{path}: holds {len(folds)} folds but --num_folds is {num_folds} (delete it to make new splits)")
        saved_ids = sorted(c for f in folds for c in f["val"])
        if saved_ids != sorted(case_ids):
            missing = sorted(set(case_ids) - set(saved_ids))[:3]
            extra = sorted(set(saved_ids) - set(case_ids))[:3]
            raise DataError(
                f"{path}: cases differ from dataset.json (not in splits: {missing}, not in dataset: {extra}); "
                "delete it to make new splits"
            )
        return folds
    folds = make_folds(case_ids, num_folds, seed)
    write_json(path, {"task": task, "seed": seed, "num_folds": num_folds, "folds": folds})
    return folds


def search_halves(train_ids: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Split a fold's training cases into the weight half and the architecture half (seeded, disjoint).

    Raises:
        DataError: fewer than two cases (each half needs one).
    """
    if len(train_ids) < 2:
        raise DataError(f"the search needs at least 2 training cases in the fold, got {len(train_ids)}")
    ids = sorted(train_ids)
    perm = np.random.default_rng(seed + 1).permutation(len(ids))
    half = (len(ids) + 1) // 2
    weight = sorted(ids[i] for i in perm[:half])
    arch = sorted(ids[i] for i in perm[half:])
    return weight, arch
