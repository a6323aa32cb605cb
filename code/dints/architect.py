"""The bilevel search step (DESIGN.md §5): one weight step, then (after warmup) one architecture step.

First-order and alternating. The weight step trains the supernet's weights on a batch of the weight half with the
architecture parameters frozen; the architecture step trains ``alpha_a``/``alpha_c`` on a batch of the
architecture half with the weights frozen, on

    seg_loss + w(t) * (EP * entropy + |mem - usage/full| + topology * topology_weight * topology_loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss

from . import relax
from .optim import optimise
from .schedule import ramp, step_lr, temperature
from .supernet import SuperNet

#: The search's weight learning rate halves at these fractions of the post-warmup iterations.
SEARCH_LR_MILESTONES = (0.4, 0.8)


def seg_loss_fn() -> DiceCELoss:
    """The authors' segmentation loss (DESIGN §5), used by the search and by retraining.

    Dice + cross-entropy on softmax outputs with one-hot labels, as the DiNTS authors configure MONAI's
    ``DiceCELoss`` in their search and training scripts: background left out of the Dice term, squared predictions
    in the Dice denominator, Dice over the whole batch (one ratio per class, not one per crop), smoothing 1e-5 in
    numerator and denominator.
    """
    return DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
                      smooth_nr=1e-5, smooth_dr=1e-5)


@dataclass
class StepResult:
    """What one step computed (Python floats, for logging)."""

    loss: float
    terms: dict[str, float]
    finite: bool


def _set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


class Architect:
    """Owns the supernet's two optimisers and performs the search's weight and architecture steps.

    Args:
        model: the supernet. In multi-process runs every rank holds a replica and gradients are averaged
            explicitly after each backward (:func:`dints.dist.average_gradients`), so frozen parameter groups and
            unsampled paths need none of DDP's unused-parameter handling.
        cfg: search options (``base_lr``, ``momentum``, ``weight_decay``, ``arch_lr``, ``iters``,
            ``warmup_iters``, ``EF``, ``ef_end``, ``EP``, ``topology``, ``topology_weight``, ``mem``,
            ``use_max``, ``grad_clip``, ``patch_size``, ``batch_size``).
        world_size: number of processes (scales the weight learning rate).
        amp: mixed precision (CUDA only).
    """

    def __init__(self, model: torch.nn.Module, cfg, world_size: int = 1, amp: bool = False):
        self.model = model
        self.net: SuperNet = model.module if hasattr(model, "module") else model
        self.cfg = cfg
        self.base_lr = cfg.base_lr * world_size
        self.opt_w = torch.optim.SGD(self.net.weight_parameters(), lr=self.base_lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.opt_a = torch.optim.Adam(self.net.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=0.0)
        self.amp = amp
        self.scaler_w = torch.amp.GradScaler("cuda", enabled=amp)
        self.scaler_a = torch.amp.GradScaler("cuda", enabled=amp)
        self.loss_fn = seg_loss_fn()
        in_shape = (cfg.batch_size * getattr(cfg, "num_samples", 1), self.net.in_channels, *cfg.patch_size)
        self.mem_shape = in_shape

    # -------------------------------------------------------------- schedules
    def lr(self, it: int) -> float:
        """Weight learning rate at iteration ``it``."""
        c = self.cfg
        return step_lr(self.base_lr, it, c.iters, SEARCH_LR_MILESTONES, start=c.warmup_iters)

    def tau(self, it: int) -> float:
        """Temperature at iteration ``it``."""
        c = self.cfg
        return temperature(it, c.warmup_iters, c.iters, c.EF, c.ef_end)

    # -------------------------------------------------------------- losses
    def memory(self, tau: float) -> relax.MemoryEstimate:
        """Expected memory of the current architecture distribution (usage, full, ratio)."""
        return relax.memory_estimate(self.net.alpha_a, self.net.alpha_c, self.net.ops, self.mem_shape,
                                     self.net.channel_mul, self.net.use_downsample, tau)

    def arch_regularisers(self, tau: float) -> dict[str, torch.Tensor]:
        """Entropy, memory and topology terms (unweighted), each a scalar tensor; disabled terms are 0."""
        a, c = self.net.alpha_a, self.net.alpha_c
        zero = a.new_zeros(())
        mem = self.memory(tau)
        return {
            "entropy": relax.entropy_loss(a, c, tau) if self.cfg.EP else zero,
            "memory": relax.memory_loss(mem.ratio, self.cfg.mem),
            "topology": relax.topology_loss(relax.child_probs(a, tau)) if self.cfg.topology else zero,
            "mem_ratio": mem.ratio.detach(),
        }

    def _forward_loss(self, batch: dict, device: torch.device) -> torch.Tensor:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=self.amp):
            logits = self.model(x, use_max=bool(self.cfg.use_max))
        return self.loss_fn(logits.float(), y)

    # -------------------------------------------------------------- steps
    def weight_step(self, batch: dict, it: int, device: torch.device) -> StepResult:
        """One SGD step on the weights (architecture frozen)."""
        self.net.tau = self.tau(it)
        for g in self.opt_w.param_groups:
            g["lr"] = self.lr(it)
        _set_requires_grad(self.net.arch_parameters(), False)
        _set_requires_grad(self.net.weight_parameters(), True)
        loss = self._forward_loss(batch, device)
        ok = optimise(loss, self.opt_w, self.scaler_w, self.net.weight_parameters(), self.cfg.grad_clip)
        return StepResult(float(loss.detach()), {"seg_w": float(loss.detach())}, ok)

    def arch_step(self, batch: dict, it: int, device: torch.device) -> StepResult:
        """One Adam step on ``alpha_a``/``alpha_c`` (weights frozen)."""
        c = self.cfg
        tau = self.net.tau = self.tau(it)
        _set_requires_grad(self.net.weight_parameters(), False)
        _set_requires_grad(self.net.arch_parameters(), True)
        seg = self._forward_loss(batch, device)
        reg = self.arch_regularisers(tau)
        w = ramp(it, c.warmup_iters, c.iters)
        loss = seg + w * (reg["entropy"] + reg["memory"] + c.topology_weight * reg["topology"])
        ok = optimise(loss, self.opt_a, self.scaler_a, self.net.arch_parameters(), self.cfg.grad_clip)
        _set_requires_grad(self.net.weight_parameters(), True)
        terms = {"seg_a": float(seg.detach()), "entropy": float(reg["entropy"].detach()),
                 "memory": float(reg["memory"].detach()),
                 "topology": float(reg["topology"].detach()), "mem_ratio": float(reg["mem_ratio"]), "ramp": w, "tau": tau}
        return StepResult(float(loss.detach()), terms, ok and math.isfinite(float(loss.detach())))

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Optimiser and scaler states."""
        return {"opt_w": self.opt_w.state_dict(), "opt_a": self.opt_a.state_dict(),
                "scaler_w": self.scaler_w.state_dict(), "scaler_a": self.scaler_a.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.opt_w.load_state_dict(state["opt_w"])
        self.opt_a.load_state_dict(state["opt_a"])
        self.scaler_w.load_state_dict(state["scaler_w"])
        self.scaler_a.load_state_dict(state["scaler_a"])
