"""The run layout is spelled once: Python stages and shell drivers agree on every folder name (MEM=0.80 included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dints.run import layout

ROOT = Path(__file__).resolve().parents[2]
RUN = "search-bilevel-ent-mem0.8-Task99_Demo"  # the run folder's name, spelled by hand


def test_names_by_hand(tmp_path):
    assert layout.search_dir(tmp_path, "Task99_Demo", 0.80) == tmp_path / RUN
    assert layout.search_dir(tmp_path, "Task99_Demo", 0.8) == tmp_path / RUN
    assert layout.search_dir(tmp_path, "T", 0.5).name == "search-bilevel-ent-mem0.5-T"
    run = tmp_path / RUN
    assert layout.retrain_dir(run, 3) == run / "retrain-fold3"
    assert layout.retrain_dir(run, 2, "unet") == run / "retrain-unet-fold2"  # a baseline never shares the folder
    assert layout.stage_marker(tmp_path, "Task99_Demo", 0.8, "retrain", 0, "random") == \
        run / "retrain-random-fold0" / "summary.json"
    assert [layout.baseline_of(a) for a in ("random", "cvpr", "unet", "./random", "arch.json", None)] == \
        ["random", "cvpr", "unet", None, None, None]
    assert layout.eval_dir(run, "val", 1) == run / "val-fold1" and layout.eval_dir(run, "test", 0) == run / "test-fold0"
    assert (layout.fused_dir(run), layout.final_dir(run)) == (run / "fused", run / "final")
    assert layout.stage_marker(tmp_path, "Task99_Demo", 0.8, "resample") == run / "final_summary.json"
    assert layout.search_seed_dir(tmp_path, "Task99_Demo", 0.80, 3) == run / "seeds" / "seed3"
    assert layout.stage_marker(tmp_path, "Task99_Demo", 0.8, "search", seed=3) == run / "seeds" / "seed3" / "summary.json"
    with pytest.raises(ValueError):
        layout.stage_marker(tmp_path, "Task99_Demo", 0.8, "retrain", 0, seed=3)  # only the search has seed folders


def _main_sh(stage: str, work: Path, data: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("PRESET", "EXTRA_ARGS", "FORCE")}
    e.update(TASKS="Task99_Demo", FOLDS="0 1", DATA_ROOT=str(data), WORK_ROOT=str(work), PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(ROOT / "code" / "main.sh"), stage], capture_output=True, text=True, env=e)


@pytest.mark.slow
def test_shell_drivers_find_finished_runs_whatever_the_spelling_of_mem(tmp_path, demo_root):
    # A finished search and finished folds in the folder Python names for --mem 0.8, each with its record; the
    # drivers, given MEM=0.80, must find them and skip (before, they looked for mem0.80 and searched again). Nothing
    # else exists: any stage that ran instead of skipping would fail.
    from config import load_config, to_dict
    from dints.pipeline.records import record_file

    run = tmp_path / RUN
    common = ["--data_root", str(demo_root), "--task", "Task99_Demo", "--work_root", str(tmp_path), "--mem", "0.80"]
    units = [("search", "search", None), ("fuse", "fuse", None), ("resample", "fuse", None)]
    units += [(kind, stage, k) for k in (0, 1) for kind, stage in (("retrain", "retrain"), ("val", "test"),
                                                                    ("test", "test"))]
    for kind, stage, fold in units:
        marker = layout.stage_marker(tmp_path, "Task99_Demo", 0.8, kind, fold)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"folds": [0, 1]}))
        argv = common + (["--fold", str(fold)] if fold is not None else []) + (["--split", kind] if stage == "test"
                                                                               else []) + ["--folds", "0", "1"]
        record = {"config": to_dict(load_config(argv, stage))}
        if kind == "resample":
            record["fused_folds"] = [0, 1]
        record_file(kind, tmp_path, "Task99_Demo", 0.8, fold).write_text(json.dumps(record))
    expected = {"1": ["[search] Task99_Demo: done (" + str(run / "summary.json") + "), skipping"],
                "2": [f"[retrain] Task99_Demo fold {k}: done ({run}/retrain-fold{k}/summary.json), skipping"
                      for k in (0, 1)],
                "3": [f"[test-val] Task99_Demo fold {k}: done ({run}/val-fold{k}/summary.json), skipping"
                      for k in (0, 1)],
                "4": [f"[test-infer] Task99_Demo fold {k}: done ({run}/test-fold{k}/summary.json), skipping"
                      for k in (0, 1)],
                "5": [f"[fuse] Task99_Demo: done ({run}/fused/summary.json), skipping"],
                "6": [f"[resample] Task99_Demo: done ({run}/final_summary.json), skipping"]}
    for stage, lines in expected.items():
        r = _main_sh(stage, tmp_path, demo_root, MEM="0.80")
        assert r.returncode == 0, r.stdout + r.stderr
        for line in lines:
            assert line in r.stdout, (stage, r.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN]  # no second run folder
