"""Predicted training memory of a discrete DiNTS network (:class:`dints.space.network.DiscreteNet`), and of a
one-shot search step of the supernet (:func:`predict_supernet`).

The search's memory loss keeps the paper's usage/full ratio (:mod:`dints.space.relax`): a ratio of per-path costs,
good for ranking, not for megabytes. This module predicts the bytes a training step of the *discrete* network really
needs on a GPU, for a patch, batch, channel multiplier, image channels, classes and precision, by counting what
autograd saves for the backward pass, module by module, as the modules of :mod:`dints.space.ops` compute it:

- ReLU saves its output, and the convolution after it saves that same tensor (counted once); a convolution also
  saves its weight (a parameter, not an activation, except the half-precision copy autocast makes of it).
- InstanceNorm saves its input (the convolution's output) and three per-sample, per-channel float32 vectors (the
  affine weight repeated over the batch, the mean and the inverse standard deviation); for a batch of one, two (it
  runs as a batch norm, :func:`dints.space.ops.instance_norm`, without the repeated weight).
- Trilinear resizing, concatenation, slicing, sums and the identity (skip op) save nothing; a pseudo-3D op also
  keeps the output of its first convolution.
- The factorized down step saves the ReLU of the even and of the odd voxels (each 1/8 of its input) and the
  concatenation the norm reads; the up step saves the ReLU of the upsampled input and the norm's input.
- The head's final 1x1x1 convolution saves the norm output it reads.

Under AMP (``torch.autocast``, float16 on a GPU) activations take 2 bytes, every convolution saves a float16 copy of
its weight, and a trilinear upsample runs in float32 where the autocast policy says so (CUDA does): the ReLU after
it then saves 4 bytes per value and the convolution after that its own float16 copy.

On top of the activations a training step holds the parameters, their gradients and SGD's momentum (float32 even
under AMP), the input batch and labels, the logits, what the Dice + cross-entropy loss saves, and, at the start of the
backward pass, the first gradients at full resolution. :func:`predict` adds these up; ``total`` is the predicted
peak of ``torch.cuda.max_memory_allocated``. Not counted: the convolutions' workspace (cuDNN's; the GPU run of the
benchmark measures it in), the CUDA context and the caching allocator's reserve (``nvidia-smi`` shows more), which
is what :func:`largest_batch`'s headroom is for.

``scripts/bench_memory.py`` checks the prediction against the bytes autograd really saves on 20+ architectures (and
against ``torch.cuda.max_memory_allocated`` on a GPU); ``tests/space/test_network_memory.py`` against hand-worked
cases.

Command line: ``scripts/predict_memory.py`` (an ``arch.json`` or MONAI ``.pth``; channel_mul defaults to twice the
search's, as retraining)::

    python scripts/predict_memory.py --arch arch.json --patch 96 96 96 --batch 2 [--amp] [--gpu_mb 24000]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch

from dints.space import topology
from dints.space.opsets import op_spec, opset_ops

#: Bytes per megabyte (MiB), as the rest of the project reports memory.
MB = 1024**2
#: Float32 values saved per sample and channel by an InstanceNorm: repeated affine weight, mean, inverse std.
NORM_STATS = 3
_FP32 = 4


@dataclass(frozen=True)
class Precision:
    """Bytes per value of the tensors a training step saves.

    Attributes:
        name: ``"fp32"`` or ``"amp"``.
        act: an activation (4, or 2 under AMP).
        upsampled: the output of a trilinear upsample (4 where autocast runs upsampling in float32).
    """

    name: str
    act: int
    upsampled: int

    @property
    def amp(self) -> bool:
        """Whether activations are half precision."""
        return self.act < _FP32


def precision(amp: bool = False, device_type: str = "cuda") -> Precision:
    """The precision of a training step: float32, or AMP (``torch.autocast`` on ``device_type``, half activations).

    Whether autocast runs ``upsample_trilinear3d`` in float32 is read from the installed torch (CUDA's autocast does
    in torch 2.x; the CPU's does not).
    """
    if not amp:
        return Precision("fp32", _FP32, _FP32)
    key = "AutocastCUDA" if device_type == "cuda" else f"Autocast{device_type.upper()}"
    try:
        fp32_upsample = torch._C._dispatch_has_kernel_for_dispatch_key("aten::upsample_trilinear3d", key)
    except (AttributeError, RuntimeError):  # an unknown key or a torch without the query: assume CUDA's policy
        fp32_upsample = True
    return Precision("amp", 2, _FP32 if fp32_upsample else 2)


@dataclass(frozen=True)
class Prediction:
    """Predicted memory of one training step, in bytes (``.mb(name)`` in MB).

    Attributes:
        activations: tensors the network saves for the backward pass (with AMP, its float16 weight copies too).
        parts: ``activations`` split into ``stems``, ``cells``, ``decoder``, ``head`` and ``weight_copies``.
        loss: tensors the Dice + cross-entropy loss saves.
        logits: the network output.
        batch: the input crops and labels (float32), less what ``activations`` already counts.
        params: parameters (float32).
        grads: their gradients.
        momentum: SGD's momentum buffers.
        working: gradients the backward pass holds at once while it starts, at full resolution.
        patch, batch_size, channel_mul, precision: what was predicted.
    """

    activations: int
    parts: dict[str, int]
    loss: int
    logits: int
    batch: int
    params: int
    grads: int
    momentum: int
    working: int
    patch: tuple[int, ...]
    batch_size: int
    channel_mul: float
    precision: str

    @property
    def weights(self) -> int:
        """Parameters, gradients and momentum."""
        return self.params + self.grads + self.momentum

    @property
    def held(self) -> int:
        """What a step holds at once when its forward pass and loss are done, gradients counted in full."""
        return self.activations + self.loss + self.logits + self.batch + self.weights

    @property
    def total(self) -> int:
        """Predicted peak of a training step: ``held``, with the backward pass's first gradients in place of the
        loss's saved tensors when they are larger (the loss's are freed as its backward runs)."""
        return self.held - self.loss + max(self.loss, self.working)

    def mb(self, name: str) -> float:
        """A field or property in MB."""
        return getattr(self, name) / MB

    def summary(self) -> str:
        """One line: activations, parameters/gradients/momentum, the rest and the total, in MB."""
        side = "x".join(str(n) for n in self.patch)
        rest = self.total - self.activations - self.weights
        return (f"predicted memory (patch {side}, batch {self.batch_size}, channel_mul {self.channel_mul:g}, "
                f"{self.precision}): activations {self.activations / MB:.0f} MB + parameters/gradients/momentum "
                f"{self.weights / MB:.0f} MB + loss/logits/batch/backward {rest / MB:.0f} MB = total "
                f"{self.total / MB:.0f} MB")

    def to_dict(self) -> dict[str, Any]:
        """Every figure in MB (rounded to 0.01) plus the settings."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("activations", "loss", "logits", "batch", "params", "grads", "momentum", "working"):
            out[f"{name}_mb"] = round(out.pop(name) / MB, 2)
        out["parts_mb"] = {k: round(v / MB, 2) for k, v in out.pop("parts").items()}
        out.update(weights_mb=round(self.mb("weights"), 2), held_mb=round(self.mb("held"), 2),
                   total_mb=round(self.mb("total"), 2), patch=list(self.patch))
        return out


# --- what each module saves: (bytes saved, parameters, weights of its convolutions) -------------------------------


def _norm(n: int, c: int) -> tuple[int, int]:
    # Saved float32 statistics and the affine parameters of an InstanceNorm over c channels.
    return (NORM_STATS if n > 1 else NORM_STATS - 1) * n * c * _FP32, 2 * c


def _conv_op(n: int, c_in: int, c_out: int, kernels: Sequence[Sequence[int]], vox: int, in_bytes: int,
             p: Precision, vox_out: int | None = None) -> tuple[int, int, int]:
    """ReLU -> conv(s) -> InstanceNorm (:class:`dints.space.ops.ConvOp`) on ``vox`` voxels of ``in_bytes`` per value.

    The ReLU output is saved in the input's precision; the first convolution reads it, or (AMP, float32 input) its
    own float16 copy. A second convolution (pseudo-3D) saves the first one's output; the norm saves the last one's
    (``vox_out`` voxels: fewer after a strided convolution).
    """
    vox_out = vox if vox_out is None else vox_out
    saved = n * c_in * vox * (in_bytes + (p.act if in_bytes != p.act else 0))
    saved += (len(kernels) - 1) * n * c_in * vox * p.act + n * c_out * vox_out * p.act
    chans = [c_in] * len(kernels) + [c_out]
    conv_w = sum(a * b * math.prod(k) for a, b, k in zip(chans, chans[1:], kernels))
    stats, norm_params = _norm(n, c_out)
    return saved + stats, conv_w + norm_params, conv_w


def _down(n: int, c_in: int, c_out: int, vox_out: int, p: Precision) -> tuple[int, int, int]:
    # FactorizedReduce: ReLU of even and odd voxels (c_in each), their convolutions' concatenation (the norm's input).
    stats, norm_params = _norm(n, c_out)
    return (2 * c_in + c_out) * n * vox_out * p.act + stats, c_in * c_out + norm_params, c_in * c_out


def _up(n: int, c_in: int, c_out: int, vox_out: int, p: Precision) -> tuple[int, int, int]:
    # FactorizedIncrease: upsample (nothing saved), then a 1x1x1 ConvOp on the upsampled tensor.
    return _conv_op(n, c_in, c_out, [(1, 1, 1)], vox_out, p.upsampled, p)


def _stem(n: int, in_ch: int, c_mid: int, c_out: int, vox_mid: int, vox_out: int, use_downsample: bool,
          p: Precision) -> tuple[int, int, int]:
    # Resize (nothing saved) -> conv 3^3 (saves the resized input, or the input itself at level 0; under AMP its
    # float16 copy) -> norm, then ReLU -> conv 3^3 stride 2 -> norm.
    conv_w = in_ch * c_mid * 27
    stats, norm_params = _norm(n, c_mid)
    saved, params = (in_ch + c_mid) * n * vox_mid * p.act + stats, conv_w + norm_params
    if use_downsample:
        s2, p2, w2 = _conv_op(n, c_mid, c_out, [(3, 3, 3)], vox_mid, p.act, p, vox_out)
        saved, params, conv_w = saved + s2, params + p2, conv_w + w2
    return saved, params, conv_w


def _arch_codes(arch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    codes = (arch.node_a, arch.arch_code_a, arch.arch_code_c) if hasattr(arch, "arch_code_a") else tuple(arch)
    return tuple(torch.as_tensor(c).detach().cpu().round().long() for c in codes)


def cell_table(num_depths: int, ops: Sequence[str], patch: Sequence[int], batch: int, channel_mul: float,
               p: Precision, use_downsample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bytes saved, parameters and convolution weights of every (path, op) cell of a block.

    Args:
        num_depths: levels D.
        ops: op names in index order.
        patch: input spatial size.
        batch: crops per step.
        channel_mul: channel multiplier.
        p: :func:`precision`.
        use_downsample: whether the stems halve the input.

    Returns:
        Three int64 tensors of shape ``(P, K)``: saved bytes, parameter count, convolution weight count.
    """
    src, tgt, kind = (t.tolist() for t in topology.path_table(num_depths))
    ch = topology.level_channels(num_depths, channel_mul, use_downsample)
    vox = [math.prod(topology.level_shape(patch, r, use_downsample)) for r in range(num_depths)]
    table = torch.zeros(3, len(src), len(ops), dtype=torch.long)
    for q, (s, t, k) in enumerate(zip(src, tgt, kind)):
        resample = {topology.DOWN: _down, topology.UP: _up}.get(k)
        pre = resample(batch, ch[s], ch[t], vox[t], p) if resample else (0, 0, 0)
        for j, name in enumerate(ops):
            kernels = op_spec(name).kernels
            op = _conv_op(batch, ch[t], ch[t], kernels, vox[t], p.act, p) if kernels else (0, 0, 0)
            table[:, q, j] = torch.tensor(pre) + torch.tensor(op)
    return table[0], table[1], table[2]


def loss_saved_bytes(batch: int, num_classes: int, voxels: int) -> int:
    """Bytes the segmentation loss (:func:`dints.train.losses.seg_loss_fn`, MONAI's DiceCELoss) saves for backward.

    Per voxel and crop: the softmax (K float32 values), the foreground part of its Dice products (K - 1), the
    log-softmax of the cross-entropy (K) and the labels as int64.
    """
    return batch * voxels * ((3 * num_classes - 1) * _FP32 + 8)


def predict(arch: Any, patch: Sequence[int], batch: int = 1, channel_mul: float | None = None,
            in_channels: int | None = None, num_classes: int | None = None, amp: bool = False,
            device_type: str = "cuda", momentum: bool = True) -> Prediction:
    """Predicted memory of a training step of the discrete network of ``arch``.

    Args:
        arch: a :class:`dints.space.network.DiscreteNet`, an ``Arch`` (:mod:`dints.space.archfile`), anything with
            ``node_a`` ``(B+1, D)``, ``arch_code_a`` ``(B, P)`` and ``arch_code_c`` ``(B, P)`` attributes, or those
            three codes as a tuple; ``ops`` and ``use_downsample`` are read from it when present (else op set 1 and
            True).
        patch: crop size ``(X, Y, Z)``, each side divisible by ``2**(D + 1)``.
        batch: crops per step and process (``batch_size * num_samples``).
        channel_mul: channel multiplier of the network (a DiscreteNet's own by default).
        in_channels: image channels (a DiscreteNet's own by default).
        num_classes: output classes, background included (a DiscreteNet's own by default).
        amp: mixed precision (``torch.autocast``).
        device_type: where autocast runs (``"cuda"``; only matters with ``amp``).
        momentum: whether the optimiser keeps one momentum buffer per parameter (SGD with momentum).

    Returns:
        :class:`Prediction`.

    Raises:
        ValueError: a missing setting, or a patch side not divisible by ``2**(D + 1)``.
    """
    if hasattr(arch, "in_channels"):  # a network: its own settings (an Arch's channel_mul is the search's)
        channel_mul = arch.channel_mul if channel_mul is None else channel_mul
        in_channels = arch.in_channels if in_channels is None else in_channels
        num_classes = arch.num_classes if num_classes is None else num_classes
    if None in (channel_mul, in_channels, num_classes):
        raise ValueError("channel_mul, in_channels and num_classes are needed (only a DiscreteNet carries them)")
    node_a, code_a, code_c = _arch_codes(arch)
    num_depths = node_a.shape[1]
    use_downsample = bool(getattr(arch, "use_downsample", True))
    ops = list(getattr(arch, "ops", None) or opset_ops(1))
    patch, n, p = tuple(int(x) for x in patch), int(batch), precision(amp, device_type)
    s = int(use_downsample)
    f = topology.input_divisor(num_depths, use_downsample)  # the network's own rule (dints.space.ops.check_input)
    if len(patch) != 3 or any(side % f for side in patch):
        raise ValueError(f"patch {list(patch)}: a {num_depths}-level network needs 3 sides divisible by {f}")
    vox_in = math.prod(patch)
    nums = topology.filter_nums(num_depths, channel_mul)
    vox = [math.prod(topology.level_shape(patch, r, use_downsample)) for r in range(num_depths)]

    paths = torch.arange(code_a.shape[1])
    cells = [(t[paths, code_c.clamp(0, len(ops) - 1)] * code_a).sum().item()  # (B, P) cells, inactive ones zeroed
             for t in cell_table(num_depths, ops, patch, n, channel_mul, p, use_downsample)]
    src, tgt, _ = (t.tolist() for t in topology.path_table(num_depths))
    stem_levels = sorted({src[q] for q in range(code_a.shape[1]) if code_a[0, q]})
    stems = [_stem(n, in_channels, nums[d], nums[d + s], math.prod(m // 2**d for m in patch), vox[d],
                   use_downsample, p) for d in stem_levels]
    top = max(tgt[q] for q in range(code_a.shape[1]) if code_a[-1, q])
    # Decoder stage r reads level r: the deepest one the last block's node (half precision under AMP), the others
    # that node plus the upsampled stage below (float32 where autocast upsamples in float32).
    decoder = [_conv_op(n, nums[r + s], nums[max(r + s - 1, 0)], [(3, 3, 3)], vox[r],
                        p.act if r == top else p.upsampled, p) for r in range(top + 1)]
    head_in = p.upsampled if use_downsample else p.act  # stage 0 upsamples only after a halving stem
    head = _conv_op(n, nums[0], nums[0], [(3, 3, 3)], vox_in, head_in, p)
    head = (head[0] + n * nums[0] * vox_in * p.act, head[1] + nums[0] * num_classes + num_classes,
            head[2] + nums[0] * num_classes)

    groups = {"stems": stems, "cells": [tuple(cells)], "decoder": decoder, "head": [head]}
    saved, params, conv_weights = ({name: int(sum(m[i] for m in g)) for name, g in groups.items()} for i in range(3))
    parts = dict(saved, weight_copies=sum(conv_weights.values()) * p.act if p.amp else 0)
    params = sum(params.values())
    image = n * in_channels * vox_in * _FP32
    batch_bytes = n * vox_in * _FP32 + (image if p.amp or 0 not in stem_levels else 0)  # labels (+ the input)
    logits = n * num_classes * vox_in * p.act
    working = n * vox_in * (num_classes * (_FP32 + (p.act if p.amp else 0)) + nums[0] * p.act)
    return Prediction(activations=sum(parts.values()), parts=parts, loss=loss_saved_bytes(n, num_classes, vox_in),
                      logits=logits, batch=batch_bytes, params=params * _FP32, grads=params * _FP32,
                      momentum=params * _FP32 if momentum else 0, working=working, patch=patch, batch_size=n,
                      channel_mul=float(channel_mul), precision=p.name)


def largest_batch(arch: Any, patch: Sequence[int], budget_mb: float, *args: Any, **kwargs: Any) -> int:
    """The largest batch whose predicted ``total`` is at most ``budget_mb`` (0 if not even one crop fits).

    Every term but the weights grows linearly with the batch, so the answer is read off two predictions.
    Further arguments are those of :func:`predict` after ``batch``.
    """
    one, two = (predict(arch, patch, n, *args, **kwargs).total for n in (1, 2))
    per_crop, fixed = two - one, 2 * one - two
    return max(0, int((budget_mb * MB - fixed) // per_crop))


def predict_supernet(num_blocks: int, num_depths: int, patch: Sequence[int], batch: int = 1, channel_mul: float = 0.5,
                     in_channels: int = 1, num_classes: int = 2, ops: Sequence[str] | None = None,
                     recompute: bool = True, amp: bool = False, device_type: str = "cuda",
                     use_downsample: bool = True) -> Prediction:
    """Predicted memory of a one-shot search step of the supernet (:class:`dints.space.supernet.SuperNet`, every
    path and op running), counted as :func:`predict` counts a discrete network's.

    A supernet cell differs from a discrete one in what its ops share (:class:`dints.space.ops.MixedCell`): the
    resampling step runs once for all its ops and the convolutions share one ReLU of its output; a skip connection
    is multiplied by its weight, which saves its input; the op weights fold into the norms' affine parameters, so a
    conv op saves nothing more than alone; with ``recompute`` (and without AMP) a pseudo-3D op keeps only its
    ReLU'd input and its norm's statistics. Every stem runs, the decoder reads every level. Parameters, gradients and
    SGD's momentum cover the weights; the architecture parameters add their gradients and Adam's two buffers.

    Args:
        num_blocks, num_depths: blocks B and levels D.
        patch: crop size, each side divisible by ``2**(D + 1)`` (``2**D`` without ``use_downsample``).
        batch: crops per step and process.
        channel_mul: the search's channel multiplier.
        in_channels, num_classes: image channels, classes with background.
        ops: candidate op names (default op set 1).
        recompute: the search's ``--recompute`` (only without AMP, as the supernet does).
        amp, device_type: as :func:`predict`.
        use_downsample: whether the stems halve the input.

    Returns:
        :class:`Prediction` (``channel_mul`` the search's).

    Raises:
        ValueError: a patch side not divisible as the network requires.
    """
    ops = list(ops or opset_ops(1))
    patch, n, p = tuple(int(x) for x in patch), int(batch), precision(amp, device_type)
    f = topology.input_divisor(num_depths, use_downsample)
    if len(patch) != 3 or any(side % f for side in patch):
        raise ValueError(f"patch {list(patch)}: a {num_depths}-level network needs 3 sides divisible by {f}")
    s = int(use_downsample)
    vox_in = math.prod(patch)
    nums = topology.filter_nums(num_depths, channel_mul)
    ch = topology.level_channels(num_depths, channel_mul, use_downsample)
    vox = [math.prod(topology.level_shape(patch, r, use_downsample)) for r in range(num_depths)]
    src, tgt, kind = (t.tolist() for t in topology.path_table(num_depths))
    saves_p3d = not (recompute and not p.amp)

    cell_saved = cell_params = cell_conv = 0
    for q in range(len(src)):
        c, v = ch[tgt[q]], vox[tgt[q]]
        resample = {topology.DOWN: _down, topology.UP: _up}.get(kind[q])
        saved, params, conv_w = resample(n, ch[src[q]], c, v, p) if resample else (0, 0, 0)
        convs = [op_spec(name).kernels for name in ops if op_spec(name).kernels]
        if convs:
            saved += n * c * v * p.act  # the shared ReLU, every convolution's input
        if len(convs) < len(ops):
            saved += n * c * v * p.act  # a skip connection times its weight saves its input
        for kernels in convs:
            stats, norm_params = _norm(n, c)
            w = sum(c * c * math.prod(k) for k in kernels)
            if len(kernels) > 1 and not saves_p3d:
                saved += (NORM_STATS - 1) * n * c * _FP32  # the recomputed op keeps its mean and inverse std only
            else:
                saved += len(kernels) * n * c * v * p.act + stats  # first convolution's output, the norm's input
            params, conv_w = params + w + norm_params, conv_w + w
        cell_saved, cell_params, cell_conv = cell_saved + saved, cell_params + params, cell_conv + conv_w
    cells = (num_blocks * cell_saved, num_blocks * cell_params, num_blocks * cell_conv)
    stems = [_stem(n, in_channels, nums[d], nums[d + s], math.prod(m // 2**d for m in patch), vox[d],
                   use_downsample, p) for d in range(num_depths)]
    decoder = [_conv_op(n, nums[r + s], nums[max(r + s - 1, 0)], [(3, 3, 3)], vox[r],
                        p.act if r == num_depths - 1 else p.upsampled, p) for r in range(num_depths)]
    head = _conv_op(n, nums[0], nums[0], [(3, 3, 3)], vox_in, p.upsampled if use_downsample else p.act, p)
    head = (head[0] + n * nums[0] * vox_in * p.act, head[1] + nums[0] * num_classes + num_classes,
            head[2] + nums[0] * num_classes)

    groups = {"stems": stems, "cells": [cells], "decoder": decoder, "head": [head]}
    saved, params, conv_weights = ({name: int(sum(m[i] for m in g)) for name, g in groups.items()} for i in range(3))
    alphas = num_blocks * len(src) * (1 + len(ops))
    parts = dict(saved, weight_copies=sum(conv_weights.values()) * p.act if p.amp else 0)
    parts["cells"] += alphas * _FP32  # the op weights the cells read (views of one tensor)
    weights = sum(params.values())
    image = n * in_channels * vox_in * _FP32
    logits = n * num_classes * vox_in * p.act
    working = n * vox_in * (num_classes * (_FP32 + (p.act if p.amp else 0)) + nums[0] * p.act)
    return Prediction(activations=sum(parts.values()), parts=parts, loss=loss_saved_bytes(n, num_classes, vox_in),
                      logits=logits, batch=n * vox_in * _FP32 + (image if p.amp else 0),
                      params=(weights + alphas) * _FP32, grads=(weights + alphas) * _FP32,
                      momentum=(weights + 2 * alphas) * _FP32, working=working, patch=patch, batch_size=n,
                      channel_mul=float(channel_mul), precision=p.name)
