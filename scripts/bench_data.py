#!/usr/bin/env python
"""Benchmark the data pipeline: training crops per second from the cached loader, against the crops per second
that the search and retraining iterations consume.

    python scripts/bench_data.py [--data_root DIR] [--batches 40] [--threads 2] [--tiny]

The loader is the stages' own (``dints.data.loader.train_loader``) with the tiny preset's settings
(``configs/tiny.yaml``: in-memory cache, class-balanced 32³ crops with the full augmentation, batch 2,
``num_workers`` 0) on every training case of the demo task (generated into a temporary folder by
``scripts/make_demo_task.py`` unless ``--data_root`` holds ``Task99_Demo``). Figures: the time to fill the cache
(preprocessing every case), then crops per second over ``--batches`` batches from the filled cache. The demand
side is ours at the same preset, each iteration timed in a fresh process (``scripts/benchkit.py``): a search
iteration consumes two batches (weight and architecture half), a retraining iteration one. With ``num_workers`` 0
loading runs in the training process between steps, so its share of an iteration is load / (load + step).
Ends with one JSON line (``make_benchmarks_doc.py`` reads it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import ROOT, environment, finish, fmt, measure, table  # noqa: E402

TASK = "Task99_Demo"


def loader_rate(data_root: Path, work_root: Path, batches: int, threads: int, num_workers: int | None) -> dict:
    """Cache fill time and crops per second of the tiny preset's training loader over every training case."""
    import torch

    from config import load_config, resolve_task
    from dints.data.loader import train_loader
    from dints.run.settings import DataSettings

    torch.set_num_threads(threads)
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data_root", str(data_root), "--task", TASK,
            "--work_root", str(work_root)]
    if num_workers is not None:
        argv += ["--num_workers", str(num_workers)]
    cfg, task = resolve_task(load_config(argv, "search"))
    data = DataSettings.from_options(cfg)
    t = time.perf_counter()
    loader = train_loader(data, task, task.case_ids)
    next(loader)  # the first batch: the cache is filled and the stream started
    cache_s = time.perf_counter() - t
    t = time.perf_counter()
    crops = 0
    for _ in range(batches):
        crops += next(loader)["image"].shape[0]
    seconds = time.perf_counter() - t
    return {"cases": len(task.case_ids), "cache_fill_s": round(cache_s, 3), "batches": batches, "crops": crops,
            "crops_per_s": round(crops / seconds, 2), "batch_crops": data.batch_size * data.num_samples,
            "num_workers": data.num_workers, "patch": list(data.patch_size)}


def tables(res: dict) -> dict[str, str]:
    """The result's tables by section title (also what ``make_benchmarks_doc.py`` writes)."""
    load, demand = res["loader"], res["demand"]
    names = {"search": "search iteration (2 batches)", "train": "retraining iteration (1 batch)"}
    return {
        "Data pipeline": f"The tiny preset's training loader on {load['cases']} cases of the demo task (in-memory "
        f"cache, {load['num_workers']} workers, batches of {load['batch_crops']} "
        f"{'×'.join(map(str, load['patch']))} crops with augmentation): cache filled in "
        f"{load['cache_fill_s']:.2f} s, then {load['crops_per_s']:.1f} crops/s over {load['batches']} batches; "
        "against what ours consumes at the same preset\n\n" + table(
            ["consumer", "s / iteration", "crops / s consumed", "loader / consumption",
             "loading share of an iteration"],
            [[names[k], fmt(d["step_s"]), fmt(d["crops_per_s"], ".1f"), fmt(d["supply_over_demand"], ".1f", "×"),
              fmt(100 * d["load_share"], ".0f", "%")] for k, d in demand.items()]),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default=None, help=f"folder holding {TASK} (default: generate one in a temporary "
                                                     "folder)")
    p.add_argument("--batches", type=int, default=40, help="batches timed after the cache is filled")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=3, help="timed iterations per demand process (median counts)")
    p.add_argument("--num_workers", type=int, default=None, help="loader workers (default: the preset's)")
    p.add_argument("--tiny", action="store_true", help="few cases and batches (for the tests)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        data_root = Path(a.data_root) if a.data_root else Path(tmp) / "data"
        if not (data_root / TASK / "dataset.json").is_file():
            from scripts.make_demo_task import make_task

            print(f"generating the demo task in {data_root / TASK} ...", flush=True)
            make_task(data_root / TASK, **({"cases": 4, "test": 1} if a.tiny else {}))
        print("loader ...", flush=True)
        load = loader_rate(data_root, Path(tmp) / "work", 4 if a.tiny else a.batches, a.threads, a.num_workers)
    print(f"  cache filled in {load['cache_fill_s']:.2f} s; {load['crops_per_s']:.1f} crops/s", flush=True)

    options = ["--in_channels", "1", "--num_classes", "3"]
    base = {"threads": a.threads, "repeats": a.repeats, "warmup": 1, "device": "cpu", "impl": "ours",
            "preset": "tiny", "options": options, "arch_seed": 0}
    demand = {}
    for kind, batches_per_it in (("search", 2), ("train", 1)):
        m = measure({**base, "kind": kind})
        per_it = batches_per_it * load["batch_crops"]
        load_s = per_it / load["crops_per_s"]
        demand[kind] = {"step_s": round(m["median_s"], 4), "crops_per_iteration": per_it,
                        "crops_per_s": round(per_it / m["median_s"], 2),
                        "supply_over_demand": round(load["crops_per_s"] * m["median_s"] / per_it, 2),
                        "load_share": round(load_s / (load_s + m["median_s"]), 3)}
        print(f"  {kind} iteration: {m['median_s']:.3f} s, consumes {demand[kind]['crops_per_s']:.1f} crops/s",
              flush=True)

    res = {"loader": load, "demand": demand, "tiny": a.tiny}
    return finish("data", environment(a.threads), res, tables(res))


if __name__ == "__main__":
    main()
