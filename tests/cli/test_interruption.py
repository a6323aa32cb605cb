"""Interruption at any point (docs/reliability.md): ``code/main.sh all`` killed (SIGKILL) or stopped (SIGTERM,
SIGINT) in every stage — in a training iteration, while a checkpoint is written, while a probability file or an
output NIfTI is written, and as a whole process group — then rerun, must resume an interrupted training from its
checkpoint and give the outputs of an uninterrupted run: the same ``arch.json`` bytes, the same ``best.pt`` weights,
the same validation table, probability files and label maps. No partial file is ever taken for a finished one.
Also: a second signal during the stop's checkpoint, two runs on one folder, a stale lock, a truncated ``latest.pt``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.stages import FAST, ROOT

pytestmark = pytest.mark.slow  # main.sh end to end, many times: about four minutes
TASK = "Task99_Demo"
RUN = f"search-bilevel-ent-mem0.8-{TASK}"


def main_sh(work: Path, demo_root: Path, stage: str = "all", fault: str = "", popen: bool = False, **env):
    e = dict(os.environ, TASKS=TASK, FOLDS="0", DATA_ROOT=str(demo_root), WORK_ROOT=str(work),
             PRESET=str(ROOT / "configs" / "tiny.yaml"), EXTRA_ARGS=" ".join(FAST), PYTHON=sys.executable,
             OMP_NUM_THREADS="1", DINTS_FAULT=fault)
    e.update(env)
    cmd = ["bash", str(ROOT / "code" / "main.sh"), stage]
    if popen:
        return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=e, capture_output=True, text=True)


def outputs(work: Path) -> dict[str, object]:
    """What a finished run delivers, comparable across runs (weights as tensors, everything else as bytes)."""
    run = work / RUN
    out: dict[str, object] = {"arch.json": (run / "arch.json").read_bytes()}
    best = torch.load(run / "retrain-fold0" / "best.pt", weights_only=True)
    out["best.pt"] = best["model"]
    out["best.pt iteration"] = best["iteration"]
    for sub in ("val-fold0", "test-fold0", "fused", "final"):
        for p in sorted((run / sub).iterdir()):
            if p.suffix in (".csv", ".npz", ".gz"):
                out[f"{sub}/{p.name}"] = p.read_bytes()
    return out


def same(a: dict, b: dict) -> list[str]:
    """Names whose content differs."""
    diff = sorted(set(a) ^ set(b))
    for k in set(a) & set(b):
        x, y = a[k], b[k]
        if isinstance(x, dict):
            if x.keys() != y.keys() or not all(torch.equal(x[n], y[n]) for n in x):
                diff.append(k)
        elif x != y:
            diff.append(k)
    return diff


@pytest.fixture(scope="module")
def reference(demo_root, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("reference")
    r = main_sh(work, demo_root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return {"work": work, "outputs": outputs(work)}


# Each step interrupts the pipeline where the previous rerun has brought it; the last rerun runs to the end.
#   (what, DINTS_FAULT, expected exit status of main.sh, the file that must not exist afterwards, or None)
STEPS = [
    ("search: SIGTERM at iteration 3", "term-iter:3", 75, f"{RUN}/summary.json"),
    ("search: SIGKILL at iteration 5", "kill-iter:5", 137, f"{RUN}/summary.json"),
    ("search: SIGKILL while writing latest.pt", f"kill:{RUN}/latest.pt:1", 137, f"{RUN}/summary.json"),
    ("search: SIGKILL while writing arch.json", f"kill:{RUN}/arch.json:1", 137, f"{RUN}/arch.json"),
    ("retrain: SIGINT at iteration 1", "int-iter:1", 75, f"{RUN}/retrain-fold0/summary.json"),
    ("retrain: SIGKILL while writing best.pt", "kill:retrain-fold0/best.pt:1", 137, f"{RUN}/retrain-fold0/best.pt"),
    ("retrain: SIGKILL while writing latest.pt", "kill:retrain-fold0/latest.pt:2", 137,
     f"{RUN}/retrain-fold0/summary.json"),
    ("retrain: SIGKILL at iteration 7", "kill-iter:7", 137, f"{RUN}/retrain-fold0/summary.json"),
    # Stages 3-6 (outside a training loop) stop at once, SIGKILLed or SIGTERMed (a scheduler's signal, here while a
    # file is written): nothing half-written is left, and the rerun redoes the stage.
    ("test on validation: SIGKILL while writing metrics.csv", "kill:val-fold0/metrics.csv:1", 137,
     f"{RUN}/val-fold0/metrics.csv"),
    ("test on validation: SIGTERM while writing metrics.csv", "term:val-fold0/metrics.csv:1", 75,
     f"{RUN}/val-fold0/metrics.csv"),
    ("inference: SIGKILL while writing a probability file", "kill:test-fold0/demo_011.npz:1", 137,
     f"{RUN}/test-fold0/demo_011.npz"),
    ("inference: SIGTERM while writing a probability file", "term:test-fold0/demo_011.npz:1", 75,
     f"{RUN}/test-fold0/demo_011.npz"),
    ("fuse: SIGKILL while writing a label map", "kill:fused/demo_010.nii.gz:1", 137, f"{RUN}/fused/demo_010.nii.gz"),
    ("fuse: SIGTERM while writing a label map", "term:fused/demo_010.nii.gz:1", 75, f"{RUN}/fused/demo_010.nii.gz"),
    ("resample: SIGKILL while writing a final label map", "kill:final/demo_011.nii.gz:1", 137,
     f"{RUN}/final/demo_011.nii.gz"),
    ("resample: SIGTERM while writing a final label map", "term:final/demo_011.nii.gz:1", 75,
     f"{RUN}/final/demo_011.nii.gz"),
]
#: The checkpoint a training stage resumes from, by the stage named at the start of a step.
LATEST = {"search": f"{RUN}/latest.pt", "retrain": f"{RUN}/retrain-fold0/latest.pt"}


def saved_iteration(work: Path, what: str) -> tuple[Path, int] | None:
    """The checkpoint the stage interrupted by step ``what`` will resume from, and its iteration (None: not a training
    stage, or nothing saved yet)."""
    rel = LATEST.get(what.split(":")[0])
    if rel is None or not (work / rel).is_file():
        return None
    return work / rel, torch.load(work / rel, weights_only=True)["iteration"]


def test_main_sh_interrupted_at_every_stage_gives_the_uninterrupted_outputs(reference, demo_root, tmp_path):
    work = tmp_path / "work"
    # First, the whole process group (main.sh, its driver and the search) killed as soon as the search checkpoints.
    proc = main_sh(work, demo_root, popen=True)
    latest = work / RUN / "latest.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not latest.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, "main.sh ended before the search wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"main.sh process group: SIGKILL once {latest.name} existed -> exit {proc.returncode}")
    assert not (work / RUN / "summary.json").exists()

    resume = saved_iteration(work, "search")
    for what, fault, status, absent in STEPS:
        r = main_sh(work, demo_root, fault=fault)
        stage_line = [ln for ln in r.stderr.splitlines() if ln.startswith("[main] stage")]
        print(f"\nINTERRUPT| {what} ({fault}) -> exit {r.returncode}: {stage_line[-1] if stage_line else ''}")
        if resume is not None:  # the rerun continued the interrupted training from its checkpoint, not afresh
            path, it = resume
            assert f"resumed from {path} at iteration {it}" in r.stderr, (what, it, r.stderr[-3000:])
            print(f"INTERRUPT| ... which first resumed {path.relative_to(work)} at iteration {it}")
        assert r.returncode == status, r.stdout[-2000:] + r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        if status == 75:
            assert "was interrupted (SIGTERM/SIGINT) after saving its state" in r.stderr
            assert "interrupted by SIG" in r.stderr
            training = what.split(":")[0] in LATEST
            assert ("holds iteration" in r.stderr) == training, r.stderr[-3000:]
        else:
            assert "failed (exit status 137)" in r.stderr
        assert not (work / absent).exists(), f"{absent} exists after: {what}"
        if fault.startswith("kill:"):  # the half-written temporary file is there: the fault struck mid-write
            target = fault.split(":")[1]
            assert list(work.rglob(f".{Path(target).name}.*.tmp")), f"no half-written {target} after: {what}"
        if fault.startswith("term:"):  # a signal during a write: the write's temporary file is removed on the way out
            assert not list(work.rglob(".*.tmp")), what
        resume = saved_iteration(work, what)

    r = main_sh(work, demo_root)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert not list(work.rglob(".*.tmp")), "temporary files of the killed writes were left behind"
    diff = same(outputs(work), reference["outputs"])
    print(f"after {len(STEPS) + 1} interruptions and reruns, outputs differing from the uninterrupted run: {diff}")
    assert not diff


def test_a_second_signal_during_the_stop_checkpoint_is_noted_not_obeyed(reference, demo_root, tmp_path):
    """SIGTERM at iteration 2 of a retraining, then a second SIGTERM while the stop's checkpoint is written (the
    shell passing the scheduler's signal on, or a second Ctrl-C): the write completes, latest.pt holds the iteration
    the run stopped after, and the rerun resumes there and ends as the uninterrupted run did."""
    work = tmp_path / "work"
    shutil.copytree(reference["work"], work)
    fold = work / RUN / "retrain-fold0"
    shutil.rmtree(fold)
    # latest.pt is written at iteration 2 (--ckpt_interval 2), then by the stop after iteration 3: its second write.
    r = main_sh(work, demo_root, stage="2", fault="term-iter:2;term:retrain-fold0/latest.pt:2")
    print(r.stderr.splitlines()[-3:])
    assert r.returncode == 75, r.stderr[-3000:]
    assert "already stopping (writing the checkpoint)" in r.stderr and "holds iteration 3 of 8" in r.stderr
    assert torch.load(fold / "latest.pt", weights_only=True)["iteration"] == 3 and not list(fold.glob(".*.tmp"))
    r = main_sh(work, demo_root, stage="2")
    assert r.returncode == 0 and f"resumed from {fold / 'latest.pt'} at iteration 3" in r.stderr, r.stderr[-3000:]
    best = torch.load(fold / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], v) for k, v in reference["outputs"]["best.pt"].items())


def test_sigterm_to_main_sh_reaches_the_stage(reference, demo_root, tmp_path):
    """A scheduler's SIGTERM sent to main.sh alone: main.sh passes it on, the retraining writes latest.pt at the
    end of its iteration and exits 75, main.sh reports it; the rerun resumes there."""
    work = tmp_path / "work"
    shutil.copytree(reference["work"], work)
    fold = work / RUN / "retrain-fold0"
    shutil.rmtree(fold)
    proc = main_sh(work, demo_root, stage="2", popen=True, EXTRA_ARGS=" ".join([*FAST, "--iters", "400"]))
    log = fold / "retrain.log"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and "training /" not in (log.read_text() if log.is_file() else ""):
        time.sleep(0.1)
    time.sleep(2)
    os.kill(proc.pid, signal.SIGTERM)  # main.sh only, as a scheduler's signal to the job script
    out, err = proc.communicate(timeout=300)
    print(err.splitlines()[-2:])
    assert proc.returncode == 75, out[-2000:] + err[-3000:]
    assert "[main] stage 2 (retrain) was interrupted" in err and "interrupted by SIGTERM" in err
    it = torch.load(fold / "latest.pt", weights_only=True)["iteration"]
    assert f"holds iteration {it} of 400" in err and 0 < it < 400
    r = main_sh(work, demo_root, stage="2", fault=f"term-iter:{it + 2}", EXTRA_ARGS=" ".join([*FAST, "--iters", "400"]))
    assert r.returncode == 75 and f"resumed from {fold / 'latest.pt'} at iteration {it}" in r.stderr, r.stderr[-3000:]
    assert torch.load(fold / "latest.pt", weights_only=True)["iteration"] == it + 3


def test_unreadable_latest_falls_back_to_the_previous_checkpoint(reference, demo_root, tmp_path):
    """latest.pt cut short (a disk or copy fault after it was written): the rerun warns and resumes from
    latest.prev.pt, and its result equals the uninterrupted one; with both unreadable it refuses (no silent start)."""
    work = tmp_path / "work"
    shutil.copytree(reference["work"], work)
    fold = work / RUN / "retrain-fold0"
    for name in ("summary.json", "best.pt"):
        (fold / name).unlink()
    latest, prev = fold / "latest.pt", fold / "latest.prev.pt"
    assert torch.load(prev, weights_only=True)["iteration"] == 6
    latest.write_bytes(latest.read_bytes()[:1000])
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", str(demo_root), "--task", TASK,
            "--work_root", str(work), *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "code" / "retrain.py"), *args], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    warning = [ln for ln in r.stderr.splitlines() if "resuming from the previous checkpoint" in ln]
    print(warning)
    assert warning and "latest.pt cannot be read" in warning[0] and "(iteration 6)" in warning[0]
    best = torch.load(fold / "best.pt", weights_only=True)["model"]
    ref = reference["outputs"]["best.pt"]
    assert all(torch.equal(best[k], ref[k]) for k in ref)

    latest.write_bytes(b"")
    prev.write_bytes(b"x")
    r = subprocess.run([sys.executable, str(ROOT / "code" / "retrain.py"), *args], capture_output=True, text=True,
                       env=env)
    line = r.stderr.strip().splitlines()[-1]
    print(line)
    assert r.returncode == 2 and "no readable previous checkpoint latest.prev.pt" in line and "--resume no" in line


def test_one_run_per_folder_and_a_stale_lock_is_taken_over(demo_root, tmp_path):
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", str(demo_root), "--task", TASK,
            "--work_root", str(tmp_path / "work"), *FAST, "--iters", "400"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    search = [sys.executable, str(ROOT / "code" / "search.py"), *args]
    first = subprocess.Popen(search, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "work" / RUN / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text().strip()):
        time.sleep(0.05)
    second = subprocess.run(search, env=env, capture_output=True, text=True)
    line = second.stderr.strip().splitlines()[-1]
    print(line)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is in use by process {first.pid} on " in line and "search.py" in line
    first.kill()
    first.wait()
    stop_at_once = ";".join(f"term-iter:{i}" for i in range(400))  # wherever it resumes, it stops at once
    third = subprocess.run(search, env=dict(env, DINTS_FAULT=stop_at_once), capture_output=True, text=True)
    took = [ln for ln in third.stderr.splitlines() if "took over the lock" in ln]
    print(took)
    assert third.returncode == 75, third.stderr[-3000:]
    assert took and f"process {first.pid} on " in took[0] and "a killed run" in took[0]
    assert json.loads(lock.read_text() or "{}") == {}, "the lock was not released at exit"
