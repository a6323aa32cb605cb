#!/usr/bin/env python
"""Benchmark the search space against MONAI's DiNTS on this machine (CPU, 2 threads by default).

    python scripts/bench_space.py [--threads 2] [--repeats 3] [--side 64]

Figures (seconds, megabytes):
- decode: D=4, B=12, ours (exact dynamic program) vs MONAI's ``TopologySearch.decode`` on the same logits;
- supernet step: one forward+backward at B=12, D=4, channel_mul 0.25, one 1x1x64^3 input, one-shot (every path
  and op), ours vs MONAI's ``TopologySearch`` + ``DiNTS``; best wall time and peak memory (peak RSS (VmHWM) minus RSS
  before the step, each implementation in a fresh process, the two alternated to share the machine's noise);
- discrete network: forward time of the decoded architecture at channel_mul 0.5 (retraining doubles the search's),
  ours vs MONAI's ``TopologyInstance`` + ``DiNTS``.
Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = str(ROOT / "code")

# Runs in a fresh interpreter so that peak RSS belongs to one implementation only.
WORKER = r'''
import contextlib, io, json, sys, time, torch
torch.set_num_threads({threads}); torch.manual_seed(0); sys.path.insert(0, {code!r})
B, D, impl, what = {B}, {D}, {impl!r}, {what!r}
x = torch.randn(1, 1, {side}, {side}, {side})
g = torch.Generator().manual_seed(1)
alpha_a = torch.randn(B, 3 * D - 2, generator=g)
alpha_c = torch.randn(B, 3 * D - 2, 5, generator=g)
if what == "step":
    if impl == "ours":
        from dints.space.supernet import SuperNet
        net = SuperNet(1, 2, num_blocks=B, num_depths=D, channel_mul={cm})
        run = lambda: net(x, use_max=True)
    else:
        from monai.networks.nets import DiNTS, TopologySearch
        with contextlib.redirect_stdout(io.StringIO()):
            space = TopologySearch(channel_mul={cm}, num_blocks=B, num_depths=D, use_downsample=True)
        net = DiNTS(space, 1, 2, use_downsample=True)
        run = lambda: net(x)
    step = lambda: run().square().mean().backward()
else:
    from dints.space.decode import decode
    d = decode(alpha_a, alpha_c)
    if impl == "ours":
        from dints.space.network import DiscreteNet
        net = DiscreteNet((d.node_a, d.arch_code_a, d.arch_code_c), 1, 2, channel_mul=2 * {cm})
    else:
        from monai.networks.nets import DiNTS, TopologyInstance
        with contextlib.redirect_stdout(io.StringIO()):
            space = TopologyInstance(channel_mul=2 * {cm}, num_blocks=B, num_depths=D, use_downsample=True,
                                     arch_code=[d.arch_code_a.double().numpy(), d.arch_code_c.numpy()])
        net = DiNTS(space, 1, 2, use_downsample=True, node_a=d.node_a)
    net.eval()
    def step():
        with torch.no_grad():
            net(x)
before = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
times = []
for _ in range({repeats}):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    net.zero_grad(set_to_none=True)
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's (this script's, which MONAI's decode grew past
# 1.3 GB), so it floored every figure below that.
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(dict(best_s=min(times), times=times, peak_minus_before_mb=peak - before)))
'''


def measure(impl: str, what: str, a) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    src = WORKER.format(impl=impl, what=what, threads=a.threads, B=12, D=4, cm=0.25, side=a.side, repeats=a.repeats,
                        code=CODE)
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{impl} {what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_decode(threads: int) -> tuple[float, float, bool]:
    """Median decode time of ours (20 runs), one MONAI decode, and whether both found the same architecture."""
    import contextlib
    import io

    import torch

    sys.path.insert(0, CODE)
    from monai.networks.nets import TopologySearch

    from dints.space.decode import decode

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    alpha_a, alpha_c = torch.randn(12, 10, generator=g), torch.randn(12, 10, 5, generator=g)
    decode(alpha_a, alpha_c)  # warm the topology tables
    times = []
    for _ in range(20):
        t = time.perf_counter()
        ours = decode(alpha_a, alpha_c)
        times.append(time.perf_counter() - t)
    with contextlib.redirect_stdout(io.StringIO()):
        space = TopologySearch(channel_mul=0.25, num_blocks=12, num_depths=4, use_downsample=True)
    with torch.no_grad():
        space.log_alpha_a.copy_(alpha_a)
        space.log_alpha_c.copy_(alpha_c)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        node_a, code_a, code_c, _ = space.decode()
    monai_s = time.perf_counter() - t
    same = bool((torch.as_tensor(node_a) == ours.node_a).all() and (torch.as_tensor(code_a) == ours.arch_code_a).all())
    return sorted(times)[len(times) // 2], monai_s, same


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--repeats", type=int, default=4, help="timed steps per process (the best counts)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours/MONAI processes")
    p.add_argument("--side", type=int, default=64, help="input side (divisible by 32)")
    a = p.parse_args(argv)
    print(f"decode D=4 B=12 ({a.threads} threads) ...", flush=True)
    decode_s, decode_monai_s, same = bench_decode(a.threads)
    print(f"  ours {decode_s * 1e3:.2f} ms, MONAI {decode_monai_s:.1f} s, same architecture: {same}", flush=True)
    res: dict[str, list[dict]] = {}
    for what in ("step", "instance"):
        for r in range(a.rounds):
            for impl in (("ours", "monai") if r % 2 == 0 else ("monai", "ours")):
                m = measure(impl, what, a)
                res.setdefault(f"{what}_{impl}", []).append(m)
                print(f"{what} {impl}: best {m['best_s']:.2f} s, peak {m['peak_minus_before_mb']:.0f} MB", flush=True)

    def best(key: str) -> float:
        return min(m["best_s"] for m in res[key])

    def peak(key: str) -> float:
        return min(m["peak_minus_before_mb"] for m in res[key])

    out = {
        "decode_s": round(decode_s, 5), "decode_monai_s": round(decode_monai_s, 3), "decode_same": same,
        "step_s": round(best("step_ours"), 3), "step_monai_s": round(best("step_monai"), 3),
        "step_peak_mb": round(peak("step_ours"), 1), "step_peak_monai_mb": round(peak("step_monai"), 1),
        "instance_fwd_s": round(best("instance_ours"), 3), "instance_fwd_monai_s": round(best("instance_monai"), 3),
        "threads": a.threads, "input": [1, 1, a.side, a.side, a.side],
    }
    out["decode_speedup"] = round(decode_monai_s / decode_s, 1)
    out["step_time_ratio"] = round(out["step_s"] / out["step_monai_s"], 3)
    out["step_peak_ratio"] = round(out["step_peak_mb"] / out["step_peak_monai_mb"], 3)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
