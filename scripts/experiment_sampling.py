#!/usr/bin/env python
"""One-shot search against path-sampling searches on the demo task.

    python scripts/experiment_sampling.py [--data_root /tmp/data] [--work_root /tmp/work-sampling]
                                          [--path_nums 2 4 6] [--seeds 0 1 2] [--retrain_iters 400] [--jobs 1]

For each mode (one-shot, ``--use_max 1``; sampling ``--path_num`` k paths per block, ``--use_max 0``) and seed, runs
the tiny search (``configs/tiny.yaml``) on fold 0 of the demo task (generated if missing), then retrains the decoded
architecture with the tiny retraining settings and reports:

- search time per iteration (the search loop only, from the run's ``summary.json``);
- activation memory of one training step of the supernet (MB of tensors autograd saves in forward+backward at the
  search's crop size, averaged over 20 draws of the paths from the searched logits; one-shot runs every path);
- peak resident memory of the search process;
- the decoded architecture's usage/full memory ratio and the distribution's expected one;
- the retrained architecture's best validation Dice (mean foreground Dice, fold 0).

Ends with a Markdown table (mean ± std over seeds, then one row per run) and one JSON line. Runs that finished are
reused when the script is rerun (each stage skips or resumes its own outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
from dints.io import load_torch  # noqa: E402
from dints.run import layout  # noqa: E402
from dints.run.profiling import saved_activation_mb  # noqa: E402
from dints.space.supernet import SuperNet  # noqa: E402

TINY = str(ROOT / "configs" / "tiny.yaml")
TASK = "Task99_Demo"
#: The one-shot mode's search flag.
ONE_SHOT = ["--use_max", "1"]


class _Forward(torch.nn.Module):
    """The supernet's one-shot or sampled forward as a module (for :func:`saved_activation_mb`)."""

    def __init__(self, net: SuperNet, use_max: bool):
        super().__init__()
        self.net, self.use_max = net, use_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, use_max=self.use_max)


def step_activation_mb(run: Path, path_num: int | None, draws: int = 20) -> float:
    """Activation MB of one supernet training step with the searched logits (mean over ``draws`` path draws)."""
    cfg = json.loads((run / "config_search.json").read_text())["config"]
    torch.manual_seed(0)
    net = SuperNet(cfg["in_channels"], cfg["num_classes"], cfg["blocks"], cfg["levels"], cfg["channel_mul"],
                   cfg["opset"], cfg["cellop"], bool(cfg["use_downsample"]))
    state = load_torch(run / layout.LATEST)["model"]
    net.load_state_dict(state)
    x = torch.randn(cfg["batch_size"] * cfg["num_samples"], cfg["in_channels"], *cfg["patch_size"])
    if path_num is None:
        return saved_activation_mb(_Forward(net, True), x)
    gen = torch.Generator().manual_seed(1)
    total = 0.0
    for _ in range(draws):
        net.sample_paths(path_num, gen)
        total += saved_activation_mb(_Forward(net, False), x)
    return total / draws


def _run(cmd: list[str], threads: str | None) -> None:
    print("  $ " + " ".join(cmd), flush=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": threads} if threads else {}))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_run(a, path_num: int | None, seed: int) -> dict:
    mode = "one-shot" if path_num is None else f"path_num {path_num}"
    work = Path(a.work_root) / (f"oneshot-seed{seed}" if path_num is None else f"paths{path_num}-seed{seed}")
    common = ["--config", TINY, "--data_root", a.data_root, "--task", TASK, "--fold", "0", "--work_root", str(work),
              "--seed", str(seed)]
    flags = ONE_SHOT if path_num is None else ["--use_max", "0", "--path_num", str(path_num)]
    threads = "1" if a.jobs > 1 else None
    run = layout.search_dir(work, TASK, 0.8)
    if not (run / layout.SUMMARY).is_file():  # a finished search is reused (its timing is that of its own run)
        _run([sys.executable, str(ROOT / "code" / "search.py"), *common, *flags, "--val_interval", "0"], threads)
    summary = json.loads((run / layout.SUMMARY).read_text())
    retrain_summary = layout.retrain_dir(run, 0) / layout.SUMMARY
    if not retrain_summary.is_file():
        _run([sys.executable, str(ROOT / "code" / "retrain.py"), *common, "--iters", str(a.retrain_iters),
              "--val_interval", str(max(1, a.retrain_iters // 4))], threads)
    retrained = json.loads(retrain_summary.read_text())
    arch = json.loads((run / layout.ARCH).read_text())
    print(f"[{mode}, seed {seed}] done", flush=True)
    return {"mode": mode, "seed": seed, "run": run, "path_num": path_num, "s_per_iter": summary["seconds_per_iteration"],
            "peak_rss_mb": round(summary["peak_rss_mb"]),
            "decoded_ratio": arch["mem_ratio"], "expected_ratio": arch["mem_ratio_expected"],
            "active_paths": int(sum(map(sum, arch["arch_code_a"]))), "retrained_dice": round(retrained["best_dice"], 4)}


def _ms(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default="/tmp/data", help="data root (the demo task is generated there if missing)")
    p.add_argument("--work_root", default="/tmp/work-sampling", help="work root, one folder per run")
    p.add_argument("--path_nums", type=int, nargs="+", default=[2, 4, 6], help="paths per block of the sampling runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--retrain_iters", type=int, default=400, help="iterations of the tiny retraining")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once (each then on one thread; every mode is timed under the same sharing)")
    a = p.parse_args(argv)
    task_dir = Path(a.data_root) / TASK
    if not (task_dir / "dataset.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_task.py"), "--out", str(task_dir)], check=True)
    plan = [(k, s) for k in [None, *a.path_nums] for s in a.seeds]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:  # threads only wait on the subprocesses
        rows = list(pool.map(lambda ks: one_run(a, *ks), plan))
    for r in rows:
        r["step_act_mb"] = round(step_activation_mb(r.pop("run"), r.pop("path_num")), 2)

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    print("\n| mode | s / iteration | step activation MB | peak RSS MB | decoded usage/full | expected usage/full "
          "| retrained val Dice |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for m in modes:
        rs = [r for r in rows if r["mode"] == m]
        col = {k: [r[k] for r in rs] for k in rs[0] if k not in ("mode", "seed")}
        summary[m] = {k: round(statistics.mean(v), 4) for k, v in col.items()}
        print(f"| {m} | {_ms(col['s_per_iter'], '.3f')} | {_ms(col['step_act_mb'], '.1f')} | "
              f"{_ms(col['peak_rss_mb'], '.0f')} | {_ms(col['decoded_ratio'], '.3f')} | "
              f"{_ms(col['expected_ratio'], '.3f')} | {_ms(col['retrained_dice'], '.4f')} |")
    print("\n| mode | seed | s / iteration | step activation MB | decoded usage/full | active paths | retrained val Dice |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seed']} | {r['s_per_iter']:.3f} | {r['step_act_mb']:.1f} | "
              f"{r['decoded_ratio']:.3f} | {r['active_paths']} | {r['retrained_dice']:.4f} |")
    result = {"rows": rows, "means": summary}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
