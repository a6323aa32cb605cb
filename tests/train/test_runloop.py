"""The run-loop harness both training stages drive: schedule, best model, checkpoints, resume, non-finite guard."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from dints.errors import UserError
from dints.run.settings import LoopSettings
from dints.train.runloop import MAX_BAD_STEPS, RunLoop, Step, Validation

LOG = logging.getLogger("test_runloop")


def _loop(tmp_path, iters=6, val_interval=2, **kw):
    net = torch.nn.Linear(2, 1)
    settings = LoopSettings(iters=iters, val_interval=val_interval, log_interval=1, ckpt_interval=4)
    loop = RunLoop("toy", tmp_path, settings, LOG, {"lr": 0.1}, hint="lower --toy", objects={"model": net}, **kw)
    return loop, net


def _val(dice):
    return lambda done: Validation(dice[done], {"val_dice": round(dice[done], 5)}, f"Dice {dice[done]}")


def test_schedule_best_and_checkpoints(tmp_path):
    loop, net = _loop(tmp_path, keep_best=True)
    # 0.5000001 rounds to the same table value as 0.5 but is better; NaN is never better.
    dice = {2: 0.5, 4: 0.5000001, 6: math.nan}
    steps = []

    def step(it):
        steps.append(it)
        with torch.no_grad():
            net.weight += 1.0
        return Step(True, {"loss": 1.0 / (it + 1)})

    loop.run(step, _val(dice), lambda: {"kind": "toy"})
    assert steps == list(range(6))
    assert [r["iteration"] for r in loop.history] == [2, 4, 6]
    assert (loop.best, loop.best_iteration) == (0.5000001, 4)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    latest = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert best["iteration"] == 4 and best["kind"] == "toy" and best["config"] == {"lr": 0.1}
    assert latest["iteration"] == 6 and torch.equal(latest["model"]["weight"], net.weight.detach())
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "iteration,val_dice,train_loss"
    assert loop.iterations_run == 6


def test_resume_restores_objects_position_and_best(tmp_path):
    loop, net = _loop(tmp_path, iters=4, keep_best=True)
    loop.run(lambda it: Step(True), _val({2: 0.3, 4: 0.2}), dict)
    saved = net.weight.detach().clone()
    again, fresh = _loop(tmp_path, iters=6, keep_best=True)
    assert not torch.equal(fresh.weight, saved)
    state = again.resume("auto", [])
    assert state["iteration"] == 4 and torch.equal(fresh.weight, saved)
    assert (again.start, again.best, again.best_iteration, len(again.history)) == (4, 0.3, 2, 2)
    ran = []
    again.run(lambda it: ran.append(it) or Step(True), _val({6: 0.1}), dict)
    assert ran == [4, 5] and again.iterations_run == 2 and [r["iteration"] for r in again.history] == [2, 4, 6]


def test_resume_refuses_a_changed_option(tmp_path):
    loop, _ = _loop(tmp_path, iters=4)
    loop.run(lambda it: Step(True), _val({2: 0.3, 4: 0.2}), dict)
    other = RunLoop("toy", tmp_path, LoopSettings(4, 2, 1, 4), LOG, {"lr": 0.2}, hint="", objects={})
    with pytest.raises(UserError, match="--lr 0.1 but this run has 0.2"):
        other.resume("auto", ["lr"])


def test_non_finite_steps_stop_the_run_after_the_limit(tmp_path):
    loop, _ = _loop(tmp_path, iters=100, val_interval=0)
    seen = []

    def step(it):
        seen.append(it)
        return Step(it in (0, 5))  # one good step between bad runs resets the count

    with pytest.raises(UserError, match=rf"not finite for {MAX_BAD_STEPS} consecutive iterations .*lower --toy"):
        loop.run(step, _val({}), dict)
    assert seen[-1] == 5 + MAX_BAD_STEPS


def test_progress_is_drawn_at_each_validation_from_a_trace_that_survives_resume(tmp_path):
    drawn = []
    loop, net = _loop(tmp_path, iters=4, progress=lambda path, trace, history: drawn.append(
        (path, [dict(r) for r in trace], [dict(r) for r in history])))

    def step(it):
        return Step(True, {"loss/seg": 10.0 + it}, loss=10.0 + it)

    loop.run(step, _val({2: 0.3, 4: 0.4}), dict)
    assert [d[0] for d in drawn] == [tmp_path / "progress.png"] * 2
    assert [r["iteration"] for r in drawn[1][1]] == [0, 1, 2, 3]  # log_interval 1: every iteration
    assert [r["train_loss"] for r in drawn[1][2]] == [10.5, 12.5]  # the mean of the losses since the last one
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "iteration,val_dice,train_loss"
    # Resumed for two more iterations: the picture still shows the whole run, and the means stay exact.
    drawn.clear()
    again, _ = _loop(tmp_path, iters=6, progress=lambda path, trace, history: drawn.append((trace, history)))
    again.resume("auto", [])
    again.run(step, _val({6: 0.5}), dict)
    trace, history = drawn[-1]
    assert [r["iteration"] for r in trace] == list(range(6)) and [r["train_loss"] for r in history] == [10.5, 12.5, 14.5]


def test_a_picture_that_fails_does_not_stop_training(tmp_path, caplog):
    def broken(path, trace, history):
        raise RuntimeError("no display")

    loop, _ = _loop(tmp_path, iters=2, progress=broken)
    loop.run(lambda it: Step(True), _val({2: 0.3}), dict)
    assert loop.iterations_run == 2 and "could not draw progress.png (RuntimeError: no display)" in caplog.text


def test_the_progress_pictures_draw_what_runs_record(tmp_path):
    from PIL import Image

    from dints.train.progress import plot_retraining, plot_search

    trace = [{"iteration": i, "loss/seg": 2.0 - 0.1 * i, "lr": 0.1, "loss/seg_weight": 2.0, "loss/seg_arch": 2.1,
              "loss/entropy": 0.5, "loss/topology": 1.5, "loss/memory": 0.1, "memory/ratio_decoded": 0.8,
              "memory/ratio_expected": 0.75, "schedule/tau": 1.0, "lr/weights": 0.1, "lr/arch": 0.05}
             for i in range(10)]
    history = [{"iteration": 5, "val_dice": 0.5, "dice_1": 0.6, "dice_2": 0.4, "train_loss": 1.8, "paths_changed": None},
               {"iteration": 10, "val_dice": 0.6, "dice_1": 0.7, "dice_2": 0.5, "train_loss": 1.3, "paths_changed": 3}]
    for path in (plot_retraining(tmp_path / "r.png", trace, history, "fold 0", ["organ", "lesion"]),
                 plot_search(tmp_path / "s.png", trace, history, 0.8, "search")):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 800 and img.size[1] > 250
