"""Draw a searched architecture (and optionally a network's autograd graph) to PNG and SVG.

Usage::

    python code/visualize.py <run>/arch.json --out <run>/figures
    python code/visualize.py <run>/arch.json --out <run>/figures --autograd --in-channels 1 --num-classes 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dints.space.archfile import load_arch
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
        arch_path: an ``arch.json``.
        out_dir: folder for the images.
        autograd: also draw the autograd graph of one tiny forward pass of the discrete network.
        in_channels: image channels for that forward pass.
        num_classes: output classes for that forward pass.
        channel_mul: channel multiplier of that network (default: the search's).

    Returns:
        The written image files.

    Raises:
        ValueError: invalid architecture file.
    """
    arch = load_arch(arch_path)
    written = render_arch(arch, out_dir, name=arch_path.stem)
    if autograd:
        name = f"{arch_path.stem}_autograd"
        written += render_autograd(arch, out_dir, in_channels, num_classes, channel_mul, name=name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("arch", type=Path, help="architecture file (arch.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the PNG and SVG files")
    parser.add_argument("--autograd", action="store_true", help="also draw the autograd graph of a tiny forward pass")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels for --autograd (default 1)")
    parser.add_argument("--num-classes", type=int, default=2, help="output classes for --autograd (default 2)")
    parser.add_argument("--channel-mul", type=float, default=None,
                        help="channel multiplier for --autograd (default: the search's)")
    args = parser.parse_args(argv)
    try:
        written = run_visualize(
            args.arch, args.out, args.autograd, args.in_channels, args.num_classes, args.channel_mul
        )
    except ValueError as err:
        print(f"visualize: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"visualize: --autograd needs the discrete network ({err})", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
