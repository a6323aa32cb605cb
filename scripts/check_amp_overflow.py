#!/usr/bin/env python
"""Check, on a GPU, that an AMP overflow is absorbed by the grad scaler as the stages use it (docs/reliability.md).

    python scripts/check_amp_overflow.py [--steps 30]

Trains a small discrete network with ``dints.train.optim.optimise`` (the search's and retraining's step) under
``torch.autocast`` with a grad scaler started at 2^40, so the first float16 gradients overflow. Expected: the
overflowing steps change no weight and lower the scale, the loss stays finite (so the training loop never counts
them as faults), later steps train, and every weight stays finite. Prints a table and one final JSON line; exits 1 if
an expectation fails, 0 with a note when no GPU is present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from dints.space.decode import decode  # noqa: E402
from dints.space.network import DiscreteNet  # noqa: E402
from dints.train.losses import seg_loss_fn  # noqa: E402
from dints.train.optim import optimise  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "note": "no GPU: nothing to check"}))
        return 0
    torch.manual_seed(0)
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    d = decode(torch.randn(4, 4, generator=g), torch.randn(4, 4, 5, generator=g))
    net = DiscreteNet((d.node_a, d.arch_code_a, d.arch_code_c), 1, 3, channel_mul=0.5).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 40)
    loss_fn = seg_loss_fn()
    x = torch.randn(2, 1, 64, 64, 64, device=dev)
    y = (x > 0.5).long() + (x > 1.5).long()
    rows, ok = [], True
    for step in range(a.steps):
        before = [q.detach().clone() for q in net.parameters()]
        scale = scaler.get_scale()
        with torch.autocast("cuda", dtype=torch.float16):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        stepped = optimise(loss, opt, scaler, list(net.parameters()), 0.5)
        changed = any(not torch.equal(b, q) for b, q in zip(before, net.parameters()))
        finite = all(bool(torch.isfinite(q).all()) for q in net.parameters())
        rows.append({"step": step, "scale": scale, "loss": float(loss), "loss_finite": bool(torch.isfinite(loss)),
                     "counted_ok": stepped, "weights_changed": changed, "weights_finite": finite})
        ok &= finite and bool(torch.isfinite(loss)) and stepped
    skipped = [r["step"] for r in rows if not r["weights_changed"]]
    trained = [r["step"] for r in rows if r["weights_changed"]]
    ok &= bool(skipped) and skipped[0] == 0 and bool(trained) and rows[-1]["scale"] < 2.0 ** 40
    print("| step | scale | loss | weights changed | weights finite |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['scale']:.3g} | {r['loss']:.4f} | {r['weights_changed']} | {r['weights_finite']} |")
    print(json.dumps({"cuda": True, "gpu": torch.cuda.get_device_name(), "overflow_steps_skipped": skipped,
                      "steps_trained": len(trained), "final_scale": rows[-1]["scale"], "ok": bool(ok)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
