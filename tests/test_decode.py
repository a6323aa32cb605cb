"""Decoding against MONAI's Dijkstra decode, exhaustive search and a hand-worked case."""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import time
from functools import lru_cache

import numpy as np
import pytest
import torch
from monai.networks.nets import TopologySearch

from dints import decode, relax, topology


@lru_cache(maxsize=None)
def monai_search(num_depths: int, num_blocks: int) -> TopologySearch:
    with contextlib.redirect_stdout(io.StringIO()):
        return TopologySearch(channel_mul=0.125, num_blocks=num_blocks, num_depths=num_depths, use_downsample=True)


def random_logits(num_depths: int, num_blocks: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    p = 3 * num_depths - 2
    return torch.randn(num_blocks, p, generator=g) * scale, torch.randn(num_blocks, p, 5, generator=g)


def runner_up_gap(child_p: torch.Tensor) -> float:
    """Cost of the best decoding that differs from the optimum, minus the optimum's cost.

    Any other consistent sequence differs in at least one block, so the runner-up is the best decoding with the
    optimum's child of some block b forbidden (its probability set to -1e-5 makes its cost infinite).
    """
    _, code_a, best = decode.decode_paths(child_p)
    picked = topology.child_index(code_a)
    gaps = []
    for b in range(child_p.shape[0]):
        p = child_p.clone()
        p[b, picked[b]] = -decode.DECODE_EPS
        with np.errstate(divide="ignore"):  # log(0) = -inf on purpose
            gaps.append(decode.decode_paths(p)[2] - best)
    return min(gaps)


def child(paths, num_depths=2):
    row = torch.zeros(topology.num_paths(num_depths), dtype=torch.long)
    row[list(paths)] = 1
    return int(topology.child_index(row))


def test_hand_worked_d2_b2():
    # D = 2 paths: 0: 0->0, 1: 1->0 (up), 2: 0->1 (down), 3: 1->1. Per-block argmax would take {path 0} then
    # {path 3}, which do not connect (block 0 feeds level 0, block 1 reads level 1). Consistent options:
    #   {0} then a child reading {0}: best {2}: 0.5 * 0.25 = 0.125
    #   {2} then a child reading {1}: best {3}: 0.3 * 0.6  = 0.18   <- optimum
    n = topology.num_children(2)
    p = torch.zeros(2, n, dtype=torch.float64)
    p[0] = 0.2 / 13
    p[0, child([0])], p[0, child([2])] = 0.5, 0.3
    p[1] = 0.15 / 13
    p[1, child([3])], p[1, child([2])] = 0.6, 0.25
    node_a, code_a, cost = decode.decode_paths(p)
    assert code_a.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert node_a.tolist() == [[1, 0], [0, 1], [0, 1]]
    assert cost == pytest.approx(-math.log(0.3 + 1e-5) - math.log(0.6 + 1e-5), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_d2_b3(seed):
    # Enumerate every sequence of 3 children (15**3) and keep the consistent ones.
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(3, 15, generator=g, dtype=torch.float64) * 2, -1)
    in_idx, out_idx = topology.child_patterns(2)
    cost = -torch.log(p + 1e-5)
    best = min(
        (float(cost[0, a] + cost[1, b] + cost[2, c]), (a, b, c))
        for a, b, c in itertools.product(range(15), repeat=3)
        if out_idx[a] == in_idx[b] and out_idx[b] == in_idx[c]
    )
    _, code_a, total = decode.decode_paths(p)
    assert total == pytest.approx(best[0], rel=1e-12)
    assert topology.child_index(code_a).tolist() == list(best[1])


@pytest.mark.parametrize(
    "num_depths,num_blocks,seeds",
    [(2, 2, range(4)), (2, 5, range(4)), (3, 3, range(4)), (3, 6, range(3)), (4, 2, [0])],  # MONAI needs ~7 s at D=4
)
def test_matches_monai_decode(num_depths, num_blocks, seeds):
    space = monai_search(num_depths, num_blocks)
    compared = 0
    for seed in seeds:
        alpha_a, alpha_c = random_logits(num_depths, num_blocks, seed)
        if runner_up_gap(relax.child_probs(alpha_a.double())) < 1e-6:
            continue  # several optima: MONAI's Dijkstra and our DP may legitimately pick different ones
        with torch.no_grad():
            space.log_alpha_a.copy_(alpha_a)
            space.log_alpha_c.copy_(alpha_c)
        node_a, code_a, code_c, _ = space.decode()
        ours = decode.decode(alpha_a, alpha_c)
        np.testing.assert_array_equal(ours.node_a.numpy(), node_a)
        np.testing.assert_array_equal(ours.arch_code_a.numpy(), code_a)
        np.testing.assert_array_equal(ours.arch_code_c.numpy(), code_c)
        compared += 1
    assert compared >= max(1, len(seeds) - 1)


def test_decoded_architecture_is_consistent():
    num_depths, num_blocks = 4, 12
    alpha_a, alpha_c = random_logits(num_depths, num_blocks, seed=5)
    out = decode.decode(alpha_a, alpha_c)
    src, tgt, _ = topology.path_table(num_depths)
    assert out.node_a.shape == (13, 4) and out.arch_code_a.shape == (12, 10) and out.arch_code_c.shape == (12, 10)
    for b in range(num_blocks):
        on = out.arch_code_a[b].bool()
        assert on.any()
        reads = torch.zeros(num_depths, dtype=torch.long).index_fill_(0, src[on], 1)
        feeds = torch.zeros(num_depths, dtype=torch.long).index_fill_(0, tgt[on], 1)
        assert reads.tolist() == out.node_a[b].tolist()
        assert feeds.tolist() == out.node_a[b + 1].tolist()
    assert out.arch_code_c.tolist() == alpha_c.argmax(-1).tolist()
    p = relax.child_probs(alpha_a)
    expected = -torch.log(p[torch.arange(num_blocks), topology.child_index(out.arch_code_a)].double() + 1e-5).sum()
    assert out.cost == pytest.approx(float(expected), rel=1e-6)


def test_d4_b12_is_fast():
    # One intra-op thread: on a shared 2-core machine, torch's OpenMP/MKL parallel regions (sigmoid, exp, matmul)
    # each wait a scheduler quantum (~8 ms) for a worker thread whenever another job holds a core. That measures the
    # neighbours, not the algorithm (about 0.5 ms here; MONAI's Dijkstra takes ~11 s and 2 GB at this size).
    alpha_a, alpha_c = random_logits(4, 12, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decode.decode(alpha_a, alpha_c)  # builds the memoised tables
        start = time.perf_counter()
        for _ in range(5):
            decode.decode(alpha_a, alpha_c)
        elapsed = (time.perf_counter() - start) / 5
    finally:
        torch.set_num_threads(threads)
    assert elapsed < 0.02


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        decode.decode(torch.zeros(3, 4), torch.zeros(3, 7, 5))
    with pytest.raises(ValueError):
        decode.decode_paths(torch.zeros(3, 14))
