#!/usr/bin/env python
"""Predict the GPU memory of one retraining step of an architecture (dints.space.network_memory).

    python scripts/predict_memory.py --arch work/search-bilevel-ent-mem0.8-Task99_Demo/arch.json \\
        --patch 96 96 96 --batch 2 --num_classes 3 --amp --gpu_mb 24000

Prints one summary line (activations, parameters/gradients/momentum, the rest, the total, in MB) and a JSON line
with every part; ``--gpu_mb`` adds the largest batch whose predicted total fits that GPU with ``--headroom`` kept free.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))
from dints.errors import UserError  # noqa: E402
from dints.pipeline.cli import OneLineParser, cli_main  # noqa: E402
from dints.space.archfile import read_arch  # noqa: E402
from dints.space.network import retrain_channel_mul  # noqa: E402
from dints.space.network_memory import Prediction, largest_batch, predict  # noqa: E402


def main(argv: list[str] | None = None) -> Prediction:
    """Print the predicted memory of retraining an architecture file (one summary line and a JSON line)."""
    ap = OneLineParser(prog="predict_memory.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", required=True, help="arch.json or MONAI arch-code .pth")
    ap.add_argument("--patch", type=int, nargs=3, default=[96, 96, 96], metavar=("X", "Y", "Z"), help="crop size")
    ap.add_argument("--batch", type=int, default=2, help="crops per step and GPU (batch_size * num_samples)")
    ap.add_argument("--channel_mul", type=float, default=None, help="default: twice the search's, as retrain.py")
    ap.add_argument("--in_channels", type=int, default=1, help="image channels")
    ap.add_argument("--num_classes", type=int, default=2, help="classes, background included")
    ap.add_argument("--amp", action="store_true", help="mixed precision (torch.autocast on a GPU)")
    ap.add_argument("--gpu_mb", type=float, default=None,
                    help="also print the largest batch whose predicted total fits this much GPU memory (MB)")
    ap.add_argument("--headroom", type=float, default=0.15,
                    help="with --gpu_mb: fraction of it kept free for the CUDA context, cuDNN workspace and allocator")
    a = ap.parse_args(argv)
    arch = read_arch(a.arch)
    mul = retrain_channel_mul(a.channel_mul, arch)
    try:
        pred = predict(arch, a.patch, a.batch, mul, a.in_channels, a.num_classes, amp=a.amp)
    except ValueError as err:
        raise UserError(f"--patch: {err}") from None
    print(pred.summary())
    out = pred.to_dict()
    if a.gpu_mb is not None:
        out["largest_batch"] = largest_batch(arch, a.patch, a.gpu_mb * (1 - a.headroom), mul, a.in_channels,
                                             a.num_classes, amp=a.amp)
        print(f"largest batch for patch {'x'.join(map(str, a.patch))} within {a.gpu_mb:g} MB less "
              f"{a.headroom:.0%} headroom: {out['largest_batch']}")
    print(json.dumps(out))
    return pred


if __name__ == "__main__":
    cli_main(main)
