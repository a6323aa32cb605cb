"""The memory predictor (dints.space.network_memory) against hand-worked byte counts and the bytes autograd really saves."""

from __future__ import annotations


import pytest
import torch

from dints.space import network_memory as memory
from dints.space.decode import decode
from dints.space.network import DiscreteNet
from dints.space.ops import Cell
from dints.train.losses import seg_loss_fn

F32 = 4


def saved_bytes(fn, *leaves: torch.Tensor, params=()) -> int:
    """Bytes of the distinct storages autograd saves while ``fn(*leaves)`` runs, parameters left out."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*leaves)
    return sum(seen.values())


def one_path_net(op: int = 1) -> DiscreteNet:
    # D=2, one block, one path: level 0 -> level 0 with op `op` (1 = conv 3x3x3). channel_mul 0.25: filter_nums
    # [8, 16, 32], level 0 carries 16 channels.
    node_a = [[1, 0], [1, 0]]
    code_a = [[1, 0, 0, 0]]
    code_c = [[op, 0, 0, 0]]
    return DiscreteNet((node_a, code_a, code_c), in_channels=1, num_classes=2, channel_mul=0.25)


def test_one_block_one_path_by_hand():
    # Input 1x1x8^3 (512 voxels); level 0 is 4^3 (64 voxels). Values saved, float32; each norm of this batch of one
    # saves its input and two statistics per channel (mean, inverse std):
    stem = (1 * 512       # conv 3^3 reads the input itself
            + 8 * 512     # norm reads the conv output (8 channels at 8^3)
            + 2 * 8       # norm statistics
            + 8 * 512     # ReLU output, read by the stride-2 conv too (counted once)
            + 16 * 64     # norm_1 reads the stride-2 conv output (16 channels at 4^3)
            + 2 * 16)
    cell = 16 * 64 + 16 * 64 + 2 * 16  # ReLU output (= the conv's input), conv output, norm statistics
    decoder = 16 * 64 + 8 * 64 + 2 * 8  # stage 0: ReLU of the node, conv to 8 channels, statistics; upsample: none
    head = 8 * 512 + 8 * 512 + 2 * 8 + 8 * 512  # ReLU, conv output, statistics, norm output read by the 1x1x1 conv
    expected = (stem + cell + decoder + head) * F32
    assert expected == 102848
    # On the CPU the decoder's x2 upsampling is three matrix products with one cached (8, 4) interpolation matrix,
    # which autograd keeps too: a constant of the CPU path, not predicted.
    interpolation = 8 * 4 * F32

    net = one_path_net()
    x = torch.randn(1, 1, 8, 8, 8)
    assert saved_bytes(net, x, params=net.parameters()) == expected + interpolation
    pred = memory.predict(net, (8, 8, 8), 1)
    assert pred.activations == expected
    assert pred.parts == {"stems": stem * F32, "cells": cell * F32, "decoder": decoder * F32, "head": head * F32,
                          "weight_copies": 0}


def test_one_block_skip_path_saves_nothing_in_the_cell():
    net = one_path_net(op=0)
    pred = memory.predict(net, (8, 8, 8), 1)
    assert pred.parts["cells"] == 0
    interpolation = 8 * 4 * F32  # the CPU upsampling's cached matrix, as in the test above
    assert saved_bytes(net, torch.randn(1, 1, 8, 8, 8), params=net.parameters()) == pred.activations + interpolation


@pytest.mark.parametrize(
    "kind, c_in, c_out, vox_in, vox_out, op, values",
    [
        # (a batch of one: each norm saves two statistics per channel, mean and inverse std)
        # same level, conv 3x3x3: ReLU output (the conv's input), conv output, norm statistics
        (0, 16, 16, 64, 64, "conv_3x3x3", 16 * 64 + 16 * 64 + 2 * 16),
        # same level, pseudo-3D: ReLU, first conv's output (the second's input), second conv's output, statistics
        (0, 16, 16, 64, 64, "conv_3x3x1", 3 * 16 * 64 + 2 * 16),
        # down 16 -> 32 channels, 4^3 -> 2^3, skip op: ReLU of even and of odd voxels, concatenation, statistics
        (-1, 16, 32, 64, 8, "skip_connect", 16 * 8 + 16 * 8 + 32 * 8 + 2 * 32),
        # up 32 -> 16 channels, 2^3 -> 4^3, skip op: ReLU of the upsampled input, 1x1x1 conv output, statistics
        (1, 32, 16, 8, 64, "skip_connect", 32 * 64 + 16 * 64 + 2 * 16),
        # up then conv 3x3x3 at the target level
        (1, 32, 16, 8, 64, "conv_3x3x3", 32 * 64 + 16 * 64 + 2 * 16 + 16 * 64 + 16 * 64 + 2 * 16),
    ],
)
def test_single_cells_by_hand(kind, c_in, c_out, vox_in, vox_out, op, values):
    cell = Cell(kind, c_in, c_out, op)
    side = round(vox_in ** (1 / 3))
    x = torch.randn(1, c_in, side, side, side, requires_grad=True)
    # On the CPU an up step's x2 upsampling also keeps its cached (4, 2) interpolation matrix (not predicted).
    interpolation = 4 * 2 * F32 if kind == 1 else 0
    assert saved_bytes(cell, x, params=cell.parameters()) == values * F32 + interpolation
    # The predictor's table for D=2, patch 8^3 (level 0: 16 channels at 4^3, level 1: 32 at 2^3), channel_mul 0.25.
    saved, params, _ = memory.cell_table(2, [op], (8, 8, 8), 1, 0.25, memory.precision())
    path = {(0, 16): 0, (1, 32): 1, (-1, 16): 2, (0, 32): 3}[(kind, c_in)]
    assert int(saved[path, 0]) == values * F32
    assert int(params[path, 0]) == sum(p.numel() for p in cell.parameters())


def random_arch(seed: int, blocks: int, depths: int, bias: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    d = decode(torch.randn(blocks, 3 * depths - 2, generator=g) * 2 + bias,
               torch.randn(blocks, 3 * depths - 2, 5, generator=g))
    return d.node_a, d.arch_code_a, d.arch_code_c


@pytest.mark.parametrize(
    "seed, blocks, depths, side, channel_mul, in_ch, classes, batch, use_downsample",
    [(0, 4, 3, 32, 0.25, 1, 3, 1, True), (1, 6, 4, 32, 0.125, 2, 2, 2, True), (2, 3, 2, 16, 0.25, 4, 4, 1, False)],
)
def test_matches_measured_saved_bytes(seed, blocks, depths, side, channel_mul, in_ch, classes, batch, use_downsample):
    torch.manual_seed(seed)
    codes = random_arch(seed, blocks, depths)
    net = DiscreteNet(codes, in_ch, classes, channel_mul, use_downsample=use_downsample)
    x = torch.randn(batch, in_ch, side, side, side)
    measured = saved_bytes(net, x, params=net.parameters())
    pred = memory.predict(net, (side,) * 3, batch)
    assert pred.activations == pytest.approx(measured, rel=0.01)
    assert pred.params == F32 * sum(p.numel() for p in net.parameters())
    assert pred.grads == pred.momentum == pred.params


def test_amp_matches_measured_saved_bytes_on_cpu():
    # CPU autocast keeps the trilinear upsample in the input's precision: every activation is half, and each
    # convolution saves a half copy of its weight.
    torch.manual_seed(0)
    net = DiscreteNet(random_arch(3, 4, 3), 1, 2, 0.25)
    x = torch.randn(1, 1, 32, 32, 32)

    def forward(inp):
        with torch.autocast("cpu", dtype=torch.float16):
            return net(inp)

    measured = saved_bytes(forward, x, params=net.parameters())
    pred = memory.predict(net, (32, 32, 32), 1, amp=True, device_type="cpu")
    assert pred.activations == pytest.approx(measured, rel=0.01)
    conv_weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert pred.parts["weight_copies"] == 2 * conv_weights


def test_cuda_amp_keeps_upsampled_tensors_in_float32():
    # Under CUDA's autocast policy (upsampling in float32) the ReLU after an upsample saves float32 values and the
    # convolution its own half copy: 6 bytes per value instead of 2. The one-path net has two such ReLUs: the head's
    # (8 channels at 8^3) and none in the decoder's only stage (it reads the node).
    net = one_path_net()
    cpu, cuda = (memory.predict(net, (8, 8, 8), 1, amp=True, device_type=d) for d in ("cpu", "cuda"))
    if memory.precision(True, "cuda").upsampled == 4:
        assert cuda.activations - cpu.activations == 8 * 512 * (4 + 2 - 2)
    assert memory.precision(True, "cpu") == memory.Precision("amp", 2, 2)


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_loss_saved_bytes(classes):
    logits = torch.randn(2, classes, 8, 8, 8, requires_grad=True)
    labels = torch.randint(0, classes, (2, 1, 8, 8, 8)).float()
    measured = saved_bytes(lambda t: seg_loss_fn()(t, labels), logits)
    assert memory.loss_saved_bytes(2, classes, 512) == pytest.approx(measured, rel=0.01)


def test_prediction_scales_and_totals():
    codes = random_arch(4, 4, 3)
    one, two, four = (memory.predict(codes, (32, 32, 32), n, 0.5, 1, 2) for n in (1, 2, 4))
    # Linear in the batch from two samples on (a batch of one saves one norm statistic less per channel).
    assert four.activations == 2 * two.activations and four.params == two.params == one.params
    assert 2.01 * one.activations > two.activations > 2 * one.activations
    assert one.total > one.activations + one.weights
    assert one.total == one.held - one.loss + max(one.loss, one.working)
    assert memory.largest_batch(codes, (32, 32, 32), two.total / memory.MB, 0.5, 1, 2) == 2
    with pytest.raises(ValueError, match="channel_mul"):
        memory.predict(codes, (32, 32, 32), 1)


def test_prediction_accepts_the_patches_the_network_accepts():
    # A 3-level network needs sides divisible by 2**(3 + 1) = 16: 40 is divisible by the deepest level's 8, yet the
    # network refuses it, and so must the prediction of its memory.
    codes = random_arch(4, 3, 3)
    net = DiscreteNet(codes, 1, 2, 0.25)
    for side, ok in ((40, False), (48, True)):
        x = torch.zeros(1, 1, 32, 32, side)
        if ok:
            net(x)
            memory.predict(codes, (32, 32, side), 1, 0.25, 1, 2)
            continue
        with pytest.raises(ValueError, match="divisible by"):
            net(x)
        with pytest.raises(ValueError, match="divisible by 16"):
            memory.predict(codes, (32, 32, side), 1, 0.25, 1, 2)


def test_bench_script_measures_a_training_step():
    from scripts.bench_memory import architectures, measure

    archs = architectures(6, 32)
    assert [int(a["codes"][1].sum()) for a in archs[:4]] == [120, 120, 12, 12]  # the B=12, D=4 extremes
    arch = archs[5]
    for full_backward in (False, True):
        meas = measure(arch, 32, 0.125, 1, torch.device("cpu"), amp=False, full_backward=full_backward)
        pred = memory.predict(arch["codes"], (32, 32, 32), 1, 0.125, arch["in_channels"], arch["num_classes"])
        assert meas["activations"] == pytest.approx(pred.activations, rel=0.01)
        assert meas["held"] == pytest.approx(pred.held, rel=0.01)


@pytest.mark.parametrize(
    "blocks, depths, side, channel_mul, in_ch, classes, batch, recompute, use_downsample",
    [(2, 3, 32, 0.25, 1, 3, 1, False, True), (2, 3, 32, 0.25, 1, 3, 1, True, True),
     (3, 4, 32, 0.125, 2, 2, 2, True, True), (3, 4, 32, 0.125, 2, 2, 2, False, True),
     (2, 2, 16, 0.25, 4, 4, 1, True, False)],
)
def test_supernet_matches_measured_saved_bytes(blocks, depths, side, channel_mul, in_ch, classes, batch, recompute,
                                               use_downsample):
    from dints.space.supernet import SuperNet

    torch.manual_seed(0)
    net = SuperNet(in_ch, classes, blocks, depths, channel_mul, recompute=recompute, use_downsample=use_downsample)
    x = torch.randn(batch, in_ch, side, side, side)
    measured = saved_bytes(lambda inp: net(inp).sum().backward(), x, params=net.parameters())
    pred = memory.predict_supernet(blocks, depths, (side,) * 3, batch, channel_mul, in_ch, classes,
                                   recompute=recompute, use_downsample=use_downsample)
    # The CPU upsampling's small interpolation matrices are all the difference (well under 0.5%).
    assert measured - 20_000 < pred.activations <= measured
    assert pred.params == F32 * sum(p.numel() for p in net.parameters())
    # Adam's two buffers for the architecture parameters, SGD's one for the weights.
    assert pred.momentum == pred.params + F32 * (net.alpha_a.numel() + net.alpha_c.numel())


def test_supernet_recompute_keeps_less_and_rejects_bad_patches():
    full = memory.predict_supernet(12, 4, (96, 96, 96), 1, 0.5, recompute=False)
    light = memory.predict_supernet(12, 4, (96, 96, 96), 1, 0.5, recompute=True)
    assert light.activations < 0.75 * full.activations
    # AMP keeps the pseudo-3D intermediates (recompute runs without autocast only) in half precision (on the CPU,
    # whose autocast upsamples in half precision too).
    amp = memory.predict_supernet(12, 4, (96, 96, 96), 1, 0.5, recompute=True, amp=True, device_type="cpu")
    assert amp.parts["cells"] == pytest.approx(full.parts["cells"] / 2, rel=0.01)
    with pytest.raises(ValueError, match="divisible by 32"):
        memory.predict_supernet(12, 4, (96, 96, 80), 1)
