#!/usr/bin/env python
"""Wall time of the tiny search on one process and on two under horovodrun and torchrun (same global batch).

    python scripts/bench_launchers.py [--data_root /tmp/dints-data] [--work_root /tmp/dints-bench] [--repeats 2]

One process runs ``--batch_size 4``; two processes run ``--batch_size 2`` each. Every run is the whole command
(launcher start-up included) of ``code/search.py --config configs/tiny.yaml --iters 20 --warmup_iters 10
--val_interval 0`` on the demo task (generated when missing), with nothing set in the environment: the threads
each process takes are the pipeline's own choice. Runs alternate between the three set-ups and the median of
``--repeats`` is reported, as a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEARCH = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--task", "Task99_Demo", "--iters", "20",
          "--warmup_iters", "10", "--val_interval", "0"]


def command(setup: str, data_root: str, work: Path) -> list[str]:
    script = [str(ROOT / "code" / "search.py"), *SEARCH, "--data_root", data_root, "--work_root", str(work)]
    if setup == "1 process":
        return [sys.executable, *script, "--batch_size", "4"]
    if setup == "horovodrun -np 2":
        return [str(BIN / "horovodrun"), "-np", "2", sys.executable, *script, "--batch_size", "2"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *script,
            "--batch_size", "2"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default="/tmp/dints-data")
    p.add_argument("--work_root", default="/tmp/dints-bench")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    if not (Path(a.data_root) / "Task99_Demo" / "dataset.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_task.py"), "--out",
                        str(Path(a.data_root) / "Task99_Demo")], check=True)
    setups = ["1 process", "horovodrun -np 2", "torchrun --nproc_per_node 2"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    wall: dict[str, list[float]] = {s: [] for s in setups}
    per_it: dict[str, list[float]] = {s: [] for s in setups}
    for r in range(a.repeats):
        for s in setups:
            work = Path(a.work_root) / f"{s.split()[0]}-{r}"
            shutil.rmtree(work, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run(command(s, a.data_root, work), check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            wall[s].append(time.perf_counter() - t0)
            summary = json.loads(next(work.glob("search-*/summary.json")).read_text())
            per_it[s].append(summary["seconds_per_iteration"])
            print(f"[{s}, run {r + 1}] {wall[s][-1]:.1f} s", flush=True)
    med = {s: statistics.median(wall[s]) for s in setups}
    it = {s: statistics.median(per_it[s]) for s in setups}
    print("\n| set-up | wall time (s) | s per iteration | wall time / 1 process |")
    print("|---|---|---|---|")
    for s in setups:
        print(f"| {s} | {med[s]:.1f} | {it[s]:.3f} | {med[s] / med['1 process']:.2f} |")
    out = {"wall_s": {s: round(v, 2) for s, v in med.items()}, "s_per_iteration": it,
           "ratio": {s: round(med[s] / med["1 process"], 3) for s in setups}, "cores": len(os.sched_getaffinity(0))}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
