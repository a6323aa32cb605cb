"""What the experiment scripts share: running stage commands a few at a time, and reading their results.

Each experiment runs the pipeline's own entry points (``code/search.py``, ``code/retrain.py``) as a user would, in
its own work folder per seed, and reads what they wrote. A finished run (its ``summary.json`` exists) is not run
again, so an interrupted experiment picks up where it stopped.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
TASK = "Task99_Demo"


@dataclass
class Job:
    """One stage command, and the file whose existence means it is done."""

    label: str
    args: list[str]
    done: Path
    after: list[str] = field(default_factory=list)  # labels of the jobs that must finish first


def stage(name: str, *args: str) -> list[str]:
    """The command line of a stage entry point (``search``, ``retrain``)."""
    return [sys.executable, str(ROOT / "code" / f"{name}.py"), *args]


def ensure_demo_task(data_root: str | Path) -> Path:
    """The demo task under ``data_root``, generated there if missing."""
    task_dir = Path(data_root) / TASK
    if not (task_dir / "dataset.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_task.py"), "--out", str(task_dir)],
                       check=True)
    return task_dir


def run_jobs(jobs: Sequence[Job], parallel: int, log_dir: Path) -> None:
    """Run the jobs not yet done, at most ``parallel`` at once (one thread each unless ``OMP_NUM_THREADS`` says
    otherwise), each after the jobs it names; a failed job stops the experiment, naming its log."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not j.done.is_file()]
    finished = {j.label for j in jobs if j.done.is_file()}
    running: dict[str, tuple[subprocess.Popen, Job, float]] = {}
    while pending or running:
        for label, (proc, job, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[label]
            if proc.returncode != 0:
                for other, _, _ in running.values():
                    other.terminate()
                raise SystemExit(f"{label} failed (exit status {proc.returncode}); see {log_dir / label}.log")
            finished.add(label)
            print(f"  done {label} ({time.time() - start:.0f} s)", flush=True)
        ready = [j for j in pending if all(a in finished for a in j.after)]
        while ready and len(running) < parallel:
            job = ready.pop(0)
            pending.remove(job)
            print(f"  run  {job.label}: {' '.join(job.args)}", flush=True)
            with open(log_dir / f"{job.label}.log", "w") as out:
                proc = subprocess.Popen(job.args, env=env, stdout=out, stderr=subprocess.STDOUT)
            running[job.label] = (proc, job, time.time())
        if pending and not running and not ready:
            raise SystemExit(f"cannot run {[j.label for j in pending]}: what they wait for did not finish")
        time.sleep(1)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def best_validation(run: Path) -> dict[str, float]:
    """The row of a training run's ``metrics.csv`` with the best mean validation Dice: ``val_dice`` and
    ``dice_<c>`` per foreground class (the first such row when several tie, as the run keeps its first best)."""
    with open(Path(run) / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_dice") not in (None, "")]
    if not rows:
        raise SystemExit(f"{run}/metrics.csv: no validation rows")
    best = max(rows, key=lambda r: float(r["val_dice"]))  # max keeps the first of equal rows
    return {k: float(v) for k, v in best.items() if k == "val_dice" or k.startswith("dice_")}


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` (sample sd; only the mean for one value)."""
    values = list(values)
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def git_commit() -> str:
    """The repository's commit (with ``+changes`` when the working tree differs from it)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


if __name__ == "__main__":  # a module the experiment scripts import: nothing to run, but --help says what it is
    import argparse

    argparse.ArgumentParser(prog="experimentkit.py", description=__doc__.split("\n\n")[0]
                            + " A module the experiment scripts import; it runs nothing itself.").parse_args()
