"""What main.sh may reuse: a finished stage's record against this run's options (dints.pipeline.records)."""

from __future__ import annotations

import json

import pytest

from dints.errors import ConfigError
from dints.pipeline import records
from dints.run import layout
from dints.run.settings import RECORD_KEYS, decisive_keys


def test_a_key_an_older_record_lacks_is_not_compared():
    saved = {"iters": 10, "seed": 0}  # written before "decode" existed
    assert records.first_difference(saved, {"iters": 10, "seed": 0, "decode": "budget"}, ["iters", "decode"]) is None
    assert records.first_difference(saved, {"iters": 11, "seed": 0}, ["seed", "iters"]) == "iters"
    assert records.first_difference({"arch": None}, {"arch": "unet"}, ["arch"]) == "arch"  # null is a value


def test_arch_seed_and_arch_mem_decide_a_random_baseline_only():
    searched = decisive_keys("retrain", {"arch": None})
    assert "arch_seed" not in searched and "arch_mem" not in searched and "arch" in searched
    assert {"arch_seed", "arch_mem"} <= set(decisive_keys("retrain", {"arch": "random"}))
    assert "arch_seed" not in decisive_keys("retrain", {"arch": "unet"})
    assert decisive_keys("search", {"arch": "random"}) == RECORD_KEYS["search"]


def _finished_retrain(work, baseline, config):
    run = layout.search_dir(work, "Task99_Demo", 0.8)
    out = layout.retrain_dir(run, 0, baseline)
    out.mkdir(parents=True)
    (out / layout.SUMMARY).write_text("{}")
    (out / layout.config_record("retrain")).write_text(json.dumps({"config": config}))


def test_status_of_a_finished_retraining(tmp_path):
    base = {k: None for k in RECORD_KEYS["retrain"] if k not in ("arch_seed", "arch_mem")}
    _finished_retrain(tmp_path, None, base)  # the searched architecture's, recorded before arch_seed existed
    assert records.status("retrain", {**base, "arch_seed": 3}, tmp_path, "Task99_Demo", 0.8, 0)[0] == "done"
    _finished_retrain(tmp_path, "random", {**base, "arch": "random", "arch_seed": 1, "arch_mem": None})
    current = {**base, "arch": "random", "arch_seed": 1, "arch_mem": None}
    assert records.status("retrain", current, tmp_path, "Task99_Demo", 0.8, 0)[0] == "done"
    with pytest.raises(ConfigError, match=r"retrain \(random\) of Task99_Demo fold 0 is finished .* --arch_seed 1"):
        records.status("retrain", {**current, "arch_seed": 2}, tmp_path, "Task99_Demo", 0.8, 0)
    assert records.status("retrain", {**current, "arch": "unet"}, tmp_path, "Task99_Demo", 0.8, 0)[0] == "run"
