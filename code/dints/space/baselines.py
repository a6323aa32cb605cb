"""Baseline architectures for retraining: networks of the search space chosen without a search (docs/method.md,
"Baselines").

- :func:`random_arch`: drawn uniformly among the topology-consistent architectures whose decoded memory ratio lies
  within :data:`MEM_TOLERANCE` of a target, with ops drawn uniformly for every path.
- :func:`unet_arch`: a hand-designed U: down from level 0 to the deepest level and back up, one 3x3x3 convolution
  per block on that chain, identity skip connections carrying each level across the blocks below it.
- :func:`cvpr_arch`: the DiNTS CVPR 2021 architecture as MONAI's tutorial ships it (``archs/cvpr2021.json``).

Each returns an :class:`~dints.space.archfile.Arch` with its ``mem_ratio``
(:func:`dints.space.relax.decoded_memory_ratio`). The sampling runs in numpy on small tables (well under a second at
``D = 4``, ``B = 12``) and depends only on its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dints.space import relax, topology
from dints.space.archfile import Arch, load_arch

#: A random baseline's memory ratio is within this distance of its target.
MEM_TOLERANCE = 0.03
#: The op of the U's chain; the skip connections use ``skip_connect``.
UNET_OP = "conv_3x3x3"
SKIP_OP = "skip_connect"
#: The published architecture, converted once from MONAI's codes (``archs/README.md``).
CVPR_FILE = Path(__file__).resolve().parent / "archs" / "cvpr2021.json"


def memory_ratio(arch: Arch, in_shape: Sequence[int]) -> float:
    """The architecture's decoded memory ratio at its own channel multiplier, as the search computes ``mem_ratio``:
    ``in_shape`` is ``(batch_size * num_samples, in_channels, *patch_size)``. Every level scales alike with the batch
    and the patch, so the ratio does not depend on them (as long as the patch divides down to the deepest level)."""
    code_a, code_c = np.asarray(arch.arch_code_a), np.asarray(arch.arch_code_c)
    return relax.decoded_memory_ratio(code_a, code_c, arch.ops, in_shape, arch.channel_mul, arch.use_downsample)


def _with_ratio(arch: Arch, in_shape: Sequence[int]) -> Arch:
    arch.mem_ratio = round(memory_ratio(arch, in_shape), 6)
    return arch


# --- random ---------------------------------------------------------------------------------------------------------


def _pick(weights: np.ndarray, rng: np.random.Generator) -> int:
    # One index drawn with probability proportional to `weights` (non-negative, not all zero).
    cum = np.cumsum(weights)
    return int(min(np.searchsorted(cum, rng.random() * cum[-1], side="right"), len(cum) - 1))


def _least_units(units: np.ndarray, in_idx: np.ndarray, out_idx: np.ndarray, num_patterns: int) -> int:
    # The fewest units any consistent sequence of children uses (a min-plus pass over node patterns).
    best = np.zeros(num_patterns, dtype=np.int64)
    for b in range(units.shape[0]):
        total = units[b] + (best[in_idx] if b > 0 else 0)
        best = np.full(num_patterns, np.iinfo(np.int64).max)
        np.minimum.at(best, out_idx, total)
    return int(best.min())


def sample_children(units: np.ndarray, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray | None:
    """One consistent sequence of children, uniformly among those whose total memory is within ``[lo, hi]`` units.

    A counting pass over node patterns: ``count[b][n, u]`` is the number of consistent sequences of blocks ``0..b``
    whose last block writes pattern ``n`` with ``u`` units in all (rescaled per block, which leaves the ratios the
    draw uses unchanged). The final pattern and total are drawn in proportion to the counts in the window, then each
    block's child backwards in proportion to the sequences it completes, which makes every admissible sequence
    equally likely.

    Args:
        units: ``(B, 2**P - 1)`` non-negative ints, each child's memory in units (children in
            :func:`dints.space.topology.children` order).
        lo, hi: the window of total units.
        rng: the generator the draws come from.

    Returns:
        ``(B,)`` child indices, or None when no consistent sequence lies in the window.
    """
    num_blocks, n_children = units.shape
    num_depths = topology.depths_from_children(n_children)
    in_idx, out_idx = (t.numpy() for t in topology.child_patterns(num_depths))
    m = topology.num_patterns(num_depths)
    width = hi + 1
    if width <= 0:
        return None
    order = np.argsort(out_idx, kind="stable")  # children grouped by the pattern they write
    starts = np.searchsorted(out_idx[order], np.arange(m))
    shift = int(units.max())
    counts = np.zeros((num_blocks, m, width))
    for b in range(num_blocks):
        if b == 0:  # block 0 reads any pattern: one way per child, at its own units
            ways = (np.arange(width)[None, :] == units[0][:, None]).astype(np.float64)
        else:  # the sequences of blocks 0..b-1 that end in the child's input pattern, u - units before
            padded = np.concatenate([np.zeros((m, shift)), counts[b - 1]], axis=1)
            cols = np.arange(width)[None, :] - units[b][:, None] + shift
            ways = padded[in_idx[:, None], np.maximum(cols, 0)] * (cols >= 0)
        block = np.add.reduceat(ways[order], starts, axis=0)  # (patterns, width)
        top = block.max()
        counts[b] = block / top if top > 0 else block
    final = counts[-1][:, max(lo, 0):]
    if not final.any():
        return None
    flat = _pick(final.ravel(), rng)
    pattern, used = divmod(flat, final.shape[1])
    used += max(lo, 0)
    picked = np.empty(num_blocks, dtype=np.int64)
    for b in range(num_blocks - 1, -1, -1):
        group = order[starts[pattern]: starts[pattern + 1] if pattern + 1 < m else n_children]
        rest = used - units[b, group]
        if b == 0:
            w = (rest == 0).astype(np.float64)
        else:
            w = np.where(rest >= 0, counts[b - 1][in_idx[group], np.maximum(rest, 0)], 0.0)
        picked[b] = group[_pick(w, rng)]
        used -= int(units[b, picked[b]])
        pattern = int(in_idx[picked[b]])
    return picked


def random_arch(
    num_blocks: int,
    num_depths: int,
    opset: int,
    ops: Sequence[str],
    target: float,
    seed: int,
    in_shape: Sequence[int],
    channel_mul: float,
    use_downsample: bool = True,
    tolerance: float = MEM_TOLERANCE,
) -> Arch:
    """A random topology-consistent architecture whose memory ratio is within ``tolerance`` of ``target``.

    Every path's op is drawn uniformly from ``ops`` (inactive paths keep theirs: they enter the ratio's full
    architecture, as a decoded architecture's do). With those ops, each child's memory is rounded to units of
    ``min(1e-3, tolerance / (2B))`` of the full architecture, and the sequence of children is drawn uniformly among the
    consistent ones whose total falls in the window shrunk by the largest rounding error (``B / 2`` units), so the
    exact ratio is always within ``tolerance`` (:func:`sample_children`). Everything comes from
    ``numpy.random.default_rng(seed)``.

    Args:
        num_blocks, num_depths: B and D.
        opset, ops: the op set and its ops in index order.
        target: the memory ratio to draw at, in (0, 1].
        seed: the generator's seed (>= 0).
        in_shape: ``(batch_size * num_samples, in_channels, *patch_size)``, see :func:`memory_ratio`.
        channel_mul, use_downsample: the search space's (recorded in the architecture).
        tolerance: the largest distance of the ratio from ``target``.

    Returns:
        The architecture, with ``mem_ratio``.

    Raises:
        ValueError: no consistent architecture of that space has a ratio within ``tolerance`` of ``target`` (the
            message gives the least ratio there is).
    """
    rng = np.random.default_rng(seed)
    p = topology.num_paths(num_depths)
    code_c = rng.integers(0, len(ops), size=(num_blocks, p))
    share = relax.decoded_path_memory(code_c, ops, in_shape, channel_mul, use_downsample).numpy()  # (B, P)
    kids = topology.children(num_depths).numpy()  # (C, P)
    res = min(1e-3, tolerance / (2 * num_blocks))
    units = np.rint(share @ kids.T / res).astype(np.int64)  # (B, C); each within res / 2 of the child's memory
    margin = num_blocks / 2
    lo = math.ceil((target - tolerance) / res + margin - 1e-9)
    hi = math.floor((target + tolerance) / res - margin + 1e-9)
    picked = sample_children(units, lo, hi, rng)
    if picked is None:
        in_idx, out_idx = (t.numpy() for t in topology.child_patterns(num_depths))
        least = _least_units(units, in_idx, out_idx, topology.num_patterns(num_depths)) * res
        raise ValueError(f"no topology-consistent architecture of {num_blocks} blocks and {num_depths} levels has a "
                         f"memory ratio within {tolerance:g} of {target:g} (the least is about {least:.3f})")
    in_idx, out_idx = (t.numpy() for t in topology.child_patterns(num_depths))
    patterns = topology.node_patterns(num_depths).numpy()
    node_a = np.concatenate([patterns[in_idx[picked[:1]]], patterns[out_idx[picked]]], axis=0)
    arch = Arch(num_blocks=num_blocks, num_depths=num_depths, opset=opset, ops=list(ops), node_a=node_a,
                arch_code_a=kids[picked], arch_code_c=code_c, use_downsample=use_downsample, channel_mul=channel_mul)
    arch = _with_ratio(arch, in_shape)
    if not abs(memory_ratio(arch, in_shape) - target) <= tolerance + 1e-12:  # the rounding bound guarantees it
        raise AssertionError(f"drawn memory ratio {arch.mem_ratio} is not within {tolerance} of {target}")
    return arch


# --- unet -----------------------------------------------------------------------------------------------------------


def unet_levels(num_blocks: int, num_depths: int) -> list[int]:
    """The chain's level at each block boundary (``B + 1`` entries), from level 0 down to ``D - 1`` and back to 0.

    The U has ``2D - 1`` stations: levels ``0, 1, ..., D - 1`` (the bottleneck), ``..., 1, 0``. Moving between
    neighbouring stations takes one block, ``2(D - 1)`` in all; the ``R = B - 2(D - 1)`` other blocks stay on their
    level. Each station gets ``R // (2D - 1)`` of them, and the remaining ``R % (2D - 1)`` go in pairs to the two
    stations of level 0, then of level 1, and so on, an odd one to the bottleneck. A station's stays come after the
    block that reaches it. For ``B = 4(D - 1)`` this is two blocks per level on each side, as in U-Net.

    Raises:
        ValueError: fewer than ``2(D - 1)`` blocks (too few to reach the deepest level and come back).
    """
    moves = 2 * (num_depths - 1)
    if num_blocks < moves:
        raise ValueError(f"a U through {num_depths} levels needs at least 2 * ({num_depths} - 1) = {moves} blocks, "
                         f"got {num_blocks}")
    stations = [num_depths - 1 - abs(s - (num_depths - 1)) for s in range(moves + 1)]
    stays_each, extra = divmod(num_blocks - moves, len(stations))
    stays = [stays_each] * len(stations)
    for level in range(extra // 2):
        stays[level] += 1
        stays[moves - level] += 1
    if extra % 2:
        stays[num_depths - 1] += 1
    levels = [0]
    for s, level in enumerate(stations):
        levels += [level] * ((s > 0) + stays[s])
    return levels


def unet_arch(
    num_blocks: int,
    num_depths: int,
    opset: int,
    ops: Sequence[str],
    in_shape: Sequence[int],
    channel_mul: float,
    use_downsample: bool = True,
) -> Arch:
    """A U-shaped architecture: the chain of :func:`unet_levels`, with skip connections.

    With ``h_b`` the chain's level at boundary ``b``, the levels ``0..h_b`` are active there, and block ``b`` has:

    - the chain's path from ``h_b`` to ``h_{b+1}`` (down, same level or up) with :data:`UNET_OP`;
    - a same-level path with :data:`SKIP_OP` (identity) on every other level ``r <= min(h_b, h_{b+1})``: the
      features a level had when the chain left it are carried, unchanged, until the chain comes back up to it and
      the up path's output is added to them (U-Net's skip connection, as a sum).

    Only the level-0 stem is built, and the decoder has nothing to climb: the last block writes level 0. Inactive
    paths carry :data:`UNET_OP`: the ratio's full architecture (every path on, each with its op code) has the skip
    connections' identities where the U has them and :data:`UNET_OP` everywhere else.

    Args:
        num_blocks, num_depths: B (at least ``2(D - 1)``) and D.
        opset, ops: the op set and its ops in index order; they must include both ops.
        in_shape: see :func:`memory_ratio`.
        channel_mul, use_downsample: the search space's (recorded in the architecture).

    Returns:
        The architecture, with ``mem_ratio``.

    Raises:
        ValueError: too few blocks, or ops without :data:`UNET_OP` or :data:`SKIP_OP`.
    """
    for name in (UNET_OP, SKIP_OP):
        if name not in ops:
            raise ValueError(f"the U uses {name}, which the ops {list(ops)} lack")
    conv, skip = list(ops).index(UNET_OP), list(ops).index(SKIP_OP)
    levels = unet_levels(num_blocks, num_depths)
    src, tgt, _ = (t.tolist() for t in topology.path_table(num_depths))
    index = {(s, t): i for i, (s, t) in enumerate(zip(src, tgt))}
    p = topology.num_paths(num_depths)
    code_a = np.zeros((num_blocks, p), dtype=np.int64)
    code_c = np.full((num_blocks, p), conv, dtype=np.int64)
    node_a = np.zeros((num_blocks + 1, num_depths), dtype=np.int64)
    for b in range(num_blocks + 1):
        node_a[b, : levels[b] + 1] = 1
    for b in range(num_blocks):
        here, there = levels[b], levels[b + 1]
        for r in range(min(here, there) + 1):
            code_a[b, index[r, r]] = 1
            code_c[b, index[r, r]] = skip
        code_a[b, index[here, there]] = 1
        code_c[b, index[here, there]] = conv
    arch = Arch(num_blocks=num_blocks, num_depths=num_depths, opset=opset, ops=list(ops), node_a=node_a,
                arch_code_a=code_a, arch_code_c=code_c, use_downsample=use_downsample, channel_mul=channel_mul)
    return _with_ratio(arch, in_shape)


# --- cvpr -----------------------------------------------------------------------------------------------------------


def cvpr_arch(in_shape: Sequence[int] | None = None) -> Arch:
    """The DiNTS CVPR 2021 architecture as MONAI's tutorial ships it: 12 blocks, 4 levels, opset 1, search
    ``channel_mul`` 0.5 (retrained at 1.0), from ``archs/cvpr2021.json`` (provenance in ``archs/README.md``).

    Args:
        in_shape: recompute ``mem_ratio`` for this input (the stored one is the same: see :func:`memory_ratio`).
    """
    arch = load_arch(CVPR_FILE)
    return arch if in_shape is None else _with_ratio(arch, in_shape)
