"""The supernet against MONAI's TopologySearch + DiNTS (one-shot and sampled paths) and hand-worked sampling cases."""

from __future__ import annotations

import pytest
import torch

from dints.space.ops import ConvOp, MixedCell, Stem
from dints.space.supernet import SuperNet
from helpers.monai_ref import (  # noqa: F401  (single_thread is an autouse fixture)
    load_from_monai,
    monai_name,
    monai_search,
    path_ends,
    randomize_,
    single_thread,
)


def _pair(num_blocks, num_depths, channel_mul, seed=0, **kwargs):
    """MONAI's search network with random weights and logits, and ours with the same values."""
    torch.manual_seed(seed)
    ref = monai_search(2, 3, channel_mul, num_blocks, num_depths, kwargs.get("use_downsample", True))
    randomize_(ref, seed)
    with torch.no_grad():
        ref.dints_space.log_alpha_a.normal_(0.0, 1.5)
        ref.dints_space.log_alpha_c.normal_(0.0, 1.5)
    net = SuperNet(2, 3, num_blocks, num_depths, channel_mul, **kwargs)
    load_from_monai(net, ref, exclude=("alpha_c",) if "cellop" in kwargs else ())
    return ref, net


def _grads(model):
    return {name: p.grad for name, p in model.named_parameters()}


def _assert_close_to_scale(got, want, name, rel=1e-5):
    # Gradients are sums of many terms in different orders; compare against the tensor's own scale (float32
    # rounding gives ~1e-6 of it, a wrong weight mapping or a missing term gives O(1)).
    err = (got - want).abs().max().item()
    assert err <= rel * want.abs().max().item() + 1e-7, (name, err, want.abs().max().item())


@pytest.mark.parametrize(
    "num_blocks, num_depths, size, channel_mul, tau",
    [(3, 2, (16, 16, 8), 0.25, 1.0), (3, 3, (32, 32, 16), 0.2, 1.0), (2, 4, (32, 32, 32), 0.2, 0.5)],
)
def test_one_shot_matches_monai(num_blocks, num_depths, size, channel_mul, tau):
    ref, net = _pair(num_blocks, num_depths, channel_mul)
    # MONAI has no temperature: dividing its logits by tau is what the relaxation's sigmoid/softmax(alpha / tau)
    # (docs/method.md) means.
    with torch.no_grad():
        ref.dints_space.log_alpha_a.div_(tau)
        ref.dints_space.log_alpha_c.div_(tau)
    x = torch.randn(1, 2, *size)
    out, expected = net(x, use_max=True, tau=tau), ref(x)
    assert out.shape == (1, 3, *size)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)

    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    ours, theirs = _grads(net), _grads(ref)
    # Gradients reach every architecture logit, and equal MONAI's (chain rule through alpha / tau).
    for name in ("alpha_a", "alpha_c"):
        assert torch.isfinite(ours[name]).all() and (ours[name] != 0).all()
        _assert_close_to_scale(ours[name], theirs[monai_name(name)] / tau, name)
    for name, grad in ours.items():
        if not name.startswith("alpha"):
            _assert_close_to_scale(grad, theirs[monai_name(name)], name)


def test_parameter_groups_are_disjoint_and_complete():
    net = SuperNet(1, 2, num_blocks=3, num_depths=3, channel_mul=0.2)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    everything = {id(p) for p in net.parameters()}
    assert arch == {id(net.alpha_a), id(net.alpha_c)}
    assert not arch & weights and arch | weights == everything
    assert net.alpha_a.shape == (3, 7) and net.alpha_c.shape == (3, 7, 5)
    # MONAI's initialisation: log_alpha_a ~ N(0, 0.01), log_alpha_c ~ N(1, 0.01).
    assert net.alpha_a.abs().max() < 0.1 and (net.alpha_c - 1).abs().max() < 0.1


def test_sampling_respects_fed_nodes_by_hand():
    # D=2 paths: 0: 0->0, 1: 1->0 (up), 2: 0->1 (down), 3: 1->1.
    assert path_ends(2) == ([0, 1, 0, 1], [0, 0, 1, 1])
    net = SuperNet(1, 2, num_blocks=2, num_depths=2, channel_mul=0.25)
    with torch.no_grad():
        net.alpha_a.copy_(torch.tensor([[-30.0, 30.0, -30.0, -30.0], [10.0, -30.0, -30.0, 30.0]]))
    mask = net.sample_paths(1, torch.Generator().manual_seed(0))
    # Block 0 takes 1->0, so only level 0 is fed; block 1's favourite path 3 (1->1) reads level 1 and is not
    # allowed, the draw falls back on the eligible paths {0, 2} and takes 0.
    assert mask.tolist() == [[False, True, False, False], [True, False, False, False]]
    assert torch.equal(net.path_mask, mask)
    # Inclusion probabilities: one draw among the eligible paths, in proportion to eta; ineligible paths get 0.
    eta = torch.sigmoid(net.alpha_a.detach().double())
    assert net.path_inclusion[0].double().tolist() == pytest.approx((eta[0] / eta[0].sum()).tolist(), abs=1e-6)
    assert net.path_inclusion[1, 1].item() == 0 and net.path_inclusion[1, 3].item() == 0
    both = eta[1, 0] + eta[1, 2]
    assert net.path_inclusion[1, 0].item() == pytest.approx(float(eta[1, 0] / both), abs=1e-6)


def test_sampling_prunes_paths_nobody_reads():
    net = SuperNet(1, 2, num_blocks=2, num_depths=2, channel_mul=0.25)
    with torch.no_grad():
        net.alpha_a.copy_(torch.tensor([[30.0, -30.0, 30.0, -30.0], [30.0, -30.0, 30.0, -30.0]]))
    g = torch.Generator().manual_seed(0)
    # Block 0 feeds levels 0 and 1 (paths 0 and 2); block 1 reads only level 0, so block 0's path 2 is dead.
    assert net.sample_paths(2, g, prune=False).long().tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]
    assert net.sample_paths(2, g).long().tolist() == [[1, 0, 0, 0], [1, 0, 1, 0]]


def _saved_bytes(fn):
    # Bytes of the tensors autograd keeps for the backward pass, counted once per storage.
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_sampled_forward_runs_only_the_sampled_paths_and_equals_monai_when_they_are_certain():
    ref, net = _pair(num_blocks=4, num_depths=3, channel_mul=0.2, seed=1)
    called = []
    for name, cell in net.cells.items():
        cell.register_forward_hook(lambda m, i, o, name=name: called.append(name))
    stems_called = []
    for name, stem in net.stems.items():
        stem.register_forward_hook(lambda m, i, o, name=name: stems_called.append(int(name)))

    src, tgt = path_ends(3)
    x = torch.randn(1, 2, 32, 16, 16)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        mask = net.sample_paths(2, gen)
        assert (mask.sum(1) >= 1).all() and (mask.sum(1) <= 2).all()
        fed = set(range(3))
        for b in range(4):
            used = [p for p in range(7) if mask[b, p]]
            assert {src[p] for p in used} <= fed  # every node a path reads is produced
            fed = {tgt[p] for p in used}

        called.clear()
        stems_called.clear()
        out, sampled_bytes = _saved_bytes(lambda: net(x, use_max=False))
        assert sorted(called) == sorted(f"{b}_{p}" for b in range(4) for p in range(7) if mask[b, p])
        assert sorted(stems_called) == sorted({src[p] for p in range(7) if mask[0, p]})

        # With inclusion probabilities of 1 the sampled forward is MONAI's forward over arch_code_a (same
        # full-block path scales); the estimator's weighting by 1/pi is checked in test_sampling.py.
        pi = net.path_inclusion.clone()
        assert ((pi[mask] > 0) & (pi[mask] <= 1)).all()
        net.set_paths(mask)
        assert net.path_inclusion.eq(1).all()
        with torch.no_grad():
            plain = net(x, use_max=False)
        node_a = torch.zeros(5, 3)
        node_a[0, [src[p] for p in range(7) if mask[0, p]]] = 1
        for b in range(4):
            node_a[b + 1, [tgt[p] for p in range(7) if mask[b, p]]] = 1
        ref.dints_space.arch_code_a = mask.float()
        ref.node_a = node_a
        with torch.no_grad():
            torch.testing.assert_close(plain, ref(x), atol=1e-4, rtol=0)
        net.set_paths(mask, pi)

    _, full_bytes = _saved_bytes(lambda: net(x, use_max=True))
    assert sampled_bytes < 0.6 * full_bytes


def test_sampling_is_reproducible_and_masks_are_checked():
    net = SuperNet(1, 2, num_blocks=5, num_depths=4, channel_mul=0.2)
    with torch.no_grad():
        net.alpha_a.normal_(0.0, 2.0)
    a = net.sample_paths(3, torch.Generator().manual_seed(42))
    b = net.sample_paths(3, torch.Generator().manual_seed(42))
    assert torch.equal(a, b)
    bad = torch.zeros(5, 10, dtype=torch.bool)
    bad[:, 0] = True
    bad[1] = False
    with pytest.raises(ValueError, match="path mask: block 1 has no active path"):
        net.set_paths(bad)
    bad[1, 3] = True  # 1 -> 1, but block 0 only feeds level 0
    with pytest.raises(ValueError, match="path mask: .* inactive"):
        net.set_paths(bad)


def test_cellop_matches_monai_with_the_other_ops_switched_off():
    ref, net = _pair(num_blocks=2, num_depths=3, channel_mul=0.2, seed=2, cellop=2)
    assert net.ops == ["skip_connect", "conv_3x3x3"] and net.alpha_c.shape == (2, 7, 2)
    with torch.no_grad():
        net.alpha_c.copy_(ref.dints_space.log_alpha_c[..., :2])
        ref.dints_space.log_alpha_c[..., 2:] = -1e4  # softmax weight exactly 0 for ops 2..4
    x = torch.randn(1, 2, 16, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=1e-4, rtol=0)


def test_opset0_cells():
    net = SuperNet(1, 2, num_blocks=2, num_depths=2, channel_mul=0.25, opset=0, cellop=4)
    assert net.alpha_c.shape == (2, 4, 4)
    for cell in net.cells.values():
        assert isinstance(cell, MixedCell)
        assert isinstance(cell.ops[0], torch.nn.Identity)
        kernels = [
            [tuple(op.conv.weight.shape[2:])] + ([tuple(op.conv_1.weight.shape[2:])] if op.conv_1 is not None else [])
            for op in cell.ops[1:]
        ]
        assert all(isinstance(op, ConvOp) for op in cell.ops[1:])
        assert kernels == [[(3, 3, 1)], [(3, 3, 3)], [(3, 3, 1), (1, 1, 3)]]
    assert len(SuperNet(1, 2, num_blocks=1, num_depths=2, opset=0, cellop=3, channel_mul=0.25).cells["0_0"].ops) == 3
    out = net(torch.randn(1, 1, 8, 16, 8))
    out.square().mean().backward()
    assert (net.alpha_c.grad != 0).all()


def test_without_downsample_matches_monai():
    ref, net = _pair(num_blocks=2, num_depths=3, channel_mul=0.25, use_downsample=False)
    assert all(isinstance(s, Stem) and s.conv_1 is None for s in net.stems.values())
    x = torch.randn(1, 2, 8, 8, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*\(num_depths\+0\) = 8"):
        net(torch.randn(1, 2, 8, 8, 12))


def test_autocast_runs_close_to_fp32():
    torch.manual_seed(0)
    net = SuperNet(1, 2, num_blocks=3, num_depths=3, channel_mul=0.25)
    net.sample_paths(3, torch.Generator().manual_seed(0))
    x = torch.randn(1, 1, 32, 16, 16)
    for use_max in (True, False):
        ref = net(x, use_max=use_max).detach()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, use_max=use_max)
        assert out.dtype == torch.bfloat16
        assert (out.float() - ref).norm() / ref.norm() < 0.05
        net.zero_grad()
        out.float().square().mean().backward()
        assert torch.isfinite(net.alpha_a.grad).all() and net.alpha_a.grad.abs().sum() > 0


def test_bad_input_size():
    net = SuperNet(1, 2, num_blocks=2, num_depths=3, channel_mul=0.25)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*\(num_depths\+1\) = 16"):
        net(torch.randn(1, 1, 32, 24, 32))
