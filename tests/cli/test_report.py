"""code/report.py's text: the per-fold table, and beside the mean over folds the Dice of the fold the search ran on
(read from the search's record) with the note that says why, on run folders made by hand."""

from __future__ import annotations

import json

from config import load_config
from dints.data.msd import load_task
from dints.run import layout
from helpers.fake_runs import fake_run
from helpers.stages import module

TASK = "Task99_Demo"
DICE = {0: 0.6, 1: 0.8123, 2: 0.7, 3: 0.91, 4: 0.55}  # stage 3's mean Dice per fold, made up


def report_text(work, demo_root, *extra):
    cfg = load_config(["--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *extra], "fuse")
    return module("report").report(cfg, load_task(demo_root, TASK))


def test_the_search_folds_dice_is_given_beside_the_mean(tmp_path, demo_root):
    fake_run(tmp_path, 3, DICE)
    text = report_text(tmp_path, demo_root)
    mean = sum(DICE.values()) / len(DICE)
    assert f"| mean | {mean:.4f} | over 5 fold(s) |" in text
    assert f"Validation Dice, mean over 5 folds {mean:.4f} (fold 3, unseen by the search: {DICE[3]:.4f})." in text
    assert "The search trained on fold 3's training cases" in text
    assert "Only fold 3's validation cases were unseen by the search" in text


def test_folds_asked_for_and_a_choice_among_seeds(tmp_path, demo_root):
    fake_run(tmp_path, 1, DICE, search_seeds=[0, 1], chosen_seed=1)
    text = report_text(tmp_path, demo_root, "--folds", "1", "4")
    mean = (DICE[1] + DICE[4]) / 2
    assert (f"Validation Dice, mean over 2 folds {mean:.4f} (fold 1, not trained on by the search but used to choose "
            f"among its 2 seeds: {DICE[1]:.4f}).") in text
    assert "SEARCH_SEEDS=2" in text


def test_a_fold_without_a_mean_dice_is_shown_empty(tmp_path, demo_root):
    run = fake_run(tmp_path, 0, DICE)
    summary = layout.eval_dir(run, "val", 2) / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "mean_dice": None}))
    text = report_text(tmp_path, demo_root)
    assert "| 2 |  | " in text
    mean = sum(v for k, v in DICE.items() if k != 2) / 4
    assert f"mean over 4 folds {mean:.4f} (fold 0, unseen by the search: {DICE[0]:.4f})" in text
