"""The path-sampling design (dints.space.sampling): inclusion probabilities, the systematic draw, and the sampled forward as
an estimator of the one-shot forward, checked by exact enumeration of the draw."""

from __future__ import annotations

import pytest
import torch

from dints.space import relax
from dints.space.sampling import inclusion_probs, prune_unread, sample_block_paths, systematic_sample
from dints.space.supernet import SuperNet
from helpers.monai_ref import path_ends, single_thread  # noqa: F401  (single_thread is an autouse fixture)


def test_inclusion_probs_hand_worked():
    # Proportional shares 2 * [0.4, 0.3, 0.2, 0.1] / 1.0 = [0.8, 0.6, 0.4, 0.2]: none capped.
    pi = inclusion_probs(torch.tensor([0.4, 0.3, 0.2, 0.1]), 2)
    assert pi.tolist() == pytest.approx([0.8, 0.6, 0.4, 0.2])
    # 2 * 0.9 / 1.2 = 1.5 >= 1: that path is certain; the other draw is shared 0.2 : 0.1.
    pi = inclusion_probs(torch.tensor([0.9, 0.2, 0.1]), 2)
    assert pi.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3])
    # Capping can cascade: 3 of [0.9, 0.9, 0.1, 0.1] -> two certain, one shared equally.
    pi = inclusion_probs(torch.tensor([0.9, 0.9, 0.1, 0.1]), 3)
    assert pi.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.5])
    assert inclusion_probs(torch.tensor([0.3, 0.7]), 2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        inclusion_probs(torch.tensor([0.5, 0.5]), 3)


def _draw_distribution(pi: torch.Tensor) -> dict[tuple[bool, ...], float]:
    """Exact distribution of systematic_sample over u ~ U[0, 1): the draw only changes where u crosses the
    fractional part of a cumulative sum, so one u per interval between those breakpoints covers every outcome."""
    cum = torch.cumsum(pi.double(), 0)
    cuts = sorted({0.0, 1.0, *[float(c - torch.floor(c)) for c in cum]})
    dist: dict[tuple[bool, ...], float] = {}
    for lo, hi in zip(cuts, cuts[1:]):
        if hi - lo < 1e-12:
            continue
        key = tuple(systematic_sample(pi, (lo + hi) / 2).tolist())
        dist[key] = dist.get(key, 0.0) + (hi - lo)
    return dist


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_systematic_sample_has_the_stated_inclusion_probabilities(n):
    eta = torch.tensor([0.9, 0.05, 0.4, 0.6, 0.2, 0.7, 0.3])
    pi = inclusion_probs(eta, n)
    dist = _draw_distribution(pi)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert all(sum(k) == n for k in dist)  # always exactly n distinct paths
    freq = torch.zeros(len(eta), dtype=torch.float64)
    for k, p in dist.items():
        freq += p * torch.tensor(k, dtype=torch.float64)
    torch.testing.assert_close(freq, pi)


def test_prune_unread_by_hand():
    # D=2 paths: 0: 0->0, 1: 1->0, 2: 0->1, 3: 1->1. Block 1 reads only level 0, so block 0's path 2 (-> 1) is dead.
    mask = torch.tensor([[1, 0, 1, 0], [1, 0, 1, 0]], dtype=torch.bool)
    assert prune_unread(mask, 2).long().tolist() == [[1, 0, 0, 0], [1, 0, 1, 0]]


def test_block_draws_are_reproducible_and_feed_every_read_node():
    eta = torch.sigmoid(torch.randn(6, 10, generator=torch.Generator().manual_seed(1)) * 2)
    a = sample_block_paths(eta, 4, 3, torch.Generator().manual_seed(5))
    b = sample_block_paths(eta, 4, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    mask, pi = a
    src, tgt = path_ends(4)
    fed = set(range(4))
    for blk in range(6):
        used = mask[blk].nonzero().squeeze(1).tolist()
        assert len(used) == 3 and {src[p] for p in used} <= fed
        eligible = [p for p in range(10) if src[p] in fed]
        assert float(pi[blk, eligible].sum()) == pytest.approx(3.0)
        assert all(pi[blk, p] == 0 for p in range(10) if p not in eligible)
        fed = {tgt[p] for p in used}


@pytest.mark.parametrize("path_num", [1, 2, 4])
def test_sampled_block_is_an_unbiased_estimate_of_the_one_shot_block(path_num):
    # One block (every level fed by the stems): the expectation of the sampled forward's nodes over the exact
    # distribution of the draw equals the one-shot nodes, and so does the expectation of the gradient of any
    # linear function of them with respect to the architecture logits.
    torch.manual_seed(0)
    net = SuperNet(1, 2, num_blocks=1, num_depths=3, channel_mul=0.25)
    with torch.no_grad():
        net.alpha_a.copy_(torch.tensor([[1.5, -1.0, 0.3, -0.2, 2.0, -2.0, 0.7]]))
        net.alpha_c.normal_(0.0, 1.0)
    captured = []
    net.decoder.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    x = torch.randn(1, 1, 32, 32, 32)
    ch = [net.stems[str(d)](x).shape for d in range(3)]
    probes = [torch.randn(s) for s in ch]

    def nodes_and_grad(use_max):
        captured.clear()
        net.zero_grad()
        net(x, use_max=use_max)
        nodes = [torch.zeros(ch[d]) if n is None else n for d, n in enumerate(captured[0])]
        score = sum((n * w).sum() for n, w in zip(nodes, probes))
        score.backward()
        return [n.detach() for n in nodes], net.alpha_a.grad.clone(), net.alpha_c.grad.clone()

    one_shot, g_a, g_c = nodes_and_grad(True)
    pi = inclusion_probs(relax.path_probs(net.alpha_a.detach())[0], path_num)
    dist = _draw_distribution(pi)
    exp_nodes = [torch.zeros(s) for s in ch]
    exp_a, exp_c = torch.zeros_like(g_a), torch.zeros_like(g_c)
    for key, prob in dist.items():
        net.set_paths(torch.tensor([key]), pi[None])
        nodes, ga, gc = nodes_and_grad(False)
        for e, n in zip(exp_nodes, nodes):
            e += prob * n
        exp_a += prob * ga
        exp_c += prob * gc
    for e, n in zip(exp_nodes, one_shot):
        torch.testing.assert_close(e, n, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(exp_a, g_a, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(exp_c, g_c, atol=1e-4, rtol=1e-3)


def test_scaling_by_eta_twice_would_be_biased():
    # The control for the test above: without dividing by pi (the old behaviour), the expected nodes differ from
    # the one-shot nodes by far more than rounding.
    torch.manual_seed(0)
    net = SuperNet(1, 2, num_blocks=1, num_depths=2, channel_mul=0.25)
    with torch.no_grad():
        net.alpha_a.copy_(torch.tensor([[2.0, -1.0, 0.5, -2.0]]))
    captured = []
    net.decoder.register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        net(x, use_max=True)
        one_shot = captured.pop()[0]
        pi = inclusion_probs(relax.path_probs(net.alpha_a)[0], 2)
        biased = torch.zeros_like(one_shot)
        for key, prob in _draw_distribution(pi).items():
            net.set_paths(torch.tensor([key]))  # inclusion 1: scaled by eta only
            net(x, use_max=False)
            node = captured.pop()[0]
            biased += prob * (torch.zeros_like(one_shot) if node is None else node)
    assert (biased - one_shot).abs().max() > 0.05 * one_shot.abs().max()
