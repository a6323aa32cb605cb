"""Modules of the DiNTS search space: the convolution op and :func:`build_op` (from the op table,
:mod:`dints.space.opsets`), the resampling steps, cells, stems, decoder and head.

Every convolution op is pre-activation: ReLU -> convolution (no bias) -> InstanceNorm(affine). Pseudo-3D ops run
two convolutions back to back and normalise once. Module and parameter layout follows MONAI's DiNTS blocks
(``ActiConvNormBlock``, ``P3DActiConvNormBlock``, ``FactorizedReduceBlock``, ``FactorizedIncreaseBlock``, the
``DiNTS`` stems) one to one, so weights can be moved between the two implementations; the forward passes compute
the same functions with fewer stored activations (see :class:`FactorizedReduce` and :class:`MixedCell`), on the CPU
through the kernels of :mod:`dints.space.kernels`.

All tensors are 5-D, ``(N, C, X, Y, Z)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dints.space.kernels import Conv3d, instance_norm, p3d_conv_norm, upsample2
from dints.space.opsets import Kernel, op_spec
from dints.space.topology import DOWN, SAME, UP, input_divisor


def _conv(c_in: int, c_out: int, kernel: Kernel | int, stride: int = 1, bias: bool = False) -> nn.Conv3d:
    k = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    return Conv3d(c_in, c_out, k, stride=stride, padding=tuple(n // 2 for n in k), bias=bias)


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


class ConvOp(nn.Module):
    """Pre-activation convolution op: ReLU -> conv -> (conv_1) -> InstanceNorm(affine).

    With one kernel this is MONAI's ``ActiConvNormBlock``; with two it is ``P3DActiConvNormBlock`` (the first
    convolution keeps ``c_in`` channels, the second maps to ``c_out``). Convolutions have no bias and "same" padding.

    Args:
        c_in: input channels.
        c_out: output channels.
        kernels: one or two kernel sizes, e.g. ``[(3, 3, 3)]`` or ``[(3, 3, 1), (1, 1, 3)]``.
    """

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[Kernel]):
        super().__init__()
        if len(kernels) not in (1, 2):
            raise ValueError(f"a conv op has one or two kernels, got {list(kernels)}")
        self.kernels = [tuple(k) for k in kernels]
        if len(kernels) == 1:
            self.conv = _conv(c_in, c_out, kernels[0])
            self.conv_1 = None
        else:
            self.conv = _conv(c_in, c_in, kernels[0])
            self.conv_1 = _conv(c_in, c_out, kernels[1])
        self.norm = _norm(c_out)

    def forward_activated(self, x_relu: torch.Tensor, scale: torch.Tensor | None = None,
                          recompute: bool = False) -> torch.Tensor:
        """The op without its leading ReLU (for callers that share one ReLU between several ops).

        Args:
            x_relu: ``relu(x)``, shape ``(N, c_in, X, Y, Z)``.
            scale: optional scalar tensor multiplying the output. It is folded into the norm's affine parameters
                (``scale * (g * xhat + b) = (scale * g) * xhat + scale * b``), so the scaled output is produced without
                an extra full-size product and autograd keeps no copy of it.
            recompute: for a pseudo-3D op, keep only ``x_relu`` for the backward pass and recompute the two
                convolutions there (:func:`dints.space.kernels.p3d_conv_norm`); same values and gradients.

        Returns:
            Tensor of shape ``(N, c_out, X, Y, Z)``.
        """
        if (recompute and self.conv_1 is not None and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x_relu.device.type)):
            weight, bias = self.norm.weight, self.norm.bias
            if scale is not None:
                weight, bias = weight * scale, bias * scale
            return p3d_conv_norm(x_relu, self.conv, self.conv_1, weight, bias, self.norm.eps)
        y = self.conv(x_relu)
        if self.conv_1 is not None:
            y = self.conv_1(y)
        return instance_norm(self.norm, y, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, c_in, X, Y, Z)``. Returns: shape ``(N, c_out, X, Y, Z)``."""
        return self.forward_activated(F.relu(x))


def build_op(name: str, channels: int) -> nn.Module:
    """The module of op ``name`` of the op table for ``channels`` input and output channels: ``nn.Identity`` for the
    skip connection, else a :class:`ConvOp` with the op's kernels; maps ``(N, C, X, Y, Z)`` to the same shape.

    Raises:
        ValueError: unknown op name.
    """
    kernels = op_spec(name).kernels
    return ConvOp(channels, channels, list(kernels)) if kernels else nn.Identity()


class FactorizedReduce(nn.Module):
    """Down-sampling step of a path: ReLU, two 1x1x1 stride-2 convolutions (the second on the input shifted by one
    voxel along every axis), concatenated along channels, InstanceNorm. MONAI's ``FactorizedReduceBlock``.

    A stride-2 1x1x1 convolution only reads the even voxels, and ReLU commutes with taking them, so the input is
    subsampled first: the backward pass then keeps two 1/8-size activations instead of a full-size one.

    Args:
        c_in: input channels.
        c_out: output channels (``c_out // 2`` from the first convolution, the rest from the second).
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        # Stride 1 here because the input is subsampled before the convolution; same weights as MONAI's stride 2.
        self.conv_1 = _conv(c_in, c_out // 2, 1)
        self.conv_2 = _conv(c_in, c_out - c_out // 2, 1)
        self.norm = _norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, c_in, X, Y, Z)`` with even sides. Returns: shape ``(N, c_out, X/2, Y/2, Z/2)``."""
        even = F.relu(x[:, :, ::2, ::2, ::2])
        odd = F.relu(x[:, :, 1::2, 1::2, 1::2])
        return instance_norm(self.norm, torch.cat([self.conv_1(even), self.conv_2(odd)], dim=1))


class FactorizedIncrease(nn.Module):
    """Up-sampling step of a path: trilinear x2 (align_corners), ReLU, 1x1x1 convolution, InstanceNorm.
    MONAI's ``FactorizedIncreaseBlock``.

    Args:
        c_in: input channels.
        c_out: output channels.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = _conv(c_in, c_out, 1)
        self.norm = _norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, c_in, X, Y, Z)``. Returns: shape ``(N, c_out, 2X, 2Y, 2Z)``."""
        return instance_norm(self.norm, self.conv(F.relu(upsample2(x))))


def build_resample(kind: int, c_in: int, c_out: int) -> nn.Module:
    """The resampling step of a path of the given kind.

    Args:
        kind: :data:`dints.space.topology.DOWN` (-1), ``SAME`` (0) or ``UP`` (+1).
        c_in: channels of the source level.
        c_out: channels of the target level.

    Returns:
        :class:`FactorizedReduce`, :class:`nn.Identity` or :class:`FactorizedIncrease`.
    """
    if kind == DOWN:
        return FactorizedReduce(c_in, c_out)
    if kind == UP:
        return FactorizedIncrease(c_in, c_out)
    if kind == SAME:
        # Levels have fixed channel counts, so a same-level path never changes channels.
        assert c_in == c_out, (c_in, c_out)
        return nn.Identity()
    raise ValueError(f"unknown path kind {kind}")


class MixedCell(nn.Module):
    """A supernet cell: resampling step, then every candidate op, mixed by given weights.

    ``out = sum_k weights[k] * op_k(resample(x))``. The conv ops all start with a ReLU of the same tensor, so it is
    computed once and shared; each conv op's weight is folded into its norm's affine parameters, so no weighted copy
    of an op output is kept for the backward pass; the pseudo-3D ops recompute their two convolutions in the
    backward pass rather than keep them (:func:`dints.space.kernels.p3d_conv_norm`, unless ``recompute`` is off); the sum is accumulated
    in place. Module layout:
    ``resample`` and ``ops`` (a ModuleList in op-index order), as MONAI's ``Cell.preprocess`` and ``Cell.op.ops``.

    Args:
        kind: path kind, -1 down, 0 same, +1 up.
        c_in: channels of the source level.
        c_out: channels of the target level.
        op_names: candidate op names in index order (:func:`dints.space.opsets.opset_ops`).
        recompute: recompute the pseudo-3D ops' convolutions in the backward pass instead of keeping them.
    """

    def __init__(self, kind: int, c_in: int, c_out: int, op_names: Sequence[str], recompute: bool = True):
        super().__init__()
        if not op_names:
            raise ValueError("a cell needs at least one op")
        self.kind = int(kind)
        self.op_names = list(op_names)
        self.recompute = bool(recompute)
        self.resample = build_resample(kind, c_in, c_out)
        self.ops = nn.ModuleList(build_op(name, c_out) for name in op_names)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Mixed output of the cell.

        Args:
            x: source node, shape ``(N, c_in, *S_src)``.
            weights: op weights, shape ``(K,)`` (softmax weights, possibly times the path's scale).

        Returns:
            Tensor of shape ``(N, c_out, *S_tgt)``; always a new tensor, never ``x`` itself.
        """
        r = self.resample(x)
        r_relu = None
        out = None
        for w, op in zip(weights.unbind(0), self.ops):
            if isinstance(op, ConvOp):
                if r_relu is None:
                    r_relu = F.relu(r)
                y = op.forward_activated(r_relu, scale=w, recompute=self.recompute)
            else:
                y = op(r) * w
            # Every term is a fresh tensor that no backward function keeps, so the sum can be taken in place.
            out = y if out is None else out.add_(y)
        return out


class Cell(nn.Module):
    """A cell of the discrete network: resampling step, then one op.

    Args:
        kind: path kind, -1 down, 0 same, +1 up.
        c_in: channels of the source level.
        c_out: channels of the target level.
        op_name: the op (a key of :data:`dints.space.opsets.OP_TABLE`).
    """

    def __init__(self, kind: int, c_in: int, c_out: int, op_name: str):
        super().__init__()
        self.kind = int(kind)
        self.op_name = op_name
        self.resample = build_resample(kind, c_in, c_out)
        self.op = build_op(op_name, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, c_in, *S_src)``. Returns: shape ``(N, c_out, *S_tgt)`` (may be ``x`` itself)."""
        return self.op(self.resample(x))


class Stem(nn.Module):
    """Input stem of one level: resize the input by ``1/2**level`` (trilinear, align_corners, as MONAI), then
    conv 3^3 -> norm, and with ``use_downsample`` also ReLU -> conv 3^3 stride 2 -> norm.

    Args:
        in_channels: image channels.
        c_mid: channels of the first convolution (``filter_nums[level]``).
        c_out: channels of the level (``filter_nums[level + 1]`` with ``use_downsample``, else ``c_mid``).
        level: resolution level, 0 = finest.
        use_downsample: add the stride-2 convolution that halves the resolution.
    """

    def __init__(self, in_channels: int, c_mid: int, c_out: int, level: int, use_downsample: bool = True):
        super().__init__()
        self.level = int(level)
        self.conv = _conv(in_channels, c_mid, 3)
        self.norm = _norm(c_mid)
        if use_downsample:
            self.conv_1 = _conv(c_mid, c_out, 3, stride=2)
            self.norm_1 = _norm(c_out)
        else:
            assert c_mid == c_out, (c_mid, c_out)
            self.conv_1 = self.norm_1 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, the network input ``(N, in_channels, X, Y, Z)``. Returns: the level's input node
        ``(N, c_out, X/f, Y/f, Z/f)`` with ``f = 2**(level + use_downsample)``."""
        if self.level > 0:
            size = [n // 2**self.level for n in x.shape[2:]]
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=True)
        y = instance_norm(self.norm, self.conv(x))
        if self.conv_1 is not None:
            y = instance_norm(self.norm_1, self.conv_1(F.relu(y)))
        return y


class DecoderStage(ConvOp):
    """One decoder stage: ReLU -> conv 3^3 -> norm -> trilinear x2 (align_corners); MONAI's ``stem_up[level]``.

    Args:
        c_in: channels of the level.
        c_out: channels of the next finer level (or of the head).
        upsample: whether to double the resolution (MONAI skips it at level 0 without ``use_downsample``).
    """

    def __init__(self, c_in: int, c_out: int, upsample: bool = True):
        super().__init__(c_in, c_out, [(3, 3, 3)])
        self.upsample = bool(upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, c_in, X, Y, Z)``. Returns: ``(N, c_out, 2X, 2Y, 2Z)`` (or ``X, Y, Z``)."""
        y = super().forward(x)
        return upsample2(y) if self.upsample else y


class Decoder(nn.Module):
    """Decoder from the deepest given level up to input resolution.

    Starting at the deepest level whose node is present, each stage adds that level's node (when present) to what
    comes from below and applies :class:`DecoderStage`. Stages exist for levels ``0..top_level`` only.

    Args:
        nums: channel ladder (:func:`filter_nums`), length ``D + 1``.
        top_level: deepest level that may feed the decoder.
        use_downsample: whether the stem halved the input (then level r carries ``nums[r + 1]`` channels).
    """

    def __init__(self, nums: Sequence[int], top_level: int, use_downsample: bool = True):
        super().__init__()
        s = int(use_downsample)
        self.top_level = int(top_level)
        self.stages = nn.ModuleDict(
            {
                str(r): DecoderStage(nums[r + s], nums[max(r + s - 1, 0)], upsample=r + s > 0)
                for r in range(top_level + 1)
            }
        )

    def forward(self, nodes: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Decode the last block's nodes.

        Args:
            nodes: one entry per level, the level's node ``(N, C_r, *S_r)`` or ``None`` where the level is inactive.
                Levels deeper than ``top_level`` must be ``None``.

        Returns:
            Tensor of shape ``(N, nums[0], X, Y, Z)`` at input resolution.
        """
        assert all(n is None for n in nodes[self.top_level + 1 :]), "a node deeper than the decoder's top level"
        out = None
        for r in range(self.top_level, -1, -1):
            node = nodes[r]
            if out is None:
                if node is None:
                    continue
                out = node
            elif node is not None:
                out = node + out
            out = self.stages[str(r)](out)
        assert out is not None, "no active node reaches the decoder"
        return out


class Head(nn.Module):
    """Segmentation head: ReLU -> conv 3^3 -> norm -> conv 1x1x1 with bias; MONAI's ``stem_finals``.

    Args:
        channels: decoder output channels (``filter_nums[0]``).
        num_classes: output classes.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.block = ConvOp(channels, channels, [(3, 3, 3)])
        self.out = _conv(channels, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, channels, X, Y, Z)``. Returns: logits ``(N, num_classes, X, Y, Z)``."""
        return self.out(self.block(x))


def check_input(x: torch.Tensor, in_channels: int, num_depths: int, use_downsample: bool) -> None:
    """Raise a one-line ValueError when ``x`` does not fit a DiNTS network.

    Args:
        x: network input, expected ``(N, in_channels, X, Y, Z)`` with every side divisible by
            ``2**(num_depths + int(use_downsample))``.
        in_channels: expected channels.
        num_depths: number of resolution levels D.
        use_downsample: whether the stem halves the input.
    """
    if x.dim() != 5:
        raise ValueError(f"expected a 5-D input (N, C, X, Y, Z), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    f = input_divisor(num_depths, use_downsample)
    if any(n % f for n in x.shape[2:]):
        raise ValueError(
            f"input spatial size {tuple(x.shape[2:])} must be divisible by 2**(num_depths+{int(use_downsample)}) = {f} "
            "in every dimension"
        )
