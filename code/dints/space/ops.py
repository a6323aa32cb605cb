"""Modules of the DiNTS search space: the convolution op (the op table :mod:`dints.space.opsets` builds it), the
resampling steps, cells, stems, decoder and head.

Every convolution op is pre-activation: ReLU -> convolution (no bias) -> InstanceNorm(affine). Pseudo-3D ops run
two convolutions back to back and normalise once. Module and parameter layout follows MONAI's DiNTS blocks
(``ActiConvNormBlock``, ``P3DActiConvNormBlock``, ``FactorizedReduceBlock``, ``FactorizedIncreaseBlock``, the
``DiNTS`` stems) one to one, so weights can be moved between the two implementations; the forward passes compute
the same functions with fewer stored activations (see :class:`FactorizedReduce` and :class:`MixedCell`).

All tensors are 5-D, ``(N, C, X, Y, Z)``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dints.space.opsets import Kernel, build_op
from dints.space.topology import DOWN, SAME, UP


def filter_nums(num_depths: int, channel_mul: float) -> list[int]:
    """Channel ladder of the network, MONAI's ``filter_nums``: ``int(32 * 2**i * channel_mul)``, ``i = 0..D``.

    Level ``r`` carries ``filter_nums[r + int(use_downsample)]`` channels (see
    :func:`dints.space.topology.level_channels`); the stems' first convolution and the decoder use the others.

    Args:
        num_depths: number of resolution levels D.
        channel_mul: channel multiplier.

    Returns:
        A list of ``D + 1`` ints.

    Raises:
        ValueError: ``channel_mul`` so small that a level would have fewer than 2 channels.
    """
    nums = [int(32 * 2**i * channel_mul) for i in range(num_depths + 1)]
    if nums[0] < 2:
        raise ValueError(f"channel_mul={channel_mul} leaves fewer than 2 channels at the finest level")
    return nums


class _OneSampleConv(torch.autograd.Function):
    """3-D convolution of a single sample through oneDNN, forward and backward (same result as ``F.conv3d``).

    PyTorch's CPU dispatch sends a batch of one with small kernels and few channels to its reference
    ``slow_conv3d`` kernel, which is 5-20x slower than oneDNN's on the same call; a batch of two takes oneDNN. So:

    - forward: oneDNN directly;
    - input gradient: for a stride-1 "same" convolution it is the convolution of the output gradient with the
      flipped, transposed kernel, one more oneDNN forward call; otherwise (the stems' stride-2 convolution) the
      sample is paired with a zero-gradient copy, which is dropped from the result;
    - weight gradient: the sample is cut in two halves along its first spatial axis (each with the rows its
      outputs read), which make a batch of two of half the size: the same sum, at the cost of one sample.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):  # noqa: D102
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups, bias is not None)
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad = grad.contiguous()
        gi = gw = gb = None
        if need_x:
            gi = _one_sample_input_grad(grad, x, weight, stride, padding, dilation, groups)
        if need_w:
            gw = _one_sample_weight_grad(grad, x, weight, stride, padding, dilation, groups)
        if need_b and has_bias:
            gb = grad.sum((0, 2, 3, 4))
        return gi, gw, gb, None, None, None, None


def _one_sample_input_grad(grad, x, weight, stride, padding, dilation, groups):
    k = weight.shape[2:]
    if (groups == 1 and all(s == 1 for s in stride) and all(d == 1 for d in dilation)
            and all(n % 2 == 1 and p == n // 2 for n, p in zip(k, padding))):
        # Correlation with the flipped kernel, input and output channels swapped: the adjoint of a same convolution.
        w_t = weight.flip(2, 3, 4).transpose(0, 1).contiguous()
        return torch.mkldnn_convolution(grad, w_t, None, padding, [1, 1, 1], [1, 1, 1], 1)
    return torch.ops.aten.convolution_backward(
        torch.cat([grad, torch.zeros_like(grad)]), x.expand(2, *x.shape[1:]).contiguous(), weight, None,
        stride, padding, dilation, False, [0, 0, 0], groups, [True, False, False],
    )[0][:1].clone()


def _one_sample_weight_grad(grad, x, weight, stride, padding, dilation, groups):
    out_rows = grad.shape[2]
    if out_rows % 2:
        return torch.ops.aten.convolution_backward(
            torch.cat([grad, torch.zeros_like(grad)]), x.expand(2, *x.shape[1:]).contiguous(), weight, None,
            stride, padding, dilation, False, [0, 0, 0], groups, [False, True, False],
        )[1]
    # Output rows [j*m, (j+1)*m) read the padded input rows [j*m*s, j*m*s + span); rows outside x are the zero padding.
    m, s, p = out_rows // 2, stride[0], padding[0]
    span = (m - 1) * s + dilation[0] * (weight.shape[2] - 1) + 1
    halves = x.new_zeros(2, x.shape[1], span, *x.shape[3:])
    for j in range(2):
        lo = j * m * s - p
        a, b = max(lo, 0), min(lo + span, x.shape[2])
        halves[j, :, a - lo:b - lo] = x[0, :, a:b]
    g2 = grad.view(grad.shape[1], 2, m, *grad.shape[3:]).transpose(0, 1).contiguous()
    return torch.ops.aten.convolution_backward(
        g2, halves, weight, None, stride, [0, padding[1], padding[2]], dilation, False, [0, 0, 0], groups,
        [False, True, False],
    )[1]


def _conv_fwd(x: torch.Tensor, weight: torch.Tensor, padding: list[int]) -> torch.Tensor:
    # Stride-1 convolution without bias, through oneDNN for a single float32 CPU sample (see _OneSampleConv).
    if _one_sample_ok(x, weight):
        return torch.mkldnn_convolution(x, weight, None, padding, [1, 1, 1], [1, 1, 1], 1)
    return F.conv3d(x, weight, None, 1, padding)


def _conv_bwd(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, padding: list[int], need_x: bool,
              need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # Input and weight gradients of _conv_fwd.
    one = [1, 1, 1]
    if _one_sample_ok(x, weight):
        gi = _one_sample_input_grad(grad, x, weight, one, padding, one, 1) if need_x else None
        gw = _one_sample_weight_grad(grad, x, weight, one, padding, one, 1) if need_w else None
        return gi, gw
    if not (need_x or need_w):
        return None, None
    gi, gw, _ = torch.ops.aten.convolution_backward(grad, x, weight, None, one, padding, one, False, [0, 0, 0], 1,
                                                    [need_x, need_w, False])
    return gi, gw


class _P3DConvNorm(torch.autograd.Function):
    """A pseudo-3D op after its ReLU, ``norm(conv_1(conv(x_relu)))``, keeping only ``x_relu`` and the norm's
    statistics for the backward pass, which recomputes the two convolutions (no second norm pass).

    In the supernet every cell runs three pseudo-3D ops; storing their two full-size intermediates would be about
    half of all the activations a one-shot step keeps. The recomputation is a 9-tap and a 3-tap convolution.
    """

    @staticmethod
    def forward(ctx, x, w1, w2, gamma, beta, pad1, pad2, eps):  # noqa: D102
        u = _conv_fwd(_conv_fwd(x, w1, pad1), w2, pad2)
        n, c = u.shape[:2]
        y, mean, invstd = torch.native_batch_norm(u.view(1, n * c, *u.shape[2:]), _per_sample(gamma, n),
                                                  _per_sample(beta, n), None, None, True, 0.0, eps)
        ctx.save_for_backward(x, w1, w2, gamma, mean, invstd)
        ctx.conf = (pad1, pad2, eps)
        return y.view(u.shape)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, w1, w2, gamma, mean, invstd = ctx.saved_tensors
        pad1, pad2, eps = ctx.conf
        need_x, need_w1, need_w2, need_g, need_b = ctx.needs_input_grad[:5]
        t = _conv_fwd(x, w1, pad1)
        u = _conv_fwd(t, w2, pad2)
        n, c = u.shape[:2]
        flat = (1, n * c, *u.shape[2:])
        gu, gg, gb = torch.ops.aten.native_batch_norm_backward(
            grad.contiguous().view(flat), u.view(flat), _per_sample(gamma, n), None, None, mean, invstd, True, eps,
            [True, need_g, need_b])
        gu = gu.view(u.shape)
        del u
        gt, gw2 = _conv_bwd(gu, t, w2, pad2, need_x or need_w1, need_w2)
        del gu, t
        gx, gw1 = _conv_bwd(gt, x, w1, pad1, need_x, need_w1)
        gg = gg.view(n, c).sum(0) if need_g else None
        gb = gb.view(n, c).sum(0) if need_b else None
        return gx, gw1, gw2, gg, gb, None, None, None


def _per_sample(param: torch.Tensor, n: int) -> torch.Tensor:
    # Instance norm of n samples is batch norm over n * C channels, each sample's channels with the same affine.
    return param if n == 1 else param.repeat(n)


def _one_sample_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and not torch.is_autocast_enabled("cpu"))


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that keeps the fast oneDNN kernels for a batch of one on the CPU (see :class:`_OneSampleConv`).

    Same parameters, state dict and results as ``nn.Conv3d`` (within float rounding); only the kernel choice differs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.padding_mode == "zeros" and _one_sample_ok(x, self.weight):
            return _OneSampleConv.apply(x, self.weight, self.bias, list(self.stride), list(self.padding),
                                        list(self.dilation), self.groups)
        return super().forward(x)


def _conv(c_in: int, c_out: int, kernel: Kernel | int, stride: int = 1, bias: bool = False) -> nn.Conv3d:
    k = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    return Conv3d(c_in, c_out, k, stride=stride, padding=tuple(n // 2 for n in k), bias=bias)


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


def instance_norm(norm: nn.InstanceNorm3d, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``norm`` (an affine InstanceNorm3d) to ``x``, optionally times a scalar ``scale``.

    Args:
        norm: the module holding the affine weight and bias.
        x: input ``(N, C, X, Y, Z)``.
        scale: optional scalar tensor folded into the affine weight and bias.

    Returns:
        ``scale * norm(x)``, shape of ``x``.
    """
    weight, bias = norm.weight, norm.bias
    if scale is not None:
        weight, bias = weight * scale, bias * scale
    if x.shape[0] == 1:
        # One sample: batch statistics are the instance statistics. F.instance_norm reaches the same kernel after
        # reshaping and repeating the affine parameters; calling it directly saves that work.
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, norm.eps)
    return F.instance_norm(x, weight=weight, bias=bias, eps=norm.eps)


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    # MONAI uses nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True) everywhere.
    # On the CPU the same trilinear interpolation runs 2-4x faster (forward and backward) as three 1-D
    # interpolations, each a matrix product; autograd keeps only the small interpolation matrices. Traced and
    # exported graphs keep F.interpolate, whose graph does not depend on the traced size.
    if (x.device.type != "cpu" or x.dim() != 5 or torch.is_autocast_enabled("cpu") or torch.jit.is_tracing()
            or torch.compiler.is_compiling() or not all(type(n) is int for n in x.shape)):
        return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)
    n, c, sx, sy, sz = x.shape
    y = x.reshape(-1, sz) @ _interp_matrix(sz, x.dtype).T
    y = _interp_matrix(sy, x.dtype) @ y.view(n * c * sx, sy, 2 * sz)
    y = _interp_matrix(sx, x.dtype) @ y.view(n * c, sx, 4 * sy * sz)
    return y.view(n, c, 2 * sx, 2 * sy, 2 * sz)


@functools.lru_cache(maxsize=64)
def _interp_matrix(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``(2n, n)`` matrix of linear interpolation from ``n`` to ``2n`` samples with aligned corners (CPU)."""
    m = 2 * n
    pos = torch.arange(m, dtype=torch.float64) * (n - 1) / (m - 1)
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo
    a = torch.zeros(m, n, dtype=torch.float64)
    rows = torch.arange(m)
    a[rows, lo] += 1 - frac
    a[rows, hi] += frac
    return a.to(dtype)


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
                convolutions there (:class:`_P3DConvNorm`); same values and gradients.

        Returns:
            Tensor of shape ``(N, c_out, X, Y, Z)``.
        """
        if (recompute and self.conv_1 is not None and torch.is_grad_enabled()
                and not torch.is_autocast_enabled(x_relu.device.type)):
            weight, bias = self.norm.weight, self.norm.bias
            if scale is not None:
                weight, bias = weight * scale, bias * scale
            c, c1 = self.conv, self.conv_1
            return _P3DConvNorm.apply(x_relu, c.weight, c1.weight, weight, bias, list(c.padding), list(c1.padding),
                                      self.norm.eps)
        y = self.conv(x_relu)
        if self.conv_1 is not None:
            y = self.conv_1(y)
        return instance_norm(self.norm, y, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x, shape ``(N, c_in, X, Y, Z)``. Returns: shape ``(N, c_out, X, Y, Z)``."""
        return self.forward_activated(F.relu(x))


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
        return instance_norm(self.norm, self.conv(F.relu(_upsample2(x))))


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
    backward pass rather than keep them (:class:`_P3DConvNorm`, unless ``recompute`` is off); the sum is accumulated
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
        return _upsample2(y) if self.upsample else y


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
    f = 2 ** (num_depths + int(use_downsample))
    if any(n % f for n in x.shape[2:]):
        raise ValueError(
            f"input spatial size {tuple(x.shape[2:])} must be divisible by 2**(num_depths+{int(use_downsample)}) = {f} "
            "in every dimension"
        )
