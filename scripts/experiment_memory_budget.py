#!/usr/bin/env python
"""The paper's memory claim, shown: the memory budget controls the searched architecture's memory.

    python scripts/experiment_memory_budget.py [--data_root /tmp/data] [--work_root /tmp/work-mem]
                                               [--budgets 0.2 0.5 0.8] [--seeds 0 1 2] [--jobs 2]

Searches the demo task (generated if missing) once per budget and seed, in the presets' mode (one-shot supernet,
``--use_max 1 --EF 0 --EP 1 --topology 1``) with the tiny preset's network and a longer search than the demo's
(:data:`SEARCH_ARGS`), and reports for each decoded architecture its usage/full memory ratio (``arch.json``'s
``mem_ratio``: its active paths' cost over all paths' cost, docs/method.md, "Relaxation and losses"), the search
distribution's expected ratio, and both decodes (docs/method.md, "Decoding"): the paper's (``--decode paper``) and
the one within the budget (``--decode budget``, the presets'); for the budget decode also its number of active paths
and its activation memory measured in one forward+backward pass of the discrete network (the tensors autograd saves
for backward, at the search's channel multiplier and crop size). Ends with a Markdown table, one row per search, and
one JSON line. Finished searches are reused when the script is rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
from dints.run import layout  # noqa: E402
from dints.run.profiling import saved_activation_mb  # noqa: E402
from dints.space.archfile import Arch, load_arch  # noqa: E402
from dints.space.network import DiscreteNet  # noqa: E402

#: Search settings: the tiny preset (4 blocks, 3 levels, channel_mul 0.25, 32^3 crops, architecture lr 0.05) in the
#: presets' mode, with 800 iterations (100 of warmup) instead of the demo's 300, so that the entropy loss has time to
#: make the distribution decisive.
SEARCH_ARGS = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--use_max", "1", "--EF", "0", "--EP", "1",
               "--topology", "1", "--decode", "budget", "--iters", "800", "--warmup_iters", "100",
               "--val_interval", "0"]


def measured_mb(arch: Arch, in_shape: tuple[int, ...], num_classes: int = 3) -> float:
    """Activation memory of one forward+backward pass of the discrete network (MB of saved tensors)."""
    torch.manual_seed(0)
    net = DiscreteNet(arch, in_shape[1], num_classes, arch.channel_mul)
    return saved_activation_mb(net, torch.randn(*in_shape))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default="/tmp/data", help="data root (the demo task is generated there if missing)")
    p.add_argument("--work_root", default="/tmp/work-mem", help="work root, one folder per seed")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.5, 0.8], help="memory budgets to search with")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per budget")
    p.add_argument("--jobs", type=int, default=2, help="searches run at once (one thread each)")
    p.add_argument("--fold", type=int, default=0)
    a = p.parse_args(argv)
    task_dir = Path(a.data_root) / "Task99_Demo"
    if not (task_dir / "dataset.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_task.py"), "--out", str(task_dir)], check=True)
    runs = {(mem, seed): layout.search_dir(Path(a.work_root) / f"seed{seed}", "Task99_Demo", mem)
            for mem in a.budgets for seed in a.seeds}
    todo = [(mem, seed) for (mem, seed), run in runs.items() if not (run / layout.ARCH).is_file()]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    running: list[subprocess.Popen] = []
    for mem, seed in todo:
        cmd = [sys.executable, str(ROOT / "code" / "search.py"), *SEARCH_ARGS, "--data_root", a.data_root, "--task",
               "Task99_Demo", "--fold", str(a.fold), "--seed", str(seed), "--mem", f"{mem:g}",
               "--work_root", str(Path(a.work_root) / f"seed{seed}")]
        print(f"[mem {mem:g}, seed {seed}] {' '.join(cmd)}", flush=True)
        running.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while len(running) >= a.jobs:
            running = _reap(running)
    while running:
        running = _reap(running)

    rows = []
    for (mem, seed), run in runs.items():
        arch = load_arch(run / layout.ARCH)
        if arch.decode != "budget":
            raise SystemExit(f"{run / layout.ARCH}: decoded with --decode {arch.decode}, not budget (an older run? "
                             "delete it and rerun)")
        cfg = json.loads((run / "config_search.json").read_text())["config"]
        in_shape = (cfg["batch_size"], cfg["in_channels"], *cfg["patch_size"])
        rows.append({"budget": mem, "seed": seed, "expected_ratio": arch.mem_ratio_expected,
                     "paper_ratio": arch.other_decode["mem_ratio"], "paper_log_prob": arch.other_decode["log_prob"],
                     "budget_ratio": arch.mem_ratio, "budget_log_prob": arch.log_prob,
                     "active_paths": int(sum(map(sum, arch.arch_code_a))),
                     "measured_mb": round(measured_mb(arch, in_shape, cfg["num_classes"]), 2)})
    print("\n| budget | seed | expected usage/full | paper decode usage/full (log-prob) | budget decode usage/full "
          "(log-prob) | active paths | measured activation MB (fwd+bwd) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget']:g} | {r['seed']} | {r['expected_ratio']:.3f} | {r['paper_ratio']:.3f} "
              f"({r['paper_log_prob']:.2f}) | {r['budget_ratio']:.3f} ({r['budget_log_prob']:.2f}) | "
              f"{r['active_paths']} | {r['measured_mb']:.2f} |")

    def in_window(ratio: float, budget: float) -> bool:
        return budget - 0.1 <= ratio <= budget

    mean_mb = {m: sum(r["measured_mb"] for r in rows if r["budget"] == m) / len(a.seeds) for m in a.budgets}
    rising = all(mean_mb[x] < mean_mb[y] for x, y in zip(a.budgets, a.budgets[1:]))
    result = {"rows": rows,
              "paper_in_window": sum(in_window(r["paper_ratio"], r["budget"]) for r in rows),
              "paper_within_0.1": sum(abs(r["paper_ratio"] - r["budget"]) <= 0.1 for r in rows),
              "budget_in_window": sum(in_window(r["budget_ratio"], r["budget"]) for r in rows),
              "searches": len(rows),
              "worst_paper_gap": round(max(abs(r["paper_ratio"] - r["budget"]) for r in rows), 3),
              "mean_measured_mb": {f"{m:g}": round(v, 2) for m, v in mean_mb.items()},
              "memory_rises_with_budget": rising}
    print(f"in [budget - 0.1, budget]: budget decode {result['budget_in_window']} of {len(rows)}, paper decode "
          f"{result['paper_in_window']} of {len(rows)} (within 0.1 either side: {result['paper_within_0.1']})")
    print(json.dumps(result))
    return result


def _reap(running: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """Wait for one search to finish; a failed search stops the experiment."""
    import time

    while True:
        for proc in running:
            if proc.poll() is not None:
                if proc.returncode != 0:
                    raise SystemExit(f"search failed (exit status {proc.returncode}): {' '.join(proc.args)}")
                return [q for q in running if q is not proc]
        time.sleep(1)


if __name__ == "__main__":
    main()
