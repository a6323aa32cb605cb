"""``retrain.py --arch random|cvpr|unet``: a baseline retrains into its own folder beside the searched
architecture's, records what it was, and is found (or refused) by ``config.py status`` like any retraining."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from config import stage_status
from dints.errors import ConfigError
from dints.space import relax
from dints.space.archfile import Arch, load_arch, save_arch
from helpers import stages
from helpers.stages import FAST, ROOT, RUN, TASK, TINY

# A searched architecture of FAST's space (2 blocks, 2 levels) with its memory ratio, as the search writes it.
SEARCHED = {"num_blocks": 2, "num_depths": 2, "opset": 1,
            "ops": ["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"],
            "node_a": [[1, 0], [1, 1], [0, 1]], "arch_code_a": [[1, 0, 1, 0], [0, 0, 1, 1]],
            "arch_code_c": [[1, 0, 4, 0], [0, 0, 2, 3]], "channel_mul": 0.25, "mem_budget": 0.8, "task": TASK, "fold": 0}


def argv(demo_root: Path, work: Path, *extra: str) -> list[str]:
    return ["--config", TINY, "--data_root", str(demo_root), "--task", TASK, "--work_root", str(work), *FAST, *extra]


def searched_run(work: Path) -> Path:
    """A search run folder holding arch.json and a finished-looking retrain-fold0/ (a marker file only)."""
    run = work / RUN
    arch = Arch(**SEARCHED)
    arch.mem_ratio = round(relax.decoded_memory_ratio(arch.arch_code_a, arch.arch_code_c, arch.ops, (2, 1, 16, 16, 16),
                                                      arch.channel_mul), 6)
    save_arch(arch, run / "arch.json")
    (run / "retrain-fold0").mkdir()
    (run / "retrain-fold0" / "summary.json").write_text('{"searched": true}')
    return run


@pytest.mark.slow
def test_random_baseline_retrains_beside_the_searched_architecture(demo_root, tmp_path, capfd):
    work = tmp_path / "work"
    run = searched_run(work)
    searched = load_arch(run / "arch.json")
    r = stages.run("retrain", argv(demo_root, work, "--arch", "random"), capfd)
    assert r.code == 0, r.err[-3000:]
    out = run / "retrain-random-fold0"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arch_kind"] == "random" and summary["arch_seed"] == 0
    assert summary["arch_mem"] == searched.mem_ratio  # the target defaults to the searched architecture's ratio
    assert abs(summary["mem_ratio"] - searched.mem_ratio) <= 0.03 and summary["parameters"] > 0
    drawn = load_arch(out / "arch.json")  # the architecture it retrained, saved for inspection and reuse
    assert drawn.mem_ratio == summary["mem_ratio"] and (drawn.num_blocks, drawn.num_depths) == (2, 2)
    log = (out / "retrain.log").read_text().splitlines()
    assert "architecture: baseline random (--arch_seed 0) in the space of" in log[1]
    assert f"memory ratio {drawn.mem_ratio:.4f}" in log[1]
    # The searched architecture's fold is untouched: still only what was there.
    assert [p.name for p in (run / "retrain-fold0").iterdir()] == ["summary.json"]
    assert (run / "retrain-fold0" / "summary.json").read_text() == '{"searched": true}'

    # main.sh's view: this baseline's fold is done, in its own folder; another seed is another result, refused.
    common = argv(demo_root, work, "--folds", "0", "--arch", "random")
    assert stage_status(["retrain", *common]) == [f"0 done {out / 'summary.json'}"]
    with pytest.raises(ConfigError, match=r"retrain \(random\) of Task99_Demo fold 0 is finished .* with --arch_seed 0"
                                          r", and this run has 1"):
        stage_status(["retrain", *common, "--arch_seed", "1"])
    assert stage_status(["retrain", *common[:-2]]) == [f"0 done {run / 'retrain-fold0' / 'summary.json'}"]


def test_random_baseline_needs_a_memory_target_in_range(demo_root, tmp_path, capfd):
    work = tmp_path / "work"
    for value in ("1.5", "0"):
        r = stages.run("retrain", argv(demo_root, work, "--arch", "random", "--arch_mem", value), capfd)
        assert r.code == 2 and "Traceback" not in r.err
        assert r.error_lines == [f"error: --arch_mem must be in (0, 1], got {float(value)}"]
    r = stages.run("retrain", argv(demo_root, work, "--arch", "random"), capfd)  # no search: no ratio to default to
    assert r.code == 2 and len(r.error_lines) == 1
    assert r.error_lines[0].startswith("error: --arch random needs --arch_mem, the memory ratio to draw at: ")
    assert r.error_lines[0].endswith(f"{RUN}/arch.json does not exist (no search yet)")
    assert not work.exists()  # refused before anything was written


def test_cvpr_baseline_has_its_own_levels(demo_root, tmp_path, capfd):
    # FAST's 16^3 patch suits its 2 levels, not the CVPR architecture's 4 (sides divisible by 2^(4+1) = 32).
    r = stages.run("retrain", argv(demo_root, tmp_path / "work", "--arch", "cvpr"), capfd)
    assert r.code == 2 and len(r.error_lines) == 1
    assert r.error_lines[0] == ("error: --patch_size [16, 16, 16]: every side must be divisible by 2^(levels+1) = 32 "
                                "for 4 levels")


def test_baseline_words_win_over_files(demo_root, tmp_path, capfd, monkeypatch):
    # A file named like a baseline in the current folder is reached as ./unet.
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "code" / "dints" / "space" / "archs" / "cvpr2021.json", tmp_path / "unet")
    r = stages.run("retrain", argv(demo_root, tmp_path / "work", "--arch", "./unet"), capfd)
    assert r.code == 2 and r.error_lines == [("error: --blocks is 2 but the architecture unet has 12 blocks: retraining "
                                              "builds the architecture file's network; use the search's options or "
                                              "another --arch")]
    r = stages.run("retrain", argv(demo_root, tmp_path / "work", "--arch", "unet", "--blocks", "1"), capfd)
    assert r.code == 2 and r.error_lines == [("error: --arch unet in the space of the options "
                                              f"({tmp_path / 'work' / RUN / 'arch.json'} does not exist): a U through 2 "
                                              "levels needs at least 2 * (2 - 1) = 2 blocks, got 1")]
