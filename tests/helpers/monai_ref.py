"""MONAI DiNTS as an independent reference: building MONAI networks, mapping their weights into ours, and
generating random valid architectures.

The mapping is by module correspondence (ours -> MONAI):

- ``stems.{d}.conv/norm/conv_1/norm_1``  -> ``stem_down.{d}.mod.1/2/4/5``
- ``cells.{b}_{p}.resample.*``           -> ``dints_space.cell_tree.({b}, {p}).preprocess.*``
- ``cells.{b}_{p}.ops.{k}.*`` (supernet) -> ``dints_space.cell_tree.({b}, {p}).op.ops.{k}.*``
- ``cells.{b}_{p}.op.*`` (discrete)      -> ``dints_space.cell_tree.({b}, {p}).op.ops.0.*``
- ``decoder.stages.{r}.conv/norm``       -> ``stem_up.{r}.mod.1/2``
- ``head.block.*``, ``head.out.*``       -> ``stem_finals.0.*``, ``stem_finals.1.*``
- ``alpha_a``, ``alpha_c``               -> ``dints_space.log_alpha_a``, ``dints_space.log_alpha_c``
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.networks.nets import DiNTS, TopologyInstance, TopologySearch


@pytest.fixture(autouse=True)
def single_thread():
    """Run a test on one intra-op thread: the machine is shared, and OpenMP threads that wait on each other under
    contention make these small networks many times slower. Import it into a test module to apply it there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_RULES = [
    (r"^stems\.(\d+)\.conv\.(.*)$", r"stem_down.\1.mod.1.\2"),
    (r"^stems\.(\d+)\.norm\.(.*)$", r"stem_down.\1.mod.2.\2"),
    (r"^stems\.(\d+)\.conv_1\.(.*)$", r"stem_down.\1.mod.4.\2"),
    (r"^stems\.(\d+)\.norm_1\.(.*)$", r"stem_down.\1.mod.5.\2"),
    (r"^cells\.(\d+)_(\d+)\.resample\.(.*)$", r"dints_space.cell_tree.(\1, \2).preprocess.\3"),
    (r"^cells\.(\d+)_(\d+)\.ops\.(\d+)\.(.*)$", r"dints_space.cell_tree.(\1, \2).op.ops.\3.\4"),
    (r"^cells\.(\d+)_(\d+)\.op\.(.*)$", r"dints_space.cell_tree.(\1, \2).op.ops.0.\3"),
    (r"^decoder\.stages\.(\d+)\.conv\.(.*)$", r"stem_up.\1.mod.1.\2"),
    (r"^decoder\.stages\.(\d+)\.norm\.(.*)$", r"stem_up.\1.mod.2.\2"),
    (r"^head\.block\.(.*)$", r"stem_finals.0.\1"),
    (r"^head\.out\.(.*)$", r"stem_finals.1.\1"),
    (r"^alpha_a$", r"dints_space.log_alpha_a"),
    (r"^alpha_c$", r"dints_space.log_alpha_c"),
]


def monai_name(ours: str) -> str:
    """MONAI ``DiNTS`` parameter name corresponding to one of our parameter names."""
    for pattern, repl in _RULES:
        if re.match(pattern, ours):
            return re.sub(pattern, repl, ours)
    raise KeyError(f"no MONAI counterpart rule for {ours!r}")


def load_from_monai(ours: nn.Module, ref: nn.Module, exclude: tuple[str, ...] = ()) -> None:
    """Copy every parameter of ``ours`` (but those named in ``exclude``) from its MONAI counterpart in ``ref``."""
    ref_params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name in exclude:
                continue
            q = ref_params[monai_name(name)]
            assert p.shape == q.shape, (name, tuple(p.shape), tuple(q.shape))
            p.copy_(q)


def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Give every parameter random values (norm affine weights around 1), so a wrong mapping shows in outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "log_alpha" in name or name.startswith("alpha"):
                continue
            if p.dim() == 1:  # InstanceNorm affine weight/bias or a conv bias
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def path_ends(num_depths: int) -> tuple[list[int], list[int]]:
    """Source and target level of each path, written out from docs/method.md, "Search space" (independent of
    dints.space.topology)."""
    p = 3 * num_depths - 2
    return [(i + 1) // 3 - 1 + (i + 1) % 3 for i in range(p)], [(i + 1) // 3 for i in range(p)]


def random_arch(num_blocks: int, num_depths: int, num_ops: int, seed: int) -> tuple[np.ndarray, ...]:
    """A random architecture that MONAI's decoding could produce: each block reads exactly the previous block's
    outputs (every active node has at least one outgoing path).

    Returns:
        ``(node_a (B+1, D), arch_code_a (B, P), arch_code_c (B, P))`` int64 numpy arrays.
    """
    rng = np.random.default_rng(seed)
    src, tgt = path_ends(num_depths)
    p = len(src)
    node_a = np.zeros((num_blocks + 1, num_depths), dtype=np.int64)
    code_a = np.zeros((num_blocks, p), dtype=np.int64)
    nodes = rng.random(num_depths) < 0.6
    if not nodes.any():
        nodes[rng.integers(num_depths)] = True
    node_a[0] = nodes
    for b in range(num_blocks):
        for level in np.flatnonzero(nodes):
            out = [i for i in range(p) if src[i] == level]
            take = rng.random(len(out)) < 0.5
            if not take.any():
                take[rng.integers(len(out))] = True
            code_a[b, [i for i, t in zip(out, take) if t]] = 1
        nodes = np.zeros(num_depths, dtype=bool)
        nodes[[tgt[i] for i in range(p) if code_a[b, i]]] = True
        node_a[b + 1] = nodes
    code_c = rng.integers(0, num_ops, size=(num_blocks, p)).astype(np.int64) * code_a
    return node_a, code_a, code_c


def monai_discrete(node_a, code_a, code_c, in_channels, num_classes, channel_mul, num_depths) -> DiNTS:
    """MONAI's ``TopologyInstance`` + ``DiNTS`` for an architecture (MONAI's construction print is silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        space = TopologyInstance(
            arch_code=[np.asarray(code_a), np.asarray(code_c)],
            channel_mul=channel_mul,
            num_blocks=code_a.shape[0],
            num_depths=num_depths,
            use_downsample=True,
        )
    return DiNTS(space, in_channels, num_classes, use_downsample=True, node_a=torch.as_tensor(node_a))


def monai_search(in_channels, num_classes, channel_mul, num_blocks, num_depths, use_downsample=True) -> DiNTS:
    """MONAI's ``TopologySearch`` + ``DiNTS`` (all paths, all five ops)."""
    with contextlib.redirect_stdout(io.StringIO()):
        space = TopologySearch(
            channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths, use_downsample=use_downsample
        )
    return DiNTS(space, in_channels, num_classes, use_downsample=use_downsample)
