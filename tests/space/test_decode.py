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

from dints.space import decode, relax, topology

#: MONAI adds this to child probabilities before the logarithm when it decodes.
MONAI_EPS = 1e-5


@lru_cache(maxsize=None)
def monai_search(num_depths: int, num_blocks: int) -> TopologySearch:
    with contextlib.redirect_stdout(io.StringIO()):
        return TopologySearch(channel_mul=0.125, num_blocks=num_blocks, num_depths=num_depths, use_downsample=True)


def random_logits(num_depths: int, num_blocks: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    p = 3 * num_depths - 2
    return torch.randn(num_blocks, p, generator=g) * scale, torch.randn(num_blocks, p, 5, generator=g)


def monai_log_p(child_p: torch.Tensor) -> torch.Tensor:
    """MONAI's decoding weights as log-probabilities: its edge cost is -log(p + 1e-5)."""
    return torch.log(child_p.double() + MONAI_EPS)


def runner_up_gap(log_p: torch.Tensor) -> float:
    """Cost of the best decoding that differs from the optimum, minus the optimum's cost.

    Any other consistent sequence differs in at least one block, so the runner-up is the best decoding with the
    optimum's child of some block b forbidden (log-probability -inf makes its cost infinite).
    """
    _, code_a, best, _ = decode.decode_paths(log_p)
    picked = topology.child_index(code_a)
    gaps = []
    for b in range(log_p.shape[0]):
        lp = log_p.clone()
        lp[b, picked[b]] = -math.inf
        gaps.append(decode.decode_paths(lp)[2] - best)
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
    node_a, code_a, cost, ties = decode.decode_paths(torch.log(p))
    assert code_a.tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert node_a.tolist() == [[1, 0], [0, 1], [0, 1]]
    assert cost == pytest.approx(-math.log(0.3) - math.log(0.6), rel=1e-12)
    assert ties == 0


def test_hand_worked_tie_is_settled_by_index_and_counted():
    # Two optimal sequences of equal probability: {0} then {2} (0.5 * 0.4) and {2} then {3} (0.5 * 0.4).
    n = topology.num_children(2)
    p = torch.full((2, n), 1e-3, dtype=torch.float64)
    p[0, child([0])], p[0, child([2])] = 0.5, 0.5
    p[1, child([2])], p[1, child([3])] = 0.4, 0.4
    _, code_a, _, ties = decode.decode_paths(torch.log(p))
    assert ties == 1
    first = min(child([0]), child([2]))  # the lower child index wins at block 0
    assert int(topology.child_index(code_a)[0]) == first


@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_d2_b3(seed):
    # Enumerate every sequence of 3 children (15**3) and keep the consistent ones.
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(3, 15, generator=g, dtype=torch.float64) * 2, -1)
    in_idx, out_idx = topology.child_patterns(2)
    cost = -torch.log(p)
    best = min(
        (float(cost[0, a] + cost[1, b] + cost[2, c]), (a, b, c))
        for a, b, c in itertools.product(range(15), repeat=3)
        if out_idx[a] == in_idx[b] and out_idx[b] == in_idx[c]
    )
    _, code_a, total, ties = decode.decode_paths(torch.log(p))
    assert total == pytest.approx(best[0], rel=1e-12)
    assert topology.child_index(code_a).tolist() == list(best[1])
    assert ties == 0


def _matches_monai(num_depths, num_blocks, seeds, space=None):
    space = space or monai_search(num_depths, num_blocks)
    compared = 0
    for seed in seeds:
        alpha_a, alpha_c = random_logits(num_depths, num_blocks, seed)
        if runner_up_gap(monai_log_p(relax.child_probs(alpha_a.double()))) < 1e-6:
            continue  # MONAI's optimum is not unique: its Dijkstra may legitimately pick another one
        with torch.no_grad():
            space.log_alpha_a.copy_(alpha_a)
            space.log_alpha_c.copy_(alpha_c)
        node_a, code_a, code_c, _ = space.decode()
        ours = decode.decode(alpha_a, alpha_c)
        np.testing.assert_array_equal(ours.node_a.numpy(), node_a)
        np.testing.assert_array_equal(ours.arch_code_a.numpy(), code_a)
        np.testing.assert_array_equal(ours.arch_code_c.numpy(), code_c)
        compared += 1
    return compared


@pytest.mark.parametrize(
    "num_depths,num_blocks,seeds",
    [(2, 2, range(4)), (2, 5, range(4)), (3, 3, range(4)), (3, 6, range(3)), (4, 2, [0])],  # MONAI needs ~7 s at D=4
)
def test_matches_monai_decode(num_depths, num_blocks, seeds):
    assert _matches_monai(num_depths, num_blocks, seeds) >= max(1, len(seeds) - 1)


@pytest.mark.slow
def test_matches_monai_decode_d4_b12():
    # MONAI's Dijkstra over a 12,278-node dense graph: ~13 s and ~1.2 GB per decode.
    assert _matches_monai(4, 12, range(3)) == 3


def test_no_ties_on_random_logits():
    # 50 random D=4/B=12 logit sets: the optimum is unique, as the decoder reports and as forbidding each chosen
    # child in turn confirms.
    for seed in range(50):
        alpha_a, alpha_c = random_logits(4, 12, seed + 100)
        out = decode.decode(alpha_a, alpha_c)
        assert out.ties == 0
        assert runner_up_gap(relax.log_child_probs(alpha_a.double())) > 1e-9


def test_ties_are_counted():
    alpha_a, alpha_c = torch.zeros(3, 7), torch.zeros(3, 7, 5)  # every child and op equally likely
    out = decode.decode(alpha_a, alpha_c)
    assert out.ties > 0
    assert out.arch_code_c.eq(0).all()  # op ties go to the first op


def trained_like_logits(seed: int, num_depths: int = 4, num_blocks: int = 12):
    # Logits after a search with an annealed temperature have spread out: a few paths clearly on, most off.
    g = torch.Generator().manual_seed(seed)
    p = 3 * num_depths - 2
    return torch.randn(num_blocks, p, generator=g) * 1.5, torch.randn(num_blocks, p, 5, generator=g)


def test_decoding_does_not_depend_on_the_temperature():
    # In log space the total of every consistent sequence is (1/tau) * sum(alpha . child) minus a constant, so a
    # low temperature (e.g. --EF 2 --ef_end 0.1) cannot change the decoded architecture.
    changed_by_floor = 0
    for seed in range(10):
        alpha_a, _ = trained_like_logits(seed)
        at_1 = decode.decode_paths(relax.log_child_probs(alpha_a.double(), 1.0))[1]
        at_01 = decode.decode_paths(relax.log_child_probs(alpha_a.double(), 0.1))[1]
        assert torch.equal(at_1, at_01)
        # MONAI's floored cost at tau = 0.1 is a different problem: the control that this test can fail.
        floored = decode.decode_paths(monai_log_p(relax.child_probs(alpha_a.double(), 0.1)))[1]
        changed_by_floor += int(not torch.equal(at_1, floored))
    assert changed_by_floor >= 5


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
    p = relax.child_probs(alpha_a.double())
    expected = -torch.log(p[torch.arange(num_blocks), topology.child_index(out.arch_code_a)]).sum()
    assert out.cost == pytest.approx(float(expected), rel=1e-9)


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


# ----------------------------------------------------------------------------- decoding within a memory budget
def _enumerate(log_p: np.ndarray, child_memory: np.ndarray, num_depths: int):
    """Every consistent sequence of children with its cost, true memory and rounded-up memory units."""
    import itertools

    from dints.space import decode as dec
    from dints.space import topology as topo

    in_idx, out_idx = (t.numpy() for t in topo.child_patterns(num_depths))
    units = np.ceil(child_memory / dec.MEMORY_RESOLUTION - 1e-9)
    for seq in itertools.product(range(log_p.shape[1]), repeat=log_p.shape[0]):
        if all(out_idx[a] == in_idx[b] for a, b in zip(seq, seq[1:])):
            rows = range(len(seq))
            yield (seq, -sum(log_p[r, c] for r, c in zip(rows, seq)), sum(child_memory[r, c] for r, c in zip(rows, seq)),
                   sum(units[r, c] for r, c in zip(rows, seq)))


def _child_indices(got, num_depths):
    from dints.space import topology as topo

    kids = topo.children(num_depths)
    return [int(torch.nonzero((kids == row).all(dim=1))[0]) for row in got.arch_code_a.to(kids.dtype)]


@pytest.mark.parametrize("num_depths, num_blocks", [(2, 3), (3, 2)])
@pytest.mark.parametrize("seed", range(4))
def test_decoding_within_the_budget_and_band_is_the_optimum_of_exhaustive_enumeration(num_depths, num_blocks, seed):
    from dints.space import decode as dec
    from dints.space import relax, topology as topo
    from dints.space.opsets import opset_ops

    g = torch.Generator().manual_seed(seed)
    p = topo.num_paths(num_depths)
    alpha_a, alpha_c = torch.randn(num_blocks, p, generator=g) * 2, torch.randn(num_blocks, p, 5, generator=g)
    paper = dec.decode(alpha_a, alpha_c)
    path_mem = relax.decoded_path_memory(paper.arch_code_c, opset_ops(1), (2, 1, 32, 32, 32), 0.25)
    log_p = relax.log_child_probs(alpha_a.double()).numpy()
    kids = topo.children(num_depths).double()
    child_mem = (path_mem @ kids.T).numpy()
    table = list(_enumerate(log_p, child_mem, num_depths))
    paper_ratio = float((path_mem * paper.arch_code_a).sum())
    res = dec.MEMORY_RESOLUTION
    assert paper.cost == pytest.approx(min(t[1] for t in table), abs=1e-9)  # same cost scale as the enumeration
    for budget in (0.0, 0.2, 0.35, 0.5, 0.8, paper_ratio, paper_ratio - 0.01, paper_ratio + 0.15):
        for band in (1.0, 0.1, 0.05):
            got = dec.decode_within(alpha_a, alpha_c, path_mem, budget, band)
            ratio = float((path_mem * got.arch_code_a).sum())
            topo.check_codes(got.arch_code_a, got.node_a)  # a runnable architecture
            if budget - band <= paper_ratio <= budget:  # the paper's decode lies in the band: it is the answer
                assert got.fits and torch.equal(got.arch_code_a, paper.arch_code_a) and got.cost == paper.cost
                continue
            cap = np.floor(budget / res + 1e-9)
            feasible = [t for t in table if t[3] <= cap]
            if not feasible:  # nothing fits: the least memory
                assert not got.fits and ratio == pytest.approx(min(t[2] for t in table), abs=num_blocks * res)
                continue
            assert got.fits and ratio <= budget + 1e-12, (budget, ratio)
            in_band = [t for t in feasible if t[3] >= np.ceil((budget - band) / res - 1e-9)]
            assert got.cost == pytest.approx(min(t[1] for t in in_band or feasible), abs=1e-9)  # the optimum (units)
            if in_band:  # the band's lower edge holds up to the rounding (B units)
                assert ratio >= budget - band - num_blocks * res, (budget, band, ratio)
            else:  # nothing in the band: everything well under the budget competes
                under = [t for t in table if t[2] <= budget - num_blocks * res]
                assert not under or got.cost <= min(t[1] for t in under) + 1e-9
            assert got.cost == pytest.approx(-sum(log_p[b, c] for b, c in enumerate(_child_indices(got, num_depths))))
