"""Choosing one of several seeded searches (SEARCH_SEEDS) and installing it as the search run's result, on search
folders made by hand: the rule (ties to the lower seed), refusals naming the folder, the installed files, an
interrupted installation, and the records main.sh reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from config import load_config, to_dict
from dints.errors import ConfigError, UserError
from dints.pipeline import records, search_choice
from dints.pipeline.search_choice import Candidate, choose, choose_and_install, install, read_candidates
from dints.run import layout

TASK, MEM = "Task99_Demo", 0.8


def options(work: Path, *extra: str) -> dict:
    """A search's resolved options, as its record holds them."""
    return to_dict(load_config(["--task", TASK, "--work_root", str(work), "--iters", "4", "--warmup_iters", "2",
                                *extra], "search"))


def fake_search(work: Path, seed: int, dice: float | None, mem_ratio: float = 0.7, snapshots=(2, 4),
                **config_changes) -> Path:
    """A finished search with --seed ``seed`` in its seed folder: record, summary, architecture files, table."""
    folder = layout.search_seed_dir(work, TASK, MEM, seed)
    folder.mkdir(parents=True)
    config = {**options(work, "--seed", str(seed)), **config_changes}
    (folder / "config_search.json").write_text(json.dumps({"config": config, "environment": {"python": "3"}}))
    (folder / "arch.json").write_text(json.dumps({"seed": seed, "arch_code_a": [[seed]]}))
    (folder / "arch.pth").write_bytes(b"pth %d" % seed)
    (folder / "arch.png").write_bytes(b"png %d" % seed)
    for it in snapshots:
        (folder / f"arch_{it}.json").write_text(json.dumps({"seed": seed, "iteration": it}))
    (folder / "metrics.csv").write_text(f"iteration,val_dice\n4,{dice}\n")
    (folder / "progress.png").write_bytes(b"progress %d" % seed)
    (folder / "latest.pt").write_bytes(b"state")
    (folder / "summary.json").write_text(json.dumps({"iterations": 4, "mem_budget": MEM, "mem_ratio": mem_ratio,
                                                     "mem_ratio_expected": 0.6, "val_dice": dice}))
    return folder


def cand(seed: int, dice: float) -> Candidate:
    return Candidate(seed, Path(f"seed{seed}"), dice, 0.5, "0" * 64, {}, {})


def test_the_highest_dice_wins_and_a_tie_goes_to_the_lower_seed():
    best, reason = choose([cand(3, 0.71), cand(4, 0.80), cand(5, 0.75)])
    assert best.seed == 4 and reason == "seed 4 has the highest supernet validation Dice, 0.8000 (next: seed 5, 0.7500)"
    best, reason = choose([cand(7, 0.80), cand(5, 0.80), cand(6, 0.60), cand(9, 0.80)])
    assert best.seed == 5
    assert reason == ("seeds 5, 7, 9 share the highest supernet validation Dice, 0.8000; the lower seed, 5, is chosen "
                      "(next: seed 6, 0.6000)")
    best, reason = choose([cand(1, 0.5), cand(0, 0.5)])
    assert best.seed == 0 and "next" not in reason
    with pytest.raises(ValueError):
        choose([])


def test_a_missing_or_unrankable_search_is_refused_naming_its_folder(tmp_path):
    fake_search(tmp_path, 0, 0.6)
    with pytest.raises(UserError) as e:
        read_candidates(tmp_path, TASK, MEM, [0, 1])
    seed1 = layout.search_seed_dir(tmp_path, TASK, MEM, 1)
    assert str(e.value).startswith(f"seed 1: {seed1} holds no finished search (summary.json is missing)")
    folder = fake_search(tmp_path, 1, None)
    with pytest.raises(UserError, match=r"seed 1: .*seed1/summary.json has no validation Dice"):
        read_candidates(tmp_path, TASK, MEM, [0, 1])
    (folder / "summary.json").write_text(json.dumps({"val_dice": 0.5}))
    (folder / "arch.json").unlink()
    with pytest.raises(UserError, match=r"seed 1: .*seed1 holds no finished search \(arch.json is missing\)"):
        read_candidates(tmp_path, TASK, MEM, [0, 1])


def test_a_search_made_with_other_options_is_refused(tmp_path):
    fake_search(tmp_path, 0, 0.6)
    fake_search(tmp_path, 1, 0.7, spacing=[2.0, 2.0, 2.0])
    current = options(tmp_path)
    with pytest.raises(ConfigError) as e:
        read_candidates(tmp_path, TASK, MEM, [0, 1], current)
    assert str(e.value).startswith(f"seed 1: the search in {layout.search_seed_dir(tmp_path, TASK, MEM, 1)} was made "
                                   "with --spacing [2.0, 2.0, 2.0], and this run has [1.0, 1.0, 1.0]")
    assert [c.seed for c in read_candidates(tmp_path, TASK, MEM, [0], current)] == [0]  # the seed itself may differ


def test_install_makes_the_chosen_search_the_run_folders_result(tmp_path, caplog):
    import logging

    fake_search(tmp_path, 2, 0.61, mem_ratio=0.77)
    chosen_folder = fake_search(tmp_path, 3, 0.74, mem_ratio=0.79)
    run = layout.search_dir(tmp_path, TASK, MEM)
    (run / "arch_6.json").write_text("an earlier search's snapshot")  # not the chosen search's: must go
    (run / "retrain-fold0").mkdir()  # the later stages' folders are left alone
    log = logging.getLogger("test_search_choice")
    with caplog.at_level(logging.INFO, logger=log.name):
        chosen = choose_and_install(tmp_path, TASK, MEM, [2, 3], options(tmp_path, "--seed", "2"), log)
    assert chosen.seed == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("seed 2: supernet validation Dice 0.6100, memory ratio 0.770 decoded")
    assert lines[1].startswith("seed 3: supernet validation Dice 0.7400, memory ratio 0.790 decoded")
    assert lines[2].startswith("chose seed 3 among 2 searches: seed 3 has the highest supernet validation Dice, 0.7400")
    for name in ("arch.json", "arch.pth", "arch.png", "arch_2.json", "arch_4.json", "metrics.csv", "progress.png"):
        assert (run / name).read_bytes() == (chosen_folder / name).read_bytes(), name
    assert not (run / "arch_6.json").exists() and not (run / "latest.pt").exists()
    assert (run / "retrain-fold0").is_dir()
    record = json.loads((run / "config_search.json").read_text())
    assert (record["search_seeds"], record["chosen_seed"], record["config"]["seed"]) == ([2, 3], 3, 3)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["val_dice"], summary["search_seeds"], summary["chosen_seed"]) == (0.74, [2, 3], 3)
    choice = json.loads((run / "search_choice.json").read_text())
    assert choice["rule"] == search_choice.RULE and "lower seed" in choice["rule"]
    assert (choice["seeds"], choice["chosen_seed"]) == ([2, 3], 3) and choice["reason"].startswith("seed 3 has")
    sha = {s: hashlib.sha256((layout.search_seed_dir(tmp_path, TASK, MEM, s) / "arch.json").read_bytes()).hexdigest()
           for s in (2, 3)}
    assert [(c["seed"], c["val_dice"], c["mem_ratio"], c["arch_sha256"]) for c in choice["candidates"]] == \
        [(2, 0.61, 0.77, sha[2]), (3, 0.74, 0.79, sha[3])]
    # The record passes main.sh's check for the same seeds (the chosen seed is not the run's --seed), and no other.
    assert records.status("search", options(tmp_path, "--seed", "2"), tmp_path, TASK, MEM, chosen_among=[2, 3])[0] \
        == "done"
    for asks, words in (([2, 3, 4], "a choice among SEARCH_SEEDS=3 searches (seeds 2..4)"), (None, "one search")):
        with pytest.raises(ConfigError) as e:
            records.status("search", options(tmp_path, "--seed", "2"), tmp_path, TASK, MEM, chosen_among=asks)
        assert "was made by a choice among SEARCH_SEEDS=2 searches (seeds 2..3)" in str(e.value)
        assert f"this run asks for {words}" in str(e.value) and "FORCE=1" in str(e.value)
    with pytest.raises(ConfigError, match="was made with --iters 4, and this run has 5"):
        records.status("search", options(tmp_path, "--seed", "2", "--iters", "5"), tmp_path, TASK, MEM,
                       chosen_among=[2, 3])
    # Each seeded search has its own marker and record.
    assert records.status("search", options(tmp_path, "--seed", "3"), tmp_path, TASK, MEM, seed=3) == \
        ("done", chosen_folder / "summary.json")


def test_one_search_is_refused_where_a_choice_is_asked_for(tmp_path):
    run = layout.search_dir(tmp_path, TASK, MEM)
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / "config_search.json").write_text(json.dumps({"config": options(tmp_path)}))
    assert records.status("search", options(tmp_path), tmp_path, TASK, MEM)[0] == "done"
    with pytest.raises(ConfigError, match=r"was made by one search \(SEARCH_SEEDS unset or 1\), and this run asks for "
                                          r"a choice among SEARCH_SEEDS=2 searches \(seeds 0..1\)"):
        records.status("search", options(tmp_path), tmp_path, TASK, MEM, chosen_among=[0, 1])


def test_an_interrupted_installation_is_unfinished_and_a_rerun_gives_the_same_bytes(tmp_path, monkeypatch):
    for seed, dice in ((0, 0.5), (1, 0.5)):  # a tie: seed 0
        fake_search(tmp_path, seed, dice)
    run = layout.search_dir(tmp_path, TASK, MEM)
    candidates = read_candidates(tmp_path, TASK, MEM, [0, 1])
    chosen, reason = choose(candidates)
    assert chosen.seed == 0
    install(run, chosen, candidates, reason)
    first = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert set(first) >= {"summary.json", "search_choice.json", "config_search.json", "arch.json"}

    written, real = [], search_choice.write_json

    def write_then_stop(path, obj):  # the run is killed as it writes its marker
        written.append(Path(path).name)
        if Path(path).name == "summary.json":
            raise KeyboardInterrupt
        return real(path, obj)

    monkeypatch.setattr(search_choice, "write_json", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        install(run, chosen, candidates, reason)
    assert written[-1] == "summary.json"  # the marker comes last
    assert not (run / "summary.json").exists()  # so the stage is not finished
    assert records.status("search", options(tmp_path), tmp_path, TASK, MEM, chosen_among=[0, 1])[0] == "run"
    monkeypatch.setattr(search_choice, "write_json", real)
    install(run, chosen, candidates, reason)
    install(run, chosen, candidates, reason)  # and again: idempotent
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == first


def test_status_lists_each_seed_then_the_choice(tmp_path, demo_root):
    """What code/config.py status tells search.sh with SEARCH_SEEDS=2 and --seed 5: seeds 5 and 6, then the choice."""
    from config import stage_status

    common = ["--data_root", str(demo_root), "--task", TASK, "--work_root", str(tmp_path), "--iters", "4",
              "--warmup_iters", "2", "--seed", "5"]
    assert stage_status(["search", "--search_seeds", "2", *common]) == ["5 run", "6 run", "- run"]
    done5 = fake_search(tmp_path, 5, 0.4) / "summary.json"
    assert stage_status(["search", "--search_seeds", "2", *common]) == [f"5 done {done5}", "6 run", "- run"]
    assert stage_status(["search", "--force", "--search_seeds", "2", *common]) == ["5 run", "6 run", "- run"]
    fake_search(tmp_path, 6, 0.3)
    run = layout.search_dir(tmp_path, TASK, MEM)
    candidates = read_candidates(tmp_path, TASK, MEM, [5, 6])
    chosen, reason = choose(candidates)
    install(run, chosen, candidates, reason)
    assert stage_status(["search", "--search_seeds", "2", *common]) == [f"- done {run / 'summary.json'}"]
    with pytest.raises(ConfigError, match="was made by a choice among SEARCH_SEEDS=2"):
        stage_status(["search", *common])  # one search asked for
    with pytest.raises(ConfigError, match="--search_seeds must be >= 1"):
        stage_status(["search", "--search_seeds", "0", *common])
