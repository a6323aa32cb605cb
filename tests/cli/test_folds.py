"""Several folds in one process (``--folds``, what code/main.sh launches): each fold comes out exactly as a run of
that fold alone would make it, and the folds before one that fails are finished and kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import stages
from helpers.stages import RUN

pytestmark = pytest.mark.slow  # searches and retrains in-process: about half a minute


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def searched(demo_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("searched")
    stages.module("search").main(stages.tiny_base(demo_root, work))
    from dints.run import lock

    lock.release_all()
    return work


def _copy(searched: Path, tmp_path: Path, name: str) -> Path:
    work = tmp_path / name
    shutil.copytree(searched, work)
    return work


def test_folds_in_one_process_equal_each_fold_run_alone(searched, demo_root, tmp_path):
    alone, together = _copy(searched, tmp_path, "alone"), _copy(searched, tmp_path, "together")
    stages.module("retrain").main([*stages.tiny_base(demo_root, alone), "--fold", "1"])
    stages.module("test").main([*stages.tiny_base(demo_root, alone), "--fold", "1", "--split", "val"])

    base = stages.tiny_base(demo_root, together)
    outs = stages.module("retrain").main([*base, "--folds", "0", "1"])
    assert outs == [together / RUN / "retrain-fold0", together / RUN / "retrain-fold1"]
    stages.module("test").main([*base, "--folds", "0", "1", "--split", "val"])

    # Fold 1 after fold 0 in the same process: the same weights, the same curve, the same validation.
    a, b = _weights(alone / RUN / "retrain-fold1" / "best.pt"), _weights(together / RUN / "retrain-fold1" / "best.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (alone / RUN / "retrain-fold1" / "metrics.csv").read_text() == \
        (together / RUN / "retrain-fold1" / "metrics.csv").read_text()
    for k in (0, 1):
        assert json.loads((together / RUN / f"retrain-fold{k}" / "config_retrain.json").read_text())["config"]["fold"] == k
    val = [json.loads((w / RUN / "val-fold1" / "summary.json").read_text()) for w in (alone, together)]
    assert val[0]["mean_dice"] == val[1]["mean_dice"]
    assert (together / RUN / "val-fold0" / "summary.json").is_file()
    # Each fold logs into its own folder only.
    log0 = (together / RUN / "retrain-fold0" / "retrain.log").read_text()
    assert "fold 0:" in log0 and "fold 1:" not in log0


def test_a_failing_fold_stops_the_command_and_keeps_the_folds_before_it(searched, demo_root, tmp_path, capfd):
    work = _copy(searched, tmp_path, "work")
    base = stages.tiny_base(demo_root, work)
    stages.module("retrain").main([*base, "--fold", "0"])
    # Fold 2 has no retrained model: testing folds 0 and 2 finishes fold 0, then stops at fold 2 with one line.
    r = stages.run("test", [*base, "--folds", "0", "2", "--split", "val"], capfd)
    assert r.code == 2 and len(r.error_lines) == 1 and "retrain-fold2" in r.error_lines[0], r.err
    assert (work / RUN / "val-fold0" / "summary.json").is_file()
    assert not (work / RUN / "val-fold2" / "summary.json").exists()
