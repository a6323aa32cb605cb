"""The op table of the DiNTS cell, as plain data: every candidate operation's name, kernels, memory cost and picture
label.

Adding an op means adding one :class:`OpSpec` row to :data:`OP_TABLE` (and its name to an op set); the modules
(:func:`dints.space.ops.build_op`), the memory estimate (:mod:`dints.space.relax`), the memory predictor
(:mod:`dints.space.network_memory`) and the pictures (:mod:`dints.space.visual`) all read this table. An architecture stores op *indices*; :data:`OPSETS` gives them meaning. ``opset 1`` is the
DiNTS op set of the paper, ``opset 0`` the C2FNAS-style cell. ``cellop`` keeps the first ``cellop`` ops of a set.
"""

from __future__ import annotations

from dataclasses import dataclass

Kernel = tuple[int, int, int]


@dataclass(frozen=True)
class OpSpec:
    """One candidate operation.

    Attributes:
        name: the name architecture files and op sets use.
        kernels: convolution kernels in the order they run: none for the skip connection, one for a convolution,
            two for a pseudo-3D op (the named kernel followed by its complementary 1-D kernel).
        label: short name printed on the pictures' paths.
    """

    name: str
    kernels: tuple[Kernel, ...]
    label: str

    def cost(self, c_in_over_c_out: float = 1.0) -> float:
        """Memory cost in units of the op's output tensor size (docs/method.md, "Relaxation and losses").

        The activations the op keeps for the backward pass beyond its output: skip 0; one convolution
        ``1 + 2*Cin/Cout``; a pseudo-3D pair ``2 + 2*Cin/Cout`` (one more intermediate tensor).
        """
        if not self.kernels:
            return 0.0
        return float(len(self.kernels)) + 2.0 * float(c_in_over_c_out)


#: Every op, by name.
OP_TABLE: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("skip_connect", (), "skip"),
        OpSpec("conv_3x3x3", ((3, 3, 3),), "3x3x3"),
        OpSpec("conv_3x3x1", ((3, 3, 1), (1, 1, 3)), "p3d 3x3x1"),
        OpSpec("conv_3x1x3", ((3, 1, 3), (1, 3, 1)), "p3d 3x1x3"),
        OpSpec("conv_1x3x3", ((1, 3, 3), (3, 1, 1)), "p3d 1x3x3"),
        OpSpec("conv_2d_3x3x1", ((3, 3, 1),), "2d 3x3x1"),
        OpSpec("conv_p3d_3x3x1", ((3, 3, 1), (1, 1, 3)), "p3d 3x3x1"),
    )
}

#: Op names per op set, in index order.
OPSETS: dict[int, list[str]] = {
    0: ["skip_connect", "conv_2d_3x3x1", "conv_3x3x3", "conv_p3d_3x3x1"],
    1: ["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"],
}


def op_spec(name: str) -> OpSpec:
    """The table row of op ``name``.

    Raises:
        ValueError: unknown op name.
    """
    if name not in OP_TABLE:
        raise ValueError(f"unknown op {name!r}; known ops: {sorted(OP_TABLE)}")
    return OP_TABLE[name]


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
    """Memory cost of op ``name`` in units of its output size (:meth:`OpSpec.cost`).

    Raises:
        ValueError: unknown op name.
    """
    return op_spec(name).cost(c_in_over_c_out)
