"""End to end: code/main.sh runs all six stages on a tiny task (two folds), and each stage's contract holds."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # subprocesses running main.sh end to end
FAST = ("--blocks 2 --levels 2 --patch_size 16 16 16 --spacing 4 4 4 --path_num 3 "
        "--iters 8 --warmup_iters 4 --val_interval 4 --ckpt_interval 4 --sw_batch_size 8")


def main_sh(stage: str, demo_root: Path, work: Path, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, TASKS="Task99_Demo", FOLDS="0 1", DATA_ROOT=str(demo_root), WORK_ROOT=str(work),
             PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=FAST, PYTHON=os.sys.executable, OMP_NUM_THREADS="1",
             **env)
    return subprocess.run(["bash", str(ROOT / "code" / "main.sh"), stage], capture_output=True, text=True, env=e)


@pytest.fixture(scope="module")
def pipeline(demo_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    r = main_sh("all", demo_root, work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work, work / "search-bilevel-ent-mem0.8-Task99_Demo", r


def test_all_stages_ran(pipeline):
    work, run, r = pipeline
    for n in range(1, 7):
        assert f"[main] stage {n}" in r.stdout
    assert (run / "arch.json").is_file()
    for k in (0, 1):
        assert (run / f"retrain-fold{k}" / "best.pt").is_file() and (run / f"retrain-fold{k}" / "summary.json").is_file()
        assert (run / f"val-fold{k}" / "metrics.csv").is_file()
        assert len(list((run / f"test-fold{k}").glob("*.npz"))) == 2
    assert not (run / "retrain-fold2").exists()  # FOLDS limits the work
    assert "validation per fold" in r.stdout and "Final label maps" in r.stdout  # the closing report
    assert (run / "report.md").read_text().startswith("Task Task99_Demo: validation per fold")
    for folder in (run, run / "retrain-fold0", run / "retrain-fold1"):
        assert (folder / "progress.png").stat().st_size > 10_000, folder


def test_final_files_match_original_images(pipeline, demo_root):
    _, run, _ = pipeline
    for img in sorted((demo_root / "Task99_Demo" / "imagesTs").glob("*.nii.gz")):
        out = nib.load(str(run / "final" / img.name))
        orig = nib.load(str(img))
        assert out.shape == orig.shape
        assert np.allclose(out.affine, orig.affine, atol=1e-5)
        assert np.asarray(out.dataobj).max() <= 2
    assert sorted(p.name for p in (run / "final").iterdir()) == ["demo_010.nii.gz", "demo_011.nii.gz"]


def test_retrain_checkpoints(pipeline):
    _, run, _ = pipeline
    arch = json.loads((run / "arch.json").read_text())
    best = torch.load(run / "retrain-fold0" / "best.pt", weights_only=True)
    latest = torch.load(run / "retrain-fold0" / "latest.pt", weights_only=True)
    assert latest["iteration"] == 8 and best["iteration"] in (4, 8)
    assert best["channel_mul"] == 2 * arch["channel_mul"]  # retraining doubles the search's channels
    assert best["arch"]["arch_code_a"] == arch["arch_code_a"]
    assert not any(k.startswith("module.") for k in best["model"])
    assert {"optimizer", "scaler", "loader", "rng", "config", "best_dice"} <= set(latest)
    summary = json.loads((run / "retrain-fold0" / "summary.json").read_text())
    assert summary["best_dice"] == pytest.approx(best["best_dice"])
    # tiny.yaml's cosine schedule, base_lr 0.1, over the 8 iterations: 0.05 * (1 + cos(pi * it / 8)) at the logged
    # iterations 0 and 7 (the last): 0.1 and 0.05 * (1 - 0.92388) = 0.0038060
    lrs = {row["iteration"]: row["lr"] for row in latest["trace"]}
    assert lrs[0] == pytest.approx(0.1) and lrs[7] == pytest.approx(0.0038060, abs=1e-7)


def test_validation_table(pipeline):
    _, run, _ = pipeline
    rows = (run / "val-fold0" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,dice_organ,dice_lesion,hd95_organ,hd95_lesion"
    splits = json.loads((run.parent / "Task99_Demo" / "splits.json").read_text())
    assert [r.split(",")[0] for r in rows[1:]] == splits["folds"][0]["val"]
    s = json.loads((run / "val-fold0" / "summary.json").read_text())
    assert s["cases"] == len(splits["folds"][0]["val"]) and 0 <= s["mean_dice"] <= 1


def test_rerun_skips_and_force_redoes(pipeline, demo_root):
    work, run, _ = pipeline
    before = (run / "arch.json").stat().st_mtime_ns
    r = main_sh("1", demo_root, work)
    assert r.returncode == 0 and f"done ({run / 'summary.json'}), skipping" in r.stdout
    assert (run / "arch.json").stat().st_mtime_ns == before
    r = main_sh("5", demo_root, work, FORCE="1")
    assert r.returncode == 0 and "[fuse] Task99_Demo" in r.stdout and "skipping" not in r.stdout


def test_checkpoint_override(pipeline, demo_root):
    work, run, _ = pipeline
    r = main_sh("3", demo_root, work, FORCE="1", CHECKPOINT=str(run / "retrain-fold{fold}" / "latest.pt"))
    assert r.returncode == 0, r.stderr[-2000:]
    for k in (0, 1):
        s = json.loads((run / f"val-fold{k}" / "summary.json").read_text())
        assert s["checkpoint"].endswith(f"retrain-fold{k}/latest.pt")


def test_missing_checkpoint_is_one_line(demo_root, tmp_path):
    r = subprocess.run([os.sys.executable, str(ROOT / "code" / "test.py"), "--data_root", str(demo_root), "--task",
                        "Task99_Demo", "--work_root", str(tmp_path), "--split", "val"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: checkpoint") and "does not exist" in r.stderr
    assert not (tmp_path / "search-bilevel-ent-mem0.8-Task99_Demo").exists()


def test_missing_arch_is_one_line(demo_root, tmp_path):
    r = subprocess.run([os.sys.executable, str(ROOT / "code" / "retrain.py"), "--data_root", str(demo_root), "--task",
                        "Task99_Demo", "--work_root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "arch.json does not exist" in r.stderr and "Traceback" not in r.stderr


#: How the tests start Debian's chromium: headless, without the sandbox (root) or any network use.
CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SECTIONS = ("Configuration", "Searched architecture", "Retraining", "Validation", "Best and worst validation cases",
            "Final label maps")


def test_results_page_in_a_real_browser(pipeline, tmp_path):
    """The results page main.sh all writes, opened in headless Chromium from disk: every image loads, every section
    is there. A screenshot goes to $DINTS_SCREENSHOT (or the test's folder)."""
    import re
    import shutil

    _, run, r = pipeline
    page = run / "report" / "index.html"
    assert page.is_file() and f"Results page: {page} (9 images)" in r.stdout, r.stdout[-2000:]
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (bash scripts/test.sh installs it as root)")
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium, *CHROMIUM, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert loaded, dom[:2000]
    print(f"results page in chromium: {loaded.group(1)} of {loaded.group(2)} images loaded")
    assert loaded.group(1) == loaded.group(2) == "9"  # arch, search, 2 folds, box plot, 2 x 2 overlays
    for title in SECTIONS:
        anchor = "".join(c if c.isalnum() else "-" for c in title.lower())
        assert f'<h2 id="{anchor}">{title}</h2>' in dom, title
    assert "not finished" not in dom
    shot = Path(os.environ.get("DINTS_SCREENSHOT", tmp_path / "report.png"))
    subprocess.run([chromium, *CHROMIUM, f"--user-data-dir={profile}", "--window-size=1280,4000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
