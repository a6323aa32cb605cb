"""The discrete network against MONAI's TopologyInstance + DiNTS: parameter count, outputs, unused-level pruning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dints.space.archfile import Arch
from dints.space.network import DiscreteNet
from dints.space.ops import ConvOp
from dints.space.opsets import opset_ops
from helpers.monai_ref import (  # noqa: F401  (single_thread is an autouse fixture)
    load_from_monai,
    monai_discrete,
    path_ends,
    random_arch,
    randomize_,
    single_thread,
)

# (num_blocks, num_depths, seed, spatial size, channel_mul)
CASES = [
    (3, 2, 0, (16, 16, 8), 0.25),
    (5, 2, 1, (16, 8, 16), 0.2),
    (4, 3, 2, (32, 32, 16), 0.25),
    (6, 3, 3, (16, 32, 16), 0.2),
    (3, 4, 4, (32, 32, 32), 0.25),
    (5, 4, 5, (32, 32, 32), 0.2),
]


def _unused_monai_params(ref, node_a) -> int:
    # MONAI's stems of levels block 0 never reads and its decoder stages deeper than the deepest level active after
    # the last block: built, but their outputs are zeros or never computed.
    num_depths = node_a.shape[1]
    top = max(d for d in range(num_depths) if node_a[-1][d])
    n = 0
    for d in range(num_depths):
        if not node_a[0][d]:
            n += sum(p.numel() for p in ref.stem_down[str(d)].parameters())
        if d > top:
            n += sum(p.numel() for p in ref.stem_up[str(d)].parameters())
    return n


@pytest.mark.parametrize("num_blocks, num_depths, seed, size, channel_mul", CASES)
def test_matches_monai_dints(num_blocks, num_depths, seed, size, channel_mul):
    node_a, code_a, code_c = random_arch(num_blocks, num_depths, num_ops=5, seed=seed)
    torch.manual_seed(seed)
    ref = monai_discrete(node_a, code_a, code_c, 2, 3, channel_mul, num_depths).eval()
    randomize_(ref, seed)
    net = DiscreteNet((node_a, code_a, code_c), 2, 3, channel_mul=channel_mul).eval()

    n_ref = sum(p.numel() for p in ref.parameters())
    n_ours = sum(p.numel() for p in net.parameters())
    assert n_ours == n_ref - _unused_monai_params(ref, node_a)

    load_from_monai(net, ref)
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        out, expected = net(x), ref(x)
    assert out.shape == (1, 3, *size)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_unused_levels_are_not_built():
    # D=3, B=2 by hand: block 0 reads only level 1 (path 3: 1->1, path 1: 1->0 up), block 1 keeps levels 0 and 1
    # with same-level paths. Level 2 is never used: no stem, no decoder stage; level 0 has no stem either.
    src, tgt = path_ends(3)
    assert (src[1], tgt[1], src[3], tgt[3], src[0], tgt[0]) == (1, 0, 1, 1, 0, 0)
    code_a = torch.zeros(2, 7, dtype=torch.long)
    code_a[0, [1, 3]] = 1
    code_a[1, [0, 3]] = 1
    node_a = torch.tensor([[0, 1, 0], [1, 1, 0], [1, 1, 0]])
    net = DiscreteNet((node_a, code_a, torch.zeros_like(code_a)), 1, 2, channel_mul=0.25)
    assert sorted(net.stems) == ["1"]
    assert sorted(net.decoder.stages) == ["0", "1"]
    assert sorted(net.cells) == ["0_1", "0_3", "1_0", "1_3"]
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


def test_codes_are_buffers_and_arch_object_is_accepted():
    node_a, code_a, code_c = random_arch(3, 3, num_ops=4, seed=7)
    arch = SimpleNamespace(
        num_blocks=3, num_depths=3, opset=0, ops=["skip_connect", "conv_2d_3x3x1", "conv_3x3x3", "conv_p3d_3x3x1"],
        use_downsample=True, node_a=node_a, arch_code_a=code_a, arch_code_c=code_c,
    )
    net = DiscreteNet(arch, 1, 2, channel_mul=0.25)
    state = net.state_dict()
    for name, value in (("node_a", node_a), ("arch_code_a", code_a), ("arch_code_c", code_c)):
        assert torch.equal(state[name], torch.as_tensor(value))
    # Op indices are resolved in opset 0: index 1 is the single 3x3x1 convolution, 3 the pseudo-3D pair.
    for b in range(3):
        for q in range(7):
            if code_a[b, q]:
                op = net.cells[f"{b}_{q}"].op
                k = int(code_c[b, q])
                if k == 0:
                    assert isinstance(op, torch.nn.Identity)
                else:
                    assert isinstance(op, ConvOp)
                    expected = {1: [(3, 3, 1)], 2: [(3, 3, 3)], 3: [(3, 3, 1), (1, 1, 3)]}[k]
                    shapes = [tuple(op.conv.weight.shape[2:])]
                    if op.conv_1 is not None:
                        shapes.append(tuple(op.conv_1.weight.shape[2:]))
                    assert shapes == expected
    with pytest.raises(ValueError, match="disagrees"):
        DiscreteNet(arch, 1, 2, opset=1)


def test_archfile_arch_builds_the_same_network():
    node_a, code_a, code_c = random_arch(4, 3, num_ops=5, seed=9)
    arch = Arch(num_blocks=4, num_depths=3, opset=1, ops=opset_ops(1), node_a=node_a, arch_code_a=code_a,
                arch_code_c=code_c)
    a = DiscreteNet(arch, 1, 2, channel_mul=0.25)
    b = DiscreteNet((node_a, code_a, code_c), 1, 2, channel_mul=0.25)
    shapes = lambda net: {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes(a) == shapes(b)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 16, 16, 32)
    torch.testing.assert_close(a(x), b(x))


def test_rejects_unfed_paths_and_bad_input():
    code_a = torch.zeros(2, 4, dtype=torch.long)
    code_a[0, 0] = 1  # 0 -> 0
    code_a[1, 3] = 1  # 1 -> 1, but level 1 is not fed after block 0
    node_a = torch.tensor([[1, 0], [1, 0], [0, 1]])
    with pytest.raises(ValueError, match="inactive"):
        DiscreteNet((node_a, code_a, torch.zeros_like(code_a)), 1, 2, channel_mul=0.25)
    code_a[1] = torch.tensor([0, 0, 1, 0])  # 0 -> 1 down
    net = DiscreteNet((node_a, code_a, torch.zeros_like(code_a)), 1, 2, channel_mul=0.25)
    with pytest.raises(ValueError, match="divisible by"):
        net(torch.randn(1, 1, 16, 16, 12))


def test_amp_matches_fp32():
    node_a, code_a, code_c = random_arch(4, 3, num_ops=5, seed=11)
    torch.manual_seed(0)
    net = DiscreteNet((node_a, code_a, code_c), 1, 3, channel_mul=0.25)
    x = torch.randn(1, 1, 32, 32, 16)
    ref = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    err = (out.float() - ref.detach()).norm() / ref.detach().norm()
    assert err < 0.05, float(err)
