#!/usr/bin/env python
"""Draw a searched architecture (and optionally a network's autograd graph) to PNG and SVG.

    python code/visualize.py <run>/arch.json --out <run>/figures
    python code/visualize.py <run>/arch.pth --out figures --autograd --in_channels 1 --num_classes 2

The architecture is an ``arch.json`` or a MONAI arch-code ``.pth``. The picture shows levels as rows and blocks as
columns, with the op name on each active path; ``--autograd`` adds the autograd graph of one tiny forward pass of
the discrete network.
"""

from __future__ import annotations

from pathlib import Path

from dints.pipeline.cli import OneLineParser, cli_main
from dints.space.archfile import read_arch
from dints.space.visual import render_arch, render_autograd


def run_visualize(
    arch_path: Path,
    out_dir: Path,
    autograd: bool = False,
    in_channels: int = 1,
    num_classes: int = 2,
    channel_mul: float | None = None,
) -> list[Path]:
    """Render ``arch_path`` into ``out_dir``.

    Args:
        arch_path: an ``arch.json`` or a MONAI arch-code ``.pth``.
        out_dir: folder for the images.
        autograd: also draw the autograd graph of one tiny forward pass of the discrete network.
        in_channels: image channels for that forward pass.
        num_classes: output classes for that forward pass.
        channel_mul: channel multiplier of that network (default: the search's).

    Returns:
        The written image files.

    Raises:
        ArchError: a missing or invalid architecture file (naming it).
    """
    arch = read_arch(arch_path)
    written = render_arch(arch, out_dir, name=arch_path.stem)
    if autograd:
        written += render_autograd(arch, out_dir, in_channels, num_classes, channel_mul, name=f"{arch_path.stem}_autograd")
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    p = OneLineParser(prog="visualize.py", description=__doc__.split("\n\n")[0])
    p.add_argument("arch", type=Path, help="architecture file (arch.json or a MONAI arch-code .pth)")
    p.add_argument("--out", type=Path, required=True, help="output folder for the PNG and SVG files")
    p.add_argument("--autograd", action="store_true", help="also draw the autograd graph of a tiny forward pass")
    p.add_argument("--in_channels", "--in-channels", type=int, default=1, help="input channels for --autograd (default 1)")
    p.add_argument("--num_classes", "--num-classes", type=int, default=2,
                   help="output classes for --autograd (default 2)")
    p.add_argument("--channel_mul", "--channel-mul", type=float, default=None,
                   help="channel multiplier for --autograd (default: the search's)")
    a = p.parse_args(argv)
    written = run_visualize(a.arch, a.out, a.autograd, a.in_channels, a.num_classes, a.channel_mul)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    cli_main(main)
