#!/usr/bin/env python
"""GPU benchmark at the Task09_Spleen preset, ours vs MONAI's DiNTS (run by ``scripts/bench_gpu.sh``).

    python scripts/bench_gpu.py --out gpu.json [--repeats 10] [--arch FILE] [--tiny]

With mixed precision (``torch.autocast`` + ``GradScaler``, as ``code/search.py`` and ``code/retrain.py`` run on a
GPU), each measurement in a fresh process (``scripts/benchkit.py``), ours then MONAI's:

- one search iteration (weight step + architecture step) of the preset's one-shot supernet: B=12, D=4,
  channel_mul 0.5, batch 1 × 96³;
- one retraining iteration of a discrete network at the preset's retraining settings: channel_mul 1.0,
  batch 2 × 96³ (an architecture decoded from seeded random logits, or ``--arch``);
- sliding-window inference of a 512 × 512 × 100 volume (96³ windows, overlap 0.625, the test stage's windows per
  batch), on the GPU.

Then the plan's promise (``code/plan.py``, docs/method.md "The plan"): a Task09-like dataset (41 CT cases of
512 × 512 × 90 voxels of 0.79 × 0.79 × 5 mm) is planned for the GPU's memory (``--gpu_mb``, default the device's),
and one search iteration and one retraining iteration (the same architecture as above) run at the planned patch and
batch with mixed precision: ``torch.cuda.max_memory_allocated`` against the predicted peak (goal: within 15 % and
under ``--gpu_mb``).

Figures: seconds and iterations per second (median of ``--repeats`` after ``--warmup``), and peak GPU memory
(``torch.cuda.max_memory_allocated``: weights, activations, gradients, optimiser state). Then, when
``scripts/bench_memory.py`` exists, ``python scripts/bench_memory.py --device cuda $BENCH_MEMORY_ARGS`` (the memory
predictor checked against the GPU's allocator); its final JSON line is kept under ``memory_predictor``.

Everything shares one deadline (``--budget`` seconds): a measurement that fails or would overrun it is recorded as
such and the rest still runs. ``--tiny`` runs the same on the tiny preset's sizes, on the CPU when no GPU is present
(the tests' check that the script works; the memory predictor is skipped). Writes the JSON to ``--out`` and prints
it as the last line (``make_benchmarks_doc.py`` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import ROOT, environment, finish, flat_table, fmt, last_json_line, measure, ratio, table  # noqa: E402

#: Task09_Spleen's channels and classes (its dataset.json says so; a benchmark reads no data).
TINY_OPTIONS = SPLEEN = ["--in_channels", "1", "--num_classes", "2"]
FULL = {
    "search": ("Task09_Spleen", SPLEEN, "search iteration: B=12, D=4, channel_mul 0.5, 1 × 96³"),
    "train": ("Task09_Spleen", SPLEEN, "retraining iteration: channel_mul 1.0, 2 × 96³"),
    "infer": ("Task09_Spleen", SPLEEN, "sliding-window inference: 96³ windows, overlap 0.625"),
}
TINY = {
    "search": ("tiny", TINY_OPTIONS, "search iteration (--tiny): B=4, D=3, channel_mul 0.25, 2 × 32³"),
    "train": ("tiny", TINY_OPTIONS, "retraining iteration (--tiny): channel_mul 0.5, 2 × 32³"),
    "infer": ("tiny", TINY_OPTIONS, "sliding-window inference (--tiny): 32³ windows, overlap 0.625"),
}


def tables(res: dict) -> dict[str, str]:
    """The result's tables by section title (also what ``make_benchmarks_doc.py`` writes)."""
    unit = {"search": "it/s", "train": "it/s", "infer": "volumes/s"}
    out = {
        "GPU": f"Task09_Spleen preset{' (--tiny sizes)' if res['tiny'] else ''}, device {res['device']}, mixed "
        f"precision {'on' if res['amp'] else 'off'}; median of {res['repeats']} iterations after {res['warmup']} "
        f"untimed (inference: {res['volume_repeats']} volume(s) of {'×'.join(map(str, res['volume']))} after one "
        "untimed); peak: torch.cuda.max_memory_allocated\n\n" + table(
            ["workload", "ours (s)", "MONAI (s)", "ours", "MONAI", "time ours/MONAI", "ours peak (MB)",
             "MONAI peak (MB)", "memory ours/MONAI"],
            [[r["label"], fmt(r.get("ours_s")), fmt(r.get("monai_s")),
              fmt(r.get("ours_per_s"), ".2f", " " + unit[k]), fmt(r.get("monai_per_s"), ".2f", " " + unit[k]),
              r["time_ratio"], fmt(r.get("ours_peak_mb"), ".0f"), fmt(r.get("monai_peak_mb"), ".0f"),
              r["peak_ratio"]] for k, r in res["rows"].items()]),
    }
    errors = [f"{r['label']}, {impl}: {r[impl + '_error']}" for r in res["rows"].values() for impl in ("ours", "monai")
              if impl + "_error" in r]
    if errors:
        out["GPU"] += "\n\nFailed: " + "; ".join(errors)
    if res.get("plan"):
        pl = res["plan"]
        out["GPU plan"] = (
            f"{pl['dataset']}, planned for {pl['gpu_mb']:.0f} MB ({pl['gpu_source']}; the plan keeps 15% free); one "
            f"iteration at the planned sizes, mixed precision {'on' if res['amp'] else 'off'}; measured: "
            f"{'torch.cuda.max_memory_allocated' if res['device'] == 'cuda' else 'peak resident memory added (CPU)'}"
            "\n\n" + table(
                ["workload", "planned patch", "batch", "predicted (MB)", "measured (MB)", "measured / predicted",
                 "under --gpu_mb"],
                [[r["label"], "×".join(map(str, r["patch"])), r["batch"], fmt(r["predicted_mb"], ".0f"),
                  fmt(r.get("measured_mb"), ".0f"), fmt(r.get("ratio"), ".3f"),
                  r.get("error") or ("yes" if r.get("under") else "no")] for r in pl["rows"]]))
    if res.get("memory_predictor") is not None:
        out["GPU memory predictor"] = "scripts/bench_memory.py on the GPU\n\n" + flat_table(res["memory_predictor"])
    return out


def memory_predictor(device: str, tiny: bool, deadline: float) -> dict | None:
    """The final JSON line of ``scripts/bench_memory.py --device <device> $BENCH_MEMORY_ARGS`` when that script exists
    (not with ``--tiny``), within the deadline; ``{"error": ...}`` when it fails."""
    script = ROOT / "scripts" / "bench_memory.py"
    if tiny or not script.is_file():
        return None
    cmd = [sys.executable, str(script), "--device", device, *shlex.split(os.environ.get("BENCH_MEMORY_ARGS", ""))]
    print(f"memory predictor: {' '.join(cmd[1:])} ...", flush=True)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return {"error": "stopped at the deadline", "command": shlex.join(cmd[1:])}
    print(out.stdout, flush=True)
    if out.returncode:
        return {"error": f"exit status {out.returncode}: {out.stderr[-500:]}", "command": shlex.join(cmd[1:])}
    try:
        return {"command": shlex.join(cmd[1:]), **last_json_line(out.stdout)}
    except ValueError:
        return {"error": "no JSON line in its output", "command": shlex.join(cmd[1:])}


#: A Task09-like dataset: (cases, voxel size in mm, shape in voxels), CT.
PLAN_DATASET = (41, (0.79, 0.79, 5.0), (512, 512, 90))


def plan_check(device: str, gpu_mb: float | None, tiny: bool, arch_file: str | None, threads: int,
               deadline: float) -> dict:
    """Plan the Task09-like dataset for ``gpu_mb`` and measure one search and one retraining iteration at the
    planned sizes against the predicted peaks (``--tiny``: the tiny preset's network, 4 blocks, 3 levels,
    channel_mul 0.25, for 300 MB, on the CPU when there is no GPU)."""
    from benchkit import benchmark_arch
    from dints.pipeline import planning
    from dints.space.network_memory import MB, predict, predict_supernet
    from dints.space.opsets import opset_ops

    if gpu_mb is None:
        gpu_mb, source = (300.0, "--tiny") if tiny else planning.default_gpu_mb()
    else:
        source = "--gpu_mb"
    cases, spacing, shape = PLAN_DATASET
    fingerprint = {"cases": [{"spacing": list(spacing), "shape": list(shape)}] * cases,
                   "median": {"nonzero_ratio": 1.0}, "channels": {"0": "CT"}, "intensity": {"0": {"samples": 0}}}
    from config import load_config

    preset = "Task09_Spleen"  # for the measurements; the plan is made without it (it pins the paper's sizes)
    net = ["--blocks", "4", "--levels", "3"] if tiny else []
    narrow = ["--channel_mul", "0.25"] if tiny else []  # the search's; retraining doubles it
    configs = {s: load_config(["--task", "Benchmark", *SPLEEN, *net, *(narrow if s == "search" else [])], s,
                              use_plan=False) for s in ("search", "retrain", "test")}
    spec_arch = {"preset": preset, "arch_seed": 0, "search_options": [*SPLEEN, *net, *narrow],
                 **({"arch_file": arch_file} if arch_file else {})}
    arch = benchmark_arch(spec_arch)
    entries = planning.make_plan(fingerprint, configs, gpu_mb, arch, "the benchmark's architecture",
                                 cuda=device == "cuda")
    got = {(e.section, e.key): e.value for e in entries}
    amp = device == "cuda"
    s, r = configs["search"], configs["retrain"]
    ops = opset_ops(s.opset, s.cellop)
    rows = []
    for kind, section in (("search", "search"), ("train", "retrain")):
        patch, batch = got[(section, "patch_size")], got[(section, "batch_size")]
        if kind == "search":
            predicted = predict_supernet(s.blocks, s.levels, patch, batch, s.channel_mul, 1, 2, ops,
                                         recompute=bool(s.recompute), amp=amp,
                                         use_downsample=bool(s.use_downsample)).total
            label = f"search iteration (supernet, channel_mul {s.channel_mul:g})"
        else:
            mul = r.channel_mul if r.channel_mul is not None else 2 * arch.channel_mul
            predicted = predict(arch, patch, batch, mul, 1, 2, amp=amp).total
            label = f"retraining iteration (channel_mul {mul:g})"
        row = {"label": label, "patch": list(patch), "batch": batch, "predicted_mb": round(predicted / MB, 1)}
        options = [*SPLEEN, *net, *(narrow if kind == "search" else []), "--patch_size", *map(str, patch),
                   "--batch_size", str(batch)]
        spec = {"kind": kind, "impl": "ours", "preset": preset, "options": options, "device": device, "amp": True,
                "threads": threads, "warmup": 1, "repeats": 1, **spec_arch}
        print(f"plan: {label} at {'x'.join(map(str, patch))} x {batch} ...", flush=True)
        try:
            m = measure(spec, timeout=max(1.0, deadline - time.monotonic()))
        except SystemExit as err:
            row["error"] = str(err)[-300:]
            print(f"  failed: {row['error']}", flush=True)
        else:
            row.update(measured_mb=m["peak_mb"], ratio=round(m["peak_mb"] / row["predicted_mb"], 4),
                       under=m["peak_mb"] < gpu_mb)
            print(f"  predicted {row['predicted_mb']:.0f} MB, measured {m['peak_mb']:.0f} MB", flush=True)
        rows.append(row)
    return {"dataset": f"Task09-like: {cases} CT cases of {'×'.join(map(str, shape))} voxels of "
                       f"{'×'.join(map(str, spacing))} mm", "gpu_mb": gpu_mb, "gpu_source": source, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the JSON here too")
    p.add_argument("--repeats", type=int, default=10, help="timed iterations per process (median counts)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--volume", type=int, nargs=3, default=[512, 512, 100], help="inference volume")
    p.add_argument("--volume_repeats", type=int, default=2, help="timed volumes per process (after one untimed)")
    p.add_argument("--arch", default=None, help="architecture to retrain and infer with (arch.json or MONAI .pth)")
    p.add_argument("--threads", type=int, default=4, help="CPU threads per process")
    p.add_argument("--budget", type=float, default=450, help="seconds for everything (measurements that would "
                                                           "overrun it are skipped)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, on the CPU when there is no GPU")
    p.add_argument("--gpu_mb", type=float, default=None,
                   help="GPU memory (MB) to plan the Task09-like dataset for (default: the device's; --tiny: 300)")
    a = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not a.tiny:
        raise SystemExit("bench_gpu.py: no CUDA device here; --tiny runs a small check on the CPU")
    device = "cuda" if cuda else "cpu"
    cases = TINY if a.tiny else FULL
    volume = [48, 48, 40] if a.tiny else a.volume
    repeats, warmup = (1, 1) if a.tiny else (a.repeats, a.warmup)

    deadline = time.monotonic() + a.budget
    res: dict = {"device": device, "amp": cuda, "tiny": a.tiny, "volume": volume, "repeats": repeats,
                 "warmup": warmup, "volume_repeats": 1 if a.tiny else a.volume_repeats, "rows": {}}
    for kind, (preset, options, label) in cases.items():
        row: dict = {"label": label}
        for impl in ("ours", "monai"):
            spec = {"kind": kind, "impl": impl, "preset": preset, "options": options, "device": device, "amp": True,
                    "threads": a.threads, "warmup": warmup, "repeats": repeats, "arch_seed": 0}
            if kind == "infer":
                spec.update(volume=volume, warmup=1, repeats=1 if a.tiny else a.volume_repeats)
            if a.arch and kind != "search":
                spec["arch_file"] = str(Path(a.arch).resolve())
            print(f"{label}: {impl} ...", flush=True)
            try:
                m = measure(spec, timeout=max(1.0, deadline - time.monotonic()))
            except SystemExit as err:  # keep what the other measurements give
                print(f"  failed: {str(err)[-500:]}", flush=True)
                row[f"{impl}_error"] = str(err)[-500:]
                continue
            row[f"{impl}_s"] = round(m["median_s"], 4)
            row[f"{impl}_per_s"] = round(1 / m["median_s"], 3)
            row[f"{impl}_peak_mb"] = m["peak_mb"]
            print(f"  {m['median_s']:.3f} s (median of {len(m['times'])}), peak {m['peak_mb']:.0f} MB", flush=True)
        row["time_ratio"] = ratio(row.get("ours_s"), row.get("monai_s"))
        row["peak_ratio"] = ratio(row.get("ours_peak_mb"), row.get("monai_peak_mb"))
        res["rows"][kind] = row

    res["plan"] = plan_check(device, a.gpu_mb, a.tiny, a.arch, a.threads, deadline)
    res["memory_predictor"] = memory_predictor(device, a.tiny, deadline)

    out = finish("gpu", environment(a.threads, device), res, tables(res))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
