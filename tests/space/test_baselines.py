"""Baseline architectures: the random draw hits its memory window uniformly and reproducibly, the U is built as
documented (with a hand-computed memory ratio), and the CVPR 2021 architecture is MONAI's."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import numpy as np
import pytest
import torch

from dints.space import baselines, topology
from dints.space.archfile import arch_from_monai_codes, monai_arch_codes
from dints.space.network import DiscreteNet
from dints.space.ops import Stem
from dints.space.opsets import opset_ops
from dints.space.sizes import filter_nums

OPS = opset_ops(1)
SPACES = {(3, 4): (2, 1, 32, 32, 32), (4, 12): (2, 1, 64, 64, 64)}  # (D, B): in_shape (the tiny preset, the paper)


def draw(num_depths, num_blocks, target, seed=0, ops=OPS, channel_mul=0.5):
    return baselines.random_arch(num_blocks, num_depths, 1, ops, target, seed, SPACES[num_depths, num_blocks],
                                 channel_mul)


# --- random ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("space", list(SPACES))
def test_random_arch_is_consistent_and_within_its_window(space, target):
    num_depths, num_blocks = space
    start = time.perf_counter()
    arch = draw(num_depths, num_blocks, target)
    assert time.perf_counter() - start < 1.0  # fast at the paper's D = 4, B = 12 too
    topology.check_codes(arch.arch_code_a, arch.node_a)
    assert (arch.num_blocks, arch.num_depths, arch.ops, arch.channel_mul) == (num_blocks, num_depths, OPS, 0.5)
    ratio = baselines.memory_ratio(arch, SPACES[space])
    assert abs(ratio - target) <= baselines.MEM_TOLERANCE
    assert arch.mem_ratio == round(ratio, 6)


def test_random_arch_is_deterministic_per_seed_and_differs_across_seeds():
    a, b = draw(4, 12, 0.5, seed=3), draw(4, 12, 0.5, seed=3)
    assert a == b
    others = [draw(4, 12, 0.5, seed=s) for s in range(4)]
    assert len({str(o.arch_code_a) for o in others}) == 4 and len({str(o.arch_code_c) for o in others}) == 4


def test_random_ops_are_drawn_for_every_path():
    arch = draw(4, 12, 0.5)
    counts = Counter(np.asarray(arch.arch_code_c).ravel().tolist())
    assert sorted(counts) == list(range(len(OPS)))  # 120 paths: every op turns up
    assert max(counts.values()) < 45  # and none dominates (24 expected each)


def test_random_arch_reports_an_unreachable_target():
    # Chains of skip connections on the coarsest level cost little: the least ratio here is about 0.02.
    with pytest.raises(ValueError, match=r"no topology-consistent architecture of 4 blocks and 3 levels has a memory "
                                         r"ratio within 0\.001 of 0\.001 \(the least is about 0\.0\d\d\)"):
        baselines.random_arch(4, 3, 1, OPS, 0.001, 0, SPACES[3, 4], 0.5, tolerance=0.001)
    assert abs(draw(3, 4, 1.0).mem_ratio - 1.0) <= 0.03  # the whole supernet's neighbourhood is reachable
    assert abs(draw(4, 12, 0.01).mem_ratio - 0.01) <= 0.03


def consistent_sequences(num_depths, num_blocks):
    """Every consistent sequence of children, enumerated directly from the path table."""
    src, tgt, _ = (t.tolist() for t in topology.path_table(num_depths))
    kids = topology.children(num_depths).tolist()
    reads = [{src[i] for i, on in enumerate(c) if on} for c in kids]
    writes = [{tgt[i] for i, on in enumerate(c) if on} for c in kids]
    for seq in itertools.product(range(len(kids)), repeat=num_blocks):
        if all(reads[seq[b + 1]] == writes[seq[b]] for b in range(num_blocks - 1)):
            yield seq


def test_sample_children_is_uniform_over_the_window():
    # D = 2, B = 3: every consistent sequence of children is enumerated; those whose units fall in the window must
    # all come up, equally often (a chi-square test at a generous level), and nothing else may.
    rng = np.random.default_rng(0)
    units = rng.integers(0, 6, size=(3, 15))
    lo, hi = 12, 14
    admissible = [s for s in consistent_sequences(2, 3) if lo <= sum(units[b, c] for b, c in enumerate(s)) <= hi]
    assert 20 < len(admissible) < 400
    n = 30 * len(admissible)
    draws = Counter(tuple(baselines.sample_children(units, lo, hi, rng).tolist()) for _ in range(n))
    assert set(draws) == set(admissible)
    expected = n / len(admissible)
    chi2 = sum((draws[s] - expected) ** 2 / expected for s in admissible)
    dof = len(admissible) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5
    assert baselines.sample_children(units, 100, 120, rng) is None  # an empty window


# --- unet -----------------------------------------------------------------------------------------------------------


def test_unet_chain_levels():
    assert baselines.unet_levels(4, 3) == [0, 1, 2, 1, 0]
    assert baselines.unet_levels(12, 4) == [0, 0, 1, 1, 2, 2, 3, 2, 2, 1, 1, 0, 0]  # two blocks per level and side
    assert baselines.unet_levels(7, 4) == [0, 1, 2, 3, 3, 2, 1, 0]  # an odd block stays at the bottleneck
    assert baselines.unet_levels(4, 2) == [0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match=r"needs at least 2 \* \(4 - 1\) = 6 blocks, got 5"):
        baselines.unet_levels(5, 4)


@pytest.mark.parametrize("space", list(SPACES))
def test_unet_is_consistent_and_u_shaped(space):
    num_depths, num_blocks = space
    arch = baselines.unet_arch(num_blocks, num_depths, 1, OPS, SPACES[space], 0.5)
    topology.check_codes(arch.arch_code_a, arch.node_a)
    deepest = [max(i for i, on in enumerate(row) if on) for row in arch.node_a]
    assert deepest == baselines.unet_levels(num_blocks, num_depths)
    assert max(deepest) == num_depths - 1  # reaches the deepest level
    assert arch.node_a[0] == arch.node_a[-1] == [1] + [0] * (num_depths - 1)  # starts and ends at level 0 alone
    conv = np.asarray(arch.arch_code_a) * (np.asarray(arch.arch_code_c) == OPS.index("conv_3x3x3"))
    assert conv.sum(axis=1).tolist() == [1] * num_blocks  # one convolution per block: the chain's


def test_unet_memory_ratio_by_hand():
    # D = 3, B = 4, channel_mul 0.25 (levels of 16, 32, 64 channels), 32^3 input: one feature map of level r is
    # 16:4:1 in size. A path costs (1 + resampling + op) times its target's size, with resampling 0 (same level),
    # 7 (down) or 6 (up) and op 3 (3x3x3 convolution) or 0 (skip). Paths (source -> target): 0: 0->0, 1: 1->0,
    # 2: 0->1, 3: 1->1, 4: 2->1, 5: 1->2, 6: 2->2.
    # Chain 0 -> 1 -> 2 -> 1 -> 0. Active paths: block 0: skip 0->0 (1*16) and conv 0->1 (11*4);
    # block 1: skips 0->0 (16) and 1->1 (1*4), conv 1->2 (11*1); block 2: skips 0->0 (16) and 1->1 (4), conv 2->1
    # (10*4); block 3: skip 0->0 (16), conv 1->0 (10*16). Usage: 60 + 31 + 60 + 176 = 327.
    # Full (every path on, with the codes' ops: conv except the skips): 339 per block with conv everywhere, less
    # 3*16 for each 0->0 skip (4 blocks) and 3*4 for each 1->1 skip (blocks 1, 2): 4 * 339 - 192 - 24 = 1140.
    arch = baselines.unet_arch(4, 3, 1, OPS, (2, 1, 32, 32, 32), 0.25)
    assert np.asarray(arch.arch_code_a).tolist() == [[1, 0, 1, 0, 0, 0, 0], [1, 0, 0, 1, 0, 1, 0],
                                                    [1, 0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0]]
    assert arch.mem_ratio == pytest.approx(327 / 1140, abs=1e-6)
    # The ratio does not depend on the batch or the patch, nor on the multiplier where the ladder doubles.
    assert baselines.memory_ratio(arch, (1, 4, 64, 64, 32)) == pytest.approx(327 / 1140)
    assert baselines.unet_arch(4, 3, 1, OPS, (1, 1, 16, 16, 16), 1.0).mem_ratio == arch.mem_ratio


def test_unet_needs_its_ops():
    with pytest.raises(ValueError, match=r"the U uses conv_3x3x3, which the ops \['skip_connect', 'conv_2d_3x3x1'\] "
                                         r"lack"):
        baselines.unet_arch(4, 3, 0, opset_ops(0, 2), (2, 1, 32, 32, 32), 0.25)


# --- cvpr -----------------------------------------------------------------------------------------------------------

# From MONAI's codes (MONAI tutorials, automl/DiNTS/arch_code_cvpr.pth, sha256 a739d7fb...20ad), read independently
# of our conversion: active paths per block, the first and last rows of node_a, and block 0's op codes.
CVPR_PATHS_PER_BLOCK = [7, 8, 9, 8, 9, 9, 8, 8, 9, 9, 8, 5]
CVPR_NODE_FIRST, CVPR_NODE_LAST = [1, 1, 1, 0], [1, 0, 1, 1]
CVPR_OPS_BLOCK0 = [1, 3, 1, 3, 2, 1, 2, 0, 1, 1]


def test_cvpr_codes_are_monais():
    arch = baselines.cvpr_arch()
    assert (arch.num_blocks, arch.num_depths, arch.opset, arch.ops, arch.use_downsample, arch.channel_mul) == \
        (12, 4, 1, OPS, True, 0.5)
    assert np.asarray(arch.arch_code_a).sum(axis=1).tolist() == CVPR_PATHS_PER_BLOCK
    assert arch.node_a[0] == CVPR_NODE_FIRST and arch.node_a[-1] == CVPR_NODE_LAST
    assert arch.node_a[1:-1] == [[1, 1, 1, 1]] * 11
    assert arch.arch_code_c[0] == CVPR_OPS_BLOCK0
    topology.check_codes(arch.arch_code_a, arch.node_a)
    # MONAI's form (float path codes, as the tutorial's file holds them) converts back to exactly this architecture.
    codes = monai_arch_codes(arch)
    assert codes["arch_code_a"].dtype == np.float64
    again = arch_from_monai_codes({k: v.tolist() for k, v in codes.items()}, channel_mul=0.5, mem_ratio=arch.mem_ratio)
    assert again == arch
    assert baselines.memory_ratio(arch, (2, 1, 96, 96, 96)) == pytest.approx(arch.mem_ratio, abs=1e-6)


def test_cvpr_parameter_count(monkeypatch):
    # 148,813,602 parameters for 1 channel and 2 classes at channel_mul 1.0. MONAI's DiNTS, built from the same
    # codes, has 152,360,994: it builds a stem for every level, and node_a's first row leaves level 3 unread, so
    # its fourth stem (3,547,392 parameters) is never used. Our network builds only the stems block 0 reads
    # (docs/method.md, "Where we differ", 4).
    monkeypatch.setattr(torch.nn.modules.conv._ConvNd, "reset_parameters", lambda self: None)  # counting only
    arch = baselines.cvpr_arch()
    net = DiscreteNet(arch, 1, 2, 1.0)
    count = sum(p.numel() for p in net.parameters())
    assert count == 148_813_602
    assert sorted(net.stems) == ["0", "1", "2"]
    nums = filter_nums(4, 1.0)
    unused_stem = sum(p.numel() for p in Stem(1, nums[3], nums[4], 3, True).parameters())
    assert count + unused_stem == 152_360_994
