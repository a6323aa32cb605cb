"""A run folder as the report reads it, written by hand: the search's record (its fold) and each fold's stage-3
summary."""

from __future__ import annotations

import json
from pathlib import Path

from dints.run import layout

TASK = "Task99_Demo"


def fake_run(work: Path, search_fold: int | None, dice: dict[int, float], hd95: float = 3.0, **record_extra) -> Path:
    """The run folder of budget 0.8 under ``work``: ``config_search.json`` records ``search_fold`` (none when None)
    and ``record_extra``; fold ``k``'s validation summary has mean Dice ``dice[k]`` for both classes."""
    run = layout.search_dir(work, TASK, 0.8)
    run.mkdir(parents=True)
    if search_fold is not None:
        (run / "config_search.json").write_text(json.dumps({"config": {"fold": search_fold, "seed": 0},
                                                            **record_extra}))
    for k, d in dice.items():
        folder = layout.eval_dir(run, "val", k)
        folder.mkdir()
        classes = {n: {"dice": {"mean": d}, "hd95": {"mean": hd95}} for n in ("organ", "lesion")}
        (folder / "summary.json").write_text(json.dumps({"mean_dice": d, "cases": 2, "classes": classes}))
    return run
