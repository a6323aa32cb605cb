"""Topology tables of the DiNTS search space: paths, children and node patterns.

Pure functions of the number of resolution levels ``D``; no module state beyond memoisation.
Levels are numbered 0 (finest) to D-1 (coarsest). A block connects D input nodes to D output nodes with
``P = 3D - 2`` paths; path ``i`` goes from level ``(i+1)//3 - 1 + (i+1)%3`` to level ``(i+1)//3``.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from dints.space.sizes import filter_nums, input_divisor, level_channels, num_paths  # noqa: F401  (re-exported)

#: Path kinds: the source is one level finer (-1, the path goes down in resolution), the same level (0) or one
#: level coarser (+1, the path goes up in resolution).
DOWN, SAME, UP = -1, 0, 1


@lru_cache(maxsize=None)
def _path_table(num_depths: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    p = num_paths(num_depths)
    src = tuple((i + 1) // 3 - 1 + (i + 1) % 3 for i in range(p))
    tgt = tuple((i + 1) // 3 for i in range(p))
    kind = tuple(([DOWN, SAME, UP] * num_depths)[1:-1])
    return src, tgt, kind


def path_table(num_depths: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source level, target level and kind of every path of a block.

    Args:
        num_depths: number of resolution levels D (>= 2).

    Returns:
        ``(src, tgt, kind)``, each a LongTensor of shape ``(3D-2,)``. ``kind`` is -1 (down: source finer than
        target), 0 (same level) or +1 (up: source coarser than target).
        For D=4: src ``[0,1,0,1,2,1,2,3,2,3]``, tgt ``[0,0,1,1,1,2,2,2,3,3]``.
    """
    src, tgt, kind = _path_table(num_depths)
    return torch.tensor(src), torch.tensor(tgt), torch.tensor(kind)


def depths_from_paths(num_paths_: int) -> int:
    """Number of levels D of a block with ``num_paths_ = 3D - 2`` paths (the length of an ``alpha_a`` row).

    Raises:
        ValueError: ``num_paths_`` is not ``3D - 2`` for any D >= 2.
    """
    if num_paths_ < 4 or (num_paths_ + 2) % 3:
        raise ValueError(f"{num_paths_} paths per block is not 3*D - 2 for any D >= 2")
    return (num_paths_ + 2) // 3


def depths_from_children(num_children_: int) -> int:
    """Number of levels D of a block with ``num_children_ = 2**(3D-2) - 1`` children.

    Raises:
        ValueError: ``num_children_`` is not of that form.
    """
    p = (num_children_ + 1).bit_length() - 1
    if 2**p - 1 != num_children_:
        raise ValueError(f"{num_children_} children per block is not 2**P - 1")
    return depths_from_paths(p)


def num_children(num_depths: int) -> int:
    """Number of children (non-empty path subsets) of a block, ``2**(3D-2) - 1`` (1023 for D=4)."""
    return 2 ** num_paths(num_depths) - 1


def num_patterns(num_depths: int) -> int:
    """Number of node patterns (non-empty sets of active levels), ``2**D - 1`` (15 for D=4)."""
    num_paths(num_depths)  # validates num_depths
    return 2**num_depths - 1


def _binary_rows(n_bits: int) -> torch.Tensor:
    # Rows are the integers 1 .. 2**n_bits - 1 in binary, most significant bit first. This is the order of
    # MONAI's depth-first enumeration (`_dfs`, which puts 0 before 1 at each position) without its all-zero row.
    values = torch.arange(1, 2**n_bits, dtype=torch.long)
    shifts = torch.arange(n_bits - 1, -1, -1, dtype=torch.long)
    return (values[:, None] >> shifts) & 1


@lru_cache(maxsize=None)
def _children(num_depths: int) -> torch.Tensor:
    return _binary_rows(num_paths(num_depths))


@lru_cache(maxsize=None)
def _node_patterns(num_depths: int) -> torch.Tensor:
    num_paths(num_depths)
    return _binary_rows(num_depths)


def children(num_depths: int) -> torch.Tensor:
    """All children of a block: every non-empty subset of its paths.

    Row ``j`` is the binary expansion of ``j + 1`` over the paths, path 0 being the most significant bit; this is
    the order of MONAI's ``TopologySearch.child_list``, so child indices are interchangeable with MONAI's.

    Args:
        num_depths: number of resolution levels D (>= 2).

    Returns:
        LongTensor of 0/1, shape ``(2**P - 1, P)`` with ``P = 3D - 2``. A fresh copy; the memoised table is never
        handed out.
    """
    return _children(num_depths).clone()


def node_patterns(num_depths: int) -> torch.Tensor:
    """All node patterns: every non-empty set of active levels.

    Row ``n`` is the binary expansion of ``n + 1`` over the levels, level 0 being the most significant bit; this is
    the order of MONAI's ``TopologySearch.node_act_list``.

    Args:
        num_depths: number of resolution levels D (>= 2).

    Returns:
        LongTensor of 0/1, shape ``(2**D - 1, D)``. A fresh copy.
    """
    return _node_patterns(num_depths).clone()


def pattern_index(levels: torch.Tensor) -> torch.Tensor:
    """Index of node patterns given as 0/1 level indicators.

    Args:
        levels: 0/1 (or boolean) tensor of shape ``(..., D)``; every row must have at least one active level.

    Returns:
        LongTensor of shape ``(...)``: the row of :func:`node_patterns` equal to each input row.
    """
    d = levels.shape[-1]
    weights = 2 ** torch.arange(d - 1, -1, -1, dtype=torch.long, device=levels.device)
    value = (levels.long() * weights).sum(-1)
    if bool((value == 0).any()):
        raise ValueError("a node pattern needs at least one active level")
    return value - 1


def child_index(paths: torch.Tensor) -> torch.Tensor:
    """Index of children given as 0/1 path indicators.

    Args:
        paths: 0/1 (or boolean) tensor of shape ``(..., P)``; every row must have at least one active path.

    Returns:
        LongTensor of shape ``(...)``: the row of :func:`children` equal to each input row.
    """
    return pattern_index(paths)


def _levels_of(child_rows: torch.Tensor, level_of_path: torch.Tensor, num_depths: int) -> torch.Tensor:
    # One-hot (P, D) map from path to level; a level is active when any of the child's paths touches it.
    onehot = torch.nn.functional.one_hot(level_of_path, num_depths)
    return (child_rows @ onehot > 0).long()


@lru_cache(maxsize=None)
def _child_patterns(num_depths: int) -> tuple[torch.Tensor, torch.Tensor]:
    src, tgt, _ = path_table(num_depths)
    rows = _children(num_depths)
    return (
        pattern_index(_levels_of(rows, src, num_depths)),
        pattern_index(_levels_of(rows, tgt, num_depths)),
    )


def child_patterns(num_depths: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output node pattern of every child.

    A child's input pattern is the set of source levels of its paths (the nodes it reads), its output pattern the
    set of target levels (the nodes it feeds). Consecutive blocks fit together when block ``b + 1``'s input pattern
    equals block ``b``'s output pattern.

    Args:
        num_depths: number of resolution levels D (>= 2).

    Returns:
        ``(in_idx, out_idx)``, LongTensors of shape ``(2**P - 1,)`` holding row indices into :func:`node_patterns`.
        Fresh copies.
    """
    in_idx, out_idx = _child_patterns(num_depths)
    return in_idx.clone(), out_idx.clone()


def level_shape(in_spatial: tuple[int, ...] | list[int], level: int, use_downsample: bool = True) -> tuple[int, ...]:
    """Spatial shape of the feature map at ``level``: the input size divided by ``2**(level + s)``.

    Args:
        in_spatial: spatial size of the network input, e.g. ``(96, 96, 96)``.
        level: resolution level r (0 = finest).
        use_downsample: whether the stem halves the input resolution (``s = 1``).

    Returns:
        The spatial shape as a tuple of ints.

    Raises:
        ValueError: a side is not divisible by ``2**(level + s)``.
    """
    f = 2 ** (level + int(use_downsample))
    if any(int(n) % f for n in in_spatial):
        raise ValueError(f"input size {tuple(in_spatial)} is not divisible by {f} (level {level})")
    return tuple(int(n) // f for n in in_spatial)


class CodeError(ValueError):
    """An architecture code that cannot run; ``field`` names the code at fault (``arch_code_a`` or ``node_a``)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_codes(arch_code_a, node_a=None) -> None:
    """The one check that path codes describe a runnable network (architecture files, networks, sampled masks).

    Every block needs an active path, and every active path must read a level that is active at its block's input.
    Given ``node_a``, the codes must also agree exactly: the levels active at boundary ``b + 1`` are the levels
    block ``b`` feeds, and every level active at boundary ``b`` is read by block ``b``, so nothing computes unused
    features or reads missing ones. Without ``node_a`` (a supernet's sampled paths), every level counts as active at
    the input and only the first rule applies.

    Args:
        arch_code_a: ``(B, P)`` 0/1 (nested lists, array or tensor): the active paths.
        node_a: ``(B + 1, D)`` 0/1, the active levels at each block boundary, or None.

    Raises:
        CodeError: naming the block, path and level at fault, and the code (``field``) to fix.
    """
    def rows(codes) -> list[list[int]]:
        return [[int(x) for x in row] for row in (codes.tolist() if hasattr(codes, "tolist") else codes)]

    code_a = rows(arch_code_a)
    num_depths = depths_from_paths(len(code_a[0]))
    src, tgt, _ = _path_table(num_depths)
    nodes = None if node_a is None else rows(node_a)
    fed = set(range(num_depths)) if nodes is None else {lvl for lvl in range(num_depths) if nodes[0][lvl]}
    for blk, paths in enumerate(code_a):
        active = [i for i, on in enumerate(paths) if on]
        if not active:
            raise CodeError("arch_code_a", f"block {blk} has no active path")
        for i in active:
            if src[i] not in fed:
                raise CodeError("node_a", f"block {blk} path {i} reads level {src[i]}, which is inactive at "
                                          f"boundary {blk}")
        feeds = {tgt[i] for i in active}
        if nodes is not None:
            reads = {src[i] for i in active}
            for lvl in range(num_depths):
                if nodes[blk][lvl] and lvl not in reads:
                    raise CodeError("node_a", f"level {lvl} is active at boundary {blk} but block {blk} never reads it")
                if nodes[blk + 1][lvl] and lvl not in feeds:
                    raise CodeError("node_a", f"level {lvl} is active at boundary {blk + 1} but no path of block "
                                              f"{blk} feeds it")
                if not nodes[blk + 1][lvl] and lvl in feeds:
                    raise CodeError("node_a", f"level {lvl} is inactive at boundary {blk + 1} but block {blk} feeds it")
        fed = feeds
