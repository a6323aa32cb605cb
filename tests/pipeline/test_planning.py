"""The plan (dints.pipeline.planning, code/plan.py): the ten MSD presets against the plan for MSD's published
fingerprints, patch and batch maximal under 8 to 80 GB by the memory predictors themselves, and plan.yaml read under
the presets and flags."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from config import load_config
from dints.errors import ConfigError
from dints.pipeline import planning
from dints.space import fit
from dints.space.archfile import save_arch
from dints.space.baselines import cvpr_arch
from dints.space.network_memory import MB, predict, predict_supernet
from dints.space.opsets import opset_ops
from helpers import stages

ROOT = Path(__file__).resolve().parents[2]

#: MSD's published fingerprints (the nnU-Net paper's dataset table): channel names, classes with background, training
#: cases, median voxel size (mm) and median shape in RAS order (x, y, z: the slice axis last), and the share of the
#: median image its non-zero region keeps (BrainTumour: the skull-stripped brain, about 138 x 169 x 138 of
#: 240 x 240 x 155; the others are not cropped by it).
MSD = {
    "Task01_BrainTumour": (["FLAIR", "T1w", "t1gd", "T2w"], 4, 484, (1.0, 1.0, 1.0), (240, 240, 155), 0.36),
    "Task02_Heart": (["MRI"], 2, 20, (1.25, 1.25, 1.37), (320, 232, 115), 1.0),
    "Task03_Liver": (["CT"], 3, 131, (0.77, 0.77, 1.0), (512, 512, 432), 1.0),
    "Task04_Hippocampus": (["MRI"], 3, 260, (1.0, 1.0, 1.0), (36, 50, 35), 1.0),
    "Task05_Prostate": (["T2", "ADC"], 3, 32, (0.62, 0.62, 3.6), (320, 319, 20), 1.0),
    "Task06_Lung": (["CT"], 2, 63, (0.79, 0.79, 1.24), (512, 512, 252), 1.0),
    "Task07_Pancreas": (["CT"], 3, 281, (0.8, 0.8, 2.5), (512, 512, 96), 1.0),
    "Task08_HepaticVessel": (["CT"], 3, 303, (0.8, 0.8, 5.0), (512, 512, 49), 1.0),
    "Task09_Spleen": (["CT"], 2, 41, (0.79, 0.79, 5.0), (512, 512, 90), 1.0),
    "Task10_Colon": (["CT"], 2, 126, (0.78, 0.78, 5.0), (512, 512, 95), 1.0),
}
#: The GPU sizes of the README's table (MB).
TABLE_GPUS = (8192, 32768)


def fingerprint_of(name: str) -> dict:
    channels, _, cases, spacing, shape, nonzero = MSD[name]
    return {"cases": [{"spacing": list(spacing), "shape": list(shape)}] * cases,
            "median": {"nonzero_ratio": nonzero},
            "channels": {str(i): c for i, c in enumerate(channels)},
            "intensity": {str(i): {"samples": 0} for i in range(len(channels))}}


def configs_of(name: str, *argv: str) -> dict:
    channels, classes = MSD[name][0], MSD[name][1]
    out = {}
    for stage in ("search", "retrain", "test"):
        cfg = load_config(["--task", name, "--data_root", "/nonexistent", "--work_root", "/nonexistent", *argv], stage,
                          use_plan=False)
        cfg.in_channels, cfg.num_classes = len(channels), classes
        out[stage] = cfg
    return out


def planned(name: str, gpu_mb: float, *argv: str, arch=None) -> dict:
    arch = arch or cvpr_arch()
    entries = planning.make_plan(fingerprint_of(name), configs_of(name, *argv), gpu_mb, arch, "the CVPR 2021 one")
    return {(e.section, e.key): e.value for e in entries}


def preset(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


def _patch(v) -> str:
    return "×".join(str(s) for s in v) if len(set(v)) > 1 else f"{v[0]}³"


def table_rows() -> list[str]:
    """The README's rows: each preset against the plan (search patch / retraining patch at each GPU size)."""
    rows = []
    for name in MSD:
        p = preset(name)
        spacing = "native" if "spacing" in p and p["spacing"] is None else "1 mm"
        plan8, plan32 = (planned(name, gb) for gb in TABLE_GPUS)
        plan_spacing = "native" if plan8[(None, "spacing")] is None else (
            "1 mm" if plan8[(None, "spacing")] == [1.0, 1.0, 1.0] else str(plan8[(None, "spacing")]))
        sizes = [f"{_patch(q[('search', 'patch_size')])} / {_patch(q[('retrain', 'patch_size')])}" for q in (plan8, plan32)]
        rows.append(f"| {name} | {spacing} | {plan_spacing} | {p.get('intensity', 'zscore')} | "
                    f"{plan8[(None, 'intensity')]} | {_patch(p.get('patch_size', [96, 96, 96]))} | {sizes[0]} | "
                    f"{sizes[1]} |")
    return rows


def test_the_plan_reproduces_the_ten_presets_spacing_and_intensity():
    for name in MSD:
        p, q = preset(name), planned(name, 8192)
        assert q[(None, "spacing")] == p.get("spacing", [1.0, 1.0, 1.0]), name
        assert q[(None, "intensity")] == p.get("intensity", "zscore"), name


def test_the_readme_table_is_the_plan_of_the_published_fingerprints():
    readme = (ROOT / "README.md").read_text()
    missing = [row for row in table_rows() if row not in readme]
    assert not missing, "README rows to update:\n" + "\n".join(table_rows())


@pytest.mark.parametrize("gpu_gb", [8, 16, 24, 80])
def test_patch_and_batch_are_maximal_under_the_budget(gpu_gb):
    # Task09-like, the defaults (AMP, the paper's search space); retraining sized for the CVPR 2021 architecture.
    gpu_mb = gpu_gb * 1024
    budget = gpu_mb * 0.85 * MB
    q = planned("Task09_Spleen", gpu_mb)
    image = [404, 404, 450]  # 512 x 512 x 90 at 0.79 x 0.79 x 5 mm, resampled to 1 mm
    ops = opset_ops(1)

    def supernet(patch, n):
        return predict_supernet(12, 4, patch, n, 0.5, 1, 2, ops, recompute=True, amp=True).total

    arch = cvpr_arch()

    def retrain(patch, n):
        return predict(arch, patch, n, 2 * arch.channel_mul, 1, 2, amp=True).total

    for section, memory, least in (("search", supernet, 1), ("retrain", retrain, 2)):
        patch, batch = tuple(q[(section, "patch_size")]), q[(section, "batch_size")]
        assert memory(patch, batch) <= budget, (section, gpu_gb)
        assert memory(patch, batch + 1) > budget, (section, gpu_gb)  # batch + 1 would not fit
        steps = list(fit.patch_steps(image, 32))
        k = steps.index(patch)
        if k:  # the next larger patch step would not fit, even with the least batch
            assert memory(steps[k - 1], least) > budget, (section, gpu_gb)
    assert q[("test", "patch_size")] == q[("retrain", "patch_size")]


def test_a_preset_patch_is_planned_around_and_a_batch_cap_applies():
    # Hippocampus: 260 cases of 36 x 50 x 35 voxels; 32^3 crops of 5% of its voxels: 24 (nnU-Net's cap), though the
    # memory would hold more.
    q = planned("Task04_Hippocampus", 81920)
    assert q[("search", "patch_size")] == [32, 32, 32] and q[("search", "batch_size")] == 24
    # A patch set on the command line: kept, and the batch fitted to it.
    q = planned("Task09_Spleen", 8192, "--patch_size", "64", "64", "64")
    assert q[("search", "patch_size")] == [64, 64, 64] and q[("retrain", "patch_size")] == [64, 64, 64]
    assert q[("search", "batch_size")] > 1


def write_plan(work: Path, task: str, text: str) -> Path:
    path = work / task / "plan.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_defaults_plan_preset_flags(tmp_path):
    plan = write_plan(tmp_path, "Task99_Demo", "spacing: [1.5, 1.5, 1.5]\nintensity: ct\nct_window: [0.0, 100.0]\n"
                                               "search:\n  batch_size: 3\n  patch_size: [64, 64, 32]\n")
    base = ["--data_root", "/nonexistent", "--task", "Task99_Demo", "--work_root", str(tmp_path)]
    cfg = load_config(base, "search")
    assert (cfg.spacing, cfg.intensity, cfg.batch_size, cfg.patch_size) == ([1.5] * 3, "ct", 3, [64, 64, 32])
    assert cfg.sources["batch_size"] == f"plan {plan}"
    assert load_config(base, "retrain").batch_size == 2  # the plan's search section is not retraining's
    tiny = str(ROOT / "configs" / "tiny.yaml")
    cfg = load_config([*base, "--config", tiny], "search")
    assert (cfg.spacing, cfg.batch_size, cfg.ct_window) == ([2.0] * 3, 1, [0.0, 100.0])  # the preset wins
    assert cfg.sources["spacing"] == tiny and cfg.sources["ct_window"] == f"plan {plan}"
    cfg = load_config([*base, "--config", tiny, "--batch_size", "5"], "search")
    assert cfg.batch_size == 5 and cfg.sources["batch_size"] == "command line"
    assert load_config(base, "search", use_plan=False).batch_size == 1


def test_a_bad_plan_is_named(tmp_path):
    write_plan(tmp_path, "Task99_Demo", "search:\n  batch_size: two\n")
    with pytest.raises(ConfigError, match=r"plan\.yaml \[search\]: option 'batch_size' expects int"):
        load_config(["--task", "Task99_Demo", "--work_root", str(tmp_path)], "search")


def test_plan_py_writes_keeps_its_gpu_and_replans_for_the_searched_architecture(demo_root, tmp_path, capfd):
    work = tmp_path / "work"
    base = ["--data_root", str(demo_root), "--task", "Task99_Demo", "--work_root", str(work)]
    r = stages.run("plan", [*base, "--if_planned"], capfd)
    assert r.code == 0 and not (work / "Task99_Demo" / "plan.yaml").exists()
    r = stages.run("plan", [*base, "--gpu_mb", "0"], capfd)
    assert r.code == 2 and r.error_lines == ["error: --gpu_mb must be > 0 (MB of GPU memory), got 0"]
    r = stages.run("plan", [*base, "--gpu_mb", "500"], capfd)
    assert r.code == 2 and re.fullmatch(r"error: --gpu_mb 500: search, one-shot supernet step .* needs \d+ MB "
                                        r"predicted, over the 425 MB planned for: .*", r.error_lines[0]), r.err
    assert not (work / "Task99_Demo" / "plan.yaml").exists()

    assert stages.run("plan", [*base, "--gpu_mb", "6000"], capfd).code == 0
    path = work / "Task99_Demo" / "plan.yaml"
    text = path.read_text()
    assert "GPU memory: 6000 MB (--gpu_mb)" in text and "provisional, before the search" in text
    first = yaml.safe_load(text)
    # Every value it sets is one a preset may set, and each carries its reason.
    assert set(first) == {"spacing", "intensity", "ct_window", "search", "retrain", "test"}
    assert all("  # " in line for line in text.splitlines() if line.strip() and not line.startswith("#")
               and not line.rstrip().endswith(":"))
    # Predicted memory of the planned search step, by the predictor itself: within 6000 MB less 15%.
    s = first["search"]
    assert predict_supernet(12, 4, s["patch_size"], s["batch_size"], 0.5, 1, 3, recompute=True, amp=True).total \
        <= 6000 * 0.85 * MB

    # The search decodes an architecture: a rerun without --gpu_mb keeps 6000 MB and sizes retraining for it.
    run = work / stages.RUN
    run.mkdir(parents=True)
    save_arch(cvpr_arch(), run / "arch.json")
    assert stages.run("plan", [*base, "--if_planned"], capfd).code == 0
    text = path.read_text()
    again = yaml.safe_load(text)
    assert "GPU memory: 6000 MB (--gpu_mb)" in text and f"the architecture {run / 'arch.json'}" in text
    assert again["search"] == first["search"]
    r = again["retrain"]
    arch = cvpr_arch()
    assert r["batch_size"] >= 2 and predict(arch, r["patch_size"], r["batch_size"], 2 * arch.channel_mul, 1, 3,
                                            amp=True).total <= 6000 * 0.85 * MB
    assert json.loads((work / "Task99_Demo" / "plan_inputs.json").read_text())["gpu_mb"] == 6000
