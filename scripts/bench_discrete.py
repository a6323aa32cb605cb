#!/usr/bin/env python
"""Benchmark the discrete (retrained) network against MONAI's on the same architecture: training iterations per
second and sliding-window inference seconds per volume.

    python scripts/bench_discrete.py [--threads 2] [--repeats 2] [--rounds 2] [--arch FILE] [--tiny]

Ours is :class:`dints.space.network.DiscreteNet`, MONAI's ``TopologyInstance`` + ``DiNTS`` built from the same
architecture codes; both train with the same loss, optimiser and batch, and infer through the same
``sliding_window_inference`` call (the test stage's window, overlap 0.625, Gaussian blending; see
``scripts/benchkit.py``). Two architectures:

- the tiny preset's (``configs/tiny.yaml``: B=4, D=3, retrained at channel_mul 0.5, batch 2 × 32³, 4 windows per
  batch), inference on a 64 × 64 × 48 volume;
- a paper-scale one (B=12, D=4, channel_mul 1.0 as the Task09 preset retrains, batch 2 × 64³: a patch this CPU
  can hold), inference with 64³ windows on a 96 × 96 × 64 volume.

The architectures are decoded from seeded random logits unless ``--arch`` names a searched one (arch.json or a
MONAI .pth) for the paper-scale row. Each measurement runs in a fresh process, ours and MONAI's alternated round
by round; the best round's median counts. ``--tiny`` shrinks both rows for the tests. Ends with one JSON line
(``make_benchmarks_doc.py`` reads it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import alternate, benchmark_arch, environment, finish, fmt, ratio, stage_options, table  # noqa: E402

#: Task09_Spleen's channels and classes (its dataset.json says so; a benchmark reads no data).
SPLEEN = ["--in_channels", "1", "--num_classes", "2"]
#: name -> (preset, extra options, inference volume, label).
CASES = {
    "tiny": ("tiny", ["--in_channels", "1", "--num_classes", "3"], [64, 64, 48], "tiny preset"),
    "paper": ("Task09_Spleen", [*SPLEEN, "--patch_size", "64", "64", "64"], [96, 96, 64], "paper scale"),
}
#: --tiny: both rows shrunk to seconds (the paper-scale topology at channel_mul 0.25, 32³, batch 1).
TINY_CASES = {
    "tiny": ("tiny", ["--in_channels", "1", "--num_classes", "3"], [32, 32, 48], "tiny preset"),
    "paper": ("Task09_Spleen", [*SPLEEN, "--patch_size", "32", "32", "32", "--batch_size", "1", "--channel_mul",
                                "0.25"],
              [32, 32, 32], "paper scale (--tiny)"),
}


def describe(spec: dict) -> str:
    """``B=.., D=.., channel_mul .., N active paths, batch N × side³`` of a train spec."""
    from dints.space.network import retrain_channel_mul

    arch = benchmark_arch(spec)
    cfg = stage_options(spec["preset"], "retrain", spec["options"])
    paths = sum(map(sum, arch.arch_code_a))
    patch = "×".join(map(str, cfg.patch_size))
    return (f"B={arch.num_blocks}, D={arch.num_depths}, channel_mul {retrain_channel_mul(cfg.channel_mul, arch):g}, "
            f"{paths} active paths, batch {cfg.batch_size} × {patch}")


def tables(res: dict) -> dict[str, str]:
    """The result's tables by section title (also what ``make_benchmarks_doc.py`` writes)."""
    runs = f"median of {res['repeats']}, best of {res['rounds']} alternating rounds"
    cases = res["cases"].values()
    return {
        "Discrete network training": f"Ours vs MONAI on the same architecture; forward, Dice+CE loss, backward, "
        f"SGD step; {runs}; peak: resident memory the iterations add\n\n" + table(
            ["architecture", "ours (it/s)", "MONAI (it/s)", "ours / MONAI", "ours peak (MB)", "MONAI peak (MB)"],
            [[r["label"], fmt(r["ours_train_it_s"]), fmt(r["monai_train_it_s"]), fmt(r["train_speedup"], ".2f", "×"),
              fmt(r["ours_train_peak_mb"], ".0f"), fmt(r["monai_train_peak_mb"], ".0f")] for r in cases]),
        "Sliding-window inference": "The same networks through the same monai.inferers.sliding_window_inference "
        f"call (the test stage's settings: the training patch as window, overlap 0.625, Gaussian); {runs}\n\n"
        + table(["architecture", "volume", "ours (s/volume)", "MONAI (s/volume)", "MONAI / ours"],
                [[r["label"], "×".join(map(str, r["volume"])), fmt(r["ours_infer_s"]), fmt(r["monai_infer_s"]),
                  fmt(r["infer_speedup"], ".2f", "×")] for r in cases]),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--repeats", type=int, default=2, help="timed iterations (volumes) per process; median counts")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of ours/MONAI processes")
    p.add_argument("--arch", default=None, help="a searched architecture for the paper-scale row (arch.json or "
                                                "MONAI .pth; default: decoded from seeded random logits)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (for the tests)")
    a = p.parse_args(argv)
    cases = TINY_CASES if a.tiny else CASES
    base = {"threads": a.threads, "repeats": a.repeats, "warmup": 1, "device": "cpu", "arch_seed": 0}

    res: dict = {"cases": {}, "repeats": a.repeats, "rounds": a.rounds, "tiny": a.tiny}
    for name, (preset, options, volume, label) in cases.items():
        spec = {**base, "preset": preset, "options": options}
        if name == "paper" and a.arch:
            spec["arch_file"] = str(Path(a.arch).resolve())
        desc = describe(spec)
        print(f"{label}: {desc}", flush=True)
        train = alternate({impl: {**spec, "kind": "train", "impl": impl} for impl in ("ours", "monai")}, a.rounds,
                          "training ")
        infer = alternate({impl: {**spec, "kind": "infer", "impl": impl, "volume": volume}
                           for impl in ("ours", "monai")}, a.rounds, "inference ")
        r = {"label": f"{label}: {desc}", "volume": volume, "arch": spec.get("arch_file", "random, seed 0")}
        for impl in ("ours", "monai"):
            r[f"{impl}_train_it_s"] = round(1 / train[impl]["s"], 4)
            r[f"{impl}_train_peak_mb"] = train[impl]["peak_mb"]
            r[f"{impl}_infer_s"] = round(infer[impl]["s"], 4)
        r["train_speedup"] = ratio(r["ours_train_it_s"], r["monai_train_it_s"])
        r["infer_speedup"] = ratio(r["monai_infer_s"], r["ours_infer_s"])
        res["cases"][name] = r

    return finish("discrete", environment(a.threads), res, tables(res))


if __name__ == "__main__":
    main()
