"""Option parsing, presets and their errors (code/config.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from config import STAGES, build_parser, load_config, load_fold_configs, read_preset, to_dict
from dints.errors import ConfigError
from dints.pipeline import planning

ROOT = Path(__file__).resolve().parents[2]
SEED_OPTIONS = ["--iters", "--warmup_iters", "--EF", "--EP", "--ef_end", "--topology", "--base_lr", "--opset",
                "--cellop", "--path_iters", "--path_num", "--use_max", "--mem"]
OTHER_OPTIONS = ["--data_root", "--task", "--fold", "--num_folds", "--work_root", "--blocks", "--levels",
                 "--channel_mul", "--patch_size", "--batch_size", "--spacing", "--intensity", "--seed", "--amp",
                 "--num_workers", "--cache", "--resume", "--val_interval", "--log_interval", "--topology_weight",
                 "--arch_lr"]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "preset.yaml"
    p.write_text(text)
    return p


def test_paper_defaults():
    cfg = load_config(["--task", "T"], "search")
    assert cfg.use_max == 1  # the paper's one-shot search
    assert (cfg.blocks, cfg.levels, cfg.channel_mul, cfg.mem) == (12, 4, 0.5, 0.8)
    assert (cfg.iters, cfg.warmup_iters, cfg.batch_size) == (20000, 10000, 1)
    assert (cfg.base_lr, cfg.arch_lr, cfg.topology_weight, cfg.EP, cfg.topology, cfg.EF) == (0.025, 1e-3, 1e-3, 1, 1, 0)
    assert cfg.patch_size == [96, 96, 96] and cfg.num_folds == 5
    r = load_config(["--task", "T"], "retrain")
    assert r.batch_size == 2 and r.channel_mul is None  # None: double the search's channel_mul


@pytest.mark.parametrize("stage", STAGES)
def test_help_lists_every_option(stage):
    text = build_parser(stage).format_help()
    for opt in SEED_OPTIONS + OTHER_OPTIONS:
        assert opt in text, opt


@pytest.mark.slow
def test_search_help_cli_lists_seed_options():
    out = subprocess.run([sys.executable, str(ROOT / "code" / "search.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for opt in SEED_OPTIONS:
        assert opt in out.stdout
    assert "default: 0.8" in out.stdout  # defaults are shown


def test_preset_sets_defaults_and_flags_override(tmp_path):
    p = write(tmp_path, "iters: 50\nwarmup_iters: 5\nblocks: 6\npatch_size: [32, 32, 16]\nsearch:\n  iters: 70\nretrain:\n  iters: 90\n")
    s = load_config(["--config", str(p), "--task", "T"], "search")
    assert (s.iters, s.blocks, s.patch_size) == (70, 6, [32, 32, 16])  # stage section wins over top level
    r = load_config(["--config", str(p), "--task", "T"], "retrain")
    assert r.iters == 90
    s2 = load_config(["--config", str(p), "--task", "T", "--blocks", "3", "--iters", "10"], "search")
    assert (s2.blocks, s2.iters) == (3, 10)
    assert s2.sources["blocks"] == "command line" and s2.sources["patch_size"] == str(p)


def test_preset_unknown_key_is_error_naming_it(tmp_path):
    p = write(tmp_path, "iters: 5\nbloks: 3\n")
    with pytest.raises(ConfigError, match="unknown option 'bloks'"):
        load_config(["--config", str(p), "--task", "T"], "search")
    p = write(tmp_path, "search:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"\[search\]: unknown option 'bogus'"):
        load_config(["--config", str(p), "--task", "T"], "search")


@pytest.mark.parametrize("text,key", [
    ("iters: ten\n", "iters"),
    ("iters: 1.5\n", "iters"),
    ("mem: yes\n", "mem"),
    ("patch_size: [32, 32]\n", "patch_size"),
    ("patch_size: 32\n", "patch_size"),
    ("opset: 3\n", "opset"),
    ("intensity: mri\n", "intensity"),
    ("amp: 1\n", "amp"),
    ("blocks: null\n", "blocks"),
])
def test_preset_wrong_type_is_error_naming_key(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"option '{key}'"):
        load_config(["--config", str(p), "--task", "T"], "search")


def test_preset_converts_ints_for_floats_and_null_spacing(tmp_path):
    p = write(tmp_path, "mem: 1\nspacing: null\nct_window: [-100, 200]\namp: false\n")
    cfg = load_config(["--config", str(p), "--task", "T"], "search")
    assert cfg.mem == 1.0 and isinstance(cfg.mem, float)
    assert cfg.spacing is None and cfg.ct_window == [-100.0, 200.0] and cfg.amp is False


def test_spacing_native_on_command_line():
    assert load_config(["--task", "T", "--spacing", "native"], "search").spacing is None
    assert load_config(["--task", "T", "--spacing", "1", "2", "3.5"], "search").spacing == [1.0, 2.0, 3.5]


@pytest.mark.parametrize("argv,match", [
    (["--fold", "5"], "--fold"),
    (["--folds", "0", "5"], "--folds must be in 0..4, got 0 5"),
    (["--mem", "1.5"], "--mem"),
    (["--warmup_iters", "30000"], "--warmup_iters"),
    (["--levels", "1"], "--levels"),
    (["--use_max", "0", "--path_num", "11"], "--path_num"),
    (["--ct_window", "100", "0"], "--ct_window"),
])
def test_inconsistent_options(argv, match):
    with pytest.raises(ConfigError, match=match):
        load_config(["--task", "T", *argv], "search")


def test_folds_give_one_configuration_per_fold_each_as_its_own_fold_would():
    argv = ["--task", "T", "--folds", "3", "1", "3", "--checkpoint", "runs/fold{fold}/best.pt"]
    configs = load_fold_configs(argv, "test")
    assert [c.fold for c in configs] == [3, 1]  # in the order given, once each
    assert [c.checkpoint for c in configs] == ["runs/fold3/best.pt", "runs/fold1/best.pt"]
    alone = load_config(["--task", "T", "--fold", "1", "--checkpoint", "runs/fold1/best.pt"], "test")
    assert to_dict(configs[1]) == to_dict(alone)  # what the fold records is what a run of that fold alone records
    assert [c.fold for c in load_fold_configs(["--task", "T", "--fold", "2"], "retrain")] == [2]


def test_missing_task_is_error():
    with pytest.raises(ConfigError, match="--task is required"):
        load_config([], "search")


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["--config", str(tmp_path / "nope.yaml"), "--task", "T"], "search")


def test_every_shipped_preset_parses_for_every_stage():
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(presets) == 11  # ten MSD tasks + tiny
    for p in presets:
        for stage in STAGES:
            read_preset(p, stage, build_parser(stage))
            cfg = load_config(["--config", str(p), "--task", "T"], stage)
            if p.stem.startswith("Task"):
                # patch sides must suit the levels: divisible by 2^(D+1)
                assert all(s % 2 ** (cfg.levels + 1) == 0 for s in cfg.patch_size), p
            if stage == "search":  # the paper's mode: one-shot, no annealing, both losses on
                assert (cfg.use_max, cfg.EF, cfg.EP, cfg.topology) == (1, 0, 1, 1), p


def test_msd_presets_hold_only_what_makes_their_task_differ():
    expect = {  # intensity, CT window, native spacing?, patch, retraining iterations (docs/method.md, presets)
        "Task01_BrainTumour": ("zscore_nonzero", None, True, [96, 96, 96], 20000),
        "Task02_Heart": ("zscore", None, False, [96, 96, 96], 20000),
        "Task03_Liver": ("ct", [-21.0, 189.0], False, [96, 96, 96], 20000),
        "Task04_Hippocampus": ("zscore", None, True, [32, 32, 32], 10000),
        "Task05_Prostate": ("zscore", None, False, [96, 96, 32], 20000),
        "Task06_Lung": ("ct", [-1000.0, 1000.0], False, [96, 96, 96], 20000),
        "Task07_Pancreas": ("ct", [-87.0, 199.0], False, [96, 96, 96], 20000),
        "Task08_HepaticVessel": ("ct", [0.0, 230.0], False, [96, 96, 96], 20000),
        "Task09_Spleen": ("ct", [-125.0, 275.0], False, [96, 96, 96], 20000),
        "Task10_Colon": ("ct", [-57.0, 175.0], False, [96, 96, 96], 20000),
    }
    for name, (inten, win, native, patch, iters) in expect.items():
        path = ROOT / "configs" / f"{name}.yaml"
        cfg = load_config(["--config", str(path), "--task", name], "search")
        assert (cfg.intensity, cfg.patch_size, cfg.spacing is None) == (inten, patch, native), name
        assert win is None or cfg.ct_window == win, name
        assert load_config(["--config", str(path), "--task", name], "retrain").iters == iters, name
        # nothing in the file repeats a default, but for the paper's values of what the plan would choose instead
        pinned = {k for keys in planning.KEYS.values() for k in keys} - {"sw_batch_size"}
        for stage in ("search", "retrain"):
            p = build_parser(stage)
            for key, value in read_preset(path, stage, p).items():
                assert key in pinned or value != p.get_default(key), (name, key)


def test_msd_presets_pin_the_paper_over_the_plan(tmp_path):
    # A plan that would change every result-deciding value it sets: each Decathlon preset keeps the paper's.
    (tmp_path / "T").mkdir()
    (tmp_path / "T" / "plan.yaml").write_text(
        "spacing: [3.0, 3.0, 3.0]\nintensity: zscore_nonzero\nct_window: [0.0, 1.0]\n"
        "search:\n  patch_size: [64, 64, 64]\n  batch_size: 7\nretrain:\n  patch_size: [64, 64, 64]\n  batch_size: 9\n"
        "test:\n  patch_size: [64, 64, 64]\n")
    for path in sorted((ROOT / "configs").glob("Task*.yaml")):
        with_plan, without = ({s: load_config(["--config", str(path), "--task", "T", "--work_root", str(w)], s)
                               for s in ("search", "retrain", "test")} for w in (tmp_path, tmp_path / "none"))
        for s in with_plan:
            for key in ("spacing", "intensity", "patch_size", "batch_size",
                        *(["ct_window"] if without[s].intensity == "ct" else [])):  # the window only for CT
                assert getattr(with_plan[s], key) == getattr(without[s], key), (path.name, s, key)
        assert (without["search"].batch_size, without["retrain"].batch_size) == (1, 2)


def test_a_preset_cannot_say_where(tmp_path):
    p = write(tmp_path, "task: Task09_Spleen\niters: 5\n")
    with pytest.raises(ConfigError, match="'task' cannot be set in a preset.*give --task on the command line"):
        load_config(["--config", str(p), "--task", "T"], "search")


def test_recorded_config_is_json(tmp_path):
    cfg = load_config(["--task", "T", "--iters", "7", "--warmup_iters", "3"], "search")
    data = json.loads(json.dumps(to_dict(cfg)))
    assert data["iters"] == 7 and data["stage"] == "search" and data["task"] == "T"


def test_every_preprocessing_option_is_checked_on_resume_and_kept_by_model_folders():
    """One list of the options that change preprocessing: the stages' resume checks and the model folder use it."""
    from dints.evaluate import model_folder
    from dints.run.settings import PREPROCESSING_KEYS
    from helpers.stages import module

    assert set(PREPROCESSING_KEYS) == {"spacing", "intensity", "ct_window", "patch_size"}
    for stage in ("search", "retrain"):
        assert set(PREPROCESSING_KEYS) <= set(module(stage).RESUME_KEYS), stage
    assert model_folder.PREPROCESSING_KEYS is PREPROCESSING_KEYS
