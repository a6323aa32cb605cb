"""code/main.sh as its README promises: one precedence for every option (defaults < preset < the variables that are
set < EXTRA_ARGS), the preset each stage uses named, finished stages reused only when made with the same options,
a task without test images, and folds run apart (one per GPU) then fused together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow  # main.sh in subprocesses
ROOT = Path(__file__).resolve().parents[2]
TASK = "Task99_Demo"
#: The smallest search and retraining that run every stage (2 blocks, 2 levels, 16^3 crops at 4 mm).
FAST = ("--blocks 2 --levels 2 --patch_size 16 16 16 --spacing 4 4 4 --channel_mul 0.25 --iters 4 --warmup_iters 2 "
        "--val_interval 2 --ckpt_interval 2 --sw_batch_size 8 --num_workers 0 --batch_size 1")


def main_sh(*stages: str, data: Path, work: Path, env: dict | None = None, expect: int = 0,
            **variables: str) -> subprocess.CompletedProcess:
    """``bash code/main.sh STAGES`` with exactly the given variables set (nothing inherited from the test run)."""
    e = {k: v for k, v in os.environ.items() if k not in ("MEM", "FOLDS", "PRESET", "TTA", "FORCE", "EXTRA_ARGS")}
    e.update(TASKS=TASK, DATA_ROOT=str(data), WORK_ROOT=str(work), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    e.update(**(env or {}), **variables)
    r = subprocess.run(["bash", str(ROOT / "code" / "main.sh"), *stages], capture_output=True, text=True, env=e,
                       timeout=900)
    assert r.returncode == expect, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def run_folders(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.name.startswith("search-"))


def test_one_precedence_for_mem_and_the_preset_named(demo_root, tmp_path):
    preset = tmp_path / "half.yaml"
    preset.write_text((ROOT / "configs" / "tiny.yaml").read_text() + "mem: 0.5\n")
    # MEM unset: the preset's mem holds (main.sh used to pass its own --mem 0.8 over it).
    r = main_sh("1", data=demo_root, work=tmp_path / "a", PRESET=str(preset), EXTRA_ARGS=FAST)
    assert run_folders(tmp_path / "a") == [f"search-bilevel-ent-mem0.5-{TASK}"]
    assert f"[search] {TASK}: preset {preset}" in r.stdout
    # MEM set: above the preset; EXTRA_ARGS: above MEM.
    main_sh("1", data=demo_root, work=tmp_path / "b", PRESET=str(preset), MEM="0.3", EXTRA_ARGS=FAST)
    assert run_folders(tmp_path / "b") == [f"search-bilevel-ent-mem0.3-{TASK}"]
    main_sh("1", data=demo_root, work=tmp_path / "c", PRESET=str(preset), MEM="0.3", EXTRA_ARGS=FAST + " --mem 0.4")
    assert run_folders(tmp_path / "c") == [f"search-bilevel-ent-mem0.4-{TASK}"]
    # No preset for the task: main.sh says so, and the defaults of code/config.py apply (use_max 1, mem 0.8).
    r = main_sh("1", data=demo_root, work=tmp_path / "d", EXTRA_ARGS=FAST)
    assert f"[search] {TASK}: no preset (no configs/{TASK}.yaml, PRESET unset): the defaults of code/config.py" \
        in r.stdout
    run = tmp_path / "d" / f"search-bilevel-ent-mem0.8-{TASK}"
    config = json.loads((run / "config_search.json").read_text())["config"]
    assert (config["config"], config["use_max"], config["mem"], config["blocks"]) == (None, 1, 0.8, 2)


def test_a_finished_stage_made_with_other_options_is_refused(demo_root, tmp_path):
    work = tmp_path / "work"
    main_sh("1", data=demo_root, work=work, PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST)
    run = work / f"search-bilevel-ent-mem0.8-{TASK}"
    arch = (run / "arch.json").read_bytes()
    r = main_sh("1", data=demo_root, work=work, PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST)
    assert f"[search] {TASK}: done ({run / 'summary.json'}), skipping" in r.stdout
    # The spacing changed (a preset edited; here on the command line): the old search must not pass for the new one.
    r = main_sh("1", data=demo_root, work=work, PRESET=str(ROOT / "configs" / "tiny.yaml"), expect=2,
                EXTRA_ARGS=FAST + " --spacing 3 3 3")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    print(errors)
    assert len(errors) == 1 and "--spacing [4.0, 4.0, 4.0]" in errors[0] and "[3.0, 3.0, 3.0]" in errors[0]
    assert "FORCE=1" in errors[0] and "WORK_ROOT" in errors[0]
    assert (run / "arch.json").read_bytes() == arch
    # FORCE=1 redoes it with the new options.
    main_sh("1", data=demo_root, work=work, PRESET=str(ROOT / "configs" / "tiny.yaml"), FORCE="1",
            EXTRA_ARGS=FAST + " --spacing 3 3 3")
    assert json.loads((run / "config_search.json").read_text())["config"]["spacing"] == [3.0, 3.0, 3.0]


def test_a_task_without_test_images_ends_after_validation(demo_copy, tmp_path):
    meta = json.loads((demo_copy / TASK / "dataset.json").read_text())
    meta["test"] = []
    (demo_copy / TASK / "dataset.json").write_text(json.dumps(meta))
    # Stages 4-6 have nothing to do and succeed (no model needed to see that).
    r = main_sh("4", "5", "6", data=demo_copy, work=tmp_path / "work", PRESET=str(ROOT / "configs" / "tiny.yaml"),
                FOLDS="0", EXTRA_ARGS=FAST)
    assert f"[test-infer] {TASK}: dataset.json lists no test images, nothing to do" in r.stdout
    assert f"[fuse] {TASK}: dataset.json lists no test images, nothing to fuse" in r.stdout
    assert f"[resample] {TASK}: dataset.json lists no test images, nothing to resample" in r.stdout
    for script, extra in (("test.py", ["--split", "test"]), ("fuse.py", []), ("fuse.py", ["--resample", "1"])):
        r = subprocess.run([sys.executable, str(ROOT / "code" / script), "--data_root", str(demo_copy), "--task", TASK,
                            "--work_root", str(tmp_path / "work"), *extra], capture_output=True, text=True)
        assert r.returncode == 0 and "lists no test images: nothing to" in r.stderr, r.stderr[-2000:]


def test_folds_on_separate_processes_then_fused_together(demo_root, tmp_path):
    """nnU-Net's way with several GPUs: the search once, then one main.sh per fold (per GPU) at the same time, then
    stages 5-6 with every fold. A stage 5 that fused fewer folds must not pass for the fusion of all of them."""
    work = tmp_path / "work"
    v = dict(PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST)
    main_sh("1", data=demo_root, work=work, **v)
    e = {k: val for k, val in os.environ.items() if k not in ("MEM", "FOLDS", "PRESET", "TTA", "FORCE", "EXTRA_ARGS")}
    procs = [subprocess.Popen(["bash", str(ROOT / "code" / "main.sh"), "2", "3", "4"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=dict(e, TASKS=TASK, DATA_ROOT=str(demo_root), WORK_ROOT=str(work), FOLDS=str(k),
                                       PYTHON=sys.executable, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES=str(k), **v))
             for k in (0, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[1][-2000:] for o in outs)
    run = work / f"search-bilevel-ent-mem0.8-{TASK}"
    # The trap: one of the per-fold runs went on to stages 5-6 with its own fold only.
    r = main_sh("5", "6", data=demo_root, work=work, FOLDS="0", **v)
    assert json.loads((run / "fused" / "summary.json").read_text())["folds"] == [0]
    assert "fused 1 of the 5 folds" in r.stderr
    one_fold = {p.name: p.read_bytes() for p in (run / "final").iterdir()}
    # Every fold asked for: stage 5 fuses again (not "done, skipping"), and stage 6 follows.
    r = main_sh("5", "6", data=demo_root, work=work, FOLDS="0 1", **v)
    assert "skipping" not in r.stdout, r.stdout
    assert json.loads((run / "fused" / "summary.json").read_text())["folds"] == [0, 1]
    assert json.loads((run / "config_resample.json").read_text())["fused_folds"] == [0, 1]
    for p in (run / "fused").glob("*.npz"):
        assert np.load(p)["folds"].tolist() == [0, 1]
    assert sorted(p.name for p in (run / "final").iterdir()) == sorted(one_fold)
    r = main_sh("5", "6", data=demo_root, work=work, FOLDS="0 1", **v)
    assert f"[fuse] {TASK}: done" in r.stdout and f"[resample] {TASK}: done" in r.stdout


def test_several_seeded_searches_one_chosen_and_retrained(demo_root, tmp_path):
    """SEARCH_SEEDS=2: two searches (--seed 0 and 1) in their own folders, the one with the higher supernet validation
    Dice (a tie: the lower seed) installed in the search run folder, skipped when rerun, and retrained by stage 2."""
    import hashlib

    import torch

    work = tmp_path / "work"
    v = dict(PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST, SEARCH_SEEDS="2")
    r = main_sh("1", data=demo_root, work=work, **v)
    run = work / f"search-bilevel-ent-mem0.8-{TASK}"
    seeds = {s: run / "seeds" / f"seed{s}" for s in (0, 1)}
    dice = {}
    for s, folder in seeds.items():
        assert f"[search] {TASK} fold 0 seed {s}" in r.stdout
        summary = json.loads((folder / "summary.json").read_text())
        assert json.loads((folder / "config_search.json").read_text())["config"]["seed"] == s
        dice[s] = summary["val_dice"]
        assert f"seed {s}: supernet validation Dice {dice[s]:.4f}" in r.stderr
    chosen = max(dice, key=lambda s: (dice[s], -s))
    choice = json.loads((run / "search_choice.json").read_text())
    print(f"supernet validation Dice per seed {dice}: chose seed {choice['chosen_seed']} ({choice['reason']})")
    assert choice["chosen_seed"] == chosen and choice["seeds"] == [0, 1]
    assert [c["arch_sha256"] for c in choice["candidates"]] == \
        [hashlib.sha256((seeds[s] / "arch.json").read_bytes()).hexdigest() for s in (0, 1)]
    assert f"chose seed {chosen} among 2 searches" in r.stderr
    for name in ("arch.json", "arch.pth", "metrics.csv"):
        assert (run / name).read_bytes() == (seeds[chosen] / name).read_bytes(), name
    assert json.loads((run / "summary.json").read_text())["chosen_seed"] == chosen
    assert not (run / "latest.pt").exists()  # each search's state stays in its own folder
    # Rerun: finished, skipped; one search asked for instead is refused, naming the difference.
    r = main_sh("1", data=demo_root, work=work, **v)
    assert f"[search] {TASK}: done ({run / 'summary.json'}), skipping" in r.stdout
    r = main_sh("1", data=demo_root, work=work, expect=2, **dict(v, SEARCH_SEEDS="1"))
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "a choice among SEARCH_SEEDS=2 searches (seeds 0..1)" in errors[0], r.stderr
    # Stage 2 retrains the chosen architecture (its --seed is still the run's, 0).
    main_sh("2", data=demo_root, work=work, FOLDS="0", **v)
    best = torch.load(run / "retrain-fold0" / "best.pt", weights_only=True)
    arch = json.loads((seeds[chosen] / "arch.json").read_text())
    assert (best["arch"]["arch_code_a"], best["arch"]["arch_code_c"]) == (arch["arch_code_a"], arch["arch_code_c"])
    assert json.loads((run / "retrain-fold0" / "config_retrain.json").read_text())["config"]["seed"] == 0


@pytest.mark.parametrize("value", ["abc", "0", "-1", "2.5"])
def test_a_bad_search_seeds_is_one_line_before_anything_runs(demo_root, tmp_path, value):
    r = main_sh("1", data=demo_root, work=tmp_path / "work", expect=2, SEARCH_SEEDS=value,
                PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST)
    assert r.stdout == "" and r.stderr.strip().splitlines() == [
        f"SEARCH_SEEDS={value}: expected a whole number, 1 or more (how many seeded searches stage 1 runs; unset or "
        "1: one search)"]
    assert not (tmp_path / "work").exists()


def test_an_nnunet_dataset_without_a_preset_through_every_stage_and_predict(tmp_path):
    """The demo as an nnU-Net v2 dataset with 2 channels, named by its number, with no preset: only GPU_MB and short
    iteration counts. Stage 0 plans it (the paper's network at the patch and batch that fit), stage 2 re-plans
    retraining for the searched architecture; its own splits_final.json gives the folds, the finals lie on the
    original grids named <case>.nii.gz, and predict.py (a model folder) names and segments its channel files the same
    way."""
    import nibabel as nib

    sys.path.insert(0, str(ROOT))
    from scripts.make_demo_task import make_nnunet_task

    data, work = tmp_path / "data", tmp_path / "work"
    # Three cases, one test image: the paper's network is slow on a CPU.
    make_nnunet_task(data / "Dataset099_Demo", cases=3, test=1, seed=0, channels=2)
    cases = [f"demo_{i:03d}" for i in range(3)]
    folds = [{"train": [c for c in cases if c != val], "val": [val]} for val in cases]
    (data / "Dataset099_Demo" / "splits_final.json").write_text(json.dumps(folds))
    # The smallest GPU the paper's search space fits at 32^3 with AMP (predicted 2132 MB of 2600 MB less 15%).
    short = "--iters 1 --warmup_iters 0 --val_interval 1 --sw_overlap 0 --num_workers 0 --num_folds 3"
    v = dict(TASKS="99", FOLDS="0", GPU_MB="2600", EXTRA_ARGS=short, OMP_NUM_THREADS="2")  # the paper's network: 2 threads
    r = main_sh("0", data=data, work=work, **v)  # stage 0: the fingerprint, both channels, and the plan
    assert "[plan] 99: fingerprint and plan" in r.stdout
    fingerprint = json.loads((work / "Dataset099_Demo" / "fingerprint.json").read_text())
    assert [s["name"] for s in fingerprint["intensity"].values()] == ["CT", "MR"] and len(fingerprint["cases"]) == 3
    plan = work / "Dataset099_Demo" / "plan.yaml"
    first = yaml.safe_load(plan.read_text())
    assert first["intensity"] == "zscore" and first["spacing"] == [1.0, 1.0, 1.0]  # CT + MR; 1.6 x 1.6 x 3 mm
    assert first["search"]["patch_size"] == [32, 32, 32] and "provisional" in plan.read_text()
    r = main_sh("all", data=data, work=work, **v)
    run = work / "search-bilevel-ent-mem0.8-Dataset099_Demo"
    # Retraining was re-planned for the searched architecture, lighter than the heaviest, and ran as planned.
    text = plan.read_text()
    assert f"the architecture {run / 'arch.json'}" in text and "GPU memory: 2600 MB (--gpu_mb)" in text
    replanned = yaml.safe_load(text)["retrain"]
    record = json.loads((run / "retrain-fold0" / "config_retrain.json").read_text())["config"]
    assert [record[k] for k in ("patch_size", "batch_size", "sw_batch_size")] == \
        [replanned[k] for k in ("patch_size", "batch_size", "sw_batch_size")]
    assert record["sources"]["patch_size"] == f"plan {plan}" and record["sources"]["iters"] == "command line"
    assert json.loads((run / "config_search.json").read_text())["config"]["patch_size"] == [32, 32, 32]
    assert json.loads((work / "Dataset099_Demo" / "splits.json").read_text())["folds"] == folds
    assert json.loads((run / "val-fold0" / "summary.json").read_text())["cases"] == 1
    assert sorted(p.name for p in (run / "final").iterdir()) == ["demo_003.nii.gz"]
    for name in ("demo_003",):
        image = nib.load(str(data / "Dataset099_Demo" / "imagesTs" / f"{name}_0000.nii.gz"))
        final = nib.load(str(run / "final" / f"{name}.nii.gz"))
        assert final.shape == image.shape and np.allclose(final.affine, image.affine, atol=1e-4)
    assert "Final label maps (1 test image" in r.stdout
    common = ["--data_root", str(data), "--task", "99", "--work_root", str(work), *short.split(), "--folds", "0"]
    subprocess.run([sys.executable, str(ROOT / "scripts" / "export_model.py"), *common, "--out",
                    str(tmp_path / "model")], check=True, capture_output=True)
    subprocess.run([sys.executable, str(ROOT / "code" / "predict.py"), "--model", str(tmp_path / "model"), "--input",
                    str(data / "Dataset099_Demo" / "imagesTs"), "--output", str(tmp_path / "pred")], check=True,
                   capture_output=True)
    for p in (run / "final").iterdir():  # the model folder predicts what stages 4-6 wrote
        assert (tmp_path / "pred" / p.name).read_bytes() == p.read_bytes()
