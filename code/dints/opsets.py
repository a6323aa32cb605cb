"""Operation sets of the DiNTS cell: names in index order and their memory cost.

An architecture stores op *indices*; these lists give them meaning. ``opset 1`` is the DiNTS op set of the paper,
``opset 0`` the C2FNAS-style cell. ``cellop`` keeps the first ``cellop`` ops of a set.
"""

from __future__ import annotations

#: Op names per op set, in index order. Pseudo-3D ops (``conv_3x3x1`` etc. in opset 1, ``conv_p3d_3x3x1`` in
#: opset 0) run the named kernel followed by its complementary 1-D kernel.
OPSETS: dict[int, list[str]] = {
    0: ["skip_connect", "conv_2d_3x3x1", "conv_3x3x3", "conv_p3d_3x3x1"],
    1: ["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"],
}


def opset_ops(opset: int, cellop: int | None = None) -> list[str]:
    """Names of the candidate ops of a cell.

    Args:
        opset: op set id, a key of :data:`OPSETS` (0 or 1).
        cellop: number of ops taken from the front of the set; ``None`` takes them all.

    Returns:
        A new list of ``cellop`` op names, in index order.

    Raises:
        ValueError: unknown ``opset`` or ``cellop`` outside ``1..len(OPSETS[opset])``.
    """
    if opset not in OPSETS:
        raise ValueError(f"opset must be one of {sorted(OPSETS)}, got {opset!r}")
    names = OPSETS[opset]
    if cellop is None:
        return list(names)
    if isinstance(cellop, bool) or not isinstance(cellop, int) or not 1 <= cellop <= len(names):
        raise ValueError(f"cellop must be an int in 1..{len(names)} for opset {opset}, got {cellop!r}")
    return list(names[:cellop])


def op_cost(name: str, c_in_over_c_out: float = 1.0) -> float:
    """Memory cost of one op in units of its output tensor size (DESIGN §5).

    The cost counts the activations the op keeps for the backward pass beyond its output: skip 0; a single
    convolution (3x3x3 or 2-D 3x3x1) ``1 + 2*Cin/Cout``; a pseudo-3D pair ``2 + 2*Cin/Cout``.

    Args:
        name: op name from :data:`OPSETS`.
        c_in_over_c_out: ratio of the op's input to output channels (1 inside a DiNTS cell).

    Returns:
        The cost as a float.

    Raises:
        ValueError: unknown op name.
    """
    r = float(c_in_over_c_out)
    if name == "skip_connect":
        return 0.0
    if name in ("conv_3x3x3", "conv_2d_3x3x1"):
        return 1.0 + 2.0 * r
    if name in ("conv_3x3x1", "conv_3x1x3", "conv_1x3x3", "conv_p3d_3x3x1"):
        return 2.0 + 2.0 * r
    raise ValueError(f"unknown op name {name!r}")
