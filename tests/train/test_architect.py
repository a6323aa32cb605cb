"""The bilevel search step (dints.train.architect): what each step optimises, its loss against independent
computations, and the architecture optimisers."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.losses import DiceCELoss

from config import load_config
from dints.run.settings import SearchSettings
from dints.space.supernet import SuperNet
from dints.train.architect import Architect
from helpers import independent
from helpers.stages import FAST


# ----------------------------------------------------------------------------- the bilevel step
def _setup(tiny_args, *extra):
    cfg = load_config(tiny_args(*FAST, "--use_max", "1", *extra), "search")
    cfg.in_channels, cfg.num_classes = 1, 3
    torch.manual_seed(0)
    net = SuperNet(1, 3, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset, cfg.cellop)
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 3, (2, 1, 16, 16, 16)).float()}
    return cfg, net, Architect(net, SearchSettings.from_options(cfg)), batch


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def test_weight_step_updates_only_weights(tiny_args):
    cfg, net, arch, batch = _setup(tiny_args)
    w0, a0 = _snapshot(net.weight_parameters()), _snapshot(net.arch_parameters())
    res = arch.weight_step(batch, 0, torch.device("cpu"))
    assert res.finite
    assert not any(_changed(a0, net.arch_parameters()))
    assert sum(_changed(w0, net.weight_parameters())) > 0.9 * len(w0)


def test_arch_step_updates_only_architecture(tiny_args):
    cfg, net, arch, batch = _setup(tiny_args)
    w0, a0 = _snapshot(net.weight_parameters()), _snapshot(net.arch_parameters())
    res = arch.arch_step(batch, cfg.warmup_iters, torch.device("cpu"))
    assert res.finite
    assert all(_changed(a0, net.arch_parameters()))
    assert not any(_changed(w0, net.weight_parameters()))
    assert all(p.requires_grad for p in net.weight_parameters())  # weights unfrozen again afterwards


def _arch_grads(tiny_args, *extra, it=None):
    cfg, net, arch, batch = _setup(tiny_args, *extra)
    it = cfg.iters - 1 if it is None else it  # w(t) = 1: regularisers at full weight
    arch.opt_a.step = arch.opt_c.step = lambda *a, **k: None  # keep the parameters, look at the gradients
    captured = {}
    orig = arch.opt_a.zero_grad

    def capture(*a, **k):
        captured["a"] = net.alpha_a.grad.clone()
        captured["c"] = net.alpha_c.grad.clone()
        orig(*a, **k)

    arch.opt_a.zero_grad = capture
    res = arch.arch_step(batch, it, torch.device("cpu"))
    return res, captured


def test_architecture_optimisers_are_the_authors(tiny_args):
    """As in the DiNTS authors' search script: one Adam per architecture parameter set, betas (0.5, 0.999), no weight
    decay, the learning rate times the number of processes, no gradient clipping. Checked by replaying the recorded
    gradients of three architecture steps through two fresh, unclipped torch Adams."""
    cfg, net, arch, batch = _setup(tiny_args, "--arch_lr", "0.05", "--grad_clip", "0.001")
    start = [net.alpha_a.detach().clone(), net.alpha_c.detach().clone()]
    grads = {"a": [], "c": []}
    net.alpha_a.register_hook(lambda g: grads["a"].append(g.clone()))
    net.alpha_c.register_hook(lambda g: grads["c"].append(g.clone()))
    for it in range(cfg.warmup_iters, cfg.warmup_iters + 3):
        assert arch.arch_step(batch, it, torch.device("cpu")).finite
    replay = [torch.nn.Parameter(t.clone()) for t in start]
    opts = [torch.optim.Adam([p], lr=0.05, betas=(0.5, 0.999), weight_decay=0.0) for p in replay]
    for step in range(3):
        for p, key, opt in zip(replay, "ac", opts):
            p.grad = grads[key][step]
            opt.step()
    # A clip at 0.001 (or one joint clip) would have changed the second and third updates.
    torch.testing.assert_close(net.alpha_a.detach(), replay[0].detach())
    torch.testing.assert_close(net.alpha_c.detach(), replay[1].detach())
    two = Architect(net, SearchSettings.from_options(cfg), world_size=2)
    assert [g["lr"] for o in (two.opt_a, two.opt_c) for g in o.param_groups] == [0.1, 0.1]
    assert two.opt_w.param_groups[0]["lr"] == 2 * cfg.base_lr
    assert [o.param_groups[0]["params"] for o in (two.opt_a, two.opt_c)] == [[net.alpha_a], [net.alpha_c]]


def test_loss_flags_change_what_is_optimised(tiny_args):
    full, g_full = _arch_grads(tiny_args)
    assert full.terms["entropy"] > 0 and full.terms["topology"] > 0 and full.terms["memory"] > 0
    no_ent, g_no_ent = _arch_grads(tiny_args, "--EP", "0")
    assert no_ent.terms["entropy"] == 0 and not torch.allclose(g_full["a"], g_no_ent["a"])
    assert not torch.allclose(g_full["c"], g_no_ent["c"])  # the op entropy acts on alpha_c
    no_top, g_no_top = _arch_grads(tiny_args, "--topology", "0")
    assert no_top.terms["topology"] == 0 and not torch.allclose(g_full["a"], g_no_top["a"])
    assert torch.allclose(g_full["c"], g_no_top["c"])  # the topology loss does not involve ops
    other_mem, g_mem = _arch_grads(tiny_args, "--mem", "0.2")
    assert other_mem.terms["memory"] != full.terms["memory"] and not torch.allclose(g_full["a"], g_mem["a"])
    # At the first architecture iteration w(t) is tiny, so the regularisers barely count.
    early, _ = _arch_grads(tiny_args, it=4)
    assert early.terms["ramp"] == pytest.approx(1 / 4)


def test_arch_loss_is_seg_plus_weighted_regularisers(tiny_args):
    # Each term computed independently of dints.space.relax and of the Architect: the segmentation loss with MONAI's
    # DiceCELoss configured as the DiNTS authors do, on a copy of the network taken before the step; entropy,
    # topology and memory ratio from first principles (tests/helpers/independent.py); w(t) by hand.
    cfg, net, arch, batch = _setup(tiny_args, "--topology_weight", "0.5", "--EF", "2", "--ef_end", "0.5")
    before = copy.deepcopy(net)
    it = cfg.warmup_iters + 1  # second architecture iteration of 4: w = 2/4
    res = arch.arch_step(batch, it, torch.device("cpu"))
    t = res.terms
    authors = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                         smooth_nr=1e-5, smooth_dr=1e-5)
    with torch.no_grad():
        seg = float(authors(before(batch["image"], use_max=True), batch["label"]))
    # tau anneals from 1 to 0.5 over the 4 architecture iterations (EF 2): 1 - 0.5 * 1/3 here.
    tau = 1 - 0.5 * (it - cfg.warmup_iters) / (cfg.iters - cfg.warmup_iters - 1)
    assert t["tau"] == pytest.approx(tau)
    a, c = before.alpha_a.detach(), before.alpha_c.detach()
    ent = independent.entropy(a, c, tau)
    topo = independent.topology(a, cfg.levels, tau)
    ratio = independent.memory_ratio(a, c, before.ops, cfg.levels, (cfg.batch_size, 1, 16, 16, 16), cfg.channel_mul,
                                     tau)
    w = (it - cfg.warmup_iters + 1) / (cfg.iters - cfg.warmup_iters)
    assert w == pytest.approx(0.5) and t["ramp"] == pytest.approx(w)
    assert t["seg_a"] == pytest.approx(seg, rel=1e-4)  # float32 sums in another order
    assert t["entropy"] == pytest.approx(ent, rel=1e-5)
    assert t["topology"] == pytest.approx(topo, rel=1e-5)
    assert t["mem_ratio"] == pytest.approx(ratio, rel=1e-5)
    assert t["memory"] == pytest.approx(abs(0.8 - ratio), rel=1e-5)
    assert res.loss == pytest.approx(seg + w * (ent + abs(0.8 - ratio) + 0.5 * topo), rel=1e-4)


def test_memory_ratio_matches_independent_sum(tiny_args):
    """Architect.memory is the expected usage/full (docs/method.md, "Relaxation and losses") on the crop shape the
    search trains with."""
    cfg, net, arch, _ = _setup(tiny_args)
    with torch.no_grad():
        net.alpha_a.normal_(0.0, 1.5)
        net.alpha_c.normal_(0.0, 1.5)
    for tau in (1.0, 0.4):
        m = arch.memory(tau)
        ref = independent.memory_ratio(net.alpha_a.detach(), net.alpha_c.detach(), net.ops, cfg.levels,
                                       (cfg.batch_size, 1, 16, 16, 16), cfg.channel_mul, tau)
        assert float(m.ratio.detach()) == pytest.approx(ref, rel=1e-6)
    # MONAI's initialisation: log_alpha_a ~ N(0, 0.01), log_alpha_c ~ N(1, 0.01).
    fresh = SuperNet(1, 3, cfg.blocks, cfg.levels, cfg.channel_mul, cfg.opset, cfg.cellop)
    assert fresh.alpha_a.abs().max() < 0.1 and (fresh.alpha_c - 1).abs().max() < 0.1
