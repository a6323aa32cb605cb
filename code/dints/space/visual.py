"""Pictures of a searched architecture and of a network's autograd graph.

:func:`arch_graph` lays an :class:`~dints.space.archfile.Arch` out on a grid: resolution levels are rows (finest on
top), block boundaries are columns, active nodes are filled circles and each active path is an arrow carrying its
op's name. Coordinates are pinned and drawn with graphviz's ``neato -n``, so the picture never depends on the layout
engine's heuristics. :func:`render_autograd` draws the autograd graph of one tiny forward pass with torchviz.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import graphviz
import torch

from dints.space import topology
from dints.space.archfile import Arch, save_arch
from dints.space.opsets import OP_TABLE

#: One colour per op index; skip is grey so the convolutions stand out.
OP_COLOURS = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

# Layout in points (neato -n reads positions in points): distance between block boundaries and between levels.
_DX, _DY = 190.0, 120.0


def _pos(x: float, y: float) -> str:
    return f"{x:.1f},{y:.1f}!"


def arch_graph(arch: Arch, title: str | None = None) -> graphviz.Digraph:
    """Graphviz picture of an architecture.

    Args:
        arch: the architecture.
        title: caption; by default task, fold, iteration and memory figures from ``arch``.

    Returns:
        A ``graphviz.Digraph`` (engine ``neato`` with pinned positions), ready for ``render``.
    """
    node_a, code_a, code_c = (t.tolist() for t in arch.codes())
    src, tgt, _ = (t.tolist() for t in topology.path_table(arch.num_depths))
    depth = arch.num_depths

    def xy(boundary: int, level: float) -> tuple[float, float]:
        # Level 0 (finest) on top; graphviz's y axis points up.
        return 120.0 + boundary * _DX, (depth - 1 - level) * _DY + 40.0

    g = graphviz.Digraph("arch", engine="neato")
    g.attr("graph", outputorder="edgesfirst", splines="false", overlap="true", pad="0.3", label=title or _caption(arch),
           labelloc="t", fontname="Helvetica", fontsize="18")
    g.attr("node", fontname="Helvetica", fontsize="11")
    g.attr("edge", arrowsize="0.6", penwidth="1.6")

    for lvl in range(depth):
        x, y = xy(0, lvl)
        g.node(f"row{lvl}", f"level {lvl}\\n1/{2 ** (lvl + int(arch.use_downsample))}", shape="plaintext",
               pos=_pos(x - 95.0, y), fontsize="13")
    for blk in range(arch.num_blocks):
        x, y = xy(blk, -0.55)
        g.node(f"col{blk}", f"block {blk}", shape="plaintext", pos=_pos(x + _DX / 2, y), fontsize="13")

    for b, row in enumerate(node_a):
        for lvl, on in enumerate(row):
            x, y = xy(b, lvl)
            style = {"style": "filled", "fillcolor": "#f2c14e", "width": "0.32"} if on else {
                "style": "filled", "fillcolor": "#e6e6e6", "color": "#c8c8c8", "width": "0.12"}
            g.node(f"n{b}_{lvl}", "", shape="circle", fixedsize="true", pos=_pos(x, y), **style)

    for blk in range(arch.num_blocks):
        for i, on in enumerate(code_a[blk]):
            if not on:
                continue
            op = code_c[blk][i]
            colour = OP_COLOURS[op % len(OP_COLOURS)]
            # The op name sits a third of the way along its path: crossing up/down paths meet half way, so labels at
            # the midpoint would overlap, while at one third every label of a block gets its own height.
            x0, y0 = xy(blk, src[i])
            x1, y1 = xy(blk + 1, tgt[i])
            label = f"op{blk}_{i}"
            g.node(label, OP_TABLE[arch.ops[op]].label, shape="box", style="rounded,filled",
                   fillcolor="white", color=colour, fontcolor=colour, fontsize="10", margin="0.03,0.01",
                   width="0", height="0", pos=_pos(x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 3))
            g.edge(f"n{blk}_{src[i]}", label, color=colour, arrowhead="none")
            g.edge(label, f"n{blk + 1}_{tgt[i]}", color=colour)

    legend = "  ".join(f"{k}: {name}" for k, name in enumerate(arch.ops))
    x, y = xy(0, depth - 0.45)
    g.node("legend", f"ops ({'opset ' + str(arch.opset)})  {legend}", shape="plaintext", fontsize="12",
           pos=_pos(x + arch.num_blocks * _DX / 2, y))
    return g


def _caption(arch: Arch) -> str:
    parts = [f"DiNTS architecture: {arch.num_blocks} blocks x {arch.num_depths} levels"]
    where = [f"task {arch.task}" if arch.task else "", f"fold {arch.fold}" if arch.fold is not None else "",
             f"iteration {arch.iteration}" if arch.iteration is not None else ""]
    if any(where):
        parts.append(", ".join(w for w in where if w))
    if arch.mem_ratio is not None:
        budget = f" (budget {arch.mem_budget:g})" if arch.mem_budget is not None else ""
        parts.append(f"memory {arch.mem_ratio:.3f} of the full supernet{budget}")
    return "\\n".join(parts)


def render_arch(
    arch: Arch, out_dir: str | os.PathLike[str], name: str = "arch", formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Draw an architecture to image files.

    Args:
        arch: the architecture.
        out_dir: folder for the images (created if missing).
        name: file name stem.
        formats: graphviz output formats.

    Returns:
        The written files, one per format, e.g. ``[out_dir/arch.png, out_dir/arch.svg]``.
    """
    graph = arch_graph(arch)
    return _render(graph, Path(out_dir), name, formats, neato_no_op=2)


def write_arch_files(arch: Arch, out_dir: str | os.PathLike[str], name: str, log) -> None:
    """``<name>.json`` and its picture; a picture graphviz cannot draw is skipped with a warning on ``log``."""
    save_arch(arch, Path(out_dir) / f"{name}.json")
    try:
        render_arch(arch, out_dir, name=name)
    except Exception as exc:  # graphviz's `dot` missing or failing must not stop a long search
        log.warning("could not draw %s (%s)", name, exc)


def _render(
    graph: graphviz.Digraph, out_dir: Path, name: str, formats: Sequence[str], neato_no_op: int | None = None
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = out_dir / f"{name}.{fmt}"
        # ``pipe`` rather than ``render``: graphviz would otherwise leave a DOT source file beside every image.
        target.write_bytes(graph.pipe(format=fmt, neato_no_op=neato_no_op))
        written.append(target)
    return written


def render_autograd(
    arch: Arch,
    out_dir: str | os.PathLike[str],
    in_channels: int = 1,
    num_classes: int = 2,
    channel_mul: float | None = None,
    name: str = "autograd",
    formats: Sequence[str] = ("png", "svg"),
) -> list[Path]:
    """Draw the autograd graph of one forward pass of the discrete network with torchviz.

    The input is the smallest valid volume, ``(1, in_channels, s, s, s)`` with ``s = 2**(D + use_downsample)``,
    so the picture shows the structure, not a realistic workload.

    Args:
        arch: the architecture.
        out_dir: folder for the images.
        in_channels: image channels.
        num_classes: output classes.
        channel_mul: channel multiplier of the network (default: the search's ``arch.channel_mul``).
        name: file name stem.
        formats: graphviz output formats.

    Returns:
        The written files.

    Raises:
        ImportError: the discrete network module ``dints.space.network`` is not available.
    """
    # Imported here so that drawing architectures works without the network code (and without torchviz).
    from torchviz import make_dot

    from dints.space.network import DiscreteNet

    net = DiscreteNet(arch, in_channels, num_classes, arch.channel_mul if channel_mul is None else channel_mul)
    side = 2 ** (arch.num_depths + int(arch.use_downsample))
    out = net(torch.randn(1, in_channels, side, side, side))
    dot = make_dot(out, params=dict(net.named_parameters()))
    return _render(dot, Path(out_dir), name, formats)
