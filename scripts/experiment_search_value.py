#!/usr/bin/env python
"""Does the search pay? The searched architecture against a random one of the same memory and a hand-designed one.

    python scripts/experiment_search_value.py [--data_root /tmp/data] [--work_root /tmp/work-value]
                                              [--seeds 0 1 2] [--folds 0 1] [--mem 0.8] [--cvpr] [--jobs 2]

For each seed s, on the demo task with the tiny preset: the search (fold 0, budget ``--mem``, seed s), then
retraining of the searched architecture on each fold; of a random topology-consistent architecture at the searched
one's decoded memory ratio (``--arch random --arch_seed s``); of the hand-designed U-shaped one (``--arch unet``);
with ``--cvpr`` also of the CVPR 2021 architecture (``--arch cvpr``, 12 blocks and 4 levels: much slower). Every
retraining uses seed s for everything else (splits, initialisation, data stream), so per seed the architectures
differ and nothing else does (README, "Running the stages"; docs/method.md, "Baselines").

Reports per seed and architecture: the best validation Dice of each fold's retraining (mean and per class, from its
``metrics.csv``), the parameters, the predicted memory of one retraining step (``dints.space.network_memory``, float32,
the retraining's batch and patch), the decoded memory ratio, and for the searched one the supernet's validation Dice;
then mean ± sd over seeds, and the paired count of seeds where the searched architecture beats the random one. Fold 0
is the only fold whose validation cases the search never saw (it searched on fold 0's training cases): it is given
on its own beside the mean. Ends with Markdown tables and one JSON line. Finished runs are reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import experimentkit as kit

from dints.run import layout  # noqa: E402  (experimentkit puts code/ on the path)

KINDS = ("searched", "random", "unet", "cvpr")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_root", default="/tmp/data", help="data root (the demo task is generated there if missing)")
    p.add_argument("--work_root", default="/tmp/work-value", help="work root, one folder per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1], help="folds to retrain (0 is the unseen one)")
    p.add_argument("--mem", type=float, default=0.8, help="memory budget of the search")
    p.add_argument("--cvpr", action="store_true", help="also retrain the CVPR 2021 architecture (slow)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    a = p.parse_args(argv)
    if len(a.seeds) < 1 or not a.folds:
        p.error("give at least one seed and one fold")
    kit.ensure_demo_task(a.data_root)
    kinds = [k for k in KINDS if k != "cvpr" or a.cvpr]
    base = ["--config", str(kit.ROOT / "configs" / "tiny.yaml"), "--data_root", a.data_root, "--task", kit.TASK,
            "--mem", f"{a.mem:g}"]

    def work(s: int) -> Path:
        return Path(a.work_root) / f"seed{s}"

    def run_of(s: int) -> Path:
        return layout.search_dir(work(s), kit.TASK, a.mem)

    def out_dir(s: int, kind: str, fold: int) -> Path:
        return layout.retrain_dir(run_of(s), fold, None if kind == "searched" else kind)

    jobs = []
    for s in a.seeds:
        common = [*base, "--seed", str(s), "--work_root", str(work(s))]
        jobs.append(kit.Job(f"search-s{s}", kit.stage("search", *common), run_of(s) / layout.SUMMARY))
        for kind in kinds:
            arch = {"searched": [], "random": ["--arch", "random", "--arch_seed", str(s)]}.get(kind, ["--arch", kind])
            for k in a.folds:
                jobs.append(kit.Job(f"retrain-{kind}-s{s}-f{k}", kit.stage("retrain", *common, *arch, "--fold", str(k)),
                                    out_dir(s, kind, k) / layout.SUMMARY, after=[f"search-s{s}"]))
    kit.run_jobs(jobs, a.jobs, Path(a.work_root) / "logs")

    rows = []
    for s in a.seeds:
        search = kit.read_json(run_of(s) / layout.SUMMARY)
        for kind in kinds:
            facts = facts_of(out_dir(s, kind, a.folds[0]))
            folds = {k: kit.best_validation(out_dir(s, kind, k)) for k in a.folds}
            rows.append({"seed": s, "arch": kind, "mem_ratio": facts["mem_ratio"], "params": facts["params"],
                         "predicted_mb": facts["predicted_mb"],
                         "supernet_dice": search["val_dice"] if kind == "searched" else None,
                         "fold_dice": {k: v["val_dice"] for k, v in folds.items()},
                         "class_dice": {k: {c: d for c, d in v.items() if c != "val_dice"} for k, v in folds.items()},
                         "mean_dice": statistics.mean(v["val_dice"] for v in folds.values())})
    report(rows, a, kinds)
    result = {"rows": rows, "commit": kit.git_commit(), "paired": paired(rows, a.seeds, a.folds)}
    print(json.dumps(result))
    return result


def facts_of(retrain_dir: Path) -> dict:
    """Memory ratio, parameters and predicted step memory of the architecture a retraining ran."""
    from dints.space.archfile import load_arch
    from dints.space.network import DiscreteNet
    from dints.space.network_memory import predict

    config = kit.read_json(retrain_dir / layout.config_record("retrain"))["config"]
    arch_file = retrain_dir / layout.ARCH
    if not arch_file.is_file():  # the searched architecture: the search run's arch.json
        arch_file = retrain_dir.parent / layout.ARCH
    arch = load_arch(arch_file)
    mul = config["channel_mul"] if config.get("channel_mul") is not None else 2 * arch.channel_mul
    net = DiscreteNet(arch, config["in_channels"], config["num_classes"], mul)
    params = sum(t.numel() for t in net.parameters())
    pred = predict(net, config["patch_size"], config["batch_size"] * config["num_samples"])
    return {"mem_ratio": arch.mem_ratio, "params": params, "predicted_mb": round(pred.mb("total"), 1)}


def paired(rows: list[dict], seeds: list[int], folds: list[int]) -> dict:
    """Seeds where the searched architecture beats the random one: on the mean over folds and on fold 0 alone."""
    def get(s: int, kind: str) -> dict | None:
        return next((r for r in rows if r["seed"] == s and r["arch"] == kind), None)

    out = {"seeds": len(seeds), "searched_beats_random_mean": 0, "searched_beats_random_fold0": None}
    for s in seeds:
        searched, rand = get(s, "searched"), get(s, "random")
        out["searched_beats_random_mean"] += searched["mean_dice"] > rand["mean_dice"]
        if 0 in folds:
            out["searched_beats_random_fold0"] = (out["searched_beats_random_fold0"] or 0) + (
                searched["fold_dice"][0] > rand["fold_dice"][0])
    return out


def report(rows: list[dict], a, kinds: list[str]) -> None:
    folds = a.folds
    print(f"\ncommit {kit.git_commit()}; tiny preset, budget {a.mem:g}, seeds {a.seeds}, folds {folds}; fold 0 is the "
          "only fold unseen by the search\n")
    fold_cols = " | ".join(f"fold {k}{' (unseen)' if k == 0 else ''}" for k in folds)
    print(f"| seed | architecture | memory ratio | parameters | predicted step MB | supernet val Dice | {fold_cols} | "
          "mean over folds | per class (mean over folds) |")
    print("|---|---|---|---|---|---|" + "---|" * len(folds) + "---|---|")
    for r in rows:
        classes = sorted({c for v in r["class_dice"].values() for c in v})
        per_class = ", ".join(f"{c}: {statistics.mean(r['class_dice'][k][c] for k in folds):.3f}" for c in classes)
        sup = f"{r['supernet_dice']:.3f}" if r["supernet_dice"] is not None else ""
        print(f"| {r['seed']} | {r['arch']} | {r['mem_ratio']:.3f} | {r['params']:,} | {r['predicted_mb']:.1f} | {sup} | "
              + " | ".join(f"{r['fold_dice'][k]:.3f}" for k in folds) + f" | {r['mean_dice']:.3f} | {per_class} |")
    print(f"\n| architecture | memory ratio | {' | '.join(f'fold {k}' for k in folds)} | mean over folds |")
    print("|---|---|" + "---|" * len(folds) + "---|")
    for kind in kinds:
        sel = [r for r in rows if r["arch"] == kind]
        print(f"| {kind} | {kit.mean_sd([r['mem_ratio'] for r in sel])} | "
              + " | ".join(kit.mean_sd([r["fold_dice"][k] for r in sel]) for k in folds)
              + f" | {kit.mean_sd([r['mean_dice'] for r in sel])} |")
    pr = paired(rows, a.seeds, folds)
    line = f"\nsearched > random (paired by seed): {pr['searched_beats_random_mean']} of {pr['seeds']} on the mean"
    if pr["searched_beats_random_fold0"] is not None:
        line += f", {pr['searched_beats_random_fold0']} of {pr['seeds']} on fold 0"
    print(line)


if __name__ == "__main__":
    main()
