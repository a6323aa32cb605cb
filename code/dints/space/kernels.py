"""CPU kernels behind the search space's modules: the same functions as PyTorch's, computed faster or with fewer
saved tensors on a CPU.

- :class:`Conv3d`: ``nn.Conv3d`` whose batch of one goes through oneDNN (PyTorch's CPU dispatch sends it to a
  reference kernel several times slower).
- :func:`p3d_conv_norm`: a pseudo-3D op (two convolutions and a norm) that keeps only its input for the backward
  pass and recomputes the convolutions there.
- :func:`instance_norm`: InstanceNorm with an optional scalar folded into its affine parameters.
- :func:`upsample2`: trilinear x2 with aligned corners as three small matrix products on the CPU.

Each is checked against the plain PyTorch function it replaces (``tests/space/test_kernels.py``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def p3d_conv_norm(x_relu: torch.Tensor, conv: nn.Conv3d, conv_1: nn.Conv3d, weight: torch.Tensor,
                  bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``instance_norm(conv_1(conv(x_relu)))`` with the norm's affine ``weight``/``bias``, keeping only ``x_relu`` and
    the norm's statistics for the backward pass (:class:`_P3DConvNorm`).

    Args:
        x_relu: the op's input after its ReLU, ``(N, C, X, Y, Z)``.
        conv, conv_1: the two convolutions (no bias, stride 1, "same" padding).
        weight, bias: the norm's affine parameters (possibly scaled).
        eps: the norm's epsilon.
    """
    return _P3DConvNorm.apply(x_relu, conv.weight, conv_1.weight, weight, bias, list(conv.padding),
                              list(conv_1.padding), eps)


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


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 with aligned corners, as ``F.interpolate``; shape ``(N, C, X, Y, Z)`` to ``(N, C, 2X, 2Y, 2Z)``."""
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
