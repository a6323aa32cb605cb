"""One optimiser step (dints.train.optim.optimise): a finite loss steps, a non-finite one leaves everything as it was."""

from __future__ import annotations

import torch

from dints.train.optim import optimise


def _setup():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return net, opt, scaler, list(net.parameters())


def test_a_finite_loss_steps_and_clips():
    net, opt, scaler, params = _setup()
    x = torch.randn(8, 4)
    before = [p.detach().clone() for p in params]
    loss = (net(x) ** 2).mean() * 1e3  # a large gradient: clipped to norm 0.5
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) > 0.5
    assert optimise(loss, opt, scaler, params, grad_clip=0.5)
    # The first SGD step with momentum is p - lr * (clipped g + wd * p): checked by hand.
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for p, b, g in zip(params, before, grads):
        torch.testing.assert_close(p.detach(), b - 0.1 * (g * 0.5 / (norm + 1e-6) + 1e-3 * b))
        assert p.grad is None


def test_a_non_finite_loss_leaves_weights_and_optimiser_state_unchanged():
    net, opt, scaler, params = _setup()
    x = torch.randn(8, 4)
    assert optimise((net(x) ** 2).mean(), opt, scaler, params, grad_clip=0.5)  # momentum buffers exist now
    weights = [p.detach().clone() for p in params]
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in params]
    for bad in (float("nan"), float("inf")):
        assert not optimise((net(x) ** 2).mean() * bad, opt, scaler, params, grad_clip=0.5)
        assert all(torch.equal(p.detach(), w) for p, w in zip(params, weights))
        assert all(torch.equal(opt.state[p]["momentum_buffer"], m) for p, m in zip(params, momentum))
        assert all(p.grad is None for p in params)
