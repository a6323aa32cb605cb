"""Architecture pictures (dints.space.visual): the graph, its labels and files, the autograd graph."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dints.space import visual
from dints.space.archfile import Arch

ROOT = Path(__file__).resolve().parents[2]

# D=2, B=2: block 0 = paths 0 (0->0, conv_3x3x3) and 2 (0->1, conv_1x3x3); block 1 = paths 2 (skip) and 3 (conv_3x1x3).
ARCH = Arch(
    num_blocks=2,
    num_depths=2,
    opset=1,
    ops=["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"],
    node_a=[[1, 0], [1, 1], [0, 1]],
    arch_code_a=[[1, 0, 1, 0], [0, 0, 1, 1]],
    arch_code_c=[[1, 2, 4, 2], [2, 2, 0, 3]],
    channel_mul=0.125,
    mem_budget=0.8,
    mem_ratio=0.75,
    task="Task99_Demo",
    fold=1,
    iteration=40,
)


def test_graph_shows_active_nodes_and_paths():
    src = visual.arch_graph(ARCH).source
    # one op label per active path, carrying the op chosen for it
    labels = {k: v.strip('"') for k, v in re.findall(r'(op\d+_\d+) \[label=("[^"]+"|\w+)', src)}
    assert labels == {"op0_0": "3x3x3", "op0_2": "p3d 1x3x3", "op1_2": "skip", "op1_3": "p3d 3x1x3"}
    # each path runs from its source node at boundary b to its target node at boundary b+1
    edges = set(re.findall(r"(\w+) -> (\w+)", src))
    for blk, i, s, t in [(0, 0, 0, 0), (0, 2, 0, 1), (1, 2, 0, 1), (1, 3, 1, 1)]:
        assert (f"n{blk}_{s}", f"op{blk}_{i}") in edges and (f"op{blk}_{i}", f"n{blk + 1}_{t}") in edges
    assert len(edges) == 8
    # active nodes are big and filled; inactive ones small grey dots
    active = set(re.findall(r'(n\d+_\d+) \[label="" [^\]]*fillcolor="#f2c14e"', src))
    assert active == {"n0_0", "n1_0", "n1_1", "n2_1"}
    assert "Task99_Demo" in src and "block 1" in src and "level 1" in src


def test_render_png_and_svg(tmp_path):
    files = visual.render_arch(ARCH, tmp_path / "fig")
    assert [f.name for f in files] == ["arch.png", "arch.svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = files[1].read_text()
    assert "<svg" in svg and "p3d 1x3x3" in svg and "block 0" in svg
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["arch.png", "arch.svg"]  # no DOT leftovers


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchviz uses distutils' LooseVersion
def test_autograd_graph(tmp_path):
    files = visual.render_autograd(ARCH, tmp_path, in_channels=1, num_classes=2, formats=("svg",))
    svg = files[0].read_text()
    assert "Backward" in svg  # autograd nodes
    assert "cells" in svg or "stems" in svg  # named parameters of the discrete network
