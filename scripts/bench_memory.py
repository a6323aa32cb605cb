#!/usr/bin/env python
"""Check the memory predictor (:mod:`dints.space.network_memory`) against measurement on many discrete architectures.

    python scripts/bench_memory.py [--side 64] [--channel_mul 0.25] [--batch 1] [--archs 24] [--device cpu|cuda]
                                   [--amp] [--threads 2]

Builds ``--archs`` discrete networks: four hand-picked extremes at B=12, D=4 (every path with 3x3x3 convolutions,
every path with pseudo-3D ops, one skip-only path at the finest level, one 3x3x3 path at the coarsest) and random
ones, decoded (:func:`dints.space.decode.decode`) from random logits with a random bias towards fewer or more paths
and towards the skip op, with 4-12 blocks, 2-4 levels, 1/2/4 image channels and 2-4 classes. Each runs one
retraining step (forward, Dice + cross-entropy, backward, SGD with momentum; under ``torch.autocast`` with
``--amp``) and is measured:

- activations: the bytes autograd saves for the network's backward pass (``saved_tensors_hooks``, each storage
  once, parameters left out), on any device;
- on the CPU, ``held``: every storage the step holds once its loss is computed (the saved tensors of network and
  loss, logits, input, labels, parameters, gradients, momentum), counted from the real tensors;
- on a GPU, ``total``: ``torch.cuda.max_memory_allocated`` over the step, minus what was allocated before the network
  was built (so the network, the optimiser state, the batch, the cuDNN workspace and every transient count).

Prints a table (architecture, predicted and measured MB, relative error), then the Spearman rank correlation and
median relative error of the activations and of the total, and ends with one JSON line holding every figure. The
default (CPU, 64^3, channel_mul 0.25, batch 1, 24 architectures) needs about 40-70 s of CPU time (2 threads),
``--amp`` on a CPU about 3.5 minutes (float16 convolutions are slow there); on a GPU,
``--device cuda --side 96 --channel_mul 1.0 --batch 2 --amp`` checks the retraining setting (at most about 12 GB
per architecture).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
sys.path.insert(0, str(ROOT / "scripts"))
from benchkit import environment, table  # noqa: E402

from dints.space import network_memory as memory  # noqa: E402
from dints.space.decode import decode  # noqa: E402
from dints.space.network import DiscreteNet  # noqa: E402
from dints.space.opsets import opset_ops  # noqa: E402
from dints.space.topology import num_paths  # noqa: E402
from dints.train.losses import seg_loss_fn  # noqa: E402


def architectures(count: int, side: int, seed: int = 0) -> list[dict]:
    """``count`` architectures: the four B=12, D=4 extremes, then random decoded ones.

    Returns:
        Dicts with ``name``, ``codes`` (node_a, arch_code_a, arch_code_c), ``in_channels`` and ``num_classes``.
    """
    g = torch.Generator().manual_seed(seed)
    out = []

    def add(name: str, alpha_a: torch.Tensor, alpha_c: torch.Tensor, in_channels: int = 1, num_classes: int = 2):
        d = decode(alpha_a, alpha_c)
        paths = int(d.arch_code_a.sum())
        out.append(dict(name=f"{name} B{alpha_a.shape[0]} D{d.node_a.shape[1]} {paths}p", in_channels=in_channels,
                        num_classes=num_classes, codes=(d.node_a, d.arch_code_a, d.arch_code_c)))

    k = len(opset_ops(1))
    on, off, op = torch.full((12, 10), 9.0), torch.full((12, 10), -9.0), torch.zeros(12, 10, k)
    add("all 3x3x3", on, op.index_fill(2, torch.tensor([1]), 9.0))
    add("all p3d", on, op.index_fill(2, torch.tensor([2]), 9.0), 4, 4)
    add("skip lvl0", off.index_fill(1, torch.tensor([0]), 9.0), op.index_fill(2, torch.tensor([0]), 9.0))
    add("3x3x3 lvl3", off.index_fill(1, torch.tensor([9]), 9.0), op.index_fill(2, torch.tensor([1]), 9.0))
    max_depth = min(4, (side & -side).bit_length() - 2)  # sides must be divisible by 2**(D + 1)
    while len(out) < count:
        b = [4, 6, 8, 12][int(torch.randint(4, (1,), generator=g))]
        d = int(torch.randint(2, max_depth + 1, (1,), generator=g))
        bias = float(torch.rand(1, generator=g)) * 4 - 2
        alpha_a = torch.randn(b, num_paths(d), generator=g) * 2 + bias
        alpha_c = torch.randn(b, num_paths(d), k, generator=g)
        alpha_c[..., 0] += float(torch.rand(1, generator=g)) * 2  # more or fewer skip ops
        add("random", alpha_a, alpha_c, [1, 2, 4][len(out) % 3], 2 + len(out) % 3)
    return out[:count]


def measure(arch: dict, side: int, channel_mul: float, batch: int, device: torch.device, amp: bool,
            full_backward: bool = False) -> dict:
    """One retraining step of the architecture's network, measured (bytes).

    Returns:
        ``activations`` (saved by the network), ``held`` (every storage the step holds, see the module docstring),
        ``seconds`` of the step and, on a GPU, ``total`` (peak allocated). The step's backward pass runs through the
        network on a GPU or with ``full_backward``; otherwise through a stand-in loss of the weights, which makes the
        same gradients' storage at a fraction of the cost (their values do not matter here).
    """
    cuda = device.type == "cuda"
    full_backward = full_backward or cuda
    if cuda:
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
    torch.manual_seed(0)
    net = DiscreteNet(arch["codes"], arch["in_channels"], arch["num_classes"], channel_mul).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and cuda)
    loss_fn = seg_loss_fn()
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    shape = (batch, arch["in_channels"], side, side, side)

    def step() -> tuple[int, int]:
        x = torch.randn(shape, device=device)
        y = torch.randint(0, arch["num_classes"], (batch, 1, side, side, side), device=device).float()
        groups: dict[str, dict[int, int]] = {"net": {}, "loss": {}}

        def hook(group: str):
            def pack(t: torch.Tensor) -> torch.Tensor:
                s = t.untyped_storage()
                if s.data_ptr() not in params:
                    groups[group][s.data_ptr()] = s.nbytes()
                return t
            return pack

        with torch.autograd.graph.saved_tensors_hooks(hook("net"), lambda t: t):
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = net(x)
        with torch.autograd.graph.saved_tensors_hooks(hook("loss"), lambda t: t):
            loss = loss_fn(logits.float(), y)
        # Everything alive now, each storage once (addresses are unique among live storages) ...
        held = {**groups["loss"], **groups["net"]}
        held.update({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                     for t in (x, y, logits, *net.parameters())})
        if full_backward:
            scaler.scale(loss).backward()
        else:
            del logits, loss
            sum(p.sum() for p in net.parameters()).backward()
        scaler.step(opt)
        # ... plus gradients and momentum, counted once the saved tensors are gone and their addresses free again.
        later = [p.grad for p in net.parameters()] + [s["momentum_buffer"] for s in opt.state.values()]
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return sum(groups["net"].values()), sum(held.values()) + sum(t.untyped_storage().nbytes() for t in later)

    out = {}
    if cuda:
        step()  # momentum buffers exist from the second step on, as in training (even if AMP skipped this one)
        for p in net.parameters():
            opt.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    out["activations"], out["held"] = step()
    out["seconds"] = time.perf_counter() - t
    if cuda:
        torch.cuda.synchronize(device)
        out["total"] = torch.cuda.max_memory_allocated(device) - before
    return out


def _stats(pred: list[float], meas: list[float]) -> dict:
    errors = [abs(p - m) / m for p, m in zip(pred, meas)]
    return {"spearman": round(float(spearmanr(pred, meas).statistic), 4),
            "median_rel_error": round(statistics.median(errors), 4), "max_rel_error": round(max(errors), 4)}


def tables(result: dict) -> dict[str, str]:
    """The page's table (``scripts/make_benchmarks_doc.py``): every architecture, then the two summaries."""
    total = result["total_measure"]
    rows = [[r["arch"], f"{r['pred_activations_mb']:.2f}", f"{r['meas_activations_mb']:.2f}",
             f"{r['act_rel_error']:+.2%}", f"{r['pred_total_mb']:.2f}", f"{r['meas_total_mb']:.2f}",
             f"{r['total_rel_error']:+.2%}"] for r in result["rows"]]
    act, tot = result["activations"], result["total"]
    summary = (f"\n\n{result['archs']} architectures, patch {result['side']}³, batch {result['batch']}, channel_mul "
               f"{result['channel_mul']}, {'AMP' if result['amp'] else 'float32'}, {result['device']}: activations "
               f"Spearman {act['spearman']:.4f}, median relative error {act['median_rel_error']:.2%} (max "
               f"{act['max_rel_error']:.2%}); {total} Spearman {tot['spearman']:.4f}, median relative error "
               f"{tot['median_rel_error']:.2%} (max {tot['max_rel_error']:.2%}).")
    head = ["architecture", "predicted activations MB", "measured MB", "rel. error", f"predicted {total} MB",
            "measured MB", "rel. error"]
    return {"Memory predictor": table(head, rows) + summary}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=64, help="cubic patch side (divisible by 2**(D+1): 32, 64, 96, ...)")
    p.add_argument("--channel_mul", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--archs", type=int, default=24, help="architectures (at least 4: the extremes come first)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="float16 autocast (on the CPU too)")
    p.add_argument("--full_backward", action="store_true",
                   help="on a CPU, run the backward pass through the network (always on a GPU)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random architectures")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no GPU visible to torch")
    total_key = "total" if device.type == "cuda" else "held"
    rows = []
    t0 = time.perf_counter()
    print(f"| architecture | predicted activations MB | measured MB | rel. error | predicted {total_key} MB | "
          f"measured MB | rel. error |\n|---|---|---|---|---|---|---|", flush=True)
    for arch in architectures(a.archs, a.side, a.seed):
        net_facts = dict(channel_mul=a.channel_mul, in_channels=arch["in_channels"], num_classes=arch["num_classes"])
        pred = memory.predict(arch["codes"], (a.side,) * 3, a.batch, amp=a.amp,
                              device_type=device.type, **net_facts)
        meas = measure(arch, a.side, a.channel_mul, a.batch, device, a.amp, a.full_backward)
        row = dict(arch=arch["name"], in_channels=arch["in_channels"], num_classes=arch["num_classes"],
                   pred_activations_mb=pred.mb("activations"), meas_activations_mb=meas["activations"] / memory.MB,
                   pred_total_mb=pred.mb(total_key), meas_total_mb=meas[total_key] / memory.MB,
                   step_s=round(meas["seconds"], 2))
        row["act_rel_error"] = row["pred_activations_mb"] / row["meas_activations_mb"] - 1
        row["total_rel_error"] = row["pred_total_mb"] / row["meas_total_mb"] - 1
        rows.append(row)
        print(f"| {row['arch']} | {row['pred_activations_mb']:.2f} | {row['meas_activations_mb']:.2f} | "
              f"{row['act_rel_error']:+.2%} | {row['pred_total_mb']:.2f} | {row['meas_total_mb']:.2f} | "
              f"{row['total_rel_error']:+.2%} |", flush=True)
    act = _stats([r["pred_activations_mb"] for r in rows], [r["meas_activations_mb"] for r in rows])
    tot = _stats([r["pred_total_mb"] for r in rows], [r["meas_total_mb"] for r in rows])
    print(f"\nactivations: Spearman {act['spearman']:.4f}, median relative error {act['median_rel_error']:.2%} "
          f"(max {act['max_rel_error']:.2%})")
    print(f"{total_key}: Spearman {tot['spearman']:.4f}, median relative error {tot['median_rel_error']:.2%} "
          f"(max {tot['max_rel_error']:.2%})")
    for r in rows:
        for k in ("pred_activations_mb", "meas_activations_mb", "pred_total_mb", "meas_total_mb", "act_rel_error",
                  "total_rel_error"):
            r[k] = round(r[k], 4)
    result = dict(bench="memory", env=environment(a.threads, a.device),
                  device=a.device, gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
                  torch=torch.__version__, side=a.side, channel_mul=a.channel_mul, batch=a.batch, amp=a.amp,
                  threads=a.threads, archs=len(rows), total_measure=total_key, activations=act, total=tot,
                  seconds=round(time.perf_counter() - t0, 1), rows=rows)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
