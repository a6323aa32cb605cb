"""Ops, resampling steps and cells against MONAI's DiNTS blocks (weights copied by name) and hand-written formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks.dints_block import (
    ActiConvNormBlock,
    FactorizedIncreaseBlock,
    FactorizedReduceBlock,
    P3DActiConvNormBlock,
)
from monai.networks.nets.dints import Cell as MonaiCell

from dints.space.ops import Cell, ConvOp, FactorizedIncrease, FactorizedReduce, MixedCell, build_op
from dints.space.opsets import OP_TABLE, OPSETS
from helpers.monai_ref import randomize_, single_thread  # noqa: F401  (autouse fixture)

ATOL = 1e-5


def _load_same_names(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    # strict: the two modules must have exactly the same parameters (names and shapes), i.e. the same structure.
    ours.load_state_dict(ref.state_dict(), strict=True)


@pytest.mark.parametrize(
    "name, ref_factory",
    [
        ("conv_3x3x3", lambda c: ActiConvNormBlock(c, c, 3, 1)),
        ("conv_3x3x1", lambda c: P3DActiConvNormBlock(c, c, 3, 1, mode=0)),
        ("conv_3x1x3", lambda c: P3DActiConvNormBlock(c, c, 3, 1, mode=1)),
        ("conv_1x3x3", lambda c: P3DActiConvNormBlock(c, c, 3, 1, mode=2)),
        ("conv_p3d_3x3x1", lambda c: P3DActiConvNormBlock(c, c, 3, 1, mode=0)),
    ],
)
def test_conv_op_matches_monai_block(name, ref_factory):
    # An anisotropic input shape makes a kernel applied along the wrong axes show.
    torch.manual_seed(0)
    ref = ref_factory(4)
    randomize_(ref)
    op = build_op(name, 4)
    _load_same_names(op, ref)
    x = torch.randn(2, 4, 6, 8, 10)
    torch.testing.assert_close(op(x), ref(x), atol=ATOL, rtol=0)


def test_conv_2d_op_is_relu_conv331_norm():
    torch.manual_seed(0)
    op = build_op("conv_2d_3x3x1", 3)
    randomize_(op)
    assert isinstance(op, ConvOp) and op.conv_1 is None
    w = op.conv.weight
    assert tuple(w.shape) == (3, 3, 3, 3, 1)
    x = torch.randn(2, 3, 5, 6, 7)
    expected = F.instance_norm(
        F.conv3d(F.relu(x), w, padding=(1, 1, 0)), weight=op.norm.weight, bias=op.norm.bias, eps=1e-5
    )
    torch.testing.assert_close(op(x), expected, atol=ATOL, rtol=0)


def test_skip_is_identity_and_table_covers_opsets():
    x = torch.randn(1, 2, 4, 4, 4)
    assert build_op("skip_connect", 2)(x) is x
    for names in OPSETS.values():
        assert set(names) <= set(OP_TABLE)
    # Each conv op's kernels are those its module runs (the table is the one place they are spelled).
    for name, spec in OP_TABLE.items():
        op = build_op(name, 2)
        convs = [m for m in (getattr(op, "conv", None), getattr(op, "conv_1", None)) if m is not None]
        assert [tuple(c.kernel_size) for c in convs] == list(spec.kernels), name
    with pytest.raises(ValueError, match="unknown op"):
        build_op("conv_5x5x5", 2)


@pytest.mark.parametrize("c_in, c_out", [(4, 5), (6, 6)])
def test_factorized_reduce_matches_monai(c_in, c_out):
    torch.manual_seed(0)
    ref = FactorizedReduceBlock(c_in, c_out)
    randomize_(ref)
    ours = FactorizedReduce(c_in, c_out)
    _load_same_names(ours, ref)
    x = torch.randn(2, c_in, 8, 6, 10, requires_grad=True)
    out, expected = ours(x), ref(x)
    assert out.shape == (2, c_out, 4, 3, 5)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    # The subsample-first rewrite must also give MONAI's gradients.
    g = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, [x, ours.conv_2.weight], g)
    rx, rw = torch.autograd.grad(expected, [x, ref.conv_2.weight], g)
    torch.testing.assert_close(gx, rx, atol=ATOL, rtol=0)
    torch.testing.assert_close(gw, rw, atol=1e-4, rtol=1e-4)


def test_factorized_increase_matches_monai():
    torch.manual_seed(0)
    ref = FactorizedIncreaseBlock(6, 3)
    randomize_(ref)
    ours = FactorizedIncrease(6, 3)
    _load_same_names(ours, ref)
    x = torch.randn(2, 6, 3, 4, 5)
    out = ours(x)
    assert out.shape == (2, 3, 6, 8, 10)
    torch.testing.assert_close(out, ref(x), atol=ATOL, rtol=0)


def _map_cell(ours: torch.nn.Module, ref: MonaiCell, discrete: bool) -> None:
    state = {}
    for name, value in ref.state_dict().items():
        name = name.replace("preprocess.", "resample.", 1)
        name = name.replace("op.ops.0.", "op.", 1) if discrete else name.replace("op.ops.", "ops.", 1)
        state[name] = value
    ours.load_state_dict(state, strict=True)


@pytest.mark.parametrize("rate, c_in, c_out, size", [(-1, 4, 8, 8), (0, 8, 8, 4), (1, 8, 4, 4)])
def test_mixed_cell_matches_monai_cell(rate, c_in, c_out, size):
    torch.manual_seed(0)
    ref = MonaiCell(c_in, c_out, rate)  # all five ops, mixed by the given weights
    randomize_(ref)
    ours = MixedCell(rate, c_in, c_out, OPSETS[1])
    _map_cell(ours, ref, discrete=False)
    x = torch.randn(1, c_in, size, size, size, requires_grad=True)
    w = torch.tensor([0.3, -0.2, 0.5, 0.25, 0.15], requires_grad=True)
    out, expected = ours(x, w), ref(x, w)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)
    # Shared ReLU and in-place accumulation must keep MONAI's gradients for the input and the weights.
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, w], g)
    want = torch.autograd.grad(expected, [x, w], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rate, op_index", [(-1, 2), (0, 0), (1, 4), (0, 1)])
def test_discrete_cell_matches_monai_cell(rate, op_index):
    torch.manual_seed(0)
    c_in, c_out = {-1: (4, 8), 0: (4, 4), 1: (8, 4)}[rate]
    code = torch.zeros(5)
    code[op_index] = 1
    ref = MonaiCell(c_in, c_out, rate, arch_code_c=code)
    randomize_(ref)
    ours = Cell(rate, c_in, c_out, OPSETS[1][op_index])
    _map_cell(ours, ref, discrete=True)
    size = 8 if rate == -1 else 4
    x = torch.randn(2, c_in, size, size, size)
    torch.testing.assert_close(ours(x), ref(x, None), atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch, kind, recompute", [(1, 0, True), (2, 0, True), (1, 1, True), (2, -1, True), (2, 1, False)])
def test_mixed_cell_gradients_match_the_plain_sum(batch, kind, recompute):
    """MixedCell (shared ReLU, weights folded into the norms, pseudo-3D ops recomputed in the backward pass) gives
    the values and gradients of sum_k w_k op_k(resample(x)) computed module by module."""
    torch.manual_seed(0)
    c_in, c_out = (4, 3) if kind == 1 else (3, 3) if kind == 0 else (2, 3)
    cell = MixedCell(kind, c_in, c_out, OPSETS[1], recompute=recompute)
    randomize_(cell)
    x = torch.randn(batch, c_in, 4, 6, 8, requires_grad=True)
    w = torch.rand(len(OPSETS[1]), requires_grad=True)
    g = torch.randn_like(cell(x, w))
    params = [x, w, *cell.parameters()]
    got = torch.autograd.grad(cell(x, w), params, g)
    r = cell.resample(x)
    expected = sum(wk * op(r) for wk, op in zip(w, cell.ops))
    torch.testing.assert_close(cell(x, w), expected, atol=ATOL, rtol=0)
    want = torch.autograd.grad(expected, params, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4 * b.abs().max().item() + 1e-6, rtol=0)
