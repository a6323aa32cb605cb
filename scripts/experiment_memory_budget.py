#!/usr/bin/env python
"""The paper's memory claim, shown: the memory budget controls the searched architecture's memory.

    python scripts/experiment_memory_budget.py [--data_root /tmp/data] [--work_root /tmp/work-mem] [--budgets 0.2 0.5 0.8]

Runs the tiny search on the demo task (generated if missing) once per budget and reports, for each decoded
architecture, its usage/full memory ratio (the quantity the memory loss drives to the budget) and its activation
memory measured in one forward+backward pass of the discrete network (the tensors autograd saves for backward, at
the search's channel multiplier and crop size). Ends with a Markdown table and one JSON line.
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
sys.path.insert(0, str(ROOT))
from dints import relax  # noqa: E402
from dints.archfile import Arch, load_arch  # noqa: E402
from dints.network import DiscreteNet  # noqa: E402
from dints.topology import path_table  # noqa: E402
from dints.profiling import saved_activation_mb  # noqa: E402

#: Search settings of the experiment: the tiny preset (300 iterations, 100 of warmup, architecture lr 0.02,
#: temperature annealed to 0.5), without intermediate validation.
SEARCH_ARGS = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--val_interval", "0"]


def decoded_ratio(arch: Arch, in_shape: tuple[int, ...]) -> float:
    """usage/full of a discrete architecture: the cost of its active paths over the cost of every path.

    Each path costs ``(1 + resample + op cost) * size of its target level`` (DESIGN.md §5) with the op the
    architecture chose for it; ``full`` switches every path on with the same ops.
    """
    _, tgt, _ = path_table(arch.num_depths)
    pre, op = relax.path_costs(arch.num_depths, arch.ops, arch.channel_mul, arch.use_downsample)
    size = relax.level_sizes_mb(in_shape, arch.num_depths, arch.channel_mul, arch.use_downsample)[tgt]
    _, code_a, code_c = arch.codes()
    per_path = (1.0 + pre + op[code_c]) * size  # (B, P)
    return float((per_path * code_a).sum() / per_path.sum())


def measured_mb(arch: Arch, in_shape: tuple[int, ...], num_classes: int = 3) -> float:
    """Activation memory of one forward+backward pass of the discrete network (MB of saved tensors)."""
    torch.manual_seed(0)
    net = DiscreteNet(arch, in_shape[1], num_classes, arch.channel_mul)
    return saved_activation_mb(net, torch.randn(*in_shape))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default="/tmp/data", help="data root (the demo task is generated there if missing)")
    p.add_argument("--work_root", default="/tmp/work-mem", help="work root for the searches")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.2, 0.5, 0.8], help="memory budgets to search with")
    p.add_argument("--fold", type=int, default=0)
    a = p.parse_args(argv)
    task_dir = Path(a.data_root) / "Task99_Demo"
    if not (task_dir / "dataset.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_task.py"), "--out", str(task_dir)], check=True)
    rows = []
    for mem in a.budgets:
        cmd = [sys.executable, str(ROOT / "code" / "search.py"), *SEARCH_ARGS, "--data_root", a.data_root, "--task",
               "Task99_Demo", "--fold", str(a.fold), "--work_root", a.work_root, "--mem", f"{mem:g}"]
        print(f"[mem {mem:g}] {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, env=dict(os.environ))
        run = Path(a.work_root) / f"search-bilevel-ent-mem{mem:g}-Task99_Demo"
        arch = load_arch(run / "arch.json")
        cfg = json.loads((run / "config_search.json").read_text())["config"]
        in_shape = (cfg["batch_size"], cfg["in_channels"], *cfg["patch_size"])
        rows.append({"budget": mem, "decoded_ratio": round(decoded_ratio(arch, in_shape), 3),
                     "search_ratio": arch.mem_ratio, "active_paths": int(sum(map(sum, arch.arch_code_a))),
                     "measured_mb": round(measured_mb(arch, in_shape, cfg["num_classes"]), 2)})
    print("\n| budget | decoded usage/full | expected usage/full at the end of the search | active paths | measured activation MB (fwd+bwd) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget']:g} | {r['decoded_ratio']:.3f} | {r['search_ratio']:.3f} | {r['active_paths']} | {r['measured_mb']:.2f} |")
    within = all(abs(r["decoded_ratio"] - r["budget"]) <= 0.1 for r in rows)
    rising = all(x["measured_mb"] < y["measured_mb"] for x, y in zip(rows, rows[1:]))
    result = {"rows": rows, "within_0.1": within, "memory_rises_with_budget": rising}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
