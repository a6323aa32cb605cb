#!/usr/bin/env python
"""What the topology loss does, measured: searches at topology weights 0 (loss off), 0.001 (the paper's) and 0.01.

    python scripts/experiment_topology.py [--data_root /tmp/data] [--work_root /tmp/work-topology]
                                          [--weights 0 0.001 0.01] [--seeds 0 1 2] [--mem 0.8] [--jobs 2]

For each weight and seed: the demo task's search with the tiny preset (fold 0, ``--decode paper``, so the decoded
architecture is the paper's, whatever its memory), then retraining of that architecture on fold 0 (the one fold
whose validation cases the search never saw). Reports per search how many of the decoded architecture's paths the
distribution gives a probability under 0.5 (``summary.json``'s ``unlikely_paths``: paths the decoder added only to
connect the network, the inconsistency the topology loss penalises), the decoded ratio against the distribution's
expected one (and the budget decode's, docs/method.md "Decoding"), the supernet's validation Dice and the retrained
fold-0 Dice. Ends with a Markdown table and one JSON line. Finished runs are reused when the script is rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import experimentkit as kit

from dints.run import layout  # noqa: E402  (experimentkit puts code/ on the path)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default="/tmp/data", help="data root (the demo task is generated there if missing)")
    p.add_argument("--work_root", default="/tmp/work-topology", help="work root, one folder per weight and seed")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.001, 0.01],
                   help="topology loss weights (0: the loss off, --topology 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mem", type=float, default=0.8, help="memory budget")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    a = p.parse_args(argv)
    kit.ensure_demo_task(a.data_root)
    base = ["--config", str(kit.ROOT / "configs" / "tiny.yaml"), "--data_root", a.data_root, "--task", kit.TASK,
            "--mem", f"{a.mem:g}"]

    def work(w: float, s: int) -> Path:
        return Path(a.work_root) / f"w{w:g}" / f"seed{s}"

    jobs = []
    for w in a.weights:
        topo = ["--topology", "0"] if w == 0 else ["--topology", "1", "--topology_weight", f"{w:g}"]
        for s in a.seeds:
            run = layout.search_dir(work(w, s), kit.TASK, a.mem)
            common = [*base, "--seed", str(s), "--work_root", str(work(w, s))]
            jobs.append(kit.Job(f"search-w{w:g}-s{s}", kit.stage("search", *common, *topo, "--decode", "paper"),
                                run / layout.SUMMARY))
            jobs.append(kit.Job(f"retrain-w{w:g}-s{s}", kit.stage("retrain", *common, "--fold", "0"),
                                layout.retrain_dir(run, 0) / layout.SUMMARY, after=[f"search-w{w:g}-s{s}"]))
    kit.run_jobs(jobs, a.jobs, Path(a.work_root) / "logs")

    rows = []
    for w in a.weights:
        for s in a.seeds:
            run = layout.search_dir(work(w, s), kit.TASK, a.mem)
            summary = kit.read_json(run / layout.SUMMARY)
            rows.append({"weight": w, "seed": s, "unlikely_paths": summary["unlikely_paths"],
                         "active_paths": summary["active_paths"], "decoded_ratio": summary["mem_ratio"],
                         "expected_ratio": summary["mem_ratio_expected"],
                         "budget_decode_ratio": summary["other_decode"]["mem_ratio"],
                         "supernet_dice": summary["val_dice"],
                         "fold0_dice": kit.best_validation(layout.retrain_dir(run, 0))["val_dice"]})
    print(f"\ncommit {kit.git_commit()}; budget {a.mem:g}; tiny preset, --decode paper\n")
    print("| topology weight | seed | decoded paths under 0.5 / active | decoded usage/full | expected usage/full | "
          "budget decode usage/full | supernet val Dice | retrained fold-0 Dice |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['weight']:g} | {r['seed']} | {r['unlikely_paths']} / {r['active_paths']} | "
              f"{r['decoded_ratio']:.3f} | {r['expected_ratio']:.3f} | {r['budget_decode_ratio']:.3f} | "
              f"{r['supernet_dice']:.3f} | {r['fold0_dice']:.3f} |")
    means = {}
    for w in a.weights:
        sel = [r for r in rows if r["weight"] == w]
        means[f"{w:g}"] = {
            "unlikely_paths": statistics.mean(r["unlikely_paths"] for r in sel),
            "gap": statistics.mean(r["decoded_ratio"] - r["expected_ratio"] for r in sel),
            "fold0_dice": kit.mean_sd([r["fold0_dice"] for r in sel]),
        }
        print(f"| {w:g} | mean | {means[f'{w:g}']['unlikely_paths']:.1f} | gap decoded - expected "
              f"{means[f'{w:g}']['gap']:+.3f} | | | | {means[f'{w:g}']['fold0_dice']} |")
    result = {"rows": rows, "means": means, "commit": kit.git_commit()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
