#!/usr/bin/env python
"""Benchmark the search against MONAI's DiNTS on this machine: decoding, search iterations, path sampling, compute
efficiency.

    python scripts/bench_space.py [--threads 2] [--repeats 3] [--rounds 2] [--tiny]

Tables (ours vs MONAI measured side by side in this run; every search iteration in a fresh process, ours and MONAI's
alternated round by round so that they share the machine's noise):

- decoding at B=12 and D = 3, 4 (ours: the exact dynamic program; MONAI: ``TopologySearch.decode``, Dijkstra on a
  dense graph), on the same random logits, with whether both found the same architecture; ours alone at D = 5;
- one search iteration (weight step + architecture step, as ``code/search.py`` takes it; MONAI's as its DiNTS
  tutorial does, see ``scripts/benchkit.py``) at the tiny preset (``configs/tiny.yaml``: B=4, D=3, channel_mul
  0.25, batch 2 x 32^3) and at B=12, D=4, channel_mul 0.25, batch 1 x 64^3, one-shot: median seconds and peak
  memory (peak resident set minus the resident set before the first iteration); at the second configuration also
  one forward + backward of the supernet alone, the measure the speed goals state their baselines for (about 3/5 of
  the iteration's work: the architecture step computes no weight gradients);
- path sampling (ours, ``--use_max 0``) at ``--path_num`` 2, 4, 6 at the second configuration;
- compute efficiency: the useful floating-point operations of each of those (MONAI's counted by
  ``torch.utils.flop_counter.FlopCounterMode``; ours is credited with the same count, so that work it skips counts
  as efficiency), per second, over this machine's dense ``conv3d`` throughput (64 -> 64 channels, 3^3 kernel,
  1 x 64 x 32^3, forward + backward, same threads). Ours counted the same way is shown as a check: equal at batch
  2; at batch 1 its CPU convolutions call oneDNN directly (forward unseen by the counter, backward run on a pair),
  so the count differs there.

``--tiny`` shrinks every size (decoding: MONAI only at D = 3; both configurations at B=4, D=3, 16^3) so that the
tests can run it in about a minute. Ends with one JSON line holding every figure (``make_benchmarks_doc.py``
reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import alternate, environment, finish, fmt, ratio, table  # noqa: E402

#: The search configurations: name -> (preset, extra options, label). "tiny" is the demo's network at two crops per
#: step (the preset searches with one; at one, CPU convolutions bypass the FLOP counter); "b12" the goals' CPU
#: scale, the one the goals are judged on.
#: Task09_Spleen's channels and classes (its dataset.json says so; a benchmark reads no data).
SPLEEN = ["--in_channels", "1", "--num_classes", "2"]
CONFIGS = {
    "tiny": ("tiny", ["--in_channels", "1", "--num_classes", "3", "--batch_size", "2"],
             "tiny preset: B=4, D=3, channel_mul 0.25, 2 × 32³"),
    "b12": ("Task09_Spleen", [*SPLEEN, "--channel_mul", "0.25", "--patch_size", "64", "64", "64", "--batch_size", "1"],
            "B=12, D=4, channel_mul 0.25, 1 × 64³"),
}
#: --tiny: both at 16³ (the first still at batch 2, where ours and MONAI's FLOP counts must agree).
TINY_CONFIGS = {
    "tiny": ("tiny", ["--in_channels", "1", "--num_classes", "3", "--patch_size", "16", "16", "16",
                      "--batch_size", "2"],
             "B=4, D=3, channel_mul 0.25, 2 × 16³ (--tiny)"),
    "b12": ("tiny", ["--in_channels", "1", "--num_classes", "2", "--patch_size", "16", "16", "16", "--batch_size", "1"],
            "B=4, D=3, channel_mul 0.25, 1 × 16³ (--tiny)"),
}
PATH_NUMS = (2, 4, 6)
#: What is timed ours vs MONAI: (result name, benchkit workload, configuration). The search iteration at "b12" is what
#: the goals are judged on; "b12_fwd_bwd" is the measure the goals state their baselines (and 179 GFLOP) for.
STEPS = [("tiny", "search", "tiny"), ("b12", "search", "b12"), ("b12_fwd_bwd", "supernet", "b12")]
FWD_BWD = ", forward+backward only"


def bench_decode(depths: tuple[int, ...], monai_depths: tuple[int, ...], threads: int) -> dict[str, dict]:
    """Per D: ours (median of 20 decodes, B=12), MONAI's (one decode) and whether both found the same
    architecture, on the same random logits."""
    import torch
    from monai.networks.nets import TopologySearch

    from dints.space.decode import decode
    from dints.space.topology import num_paths

    torch.set_num_threads(threads)
    out = {}
    for d in depths:
        g = torch.Generator().manual_seed(d)
        p = num_paths(d)
        alpha_a, alpha_c = torch.randn(12, p, generator=g), torch.randn(12, p, 5, generator=g)
        ours = decode(alpha_a, alpha_c)  # builds the topology tables once
        times = []
        for _ in range(20):
            t = time.perf_counter()
            decode(alpha_a, alpha_c)
            times.append(time.perf_counter() - t)
        row = {"ours_s": statistics.median(times), "monai_s": None, "same": None}
        if d in monai_depths:
            with contextlib.redirect_stdout(io.StringIO()):
                space = TopologySearch(channel_mul=0.25, num_blocks=12, num_depths=d, use_downsample=True)
                with torch.no_grad():
                    space.log_alpha_a.copy_(alpha_a)
                    space.log_alpha_c.copy_(alpha_c)
                t = time.perf_counter()
                node_a, code_a, _, _ = space.decode()
                row["monai_s"] = time.perf_counter() - t
            row["same"] = bool((torch.as_tensor(node_a) == ours.node_a).all()
                               and (torch.as_tensor(code_a) == ours.arch_code_a).all())
        out[str(d)] = row
        monai = "" if row["monai_s"] is None else f", MONAI {row['monai_s']:.3f} s, same: {row['same']}"
        print(f"  decode D={d}: ours {row['ours_s'] * 1e3:.2f} ms{monai}", flush=True)
    return out


def tables(res: dict) -> dict[str, str]:
    """The result's tables by section title (also what ``make_benchmarks_doc.py`` writes)."""
    one_shot = res["search"]["b12"]
    runs = f"median of {res['repeats']} iterations, best of {res['rounds']} alternating rounds"
    return {
        "Decoding": "B=12; ours: median of 20 decodes; MONAI: one decode; the same random logits\n\n" + table(
            ["D", "ours (ms)", "MONAI (s)", "MONAI / ours", "same architecture"],
            [[d, fmt(r["ours_s"] * 1e3, ".2f"), fmt(r["monai_s"], ".2f"),
              fmt(r["monai_s"] / r["ours_s"] if r["monai_s"] else None, ".0f", "×"), r["same"]]
             for d, r in res["decode"].items()]),
        "Search iteration": "Weight step + architecture step (SGD on the weights, then Adam on the architecture "
        "with the entropy, memory and topology losses), one-shot; the row marked forward+backward times only one "
        f"forward and backward of the supernet; {runs}; peak: resident memory the iterations add\n\n" + table(
            ["configuration", "ours (s)", "MONAI (s)", "time ours/MONAI", "ours peak (MB)", "MONAI peak (MB)",
             "memory ours/MONAI"],
            [[r["label"], fmt(r["ours_s"]), fmt(r["monai_s"]), r["time_ratio"], fmt(r["ours_peak_mb"], ".0f"),
              fmt(r["monai_peak_mb"], ".0f"), r["peak_ratio"]] for r in res["search"].values()]),
        "Path sampling": f"Ours, --use_max 0, {one_shot['label']}; {runs}\n\n" + table(
            ["path_num", "s / iteration", "peak (MB)", "time / one-shot", "memory / one-shot"],
            [["one-shot", fmt(one_shot["ours_s"]), fmt(one_shot["ours_peak_mb"], ".0f"), 1.0, 1.0]]
            + [[n, fmt(r["ours_s"]), fmt(r["ours_peak_mb"], ".0f"), r["time_vs_one_shot"], r["peak_vs_one_shot"]]
               for n, r in res["sampling"].items()]),
        "Compute efficiency": "Useful GFLOP of the search iteration (MONAI's, counted by FlopCounterMode; ours is "
        "credited with the same count) per second, over dense conv3d on this machine "
        f"({fmt(res['dense_gflops_per_s'], '.1f')} GFLOP/s: 64→64 channels, 3³, 1×64×32³, forward+backward, same "
        "threads). \"ours counted\" is ours under the same counter, a check (equal at batch 2; at batch 1 our CPU "
        "convolutions call oneDNN directly, unseen by the counter, and run their backward on a pair)\n\n" + table(
            ["configuration", "useful GFLOP", "ours counted", "MONAI GFLOP/s", "ours GFLOP/s", "MONAI efficiency",
             "ours efficiency"],
            [[r["label"], fmt(r["monai_gflop"], ".1f"), fmt(r["ours_counted_gflop"], ".1f"),
              fmt(r["monai_gflops_per_s"], ".1f"), fmt(r["ours_gflops_per_s"], ".1f"),
              fmt(100 * r["monai_efficiency"], ".0f", "%"), fmt(100 * r["ours_efficiency"], ".0f", "%")]
             for r in res["search"].values()]),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--repeats", type=int, default=3, help="timed iterations per process (the median counts)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of ours/MONAI processes (the best "
                                                           "round counts)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (for the tests)")
    a = p.parse_args(argv)
    configs = TINY_CONFIGS if a.tiny else CONFIGS
    base = {"threads": a.threads, "repeats": a.repeats, "warmup": 1, "device": "cpu"}

    print(f"decoding ({a.threads} threads) ...", flush=True)
    dec = bench_decode((3, 4, 5), (3,) if a.tiny else (3, 4), a.threads)

    search, labels = {}, {}
    for name, kind, config in STEPS:
        preset, options, labels[name] = configs[config]
        if kind == "supernet":
            labels[name] += FWD_BWD
        print(f"{kind}: {labels[name]} ...", flush=True)
        spec = {**base, "kind": kind, "preset": preset, "options": options, "flops": True}
        search[name] = alternate({impl: {**spec, "impl": impl} for impl in ("ours", "monai")}, a.rounds)

    print("path sampling (ours) ...", flush=True)
    preset, options, _ = configs["b12"]
    sampling = alternate({f"path_num {n}": {**base, "kind": "search", "impl": "ours", "preset": preset,
                                            "options": options, "use_max": 0, "path_num": n} for n in PATH_NUMS},
                         a.rounds)
    print("dense conv3d ...", flush=True)
    dense = alternate({"dense": {**base, "kind": "dense", "repeats": max(5, a.repeats), "flops": True}},
                      a.rounds)["dense"]
    dense_flops = dense["rounds"][0]["flops"]
    dense_gflops_s = dense_flops / dense["s"] / 1e9

    res: dict = {"decode": {d: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
                            for d, row in dec.items()},
                 "search": {}, "sampling": {}, "dense_gflop": round(dense_flops / 1e9, 3),
                 "dense_gflops_per_s": round(dense_gflops_s, 1), "repeats": a.repeats, "rounds": a.rounds,
                 "tiny": a.tiny}
    for name, m in search.items():
        useful = m["monai"]["rounds"][0]["flops"]
        r = {"label": labels[name], "ours_s": round(m["ours"]["s"], 4), "monai_s": round(m["monai"]["s"], 4),
             "ours_peak_mb": m["ours"]["peak_mb"], "monai_peak_mb": m["monai"]["peak_mb"],
             "monai_gflop": round(useful / 1e9, 3),
             "ours_counted_gflop": round(m["ours"]["rounds"][0]["flops"] / 1e9, 3)}
        r["time_ratio"] = ratio(r["ours_s"], r["monai_s"])
        r["peak_ratio"] = ratio(r["ours_peak_mb"], r["monai_peak_mb"])
        for impl in ("ours", "monai"):
            r[f"{impl}_gflops_per_s"] = round(useful / m[impl]["s"] / 1e9, 2)
            r[f"{impl}_efficiency"] = round(useful / m[impl]["s"] / 1e9 / dense_gflops_s, 4)
        res["search"][name] = r
    one_shot = res["search"]["b12"]
    for n in PATH_NUMS:
        m = sampling[f"path_num {n}"]
        res["sampling"][str(n)] = {"ours_s": round(m["s"], 4), "ours_peak_mb": m["peak_mb"],
                                   "time_vs_one_shot": ratio(m["s"], one_shot["ours_s"]),
                                   "peak_vs_one_shot": ratio(m["peak_mb"], one_shot["ours_peak_mb"])}

    return finish("space", environment(a.threads), res, tables(res))


if __name__ == "__main__":
    main()
