"""Which Dice the search could have seen, on the results page and in its helpers: the mean over folds beside the Dice
of the fold the search ran on (read from the search's record, not assumed to be 0), and the note that says why, on
run folders made by hand with per-fold numbers the test averages itself."""

from __future__ import annotations

import json

import pytest

from dints.data.msd import load_task
from dints.evaluate.report_page import INDEX, SearchExposure, build, dice_summary, fold_dice, search_exposure
from dints.run import layout
from helpers.fake_runs import fake_run

TASK = "Task99_Demo"
#: Stage 3's mean Dice per fold, made up.
DICE = {0: 0.81234, 1: 0.77, 2: 0.90111, 3: 0.65, 4: 0.7}


def expected_mean(dice: dict[int, float]) -> str:
    return f"{sum(dice.values()) / len(dice):.4f}"


@pytest.mark.parametrize("search_fold", [0, 2])
def test_the_search_folds_dice_beside_the_mean_and_the_note(tmp_path, search_fold):
    run = fake_run(tmp_path, search_fold, DICE)
    line, note = dice_summary(run, list(DICE))
    assert line == (f"mean over 5 folds {expected_mean(DICE)} "
                    f"(fold {search_fold}, unseen by the search: {DICE[search_fold]:.4f})")
    assert f"The search trained on fold {search_fold}'s training cases" in note
    assert "the validation cases of every other fold" in note
    assert f"Only fold {search_fold}'s validation cases were unseen by the search" in note
    assert search_exposure(run, list(DICE)) == SearchExposure(search_fold)


def test_a_choice_among_seeds_is_said_and_a_missing_fold_is_named(tmp_path):
    dice = {k: DICE[k] for k in (1, 3, 4)}  # the search's fold, 3, evaluated; fold 0 not
    run = fake_run(tmp_path / "a", 3, dice, search_seeds=[4, 5, 6], chosen_seed=5)
    line, note = dice_summary(run, [0, 1, 3, 4])
    assert line == (f"mean over 3 folds {expected_mean(dice)} (fold 3, not trained on by the search but used to "
                    f"choose among its 3 seeds: {DICE[3]:.4f})")
    assert "SEARCH_SEEDS=3" in note and "ranked by the supernet's Dice" in note
    run = fake_run(tmp_path / "b", 0, {k: DICE[k] for k in (1, 2)})
    assert dice_summary(run, [1, 2])[0].endswith("(fold 0, unseen by the search: not evaluated)")


def test_without_the_search_record_or_with_another_architecture_nothing_is_claimed(tmp_path):
    run = fake_run(tmp_path / "a", None, DICE)
    line, note = dice_summary(run, list(DICE))
    assert line == f"mean over 5 folds {expected_mean(DICE)}" and "not known" in note
    run = fake_run(tmp_path / "b", 0, DICE)
    retrain = layout.retrain_dir(run, 0)
    retrain.mkdir()
    (retrain / "config_retrain.json").write_text(json.dumps({"config": {"arch": "/elsewhere/arch.json"}}))
    line, note = dice_summary(run, list(DICE))
    assert line == f"mean over 5 folds {expected_mean(DICE)}" and "/elsewhere/arch.json" in note
    assert dice_summary(fake_run(tmp_path / "c", 0, {}), list(DICE)) is None  # nothing evaluated yet


def test_a_fold_without_a_mean_is_left_out(tmp_path):
    run = fake_run(tmp_path, 1, DICE)
    summary = layout.eval_dir(run, "val", 4) / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "mean_dice": None}))
    assert fold_dice(run, list(DICE)) == {k: DICE[k] for k in (0, 1, 2, 3)}


def test_the_results_page_shows_them(tmp_path, demo_root):
    run = fake_run(tmp_path, 2, DICE)
    page = build(run, load_task(demo_root, TASK), list(DICE))
    text = (page.folder / INDEX).read_text()
    assert (f"<strong>Validation Dice, mean over 5 folds {expected_mean(DICE)} (fold 2, unseen by the search: "
            f"{DICE[2]:.4f}).</strong>") in text
    assert "Only fold 2&#x27;s validation cases were unseen by the search" in text
    assert (f'<tr><td class="num">2</td><td class="num">{DICE[2]:.4f}</td><td>unseen by the search (the fold it ran '
            "on)</td></tr>") in text
    assert (f'<tr><td class="num">0</td><td class="num">{DICE[0]:.4f}</td><td>seen by the search (training cases '
            "of fold 2)</td></tr>") in text


def test_the_results_page_names_the_choice_among_seeded_searches(tmp_path, demo_root):
    run = fake_run(tmp_path, 0, DICE, search_seeds=[0, 1], chosen_seed=1)
    (run / "summary.json").write_text(json.dumps({"mem_ratio": 0.7, "mem_ratio_expected": 0.6, "mem_budget": 0.8,
                                                  "iterations": 4, "chosen_seed": 1}))
    (run / "search_choice.json").write_text(json.dumps({
        "rule": "the highest supernet validation Dice", "seeds": [0, 1], "chosen_seed": 1,
        "reason": "seed 1 has the highest supernet validation Dice, 0.4000 (next: seed 0, 0.3000)",
        "candidates": [{"seed": 0, "val_dice": 0.3, "mem_ratio": 0.75, "arch_sha256": "a" * 64},
                       {"seed": 1, "val_dice": 0.4, "mem_ratio": 0.7, "arch_sha256": "b" * 64}]}))
    text = (build(run, load_task(demo_root, TASK), list(DICE)).folder / INDEX).read_text()
    assert "Chosen among 2 seeded searches" in text and "seed 1 has the highest supernet validation Dice" in text
    assert ('<tr><td class="num">1</td><td class="num">0.4000</td><td class="num">0.7000</td><td>bbbbbbbbbbbb</td>'
            "<td>chosen</td></tr>") in text
