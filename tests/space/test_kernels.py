"""The CPU kernels (dints.space.kernels) against the PyTorch functions they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dints.space.kernels import Conv3d, upsample2
from helpers.monai_ref import single_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize(
    "kernel,stride,bias,rows",
    [((3, 3, 3), 1, False, 12), ((3, 3, 1), 1, False, 12), ((1, 1, 1), 2, True, 12), ((3, 3, 3), 2, False, 12),
     ((3, 1, 3), 1, True, 7), ((3, 3, 3), 2, False, 10), ((1, 3, 1), 1, False, 2)],
)
def test_one_sample_conv_matches_reference(kernel, stride, bias, rows):
    """kernels.Conv3d routes a batch of one through oneDNN: same output and gradients as F.conv3d (input and weight
    gradients by their own routes: flipped-kernel convolution, two half-samples, or a zero-paired copy)."""
    torch.manual_seed(0)
    conv = Conv3d(5, 7, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=bias)
    x = torch.randn(1, 5, rows, 10, 8, requires_grad=True)
    g = torch.randn_like(conv(x))
    conv(x).backward(g)
    grads = [x.grad.clone(), conv.weight.grad.clone()] + ([conv.bias.grad.clone()] if bias else [])
    x.grad = None
    conv.zero_grad()
    ref = torch.nn.functional.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    ref.backward(g)
    refs = [x.grad, conv.weight.grad] + ([conv.bias.grad] if bias else [])
    assert torch.allclose(conv(x), ref, atol=1e-5)
    for a, b in zip(grads, refs):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("shape", [(1, 3, 4, 5, 6), (2, 2, 1, 3, 2), (1, 4, 8, 8, 8)])
def test_upsample_matches_trilinear_interpolation(shape):
    """The CPU upsampling by matrix products is F.interpolate's trilinear x2 with aligned corners, both ways."""
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    y = upsample2(x)
    ref = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    g = torch.randn_like(ref)
    (gx,) = torch.autograd.grad(y, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, atol=1e-5, rtol=0)
